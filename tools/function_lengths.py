"""Function lengths measured with ``ast``; the limits the package keeps: 50 lines in
``traceprop_frames/unlearn/``, 90 elsewhere.

A function's length is its lines from ``def`` (decorators excluded) to the last line of its body, less
its docstring's lines: the numpydoc a public function must carry (parameters, returns, raises, a running
example) is documentation, not code to read through. ``--with-docstrings`` counts them too.

    python tools/function_lengths.py            # the functions over the limits; exit 1 if any
    python tools/function_lengths.py --top 20   # the longest functions, with or without a limit broken

``tests/test_function_lengths.py`` runs the check. Generated modules (``_certificate_validator.py``) are
left out.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "traceprop_frames"
GENERATED = {"traceprop_frames/unlearn/_certificate_validator.py"}
LIMITS = (("traceprop_frames/unlearn/", 50), ("traceprop_frames/", 90))  # first matching prefix wins


def limit_for(rel: str) -> int:
    return next(n for prefix, n in LIMITS if rel.startswith(prefix))


def functions(root: Path = PACKAGE, docstrings: bool = False):
    """``(relative path, qualified name, first line, length)`` of every function and method."""
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).as_posix()
        if rel in GENERATED:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
        yield from _walk(tree, rel, "", docstrings)


def length(fn: ast.FunctionDef | ast.AsyncFunctionDef, docstrings: bool = False) -> int:
    """Lines from ``def`` to the end of the body, less the docstring's unless ``docstrings``."""
    n = fn.end_lineno - fn.lineno + 1
    first = fn.body[0]
    if (
        not docstrings
        and isinstance(first, ast.Expr)
        and isinstance(getattr(first, "value", None), ast.Constant)
    ):
        if isinstance(first.value.value, str):
            n -= first.end_lineno - first.lineno + 1
    return n


def _walk(node, rel: str, prefix: str, docstrings: bool):
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            name = prefix + child.name
            yield rel, name, child.lineno, length(child, docstrings)
            yield from _walk(child, rel, name + ".", docstrings)
        elif isinstance(child, ast.ClassDef):
            yield from _walk(child, rel, prefix + child.name + ".", docstrings)
        else:
            yield from _walk(child, rel, prefix, docstrings)


def over_limits(root: Path = PACKAGE, docstrings: bool = False) -> list[tuple[str, str, int, int, int]]:
    """The functions longer than their limit: ``(path, name, line, length, limit)``."""
    found = functions(root, docstrings)
    return [(r, n, ln, size, limit_for(r)) for r, n, ln, size in found if size > limit_for(r)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--top", type=int, default=0, help="list the N longest functions instead")
    ap.add_argument("--with-docstrings", action="store_true", help="count docstring lines too")
    args = ap.parse_args()
    if args.top:
        found = functions(docstrings=args.with_docstrings)
        for r, n, ln, size in sorted(found, key=lambda f: -f[3])[: args.top]:
            print(f"{size:>4}  {r}:{ln}  {n}  (limit {limit_for(r)})")
        return 0
    bad = over_limits(docstrings=args.with_docstrings)
    for r, n, ln, size, limit in bad:
        print(f"{r}:{ln}: {n} is {size} lines (limit {limit})")
    print(f"{len(bad)} function(s) over the limits")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
