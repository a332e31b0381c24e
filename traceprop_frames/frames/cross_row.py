"""Sufficient lineage for pandas calls that read *other* rows but keep the index.

``s.shift(1)``, ``s.cumsum()``, ``s.rolling(3)``, ``df.groupby(k)[c].transform("sum")`` ... return their
result under the input's index, so the ``tp_lid`` keys ride along and, unaided, each result row would
resolve to its own source row only — silently too little. pandas has no hook for this, so this module
wraps exactly those methods (installed on ``import traceprop_frames``; :func:`uninstall` removes them,
:func:`set_mode` ``("raise")`` makes them refuse instead). Each wrapper sits behind a test inside
pandas' own method (:mod:`frames.inline`): an untraced call costs that test (an attribute and the
index's name) and runs pandas' code in pandas' frame; the row-preserving calls (filters, sorts,
``assign``, arithmetic) are not wrapped.

On a traced object a wrapper runs the pandas call unchanged, then records what each result row read as
a shared set (:meth:`RowLineage.shared_sets`: prefixes and windows are overlapping segments of one
ordered pool, so ``cumsum`` costs O(n), not O(n^2)) and adds it to the rows' lineage through
:func:`carrier.add_context`. Because pandas aligns the result with every frame that holds the same keys
(``df["lag"] = s.shift(1)``), the dependency is recorded on the rows themselves: every frame holding
them sees it — an over-approximation for frames that never use the derived column, never an
under-approximation. ``sources(direct=True)`` still gives a row's own source rows. Reductions
(``s.sum()``, ``df.mean()``) and where their values meet rows are :mod:`frames.reductions`, installed and
removed with these wrappers.

Rules (one function per kind; a set lists positions of the input, in its order):

=================================================  ==================================================
``shift``/``diff`` (periods p)                      rows i-p..i (shift is positional: the rows between
                                                    decide which row lands on i); within the group
``cumsum``/``cumprod``/``cummax``/``cummin``,       rows 0..i (the group's rows up to i)
``expanding``, ``ewm``, ``pct_change``, ``ffill``
``bfill``                                           rows i..n-1 (the group's rows from i)
``rolling``                                         the window pandas' own window indexer gives row i
``rank``, ``transform``, ``apply``, ``agg`` (when   every row (every row of the group)
the result keeps the rows), ``interpolate``,
``duplicated``, ``argsort``, ``pd.qcut``, ``pd.cut``
=================================================  ==================================================
"""

from __future__ import annotations

import functools
import inspect
import threading

import numpy as np
import pandas as pd
from pandas._libs import lib
from pandas.core.groupby import DataFrameGroupBy, SeriesGroupBy
from pandas.core.groupby.groupby import GroupBy

from traceprop_frames.errors import LineageLostError
from traceprop_frames.frames import alignment, inline, reductions, transparent
from traceprop_frames.frames.carrier import ATTRS_KEY, LID, add_context, resolve, untouched
from traceprop_frames.lineage import OpNode
from traceprop_frames.lineage.refs import AllRefs, CodeRefs, EachRefs
from traceprop_frames.lineage.rowsets import _stable_group_order

_EMPTY = np.zeros(0, dtype=np.int64)

_state = threading.local()
_mode = ["context"]
_installed: list = []  # undo functions (frames.inline.patch)


def set_mode(mode: str) -> None:
    """``"context"`` (default): cross-row calls on traced objects add shared lineage sets;
    ``"raise"``: they raise :class:`LineageLostError` instead.

    Examples
    --------
    >>> import pandas as pd, traceprop_frames as tpf
    >>> df = tpf.track(pd.DataFrame({"bal": [1.0, 2.0, 4.0]}), "doc_bal")
    >>> df["run"] = df["bal"].cumsum()
    >>> df.tp.sources(rows=[1])["doc_bal"].tolist(), df.tp.sources(rows=[1], direct=True)["doc_bal"].tolist()
    ([0, 1], [1])
    >>> set_mode("raise")
    >>> df["bal"].shift(1)
    Traceback (most recent call last):
    ...
    traceprop_frames.errors.LineageLostError: Series.shift reads other rows of a traced frame ...
    >>> set_mode("context")
    """
    if mode not in ("context", "raise"):
        raise ValueError(f"mode must be 'context' or 'raise', got {mode!r}")
    _mode[0] = mode


# ---------------------------------------------------------------------------------------------- sets
def _row_keys(obj) -> np.ndarray | None:
    idx = obj.index
    if idx.name == LID:
        return np.asarray(idx, dtype=np.int64)
    if isinstance(idx, pd.MultiIndex) and LID in idx.names:
        return np.asarray(idx.get_level_values(LID), dtype=np.int64)
    return None


_DETACHED = alignment.DETACHED  # set by the insert wrapper when reset_index() moves the keys


def _detached(obj) -> bool:
    """A traced frame whose keys left the index (``reset_index()``), or a column of one: its rows cannot
    be attributed. (A frame whose keys a plain aggregation dropped is simply untraced.)"""
    return (isinstance(obj, pd.DataFrame) and LID in obj.columns) or bool(obj.attrs.get(_DETACHED))


def _is_traced(obj) -> bool:
    if not isinstance(obj, (pd.Series, pd.DataFrame)):
        return False
    idx = obj.index
    return idx.name == LID or isinstance(idx, pd.MultiIndex) or ATTRS_KEY in obj.attrs


def _group_layout(codes: np.ndarray | int):
    """Members in group order (stable) and, per sorted position k, its group's [start, end).

    ``codes`` may be a row count instead: one group of all rows, in order (no sort)."""
    if isinstance(codes, (int, np.integer)):
        k = np.arange(codes, dtype=np.int64)
        return k, k, np.zeros(codes, dtype=np.int64), np.full(codes, codes, dtype=np.int64)
    keep = codes >= 0
    if not keep.any():
        return (_EMPTY,) * 4
    n_groups = int(codes.max()) + 1
    if keep.all():
        order = _stable_group_order(codes, n_groups)  # linear-time radix passes
        counts = np.bincount(codes, minlength=n_groups)
    else:
        members = np.flatnonzero(keep)
        order = members[_stable_group_order(codes[members], n_groups)]
        counts = np.bincount(codes[members], minlength=n_groups)
    ends = np.cumsum(counts)
    sc = codes[order]
    k = np.arange(len(order), dtype=np.int64)
    gs, ge = (ends - counts)[sc], ends[sc]
    return order, k, gs, ge


def _offset_sets(n: int, p: int):
    """The "offset" rule over one group of all n rows, in four array passes: row k reads row k - p and
    the rows between (rows k-p..k, or k..k-p for p < 0); rows whose k - p lies outside 0..n-1 read none."""
    k = np.arange(n, dtype=np.int64)
    starts, ends = k - max(p, 0), k + 1 + max(-p, 0)
    lo, hi = min(max(p, 0), n), max(min(n + p, n), 0)  # valid rows: lo <= k < hi
    set_of_row = k.copy()
    for part in (slice(0, lo), slice(max(hi, lo), n)):
        starts[part] = ends[part] = k[part]
        set_of_row[part] = -1
    return k, starts, ends, set_of_row


def _column_plan(kind: str, n: int, arg=None):
    """(m, layout, refs) for a rule over all n rows in order. ``layout()`` gives the sets' (order,
    starts, ends), computed only when a reader asks; ``refs(base)`` says which set each row refers to,
    in O(1): set k of an offset / prefix / suffix / window is the rows row k read, and an "all" is one
    set for every row."""
    if kind == "all":
        return 1, lambda: (np.arange(n, dtype=np.int64), [0], [n]), lambda base: AllRefs(n, [base])
    if kind == "offset":
        p = int(arg)
        lo, hi = min(max(p, 0), n), max(min(n + p, n), 0)
        return n, lambda: _offset_sets(n, p)[:3], lambda base: EachRefs(n, base, lo, hi)

    def layout():
        k = np.arange(n, dtype=np.int64)
        if kind == "prefix":
            return k, np.zeros(n, dtype=np.int64), k + 1
        if kind == "suffix":
            return k, k, np.full(n, n, dtype=np.int64)
        if kind == "window":
            return k, np.maximum(k - int(arg) + 1, 0), k + 1
        raise ValueError(kind)  # pragma: no cover - the rule table names only the kinds above

    return n, layout, lambda base: EachRefs(n, base)


def _group_plan(kind: str, codes: np.ndarray, arg=None):
    """(m, layout, refs) for a rule within the groups ``codes`` (-1: no group). "all" is one set per
    group (each stored once, a row refers to its group's); prefix / suffix / window are one set per row
    (set i: what row i read), laid out in the group order when first asked."""
    n = len(codes)
    if kind == "all":
        m = int(codes.max()) + 1 if n else 0

        def layout_all():
            order, _, gs, ge = _group_layout(codes)
            starts, ends = np.zeros(m, dtype=np.int64), np.zeros(m, dtype=np.int64)
            sc = codes[order]
            starts[sc], ends[sc] = gs, ge
            return order, starts, ends

        return m, layout_all, lambda base: CodeRefs(base, codes, m)
    if kind == "offset":  # which rows read a row depends on their place in the group: laid out now
        order, k, gs, ge = _group_layout(codes)
        j = k - int(arg)  # the row read; re-running needs the rows between too (shift is positional)
        valid = (j >= gs) & (j < ge)
        starts = np.where(valid, np.minimum(j, k), k)
        ends = np.where(valid, np.maximum(j, k) + 1, k)
        set_of_row = np.full(n, -1, dtype=np.int64)
        set_of_row[order] = np.where(valid, k, -1)
        return len(k), lambda: (order, starts, ends), lambda base: CodeRefs(base, set_of_row, len(k))

    def layout():
        order, k, gs, ge = _group_layout(codes)
        if kind == "prefix":
            s, e = gs, k + 1
        elif kind == "suffix":
            s, e = k, ge
        elif kind == "window":
            s, e = np.maximum(gs, k - int(arg) + 1), k + 1
        else:  # pragma: no cover - the rule table names only the kinds above
            raise ValueError(kind)
        starts, ends = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
        starts[order], ends[order] = s, e  # set i: row i's segment (rows without a group: empty)
        return order, starts, ends

    def refs(base):
        if n and codes.min() >= 0:
            return EachRefs(n, base)
        return CodeRefs(base, np.where(codes >= 0, np.arange(n, dtype=np.int64), -1), n)

    return n, layout, refs


def _record(obj, plan, label: str) -> None:
    m, layout, refs = plan
    idx = obj.index
    keys = idx if isinstance(idx, pd.RangeIndex) else _row_keys(obj)  # a RangeIndex: add_context's O(1) case
    lin = resolve(obj)
    block = lin.deferred_sets(m, layout, label)
    add_context(keys, refs(block.base), block, OpNode(f"pandas.{label}", {"rows": len(obj)}))


def _explicit(order, starts, ends, set_of_row):
    """A plan from sets computed already (fill sources, pandas' own window bounds)."""
    m = len(starts)
    if len(set_of_row) == m and m and set_of_row[0] == 0 and np.array_equal(set_of_row, np.arange(m)):
        return m, lambda: (order, starts, ends), lambda base: EachRefs(m, base)
    return m, lambda: (order, starts, ends), lambda base: CodeRefs(base, set_of_row, m)


def _plain(obj, kind: str, label: str, arg=None) -> None:
    _record(obj, _column_plan(kind, len(obj), arg), label)


def _fill_sources(obj, result, forward: bool, label: str) -> None:
    """ffill/bfill: row i depends on the row each filled value was copied from (per column)."""
    before = np.asarray(obj.isna()).reshape(len(obj), -1)
    after = np.asarray(result.isna()).reshape(len(obj), -1)
    n = len(obj)
    pos = np.arange(n, dtype=np.int64)[:, None]
    if forward:
        src = np.maximum.accumulate(np.where(~before, pos, -1), axis=0)
    else:
        src = np.minimum.accumulate(np.where(~before, pos, n)[::-1], axis=0)[::-1]
    filled = before & ~after
    rows, cols = np.nonzero(filled)  # row-major: grouped by row
    order = src[rows, cols]
    counts = np.bincount(rows, minlength=n)
    ends = np.cumsum(counts)
    starts = ends - counts
    set_of_row = np.where(counts > 0, np.arange(n), -1)
    _record(obj, _explicit(order.astype(np.int64), starts, ends, set_of_row), label)


def _window_bounds(r, n: int):
    """pandas' own window bounds for a Rolling/Window object (start, end per output row)."""
    indexer = r._get_window_indexer()
    start, end = indexer.get_window_bounds(
        num_values=n, min_periods=r.min_periods, center=r.center, closed=r.closed, step=r.step
    )
    return np.asarray(start, dtype=np.int64), np.asarray(end, dtype=np.int64)


# ---------------------------------------------------------------------------------------------- rules
def _axis0(ba) -> bool:
    axis = ba.get("axis", 0)  # pandas' default (0, None or lib.no_default), passed on by frames.inline
    return axis is lib.no_default or axis in (0, "index", None)


def _periods(ba):
    p = ba.get("periods", 1)
    return p if isinstance(p, (int, np.integer)) else None


def _frame_rule(name: str):
    """Rule for a Series/DataFrame method: (obj, result, bound args) -> None."""

    def rule(obj, result, ba) -> None:
        if not _axis0(ba):
            return
        if name in ("shift", "diff"):
            if ba.get("freq") is not None:
                return  # shifts the index, not the values
            p = _periods(ba)
            _plain(obj, "offset" if p is not None else "all", name, p)
        elif name in ("cumsum", "cumprod", "cummax", "cummin", "expanding", "ewm", "pct_change"):
            _plain(obj, "prefix", name)
        elif name in ("ffill", "bfill"):
            out = obj if ba.get("inplace") else result
            _fill_sources(obj, out, name == "ffill", name)
        elif name == "fillna":
            method = ba.get("method")
            if method in ("ffill", "pad"):
                _plain(obj, "prefix", "fillna(ffill)")
            elif method in ("bfill", "backfill"):
                _plain(obj, "suffix", "fillna(bfill)")
        elif name == "rolling":
            try:
                start, end = _window_bounds(result, len(obj))
            except (AttributeError, TypeError, ValueError):  # pandas internals moved: be conservative
                _plain(obj, "all", "rolling")
                return
            set_of_row = np.full(len(obj), -1, dtype=np.int64)
            set_of_row[np.arange(0, len(obj), result.step or 1)] = np.arange(len(start))
            _record(obj, _explicit(np.arange(len(obj), dtype=np.int64), start, end, set_of_row), "rolling")
        elif name in ("apply", "agg", "aggregate", "transform") and (
            not isinstance(result, (pd.Series, pd.DataFrame)) or _row_keys(result) is None
        ):
            return reductions.finish(obj, result, name)  # reduced: a statistic of every row
        else:
            _plain(obj, "all", name)

    return rule


def _window(ba):
    args = ba.get("args") or ()
    return args[0] if args else ba.get("window")


def _group_rule(name: str):
    def rule(gb, result, ba) -> None:
        if result is not None and isinstance(result, (pd.Series, pd.DataFrame)) and _row_keys(result) is None:
            if name not in ("rolling", "expanding", "ewm"):
                return  # reduced: one row per group, no row keys (rebuild it with df.tp.groupby)
        obj = gb.obj
        codes = np.asarray(gb.ngroup().fillna(-1), dtype=np.int64)
        if name in ("shift", "diff"):
            p = _periods(ba)
            kind, arg = ("offset", p) if p is not None and ba.get("freq") is None else ("all", None)
        elif name in ("cumsum", "cumprod", "cummax", "cummin", "cumcount", "ffill", "expanding", "ewm",
                      "pct_change"):  # fmt: skip
            kind, arg = "prefix", None
        elif name == "bfill":
            kind, arg = "suffix", None
        elif name == "rolling" and isinstance(_window(ba), (int, np.integer)) and not ba.get("center"):
            kind, arg = "window", _window(ba)
        else:
            kind, arg = "all", None
        _record(obj, _group_plan(kind, codes, arg), f"groupby.{name}")

    return rule


_FRAME_METHODS = (
    "shift", "diff", "pct_change", "cumsum", "cumprod", "cummax", "cummin", "rank", "ffill", "bfill",
    "fillna", "interpolate", "duplicated", "rolling", "expanding", "ewm", "transform", "apply", "agg",
    "aggregate", "argsort",
)  # fmt: skip
_GROUP_METHODS = (
    "shift", "diff", "pct_change", "cumsum", "cumprod", "cummax", "cummin", "cumcount", "rank", "ffill",
    "bfill", "fillna", "transform", "apply", "rolling", "expanding", "ewm",
)  # fmt: skip


def _wrap(owner: type, name: str, rule, get_obj) -> None:
    test = inline.traced("self" if get_obj is None else "self.obj")
    _installed.append(inline.patch(owner, name, lambda orig: _hook(orig, owner, name, rule, get_obj), test))


def _hook(orig, owner: type, name: str, rule, get_obj):
    sig = inspect.signature(orig)
    var_kw = next((p.name for p in sig.parameters.values() if p.kind is p.VAR_KEYWORD), None)
    plain_fill = name == "fillna" and get_obj is not _group_obj  # method= is keyword-only in pandas 2
    in_place = name in _IN_PLACE and get_obj is not _group_obj  # pandas checks these for chained assignment

    @functools.wraps(orig)
    def wrapper(self, *args, **kwargs):
        if in_place and kwargs.get("inplace"):
            _held = transparent.chained_method(self)  # noqa: F841  (see transparent)
        obj = self if get_obj is None else get_obj(self)
        if untouched(obj) or getattr(_state, "busy", False) or not _is_traced(obj):
            return orig(self, *args, **kwargs)  # untraced
        if plain_fill and kwargs.get("method") is None:
            return orig(self, *args, **kwargs)  # fillna(value): row-preserving
        idx = obj.index
        if idx.name != LID and not (isinstance(idx, pd.MultiIndex) and LID in idx.names):
            if _detached(obj):
                raise LineageLostError(
                    f"{type(self).__name__}.{name} reads other rows of a traced frame whose tp_lid keys were "
                    "moved to a column (reset_index()), so its result rows cannot be attributed. Call "
                    ".set_index('tp_lid') first."
                )
            return orig(self, *args, **kwargs)
        ba = sig.bind(self, *args, **kwargs).arguments
        if var_kw is not None:
            ba.update(ba.pop(var_kw, {}) or {})
        reductions.absorb(obj, reductions.closure_stat(args, kwargs), f"{name}(function)")
        if owner is pd.Series and name == "apply" and ba.get("by_row", "compat") is not False:
            return orig(self, *args, **kwargs)
        if _mode[0] == "raise":
            raise LineageLostError(
                f"{type(self).__name__}.{name} reads other rows of a traced frame and tpf cross-row mode is "
                "'raise'. Use tpf.frames.cross_row.set_mode('context') to record what each row read."
            )
        _state.busy = True
        try:
            result = orig(self, *args, **kwargs)
            replaced = rule(self if get_obj is _group_obj else obj, result, ba)
            result = result if replaced is None else replaced
        finally:
            _state.busy = False
        return result

    return wrapper


_IN_PLACE = ("fillna", "ffill", "bfill", "interpolate")


def _group_obj(gb):
    return gb.obj


def _cut_wrapper(orig, name: str):
    @functools.wraps(orig)
    def wrapper(x, *args, **kwargs):
        bins = args[0] if args else kwargs.get("bins", kwargs.get("q"))
        reads_column = name == "qcut" or isinstance(bins, (int, np.integer))
        if not isinstance(x, (pd.Series, pd.DataFrame)) or untouched(x) or getattr(_state, "busy", False):
            return orig(x, *args, **kwargs)
        if not _is_traced(x) or _row_keys(x) is None:
            return orig(x, *args, **kwargs)
        if not reads_column:  # explicit bins: computed from statistics (s.quantile(...)) they carry rows
            reductions.absorb(x, reductions.stats_in([bins]), name)
            return orig(x, *args, **kwargs)
        if _mode[0] == "raise":
            raise LineageLostError(f"pd.{name} with computed bins reads the whole traced column")
        _state.busy = True
        try:
            result = orig(x, *args, **kwargs)
            _plain(x, "all", name)
        finally:
            _state.busy = False
        return result

    return wrapper


def _own(owner: type, name: str, base: type, subclasses: tuple) -> bool:
    """Whether to wrap ``owner.name``: defined there, and not a base method that every subclass overrides
    (then it is reached only through a subclass's method, already wrapped: one wrapper per call)."""
    if name not in owner.__dict__:
        return False
    return owner is not base or not all(name in c.__dict__ for c in subclasses)


def install() -> None:
    """Wrap the cross-row pandas methods and the label-matching ones of :mod:`frames.alignment`
    (idempotent)."""
    transparent.install()
    alignment.install()
    if _installed:
        return
    reductions.install(lambda: _mode[0], _state, _detached)
    for owner in (pd.Series, pd.DataFrame, pd.core.generic.NDFrame):
        for name in _FRAME_METHODS:
            if _own(owner, name, pd.core.generic.NDFrame, (pd.Series, pd.DataFrame)) and name != "apply":
                _wrap(owner, name, _frame_rule(name), None)
            elif name == "apply" and owner is not pd.core.generic.NDFrame and name in owner.__dict__:
                _wrap(owner, name, _frame_rule(name), None)
    for owner in (GroupBy, SeriesGroupBy, DataFrameGroupBy):
        for name in _GROUP_METHODS:
            if _own(owner, name, GroupBy, (SeriesGroupBy, DataFrameGroupBy)):
                _wrap(owner, name, _group_rule(name), _group_obj)
    for name in ("cut", "qcut"):
        test = f"isinstance(x, __tp_NDF) and ({inline.traced('x')})"
        _installed.append(inline.patch(pd, name, lambda orig, n=name: _cut_wrapper(orig, n), test))


def uninstall() -> None:
    """Restore plain pandas (cross-row and label-matching calls then silently return row-only lineage
    again: use with care, e.g. to time plain pandas)."""
    while _installed:  # the reverse of install: a method patched twice (fillna) unwinds in order
        _installed.pop()()
    reductions.uninstall()
    alignment.uninstall()
    transparent.uninstall()
