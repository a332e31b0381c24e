"""The README's quickstart runs as written in an empty folder, and prints what the README says it prints."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?$")


def quickstart(text: str) -> tuple[str, str]:
    """The code block of the README's "Quickstart" section and the output block that follows it."""
    section = text.split("\n## Quickstart\n", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    shown = re.search(r"It prints:\n\n```text\n(.*?)```", section, re.S).group(1)
    return code, shown


def same_output(got: str, shown: str) -> bool:
    """Line by line and word by word equal, except that a number in scientific notation (the certified
    bound, a float64 result) may differ from the one shown by less than a factor of 2."""
    got_lines, shown_lines = got.strip("\n").split("\n"), shown.strip("\n").split("\n")
    if len(got_lines) != len(shown_lines):
        return False
    for g_line, s_line in zip(got_lines, shown_lines):
        g_words, s_words = g_line.split(), s_line.split()
        if len(g_words) != len(s_words):
            return False
        for g, s in zip(g_words, s_words):
            if g == s:
                continue
            if not ("e" in s and NUMBER.match(g) and NUMBER.match(s)):
                return False
            if not 0.5 <= float(g) / float(s) <= 2:
                return False
    return True


def test_readme_quickstart_runs_in_an_empty_folder_and_prints_what_it_shows(tmp_path, monkeypatch):
    code, shown = quickstart(README.read_text())
    monkeypatch.chdir(tmp_path)
    assert list(tmp_path.iterdir()) == []  # it makes its own data
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {"__name__": "__main__"})
    assert same_output(out.getvalue(), shown), f"README shows:\n{shown}\nthe code printed:\n{out.getvalue()}"
    assert (tmp_path / "erasure.json").exists()


def test_output_comparison_is_strict_where_it_must_be():
    assert same_output("a 1 [0]\nbound <= 5e-07\n", "a 1 [0]\nbound <= 5e-07")
    assert same_output("bound <= 4e-07", "bound <= 5e-07")
    assert not same_output("bound <= 5e-05", "bound <= 5e-07")
    assert not same_output("a 2 [0]", "a 1 [0]")  # plain numbers (row numbers, counts) must match exactly
    assert not same_output("a 1 [0]\nextra", "a 1 [0]")
