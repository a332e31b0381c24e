"""The package's import graph has no circles, and lineage/ reads nothing above it (static, ast-based).

Every ``import`` counts, including those inside functions: a deferred import only hides a circle from
the interpreter until the function runs. An edge to a package means its ``__init__``; ``from pkg import
mod`` where ``pkg.mod`` is a module is an edge to that module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import traceprop_frames

ROOT = Path(traceprop_frames.__file__).parent
PKG = "traceprop_frames"


def _modules(root: Path = ROOT) -> dict[str, Path]:
    out = {}
    for f in root.rglob("*.py"):
        parts = [PKG, *f.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """``module -> {package modules it imports anywhere in its body}``."""
    mods = _modules(root)
    graph = {}
    for name, f in mods.items():
        deps = set()
        is_pkg = f.name == "__init__.py"
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    up = name.split(".")[: len(name.split(".")) - node.level + (1 if is_pkg else 0)]
                    base = ".".join(up + ([base] if base else []))
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    deps.add(sub if sub in mods else base)
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_lineage_layer_imports_nothing_above_it():
    graph = import_graph()
    # errors, _version and _durable (crash-safe writes) import nothing of the package: the floor below all
    floor = (f"{PKG}.errors", f"{PKG}._version", f"{PKG}._durable")
    assert {m: d for m, d in graph.items() if m in floor and d} == {}
    allowed = (f"{PKG}.lineage", *floor)
    bad = {
        m: sorted(d for d in deps if not d.startswith(allowed))
        for m, deps in graph.items()
        if m.startswith(f"{PKG}.lineage")
    }
    assert {m: d for m, d in bad.items() if d} == {}


def test_checker_sees_a_circle_hidden_in_a_function(tmp_path):
    """The checker itself: a circle through a function-level import is found."""
    pkg = tmp_path / PKG
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text(f"from {PKG}.sub import b\n")
    (pkg / "sub" / "b.py").write_text(f"def f():\n    from {PKG}.sub.a import x\n")
    (pkg / "c.py").write_text("from .sub import a\n")
    g = import_graph(pkg)
    assert g[f"{PKG}.c"] == {f"{PKG}.sub.a"}
    assert cycles(g) == [[f"{PKG}.sub.a", f"{PKG}.sub.b"]]
