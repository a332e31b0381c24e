"""How lineage rides inside a pandas DataFrame.

Every lineage table (:class:`RowLineage`) that backs frames gets a contiguous range of *lineage keys*
``[base, base + n)`` from a process-wide counter. A traced frame's index is named ``tp_lid`` and holds
those keys — a ``RangeIndex`` straight after a load, merge or group-by — so pandas itself carries them
through every row-preserving operation (filters, sorts, ``.loc``/``.iloc``, ``head``, ``sample``,
``explode``, column selection, arithmetic, ``assign``, scikit-learn transformers with pandas output)
at no cost. ``reset_index()`` moves the keys to a ``tp_lid`` column, and ``set_index(..., append=True)``
keeps them as a MultiIndex level; both are still found.

Tables are held by the frames that use them (through a ``df.attrs`` handle that pandas propagates
without copying; :mod:`frames.sklearn_compat` carries it through scikit-learn's pandas output) and
looked up through a weak registry, so lineage for frames nobody references any more is freed.
"""

from __future__ import annotations

import bisect
import threading
import weakref

import numpy as np
import pandas as pd

from traceprop_frames.errors import LineageLostError
from traceprop_frames.lineage import OpNode, RowLineage
from traceprop_frames.lineage.context import SetBlock
from traceprop_frames.lineage.refs import AllRefs, CodeRefs, CsrRefs, EachRefs

LID = "tp_lid"
ATTRS_KEY = "traceprop"

_lock = threading.Lock()
_bases: list[int] = []  # sorted (allocation order is increasing)
_tables: dict[int, weakref.ref] = {}
_cursor = [1]


class LineageTable:
    """A RowLineage plus the range of lineage keys that point into it."""

    __slots__ = ("lin", "base", "__weakref__")

    def __init__(self, lin: RowLineage) -> None:
        self.lin = lin
        n = len(lin)
        with _lock:
            self.base = _cursor[0]
            _cursor[0] += n + 1
            _bases.append(self.base)
            _tables[self.base] = weakref.ref(self, _forget(self.base))

    @property
    def stop(self) -> int:
        return self.base + len(self.lin)

    def __repr__(self) -> str:
        return f"LineageTable(keys {self.base}..{self.stop - 1}, {self.lin!r})"


def _forget(base: int):
    def cb(_ref) -> None:
        with _lock:
            _tables.pop(base, None)
            i = bisect.bisect_left(_bases, base)
            if i < len(_bases) and _bases[i] == base:
                del _bases[i]

    return cb


class _Handle:
    """Keeps tables alive from ``df.attrs``; pandas deep-copies attrs, so deepcopy returns self."""

    __slots__ = ("tables",)

    def __init__(self, tables: tuple[LineageTable, ...]) -> None:
        self.tables = tables

    def __deepcopy__(self, memo):
        return self

    def __copy__(self):
        return self

    def __repr__(self) -> str:
        return f"<traceprop lineage handle: {len(self.tables)} table(s)>"

    def __reduce__(self):  # pickled frames carry no lineage handle; use df.tp.to_parquet
        return (_Handle, ((),))


def attach(df: pd.DataFrame, lin: RowLineage) -> pd.DataFrame:
    """Make ``df`` (rows in the order of ``lin``) a traced frame, in place; returns it."""
    if len(df) != len(lin):
        raise ValueError(f"frame has {len(df)} rows but lineage has {len(lin)}")
    table = LineageTable(lin)
    df.index = pd.RangeIndex(table.base, table.stop, name=LID)
    df.attrs[ATTRS_KEY] = _Handle((table,))
    return df


_MULTI = pd.MultiIndex


def keyed(obj) -> bool:
    """True if the Series/DataFrame ``obj`` holds lineage keys in its index (a level of it, or all of it).

    The wrappers' first test on every pandas call they see, so it reads pandas' attributes directly."""
    idx = obj.index
    return idx._name == LID or (isinstance(idx, _MULTI) and LID in idx._names)


def untouched(obj) -> bool:
    """True if ``obj`` neither holds lineage keys nor carries any ``attrs`` (where lineage handles and
    statistics ride): the wrappers hand such an object straight to pandas."""
    if obj._attrs:
        return False
    idx = obj.index  # keyed(obj), inlined: this runs on every wrapped pandas call
    return idx._name != LID and not (isinstance(idx, _MULTI) and LID in idx._names)


def lineage_keys(df: pd.DataFrame) -> pd.Index | np.ndarray | None:
    """The lineage keys of ``df``'s rows (index, MultiIndex level or column), or None."""
    idx = df.index
    if idx.name == LID:
        return idx
    if isinstance(idx, pd.MultiIndex) and LID in idx.names:
        return idx.get_level_values(LID)
    if LID in getattr(df, "columns", ()):
        col = df[LID]
        if isinstance(col, pd.Series):
            return col.to_numpy()
    return None


def has_lineage(df) -> bool:
    """True if ``df`` carries lineage keys (it may still fail to resolve if its tables were freed)."""
    return (
        isinstance(df, (pd.DataFrame, pd.Series))
        and lineage_keys(df if isinstance(df, pd.DataFrame) else df.to_frame()) is not None
    )


def _diagnose(df: pd.DataFrame) -> str:
    idx = df.index
    if isinstance(idx, pd.RangeIndex) and idx.name is None:
        cause = (
            "its index is a plain RangeIndex: a plain pandas call rebuilt the rows — pd.merge / "
            "DataFrame.merge, pd.concat(..., ignore_index=True), reset_index(drop=True) or a new DataFrame"
        )
    elif isinstance(idx, pd.MultiIndex) or idx.name is not None:
        cause = (
            f"its index is {list(idx.names) if isinstance(idx, pd.MultiIndex) else idx.name!r}: a plain "
            "groupby(...).agg / pivot_table, or set_index without append=True, replaced the tp_lid index"
        )
    else:
        cause = "it has no tp_lid index, MultiIndex level or column"
    return (
        f"this DataFrame has no row lineage: {cause}. Rebuild rows through the accessor instead — "
        "df.tp.merge(right, ...), df.tp.groupby(...).agg(...), tpf.concat([...]) — keep the index "
        "(reset_index() without drop=True, or set_index(col, append=True)), or start tracing this frame "
        "with tpf.track(df, name)."
    )


def _tables_for(df: pd.DataFrame) -> tuple[LineageTable, ...]:
    h = df.attrs.get(ATTRS_KEY)
    return h.tables if isinstance(h, _Handle) else ()


def _lookup(keys: np.ndarray) -> tuple[np.ndarray, list[LineageTable]]:
    """For each key the table number (into the returned list); raises for keys of no live table."""
    with _lock:
        bases = np.fromiter(_bases, dtype=np.int64, count=len(_bases))
        refs = [_tables[b] for b in _bases]
    slot = np.searchsorted(bases, keys, "right") - 1
    uniq = np.flatnonzero(np.bincount(slot + 1)) - 1  # table slots are few: count, do not sort
    tables: list[LineageTable] = []
    table_no = np.empty(len(keys), dtype=np.int64)
    for j, s in enumerate(uniq.tolist()):
        t = refs[s]() if s >= 0 else None
        if t is None:
            raise LineageLostError(
                "the lineage table these rows point into was freed: the frames it came from are gone and "
                "this frame was built by a pandas call that does not keep its handle. Keep the traced frame "
                "alive, or combine frames with tpf.concat / df.tp.merge."
            )
        tables.append(t)
        table_no[slot == s] = j
    bad = keys >= np.array([t.stop for t in tables], dtype=np.int64)[table_no] if tables else keys >= 0
    if np.any(bad):
        raise LineageLostError(
            f"{int(bad.sum())} tp_lid values point at no lineage row (was tp_lid edited?). Re-create the "
            "frame through tpf.read_csv / tpf.track."
        )
    return table_no, tables


_resolved: dict[int, tuple[weakref.ref, RowLineage, int]] = {}
_generation = [0]  # bumped by add_context: cached resolutions made before it are stale


def _cache_get(idx) -> RowLineage | None:
    hit = _resolved.get(id(idx))
    if hit is not None and hit[0]() is idx and hit[2] == _generation[0]:
        return hit[1]
    return None


def _cache_put(idx, lin: RowLineage) -> None:
    key = id(idx)
    try:
        ref = weakref.ref(idx, lambda _r, key=key: _resolved.pop(key, None))
    except TypeError:
        return
    _resolved[key] = (ref, lin, _generation[0])


def _one_table(keys: np.ndarray):
    """(table numbers, [table]) when all keys lie in one live table (checked at the two ends), else None."""
    lo, hi = int(keys.min()), int(keys.max())
    with _lock:
        i = bisect.bisect_right(_bases, lo) - 1
        ref = _tables.get(_bases[i]) if i >= 0 else None
    t = ref() if ref is not None else None
    if t is None or hi >= t.stop:
        return None
    return np.zeros(len(keys), dtype=np.int64), [t]


def _whole_table(keys, set_of_row, block: SetBlock, node: OpNode) -> bool:
    """The common case in O(1) checks: ``keys`` is a RangeIndex over all rows of one live table, in
    order (a frame straight from a reader, merge or group-by): ``set_of_row`` is the per-row reference
    (an array or a reference layer), recorded as it is."""
    if not (
        isinstance(keys, pd.RangeIndex) and keys.step == 1 and len(keys) == len(set_of_row) and len(keys)
    ):
        return False
    with _lock:
        ref = _tables.get(keys.start)
    t = ref() if ref is not None else None
    if t is None or t.stop != keys.stop:
        return False
    layer = set_of_row if _is_layer(set_of_row) else CodeRefs(block.base, set_of_row, block.m)
    t.lin = t.lin.with_refs(layer, [block], node=OpNode(node.op, node.params, (t.lin.node,)))
    with _lock:
        _generation[0] += 1
    return True


def _is_layer(x) -> bool:
    return isinstance(x, (AllRefs, CodeRefs, CsrRefs, EachRefs))


def _local_codes(layer, block: SetBlock) -> np.ndarray:
    """The set of ``block`` each row of a one-reference-per-row layer refers to (-1: none)."""
    off, refs = layer.csr()
    counts = np.diff(off)
    if counts.size and counts.max() > 1:
        raise ValueError("add_context takes at most one reference per row")
    out = np.full(len(layer), -1, dtype=np.int64)
    out[counts == 1] = refs - block.base
    return out


def add_context(keys, set_of_row, block: SetBlock, node: OpNode) -> None:
    """Make the lineage rows behind ``keys`` also refer to set ``set_of_row[i]`` of ``block`` (-1: none).

    Used for pandas calls that read other rows but return their result under the *same* index (shift,
    cumsum, rolling, groupby transform ...): pandas aligns that result with any frame holding these keys,
    so the extra dependency belongs to the rows themselves, in every frame that holds them. A key that
    occurs several times (sampling with replacement, explode) gets the union of its rows' sets.
    ``set_of_row`` may also be a reference layer (:mod:`traceprop_frames.lineage.refs`) over the rows
    of ``keys``, one reference per row at most: recorded as it is (O(1)) when ``keys`` are all rows of
    one table in order.
    """
    if not _is_layer(set_of_row):
        set_of_row = np.asarray(set_of_row, dtype=np.int64)
    if _whole_table(keys, set_of_row, block, node):
        return
    if _is_layer(set_of_row):
        set_of_row = _local_codes(set_of_row, block)
    keys = np.asarray(keys, dtype=np.int64)
    keep = set_of_row >= 0
    keys, sets = keys[keep], set_of_row[keep]
    if not keys.size:
        return
    table_no, tables = _one_table(keys) or _lookup(keys)
    for j, t in enumerate(tables):
        mine = table_no == j
        pos, s = (keys - t.base, sets) if len(tables) == 1 else (keys[mine] - t.base, sets[mine])
        if np.all(pos[1:] > pos[:-1]):  # the usual case: each row once, in key order
            rank = np.zeros(len(pos), dtype=np.int64)
        else:
            order = np.argsort(pos, kind="stable")
            pos, s = pos[order], s[order]
            first = np.ones(len(pos), dtype=bool)
            first[1:] = pos[1:] != pos[:-1]
            idx = np.arange(len(pos))
            rank = idx - np.maximum.accumulate(np.where(first, idx, 0))
        for r in range(int(rank.max()) + 1):  # one pass per repeat of a key: almost always one
            sel = rank == r
            if len(pos) == len(t.lin) and r == 0 and sel.all() and pos[0] == 0 and pos[-1] == len(pos) - 1:
                per_row = s  # every row of the table, in order
            else:
                per_row = np.full(len(t.lin), -1, dtype=np.int64)
                per_row[pos[sel]] = s[sel]
            t.lin = t.lin.with_context(per_row, block, node=OpNode(node.op, node.params, (t.lin.node,)))
    with _lock:
        _generation[0] += 1


def resolve(df: pd.DataFrame, positions=None) -> RowLineage:
    """The lineage of ``df``'s rows (or of the rows at ``positions``), in row order.

    Whole-frame results are cached per index object (pandas gives a frame a new index object whenever
    its rows change), so repeated queries on a filtered frame reuse one lineage and its inverted index.
    """
    if positions is None and df.index.name == LID:
        hit = _cache_get(df.index)
        if hit is not None:
            return hit
        lin = _resolve(df, None)
        _cache_put(df.index, lin)
        return lin
    return _resolve(df, positions)


def _resolve(df: pd.DataFrame, positions=None) -> RowLineage:
    keys = lineage_keys(df)
    if keys is None:
        raise LineageLostError(_diagnose(df))
    own = _tables_for(df)
    if isinstance(keys, pd.RangeIndex) and positions is None and keys.step == 1:
        for t in own:
            if keys.start == t.base and keys.stop == t.stop:
                return t.lin  # the common, zero-cost case: a frame straight from an accessor op
    arr = np.asarray(keys, dtype=np.int64)
    if positions is not None:
        arr = arr[np.asarray(positions, dtype=np.int64)]
    if arr.size == 0:
        node = own[0].lin.node if own else OpNode("empty")
        return RowLineage.empty(0, OpNode("select", {"rows": 0}, (node,)))
    lo, hi = int(arr.min()), int(arr.max())
    for t in own:
        if t.base <= lo and hi < t.stop:
            return t.lin.take(arr - t.base, node=_select_node(t.lin.node, len(arr), len(t.lin)))
    table_no, tables = _lookup(arr)
    if len(tables) == 1:
        t = tables[0]
        return t.lin.take(arr - t.base, node=_select_node(t.lin.node, len(arr), len(t.lin)))
    # rows from several tables (e.g. a plain pd.concat of traced frames): gather each, restore order
    parts, order = [], []
    for j, t in enumerate(tables):
        rows = np.flatnonzero(table_no == j)
        parts.append(t.lin.take(arr[rows] - t.base))
        order.append(rows)
    stacked = RowLineage.concat(parts)
    inv = np.empty(len(arr), dtype=np.int64)
    inv[np.concatenate(order)] = np.arange(len(arr), dtype=np.int64)
    node = OpNode("concat", {"via": "pandas"}, tuple(t.lin.node for t in tables))
    return stacked.take(inv, node=node)


def _select_node(parent: OpNode, n_out: int, n_in: int) -> OpNode:
    return OpNode("select", {"rows_in": n_in, "rows_out": n_out}, (parent,))
