"""Functions stay short: none in ``traceprop_frames/unlearn/`` over 50 lines, none in the package over 90
(docstrings aside; ``tools/function_lengths.py`` measures them with ``ast`` and lists the longest)."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("function_lengths", ROOT / "tools" / "function_lengths.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_function_over_its_limit():
    bad = _tool().over_limits()
    assert not bad, "\n".join(
        f"{r}:{ln}: {n} is {size} lines (limit {limit})" for r, n, ln, size, limit in bad
    )


def test_the_measure_counts_code_lines_and_leaves_docstrings_out(tmp_path):
    tool = _tool()
    body = "\n".join(f"    x{i} = {i}" for i in range(60))
    src = f'def long():\n    """Doc\n\n    more doc\n    """\n{body}\n\n\nclass C:\n    def m(self):\n        return 1\n'
    tree = ast.parse(src)
    fn, cls = tree.body
    assert tool.length(fn) == 61 and tool.length(fn, docstrings=True) == 65
    pkg = tmp_path / "traceprop_frames" / "unlearn"
    pkg.mkdir(parents=True)
    (pkg / "x.py").write_text(src)
    found = {name: size for _, name, _, size in tool.functions(tmp_path / "traceprop_frames")}
    assert found == {"long": 61, "C.m": 2}
    assert (
        tool.limit_for("traceprop_frames/unlearn/x.py") == 50
        and tool.limit_for("traceprop_frames/cli.py") == 90
    )
