"""Reductions of traced rows, and where their values flow back into rows.

``s.sum()``, ``s.mean()``, ``df.std()`` ... read every row of a traced column, and ``s / s.sum()``,
``s - s.mean()``, ``s > s.mean()`` (as a filter), ``s.fillna(s.median())``, ``df["z"] = s.sum()`` or
``(df - df.mean()) / df.std()`` put that value into each row. Unaided, each row would keep its own source
row only — silently too little. This module (installed with :mod:`frames.cross_row`, removed by its
``uninstall``) makes a reduction of a traced object carry the rows it read, and records that set as a
shared set (stored once, like ``rank``'s "every row of the column") on the rows it meets:

- a scalar comes back as a traced value (:mod:`frames.traced_values`: ``TracedFloat``, ``TracedInt``,
  ``TracedStr``), which keeps its set through arithmetic;
- a reduction that returns a Series of statistics (``df.mean()``, ``s.quantile([.1, .9])``,
  ``s.agg(["sum", "mean"])``) carries the set in ``attrs``; arithmetic between statistics unions it, and
  ``m["x"]`` / ``m.loc["x"]`` give a :class:`TracedFloat`;
- arithmetic and comparisons with traced rows, ``fillna`` / ``where`` / ``mask`` / ``clip`` / ``replace``
  with such a value (also inside a dict or list), ``df[c] = x``, ``assign``, ``insert``, ``.loc`` /
  ``.iloc`` assignment add the set to the rows of the traced side (every row of that object:
  sufficient, never less). Under ``cross_row.set_mode("raise")`` these raise
  :class:`LineageLostError` instead.

``s.isin(other["k"])`` with ``other`` a traced Series records, for each row that matched, the rows of
``other`` holding its value (the SQL layer's rule for ``x IN (q)``; a non-matching row needs none).
Assigning a full-length array, list or ExtensionArray (no index, so pandas gives no handle) into a traced
frame emits :class:`UntracedValuesWarning` (``set_mode("raise")``: :class:`LineageLostError`).

Untraced objects pay one type or attribute check per wrapped call.
"""

from __future__ import annotations

import functools
import threading
import warnings
import weakref

import numpy as np
import pandas as pd
from pandas.api.extensions import ExtensionArray

from traceprop_frames.errors import LineageLostError, UntracedValuesWarning
from traceprop_frames.frames import inline, transparent
from traceprop_frames.frames.carrier import ATTRS_KEY, LID, _tables_for, add_context, resolve, untouched
from traceprop_frames.frames.traced_values import TRACED, Stat, carry
from traceprop_frames.lineage import OpNode
from traceprop_frames.lineage.context import SetBlock
from traceprop_frames.lineage.refs import AllRefs

STAT_KEY = "traceprop_stat"
_installed: list = []  # undo functions (frames.inline.patch)
_hooks: dict[str, object] = {  # cross_row's mode, thread state (busy flag) and detached test (its install)
    "mode": lambda: "context",
    "state": threading.local(),
    "detached": lambda obj: False,
}


def _busy() -> bool:
    return getattr(_hooks["state"], "busy", False)


def run_busy(fn, *args, **kwargs):
    """Run a pandas call with the wrappers passive (its internal reductions and assignments are not the
    user's)."""
    state = _hooks["state"]
    before = getattr(state, "busy", False)
    state.busy = True
    try:
        return fn(*args, **kwargs)
    finally:
        state.busy = before


# ---------------------------------------------------------------------------------------------- sets
from traceprop_frames.frames.carrier import keyed as _keyed  # noqa: E402  (one definition, in carrier)

_NDFRAME = pd.core.generic.NDFrame
_MULTI = pd.MultiIndex


def _row_keys(obj) -> np.ndarray:
    idx = obj.index
    if idx.name == LID:
        return np.asarray(idx, dtype=np.int64)
    return np.asarray(idx.get_level_values(LID), dtype=np.int64)


_table_sets: dict[int, tuple[weakref.ref, SetBlock]] = {}


def _table_set(lin) -> SetBlock:
    """Every row of a lineage table, one set (cached per table version: look-ups in a loop stay O(1))."""
    hit = _table_sets.get(id(lin))
    if hit is None or hit[0]() is not lin:
        key = id(lin)
        hit = (
            weakref.ref(lin, lambda _r: _table_sets.pop(key, None)),
            _one_set(lin, "rows of a traced table"),
        )
        _table_sets[key] = hit
    return hit[1]


def _one_set(lin, label: str) -> SetBlock:
    """Every row of ``lin`` as one set: its ids in row order are the pool, its rows' references (each
    once) the set's references — no per-row copy, however many statistics the rows already read."""
    ids = lin.ids
    if not lin.has_context:
        return SetBlock(ids, [0], [len(ids)], label)
    ctx = lin.context
    refs = ctx.distinct_refs()  # from the compact layers: rows that read k statistics refer to k sets
    return SetBlock(ids, [0], [len(ids)], label, refs, [0], [len(refs)], tuple(ctx.blocks.values()))


def stat_of_rows(obj, label: str) -> Stat:
    """A statistic over every row of the keyed Series/DataFrame ``obj``: one shared set."""
    return Stat(((_one_set(resolve(obj if isinstance(obj, pd.DataFrame) else obj.to_frame()), label), 0),))


def stat_of(value) -> Stat | None:
    """The statistic ``value`` carries: a traced scalar, an unkeyed Series/DataFrame of statistics, or an
    unkeyed object derived from traced frames that lost its keys (a plain ``groupby().sum()``,
    ``value_counts()``, a ``reset_index()`` frame): then every row of the tables it came from."""
    if isinstance(value, TRACED):
        return value._tp
    if isinstance(value, (pd.Series, pd.DataFrame)) and value.attrs and not _keyed(value):
        st = value.attrs.get(STAT_KEY)
        if st is None and ATTRS_KEY in value.attrs:
            return _tables_stat(value)
        return st
    return None


def _tables_stat(obj) -> Stat | None:
    parts = tuple((_table_set(t.lin), 0) for t in _tables_for(obj))
    return Stat(parts) if parts else None


def closure_stat(args, kwargs) -> Stat | None:
    """Statistics a Python function among ``args``/``kwargs`` can read besides its argument: traced
    scalars, statistics and traced frames in its closure or the globals it names (``transform(lambda g: g
    - df.x.mean())``, ``apply(lambda r: r.x / total, axis=1)``). A traced frame counts as every row of
    its tables. Functions reached only through attributes or other functions are not followed."""
    found = []
    for fn in (*args, *kwargs.values()):
        code = getattr(fn, "__code__", None)
        if code is None:
            continue
        values = []
        for cell in getattr(fn, "__closure__", None) or ():
            try:
                values.append(cell.cell_contents)
            except ValueError:  # an empty cell
                continue
        names = getattr(fn, "__globals__", {})
        values.extend(names[n] for n in code.co_names if n in names)
        for v in values:
            st = _tables_stat(v) if isinstance(v, (pd.Series, pd.DataFrame)) and _keyed(v) else stat_of(v)
            if st is not None:
                found.append(st)
    return found[0].union(*found[1:]) if found else None


def stats_in(values) -> Stat | None:
    """Union of the statistics in ``values`` (scalars, Series, and one level of dicts/lists/tuples)."""
    found = []
    for v in values:
        st = stat_of(v)
        if st is not None:
            found.append(st)
        elif isinstance(v, dict):
            found.extend(s for s in map(stat_of, v.values()) if s is not None)
        elif isinstance(v, (list, tuple)):
            found.extend(s for s in map(stat_of, v) if s is not None)
    return found[0].union(*found[1:]) if found else None


def _mark(obj, st: Stat):
    obj.attrs = {**obj.attrs, STAT_KEY: st}  # a new dict: never write into a dict pandas shares
    return obj


def attach(target, st: Stat, call: str) -> None:
    """Record that every row of the keyed ``target`` read the rows of ``st``."""
    if _hooks["mode"]() == "raise":
        raise LineageLostError(
            f"{call} brings a statistic of traced rows into the rows of a traced frame and tpf cross-row "
            "mode is 'raise'. Use tpf.frames.cross_row.set_mode('context') to record the rows it read."
        )
    idx = target.index
    keys = (
        idx if isinstance(idx, pd.RangeIndex) else _row_keys(target)
    )  # a RangeIndex: add_context's O(1) case
    block = st.block()
    add_context(keys, AllRefs(len(keys), [block.base]), block, OpNode(f"pandas.{call}", {}))


def _detached_refuse(target, call: str) -> None:
    if (
        isinstance(target, (pd.Series, pd.DataFrame))
        and STAT_KEY not in target.attrs
        and ((isinstance(target, pd.DataFrame) and LID in target.columns) or ATTRS_KEY in target.attrs)
    ):
        if _hooks["detached"](target):
            raise LineageLostError(
                f"{call} brings a statistic of traced rows into a traced frame whose tp_lid keys were moved "
                "to a column (reset_index()), so the rows cannot be attributed. Call .set_index('tp_lid') first."
            )


def absorb(target, st: Stat | None, call: str):
    """``target`` meets statistic ``st``: attach it to traced rows, or mark a result of statistics."""
    if st is None or _busy():
        return
    if _keyed(target):
        attach(target, st, call)
    else:
        _detached_refuse(target, call)


# ---------------------------------------------------------------------------------------------- scalars
# ---------------------------------------------------------------------------------------------- wrappers
_REDUCTIONS = (
    "sum", "mean", "median", "std", "var", "min", "max", "prod", "product", "count", "quantile", "nunique",
    "sem", "skew", "kurt", "kurtosis", "mode", "describe", "corr", "cov", "corrwith",
)  # fmt: skip


def _reduction_wrapper(orig, name: str):
    @functools.wraps(orig)
    def wrapper(self, *args, **kwargs):
        if not self._attrs:  # untouched(self), inlined
            idx = self.index
            if idx._name != LID and not (isinstance(idx, _MULTI) and LID in idx._names):
                return orig(self, *args, **kwargs)
        if _busy():
            return orig(self, *args, **kwargs)
        if _keyed(self):
            return finish(self, run_busy(orig, self, *args, **kwargs), name)
        st = stat_of(self)  # a statistic of statistics (df.mean().sum())
        result = orig(self, *args, **kwargs)
        if st is not None:
            return (
                carry(result, st) if not isinstance(result, (pd.Series, pd.DataFrame)) else _mark(result, st)
            )
        return result

    return wrapper


def finish(obj, result, name: str):
    """The result of reducing the keyed ``obj``: a traced scalar, or statistics carrying their rows."""
    if isinstance(result, (pd.Series, pd.DataFrame)) and _keyed(result):
        return result  # row-wise (df.sum(axis=1)): each row read its own values
    try:
        st = stat_of_rows(obj, name)
    except LineageLostError:  # the rows' tables are gone: no lineage to keep (queries on them raise)
        return result
    if isinstance(result, (pd.Series, pd.DataFrame)):
        return _mark(result, st)
    if isinstance(result, (float, int, str, np.floating, np.integer)) and not isinstance(
        result, (bool, np.bool_)
    ):
        return carry(result, st)
    if result is not None and not (isinstance(result, float) and np.isnan(result)):
        warnings.warn(
            f"{type(obj).__name__}.{name} of a traced object returned a {type(result).__name__}, which cannot "
            "carry the rows it read: if it flows back into rows, they lose that dependency. Compute with "
            "pandas on the traced frame (e.g. df.groupby(lambda _: 0)[col].transform(...)).",
            UntracedValuesWarning,
            stacklevel=3,
        )
    return result


def _binop_wrapper(orig, name: str):
    @functools.wraps(orig)
    def wrapper(self, other, *args, **kwargs):
        if not (isinstance(other, _NDFRAME) and other._attrs) and not isinstance(other, TRACED):
            return orig(self, other, *args, **kwargs)  # a plain operand brings no statistic
        st = stat_of(other)
        if st is None:
            return orig(self, other, *args, **kwargs)
        if _keyed(self):
            absorb(self, st, name)
            return orig(self, other, *args, **kwargs)
        result = orig(self, other, *args, **kwargs)
        if not _busy() and isinstance(result, (pd.Series, pd.DataFrame)) and not _keyed(result):
            _detached_refuse(self, name)
            mine = stat_of(self)
            return _mark(result, st.union(mine) if mine is not None else st)
        return result

    return wrapper


def _consumer_wrapper(orig, name: str):
    """fillna / where / mask / clip / replace: a statistic among the arguments flows into the rows.

    fillna's wrapper sits inside cross_row's, which runs the chained-assignment check for both."""
    outermost = name != "fillna"

    @functools.wraps(orig)
    def wrapper(self, *args, **kwargs):
        if outermost and kwargs.get("inplace"):
            _held = transparent.chained_method(self)  # noqa: F841  (see transparent)
        if args or kwargs:
            st = stats_in(args + tuple(kwargs.values()))
            if st is not None:
                absorb(self, st, name)
        return orig(self, *args, **kwargs)

    return wrapper


def _getitem_wrapper(orig, indexer: bool):
    if indexer:

        @functools.wraps(orig)
        def __getitem__(self, key):
            obj = self.obj
            if not obj._attrs:
                return orig(self, key)
            result = orig(self, key)
            if type(obj) is pd.Series and not _keyed(obj):
                return carry(result, stat_of(obj))
            return result

        return __getitem__

    @functools.wraps(orig)
    def __getitem__(self, key):  # noqa: F811  (the Series' own, not an indexer's)
        if not self._attrs:
            return orig(self, key)
        result = orig(self, key)
        if type(self) is pd.Series and not _keyed(self):
            return carry(result, stat_of(self))
        return result

    return __getitem__


def check_value(target, value, call: str) -> bool:
    """A value assigned into ``target`` (``df[c] = value``, ``.loc``, ``insert``): attach a statistic's
    rows, and refuse silently row-less full-length arrays. True: an array went into traced rows (the
    caller runs pandas' assignment with the wrappers passive, so its inner steps do not warn again)."""
    if isinstance(value, TRACED):
        absorb(target, value._tp, call)
    elif isinstance(value, (np.ndarray, list, ExtensionArray, pd.Index)):
        if _busy() or not _keyed(target):
            return False
        if np.ndim(value) == 0 or len(value) != len(target) or len(target) < 2:
            return True  # a part, or a one-row frame (the value can only be that row's)
        msg = (
            f"{call} assigns a {type(value).__name__} without an index into a traced frame: pandas gives no "
            "handle on the rows it was computed from (np.roll, pd.factorize, .to_numpy() ...), so each row "
            "keeps only its own lineage. Compute it with pandas on the traced frame (shift, rank, transform "
            "...), or use tpf.tensor / ProvenanceTensor for NumPy code; if row i of the values was computed "
            "from row i alone (e.g. model predictions), assign pd.Series(values, index=df.index)."
        )
        if _hooks["mode"]() == "raise":
            raise LineageLostError(msg)
        warnings.warn(msg, UntracedValuesWarning, stacklevel=4)
        return True
    else:
        absorb(target, stat_of(value), call)
    return False


def _series_setitem_wrapper(orig):
    @functools.wraps(orig)
    def __setitem__(self, key, value):
        _held = transparent.chained_setitem(self)  # noqa: F841  (see transparent)
        if (
            untouched(self)
            and not isinstance(value, TRACED)
            and not (isinstance(value, _NDFRAME) and value._attrs)
        ):
            return orig(self, key, value)
        if check_value(self, value, "s[...] = value"):
            return run_busy(orig, self, key, value)
        return orig(self, key, value)

    return __setitem__


def _isin_wrapper(orig):
    @functools.wraps(orig)
    def isin(self, values):
        if _busy() or not isinstance(values, pd.Series) or not _keyed(self) or not _isin_source(values):
            return orig(self, values)
        if _hooks["mode"]() == "raise":
            raise LineageLostError(
                "Series.isin(traced values) reads the matching rows of another traced frame"
            )
        result = run_busy(orig, self, values)
        run_busy(_record_matches, self, values, np.asarray(result, dtype=bool))
        return result

    return isin


def _isin_source(values: pd.Series) -> bool:
    """Whether ``values`` carries rows to record: keyed (its matching rows are found), a statistic (its
    set is added), plain (nothing); keyless rows of a traced frame cannot be matched and refuse."""
    if _keyed(values) or STAT_KEY in values.attrs:
        return True
    if ATTRS_KEY in values.attrs:
        raise LineageLostError(
            "isin(values) with values from a traced frame whose tp_lid keys are gone cannot record which of "
            "its rows matched. Use df.tp.merge(other, on=..., how='inner') (a semi join), or keep the other "
            "frame's index."
        )
    return False


def _record_matches(s: pd.Series, values: pd.Series, hit: np.ndarray) -> None:
    """Row i (a match) depends on the rows of ``values`` equal to ``s[i]`` (SQL's ``x IN (q)``); values
    that are a statistic add its whole set to the matches."""
    if not _keyed(values):
        add_context(
            _row_keys(s), np.where(hit, 0, -1), values.attrs[STAT_KEY].block(), OpNode("pandas.isin", {})
        )
        return
    n, m = len(s), len(values)
    both = pd.concat([pd.Series(s.array), pd.Series(values.array)], ignore_index=True)
    codes, uniques = pd.factorize(both, use_na_sentinel=False)
    mine, theirs = codes[:n], codes[n:]
    k = len(uniques)
    order = np.argsort(theirs, kind="stable").astype(np.int64)
    counts = np.bincount(theirs, minlength=k)
    ends = np.cumsum(counts)
    starts = ends - counts
    starts, ends = np.append(starts, 0), np.append(ends, m)  # set k: every row (a match factorize missed)
    set_of_row = np.where(hit, np.where(counts[mine] > 0, mine, k), -1).astype(np.int64)
    block = resolve(values.to_frame()).shared_sets(order, starts, ends, "isin")
    add_context(_row_keys(s), set_of_row, block, OpNode("pandas.isin", {"rows": n}))


def _patch(owner, name: str, make_hook, test: str) -> None:
    _installed.append(inline.patch(owner, name, make_hook, test))


def install(mode, state, detached) -> None:
    """Install the wrappers (idempotent); ``mode``, ``state`` (its busy flag) and ``detached`` come from
    cross_row. Each runs only when its test (:mod:`frames.inline`) finds something to trace."""
    if _installed:
        return
    _hooks.update(mode=mode, state=state, detached=detached)
    traced, carries = inline.traced, inline.carries
    for owner in (pd.Series, pd.DataFrame):
        for name in _REDUCTIONS:
            if hasattr(owner, name):
                _patch(owner, name, lambda o, n=name: _reduction_wrapper(o, n), traced("self"))
        for name in ("_arith_method", "_cmp_method", "_logical_method"):
            label = name.strip("_").replace("_method", "")
            _patch(owner, name, lambda o, n=label: _binop_wrapper(o, n), carries("other"))
    _patch(pd.Series, "_flex_method", lambda o: _binop_wrapper(o, "arith"), carries("other"))
    _patch(pd.DataFrame, "_flex_arith_method", lambda o: _binop_wrapper(o, "arith"), carries("other"))
    _patch(pd.DataFrame, "_flex_cmp_method", lambda o: _binop_wrapper(o, "cmp"), carries("other"))
    for name in ("fillna", "where", "mask", "clip", "replace"):
        _patch(_NDFRAME, name, lambda o, n=name: _consumer_wrapper(o, n), "{rest}")
    _patch(pd.Series, "__getitem__", lambda o: _getitem_wrapper(o, False), "self._attrs")
    ix = pd.core.indexing
    for owner in (ix._LocationIndexer, ix._ScalarAccessIndexer, ix._AtIndexer):
        _patch(owner, "__getitem__", lambda o: _getitem_wrapper(o, True), "self.obj._attrs")
    _patch(pd.Series, "isin", _isin_wrapper, traced("self"))
    _patch(pd.Series, "__setitem__", _series_setitem_wrapper, f"{traced('self')} or {carries('value')}")


def uninstall() -> None:
    while _installed:
        _installed.pop()()
