"""Install a wrapper as pandas' own function with one more line, so untraced calls never meet it.

A Python wrapper around a pandas method costs every call one more frame (0.05-0.2 us: 5 % of
``s[i]``), shows pandas one more frame (warnings with a fixed ``stacklevel``, the caller frame of the
chained-assignment check) and holds one more reference (the reference-count check). :func:`patch`
instead compiles pandas' own source of the method again, at pandas' file and line numbers, with one
statement added::

    if <test>: return __tp_hook(<its parameters>)

``<test>`` is the wrapper's own "is there anything to trace here?" check, written as an expression
over the parameters (``self._attrs``: an attribute look-up). An untraced call runs pandas' code in
pandas' frame, as if the library were not imported, at the price of that test. A traced call (the test
is true) goes to the wrapper, which runs the unpatched pandas function.

The statement goes after the docstring, and after pandas' chained-assignment check where the method
opens with one (``sys.getrefcount(self)``), so that check runs in pandas' frame on traced objects too.

A method behind a decorator that returns a wrapper is recompiled inside it (see :func:`patch`). Where the
source cannot be recompiled faithfully (no source, name-mangled attributes, free variables other than
``__class__``) the wrapper itself is installed, as before; :func:`patched` lists which way each took.
"""

from __future__ import annotations
import __future__

import ast
import linecache
import re
import types

import pandas as pd

from traceprop_frames.frames.carrier import LID
from traceprop_frames.frames.traced_values import TRACED

_NDFRAME = pd.core.generic.NDFrame


def _maybe_stat(*values) -> bool:
    """Whether any of ``values`` can carry a statistic (cheap: types and ``attrs`` only)."""
    for v in values:
        if isinstance(v, TRACED) or (isinstance(v, _NDFRAME) and v._attrs) or type(v) in (dict, list, tuple):
            return True
    return False


# Names a test may use (closure cells of the recompiled function, never written into pandas' modules).
ENV = {
    "__tp_LID": LID,
    "__tp_MI": pd.MultiIndex,
    "__tp_NDF": _NDFRAME,
    "__tp_TRACED": TRACED,
    "__tp_maybe": _maybe_stat,
    "__tp_SUSPECT": frozenset((*TRACED, dict, list, tuple)),
}


def traced(target: str) -> str:
    """The test "``target`` holds lineage keys or carries attrs" (``carrier.untouched``, negated)."""
    return f"{target}._attrs or (__tp_i := {target}.index)._name == __tp_LID or __tp_i.__class__ is __tp_MI"


def carries(value: str) -> str:
    """The test "``value`` is a traced scalar or a pandas object with attrs"."""
    return f"isinstance({value}, __tp_TRACED) or (isinstance({value}, __tp_NDF) and {value}._attrs)"


_log: dict[str, str] = {}
CODES: dict = {}  # code object -> recompiled function (frames.transparent looks callers up)


def patched() -> dict:
    """``{"Series.sum": "inline" | "wrapper (why)"}`` for every method patched since import."""
    return dict(_log)


def patch(owner, name: str, make_hook, test: str):
    """Install ``make_hook(current)`` on ``owner.name`` behind ``test`` (see the module docstring); returns
    a function that undoes it.

    A method behind one of pandas' decorators that returns a wrapper (``functools.wraps``: a keyword
    deprecation) is patched inside it: the decorator's cell that holds the method gets the recompiled
    one, so the decorator still runs first. Patching a method patched before keeps both tests: the new
    hook wraps the previous function, whose own test still guards its hook. An inherited method is
    patched as a copy on ``owner`` (the base class, shared with e.g. ``Index``, is left alone)."""
    label = f"{getattr(owner, '__name__', owner)}.{name}"
    current = owner.__dict__.get(name)  # None: inherited; the patched copy goes on owner only
    cell = _inner_cell(current)
    target = cell.cell_contents if cell is not None else current
    if target is None:
        target = getattr(owner, name)
    try:
        new = _recompile(getattr(target, "_tp_pristine", target), (*getattr(target, "_tp_tests", ()), test),
                         make_hook(target))  # fmt: skip
    except _Refused as why:
        _log[label] = f"wrapper ({why})"
        setattr(owner, name, make_hook(getattr(owner, name)))
        return lambda: setattr(owner, name, current) if current is not None else delattr(owner, name)
    _log[label] = "inline"
    if cell is not None:
        cell.cell_contents = new
        return lambda: setattr(cell, "cell_contents", target)
    setattr(owner, name, new)
    return lambda: setattr(owner, name, current) if current is not None else delattr(owner, name)


def _inner_cell(fn):
    """The closure cell of a ``functools.wraps`` decorator's wrapper that holds the function it wraps."""
    inner = getattr(fn, "__wrapped__", None)
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            held = cell.cell_contents
        except ValueError:
            continue
        if inner is not None and (held is inner or getattr(held, "_tp_pristine", None) is inner):
            return cell
    return None


class _Refused(Exception):
    pass


_MANGLED = re.compile(r"\b__[A-Za-z_]\w*")


def _last_line(code) -> int:
    """The last source line with bytecode in ``code`` or the functions defined in it."""
    lines = [line for _, _, line in code.co_lines() if line is not None]
    lines += [_last_line(c) for c in code.co_consts if isinstance(c, types.CodeType)]
    return max(lines, default=code.co_firstlineno)


def _function_ast(fn) -> ast.FunctionDef:
    """The ``def`` of ``fn`` parsed from its file, at the file's line numbers (without ``inspect``: its
    tokenizer would cost ~10 ms a method at import)."""
    if type(fn) is not types.FunctionType or hasattr(fn, "__wrapped__"):
        raise _Refused("not a plain function")
    code = fn.__code__
    if set(code.co_freevars) - {"__class__"}:
        raise _Refused("free variables")
    lines = linecache.getlines(code.co_filename)
    first, last = code.co_firstlineno, _last_line(code)
    if not lines or last > len(lines):
        raise _Refused("no source")
    indented = lines[first - 1][:1] in (" ", "\t")
    head = "\n" * (first - 2) + "if 1:\n" if indented else "\n" * (first - 1)
    for end in range(last, min(last + 40, len(lines)) + 1):  # a statement may end below its last code line
        src = "".join(lines[first - 1 : end])
        try:
            tree = ast.parse(head + src)
            break
        except SyntaxError:
            continue
    else:
        raise _Refused("source does not parse")
    node = tree.body[0].body[0] if indented else tree.body[0]
    if not isinstance(node, ast.FunctionDef) or node.name != code.co_name or "__tp_fn" in src:
        raise _Refused("source is not the function")
    body = "".join(lines[node.lineno - 1 : end])  # decorators run outside the class body: not mangled
    if any(not m.group().endswith("__") for m in _MANGLED.finditer(body)):
        raise _Refused("name mangling")
    node.src = src
    return node


def _forward(node: ast.FunctionDef) -> str:
    """``node``'s parameters as call arguments: the first positionally, the rest by keyword (positionally
    when a ``*args`` follows them)."""
    a = node.args
    named = [p.arg for p in (*a.posonlyargs, *a.args)]
    if a.vararg or a.posonlyargs:
        parts = [*named, f"*{a.vararg.arg}"] if a.vararg else list(named)
    else:
        parts = named[:1] + [f"{p}={p}" for p in named[1:]]
    parts += [f"{p.arg}={p.arg}" for p in a.kwonlyargs]
    if a.kwarg:
        parts.append(f"**{a.kwarg.arg}")
    return ", ".join(parts)


def _kept(part: str, rewritten: list[str]) -> str:
    """One forwarded argument (``p``, ``p=p``, ``*p``, ``**p``) reading the caller's kept value of ``p``
    when pandas' code rewrites it before the hook."""
    name = part.split("=")[0].lstrip("*")
    if name not in rewritten:
        return part
    return f"{name}=__tp_given_{name}" if "=" in part else part.replace(name, f"__tp_given_{name}")


def _rest(node: ast.FunctionDef) -> str:
    """``{rest}`` in a test: "a parameter but the first may carry a statistic", inline per parameter
    (a traced scalar, a dict/list/tuple, a pandas object with attrs); ``*args``/``**kwargs`` through
    ``__tp_maybe``."""
    a = node.args
    names = [p.arg for p in (*a.posonlyargs, *a.args)][1:] + [p.arg for p in a.kwonlyargs]
    parts = [f"{p}.__class__ in __tp_SUSPECT or (isinstance({p}, __tp_NDF) and {p}._attrs)" for p in names]
    parts += [f"({a.vararg.arg} and __tp_maybe(*{a.vararg.arg}))"] if a.vararg else []
    parts += [f"({a.kwarg.arg} and __tp_maybe(*{a.kwarg.arg}.values()))"] if a.kwarg else []
    return " or ".join(parts) or "False"


def _insert_at(node: ast.FunctionDef) -> tuple[int, int, list[str]]:
    """(after the docstring, after pandas' leading chained-assignment check (``sys.getrefcount``), the
    parameters pandas' code rewrites in between: pandas 2.2's ffill turns an omitted ``downcast`` into
    ``None``, which passed on would warn about a keyword the caller never wrote)."""
    body = node.body
    at = 1 if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) else 0
    lines = node.src.splitlines()
    first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
    start = at
    for i, stmt in enumerate(body[:7]):  # after validation only (pandas 2.2 and 3.1: within 6)
        if any("getrefcount" in x for x in lines[stmt.lineno - first : stmt.end_lineno - first + 1]):
            at = i + 1
    a = node.args
    params = {p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg) if p is not None}
    stores = {
        n.id
        for st in body[start:at]
        for n in ast.walk(st)
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
    }
    return start, at, sorted(stores & params)


_factories: dict = {}  # (pristine function, tests) -> (compiled factory, cell names)


def _recompile(fn, tests: tuple, hook):
    key = (fn, tests)
    if key not in _factories:
        _factories[key] = _compile(fn, tests)
    code, cells = _factories[key]
    namespace: dict = {}
    exec(code, fn.__globals__, namespace)  # defines __tp_factory only; pandas' globals are read, not written
    env = dict(ENV, __tp_hook=hook)
    if "__class__" in cells:
        env["__class__"] = fn.__closure__[fn.__code__.co_freevars.index("__class__")].cell_contents
    new = namespace["__tp_factory"](*(env[c] for c in cells))
    new.__code__ = new.__code__.replace(co_name=fn.__code__.co_name, co_qualname=fn.__code__.co_qualname)
    new.__defaults__, new.__kwdefaults__ = fn.__defaults__, fn.__kwdefaults__
    new.__doc__, new.__name__, new.__qualname__ = fn.__doc__, fn.__name__, fn.__qualname__
    new.__module__ = fn.__module__
    new.__dict__.update(fn.__dict__)
    new._tp_pristine, new._tp_tests = fn, tests
    CODES[new.__code__] = new
    return new


def _located(node, line: int):
    for sub in ast.walk(node):
        if "lineno" in sub._attributes:
            sub.lineno = sub.end_lineno = line
            sub.col_offset = sub.end_col_offset = 0
    return node


def _compile(fn, tests: tuple):
    """The factory ``def __tp_factory(<cells>): def __tp_fn(...): <prologue; pandas' body>``, compiled
    at pandas' file and line numbers."""
    node = _function_ast(fn)
    first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
    node.decorator_list = []
    node.name = "__tp_fn"  # not the method's name: the body may call a module function of that name
    a = node.args  # defaults are pandas' own objects (set by _recompile), not evaluated again here
    a.defaults = [_located(ast.Constant(None), node.lineno) for _ in a.defaults]
    a.kw_defaults = [None if d is None else _located(ast.Constant(None), node.lineno) for d in a.kw_defaults]
    start, at, rewritten = _insert_at(node)
    cond = " or ".join(f"({t})" for t in tests).replace("{rest}", _rest(node))
    params = {p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg) if p is not None}
    used = {
        n.id for n in ast.walk(ast.parse(cond)) if isinstance(n, ast.Name) and not n.id.startswith("__tp")
    }
    if used - params - {"isinstance", "type"}:
        raise _Refused(f"test names {sorted(used - params)}, not parameters")
    call = ", ".join(_kept(part, rewritten) for part in _forward(node).split(", "))
    stmt = ast.parse(f"if {cond}:\n    return __tp_hook({call})").body[0]
    line = node.body[at].lineno if at < len(node.body) else node.body[-1].lineno
    node.body.insert(at, _located(stmt, line))
    for p in rewritten:  # the caller's value, kept before pandas rewrites it (one local store)
        node.body.insert(start, _located(ast.parse(f"__tp_given_{p} = {p}").body[0], node.body[start].lineno))
    cells = ["__tp_hook", *ENV, *(["__class__"] if "__class__" in fn.__code__.co_freevars else [])]
    factory = ast.parse(f"def __tp_factory({', '.join(cells)}):\n    pass").body[0]
    factory.body = [node, ast.Return(ast.Name("__tp_fn", ast.Load()))]
    _located(factory.args, first)
    _located(factory.body[1], first)
    factory.lineno, factory.end_lineno, factory.col_offset, factory.end_col_offset = first, first, 0, 0
    flags = __future__.annotations.compiler_flag
    code = compile(ast.Module([factory], []), fn.__code__.co_filename, "exec", flags=flags, dont_inherit=True)
    return code, cells
