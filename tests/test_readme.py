"""The README's first-screen example runs as written, and says what it really returns."""

from __future__ import annotations

import re
from pathlib import Path

from traceprop_frames.datasets import make_credit_risk

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs_and_its_comments_are_true(tmp_path, monkeypatch):
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    make_credit_risk(tmp_path, applicants=20_000, seed=0)
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(block, "README.md", "exec"), ns)
    train = ns["train"]
    traced = [r.trace_to_file() for r in train.tp.trace(17)]
    assert traced[0] == "application.csv row 17" and "bureau.csv row 27454" in traced
    assert train.tp.rows_from_source("bureau.csv", [27454]).tolist() == [17]
    assert train.tp.ops() == ["read_csv", "read_csv", "groupby_agg", "merge", "select"]
