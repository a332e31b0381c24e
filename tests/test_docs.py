"""The README is a short front page whose links resolve; the docs' generated pages match the code."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_readme_fits_the_front_page_budget():
    assert len(README.read_bytes()) <= 12 * 1024


def test_readme_links_resolve_to_files_in_the_repository():
    links = [u for u in LINK.findall(README.read_text()) if not re.match(r"[a-z]+://|#|mailto:", u)]
    assert links, "the README should link into the docs"
    missing = [u for u in links if not (ROOT / u.split("#", 1)[0]).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"


def test_readme_and_getting_started_show_the_same_quickstart():
    def blocks(text: str) -> list[str]:
        return re.findall(r"```(?:python|text)\n(.*?)```", text.split("## Quickstart", 1)[1], re.S)[:2]

    assert blocks(README.read_text()) == blocks((ROOT / "docs" / "getting-started.md").read_text())


def test_nothing_a_user_reads_names_the_development_machine():
    pages = [README, *sorted((ROOT / "docs").rglob("*.md"))]
    pages = [p for p in pages if "incoming" not in p.parts]
    commit = r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b"  # a commit hash: hex with letters and digits
    pattern = re.compile(rf"2-core box|load average|other sessions|\.\./shared|\b\d\d:\d\d UTC\b|{commit}")
    hits = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in pages for m in pattern.finditer(p.read_text())]
    assert not hits, hits


def test_one_import_alias():
    files = [README, *(ROOT / "docs").rglob("*.md"), *(ROOT / "traceprop_frames").rglob("*.py")]
    other = [
        str(p.relative_to(ROOT))
        for p in files
        if re.search(r"import traceprop_frames as (?!tpf\b)", p.read_text())
    ]
    assert not other, f"use `import traceprop_frames as tpf`: {other}"


def test_generated_reference_pages_are_up_to_date():
    r = subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "gen_reference.py"), "--check"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr


def test_pandas_guide_example_runs_and_its_comments_hold(tmp_path, monkeypatch):
    text = (ROOT / "docs" / "guides" / "pandas.md").read_text()
    block = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(block, "docs/guides/pandas.md", "exec"), ns)
    train = ns["train"]
    assert [r.trace_to_file() for r in train.tp.trace(0)][:2] == [
        "application.csv row 0",
        "bureau.csv row 1018",
    ]
    assert train.tp.rows_from_source("bureau.csv", [2803]).tolist() == [0]
    assert train.tp.ops() == ["read_csv", "read_csv", "groupby_agg", "merge", "select"]
