"""RowLineage: for each derived row, the set of global source-row ids behind it (CSR).

``offsets`` (n + 1 int64) and ``ids`` (int64): row ``i`` depends on ``ids[offsets[i]:offsets[i+1]]``.
A row's list is a *set*: it may hold a repeated id after some joins (the queries deduplicate their
answers), it is never missing one. Every operation here is a vectorised numpy operation; there is no
Python loop over rows.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from traceprop_frames.errors import (
    MissingLineageWarning,
    SourceChangedError,
    SourceChangedWarning,
    SourceMissingError,
    UnknownRowError,
)
from traceprop_frames.lineage import manifest
from traceprop_frames.lineage.context import (
    LAYOUT_LOCK,
    Context,
    SetBlock,
    context_from_payload,
    context_payload,
    merge_blocks,
    segments_flat,
)
from traceprop_frames.lineage.graph import LineageDAG, OpNode
from traceprop_frames.lineage.refs import AllRefs, CodeRefs, intersect_ids, sorted_unique, union_ids
from traceprop_frames.lineage.sources import REGISTRY, ROW_BITS, ROW_MASK, Source, decode, encode

_EMPTY = np.zeros(0, dtype=np.int64)
_COMPOSE_LOCK = LAYOUT_LOCK  # one thread composes deferred lineage (or lays out deferred sets) at a time


def count_distinct(ids: np.ndarray) -> int:
    """The number of distinct global row ids in ``ids``: marked in a bitmap over each source's row range
    when that is dense (one pass, no sort), else counted by sorting.

    Examples
    --------
    >>> count_distinct(np.array([5, 3, 5, (1 << 40) | 3]))
    3
    """
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size < 2:
        return int(ids.size)
    lo, hi = int(ids.min()), int(ids.max())
    if hi - lo <= 8 * ids.size + (1 << 16):  # one source's rows, or ids close together: one bitmap
        mark = np.zeros(hi - lo + 1, dtype=bool)
        mark[ids - lo] = True
        return int(np.count_nonzero(mark))
    s0, s1 = lo >> ROW_BITS, hi >> ROW_BITS  # the ids' source range, from their min and max
    rows = ids & np.int64(ROW_MASK)
    span = int(rows.max()) + 1
    if (s1 - s0 + 1) * span > 8 * ids.size + (1 << 16):  # sparse: a bitmap would be mostly empty
        return len(sorted_unique(ids))
    if s1 != s0:  # one slot of ``span`` bits per source id in s0..s1
        slot = ids >> np.int64(ROW_BITS)
        slot -= s0
        slot *= span
        rows += slot
    mark = np.zeros((s1 - s0 + 1) * span, dtype=bool)
    mark[rows] = True
    return int(np.count_nonzero(mark))


def _distinct_sorted(*keys: np.ndarray) -> tuple[np.ndarray, ...]:
    """The distinct tuples of the parallel arrays ``keys``, sorted by the first key, then the next."""
    if keys[0].size == 0:
        return keys
    order = np.lexsort(keys[::-1])
    keys = tuple(k[order] for k in keys)
    keep = np.zeros(keys[0].size, dtype=bool)
    keep[0] = True
    for k in keys:
        keep[1:] |= k[1:] != k[:-1]
    return tuple(k[keep] for k in keys)


def _segments_gather(offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows (may repeat), the new offsets and the flat positions into the old ``ids``."""
    starts = offsets[rows]
    lengths = offsets[rows + 1] - starts
    new_off = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_off[1:])
    total = int(new_off[-1])
    if total == 0:
        return new_off, _EMPTY
    # position k of output row r maps to starts[r] + k
    flat = np.arange(total, dtype=np.int64)
    flat += np.repeat(starts - new_off[:-1], lengths)
    return new_off, flat


def _stable_group_order(codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Stable order that sorts ``codes`` (all in 0..n_groups-1): LSD radix passes on 16-bit digits,
    which numpy's stable sort runs as a linear-time radix sort."""
    if n_groups <= 1 << 16:
        return np.argsort(codes.astype(np.uint16), kind="stable")
    if n_groups <= 1 << 32:
        low = np.argsort((codes & 0xFFFF).astype(np.uint16), kind="stable")
        high = np.argsort((codes[low] >> 16).astype(np.uint16), kind="stable")
        return low[high]
    return np.argsort(codes, kind="stable")


def _dedupe_rows(off: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop repeated ids inside each row (rows come back with sorted ids)."""
    n = len(off) - 1
    if ids.size < 2:
        return off, ids
    row = np.repeat(np.arange(n, dtype=np.int64), np.diff(off))
    order = np.lexsort((ids, row))
    s_ids, s_row = ids[order], row[order]
    keep = np.ones(len(s_ids), dtype=bool)
    keep[1:] = (s_ids[1:] != s_ids[:-1]) | (s_row[1:] != s_row[:-1])
    if keep.all():
        return off, ids
    new_off = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(s_row[keep], minlength=n), out=new_off[1:])
    return new_off, s_ids[keep]


def _group_csr(
    offsets: np.ndarray, ids: np.ndarray, codes: np.ndarray, n_groups: int, order: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """CSR of the group unions: group g = union of the rows ``order`` puts in group g."""
    lengths = offsets[1:] - offsets[:-1]
    counts = np.bincount(codes[order], weights=lengths[order], minlength=n_groups).astype(np.int64)
    off = np.zeros(n_groups + 1, dtype=np.int64)
    np.cumsum(counts, out=off[1:])
    if lengths.size and lengths.min() == 1 and lengths.max() == 1:
        return off, ids[order]  # one id per input row (fresh sources): a plain gather
    _, flat = _segments_gather(offsets, order)
    return _dedupe_rows(off, ids[flat])  # members' sets may overlap (e.g. after a join)


def _group_order(codes: np.ndarray, n_groups: int) -> np.ndarray:
    keep = codes >= 0
    if keep.all():
        return _stable_group_order(codes, n_groups)
    members = np.flatnonzero(keep)
    return members[_stable_group_order(codes[members], n_groups)]


def _group_union(lin: RowLineage, codes: np.ndarray, n_groups: int):
    order = _group_order(codes, n_groups)
    off, ids = _group_csr(lin.offsets, lin.ids, codes, n_groups, order)
    if not lin.has_context:
        return off, ids
    c = lin.context
    roff, refs = _group_csr(c.ref_offsets, c.refs, codes, n_groups, order)
    return off, ids, Context(roff, refs, c.blocks)


def _union_csr(a_off, a_ids, ia, b_off, b_ids, ib, dedupe: bool) -> tuple[np.ndarray, np.ndarray]:
    la = np.where(ia >= 0, a_off[ia + 1] - a_off[np.maximum(ia, 0)], 0)
    lb = np.where(ib >= 0, b_off[ib + 1] - b_off[np.maximum(ib, 0)], 0)
    off = np.zeros(len(ia) + 1, dtype=np.int64)
    np.cumsum(la + lb, out=off[1:])
    out = np.empty(int(off[-1]), dtype=np.int64)
    for s_off, s_ids, idx, lens, first in ((a_off, a_ids, ia, la, None), (b_off, b_ids, ib, lb, la)):
        rows = np.flatnonzero(lens)
        if rows.size == 0:
            continue
        _, flat = _segments_gather(s_off, idx[rows])
        dst_start = off[rows] if first is None else off[rows] + first[rows]
        seg_off = np.zeros(rows.size + 1, dtype=np.int64)
        np.cumsum(lens[rows], out=seg_off[1:])
        dst = np.arange(flat.size, dtype=np.int64)
        dst += np.repeat(dst_start - seg_off[:-1], lens[rows])
        out[dst] = s_ids[flat]
    if dedupe:
        return _dedupe_rows(off, out)
    return off, out


def _union_rows(a: RowLineage, ia: np.ndarray, b: RowLineage, ib: np.ndarray):
    # both sides may hold the same source row (self-joins): dedupe only then
    shared = intersect_ids(a._direct_source_ids(), b._direct_source_ids()).size > 0
    off, ids = _union_csr(a.offsets, a.ids, ia, b.offsets, b.ids, ib, shared)
    if not (a.has_context or b.has_context):
        return off, ids
    ca, cb = a.context, b.context
    roff, refs = _union_csr(ca.ref_offsets, ca.refs, ia, cb.ref_offsets, cb.refs, ib, True)
    return off, ids, Context(roff, refs, merge_blocks(ca, cb))


@dataclass(frozen=True)
class SourceRow:
    """One source row behind a derived row."""

    path: str
    row: int
    sha256: str
    sha256_ok: bool | None  # None: in-memory source, nothing to check
    format: str
    source_id: int

    def trace_to_file(self) -> str:
        """``"bureau.csv row 4821"`` (0-based data row, header excluded)."""
        flag = "" if self.sha256_ok is not False else " (file changed since load!)"
        return f"{self.path} row {self.row}{flag}"

    def __str__(self) -> str:
        return self.trace_to_file()


class RowLineage:
    """Lineage of ``n`` derived rows in CSR form, pointing at an :class:`OpNode`.

    Two parts per row:

    - *direct* ids: ``ids[offsets[i]:offsets[i+1]]``, the source rows whose values row ``i`` carries;
    - *context* (optional, :mod:`~traceprop_frames.lineage.context`): references to shared sets - rows a
      statistic broadcast into row ``i`` was computed from (a column mean, a window partition, a scalar
      subquery). Each set is stored once however many rows refer to it.

    Readers (:meth:`sources`, :meth:`trace`, :meth:`row_ids`, :meth:`rows_from_source`) include the
    context by default, so lineage is *sufficient*; ``direct=True`` gives the direct part alone.

    Operations that rebuild rows (:meth:`union_rows` for joins, :meth:`group_union` for group-bys,
    :meth:`concat`) only *record* their inputs — the row-position arrays the operation produced — and
    compose the CSR arrays on first access to ``offsets``/``ids`` (deferred lineage, as in lineage
    capture systems such as SmokedDuck). A pipeline therefore pays for capturing positions, and the
    first query pays for composing them once; the result is cached.
    """

    __slots__ = (
        "_offsets", "_ids", "_ctx", "_has_ctx", "_n", "_build", "_deps", "node", "_inv", "_sids",
        "__weakref__",
    )  # fmt: skip

    def __init__(
        self, offsets: np.ndarray, ids: np.ndarray, node: OpNode | None = None, context: Context | None = None
    ) -> None:
        self._offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        self._ids = np.ascontiguousarray(ids, dtype=np.int64)
        self._n = len(self._offsets) - 1
        if context is not None and len(context) != self._n:
            raise ValueError(f"context has {len(context)} rows, lineage has {self._n}")
        self._ctx = context if context is not None and context.has_refs() else None
        self._has_ctx = self._ctx is not None
        self._build = None
        self._deps: tuple[RowLineage, ...] = ()
        self.node = node if node is not None else OpNode("lineage")
        self._inv: tuple[np.ndarray, np.ndarray] | None = None
        self._sids: np.ndarray | None = None

    @classmethod
    def deferred(
        cls, n: int, build, deps: tuple[RowLineage, ...], node: OpNode | None, has_context: bool | None = None
    ) -> RowLineage:
        """``n`` rows whose arrays ``build()`` computes from the lineages ``deps`` when first needed.

        ``build`` returns ``(offsets, ids)`` or ``(offsets, ids, context)``. ``has_context`` says whether the
        built rows will refer to shared sets (default: whether any of ``deps`` does).
        """
        obj = cls.__new__(cls)
        obj._offsets = obj._ids = obj._ctx = None
        obj._has_ctx = any(d._has_ctx for d in deps) if has_context is None else bool(has_context)
        obj._n = int(n)
        obj._build = build
        obj._deps = tuple(deps)
        obj.node = node if node is not None else OpNode("lineage")
        obj._inv = None
        obj._sids = None
        return obj

    @property
    def is_materialized(self) -> bool:
        return self._offsets is not None

    def materialize(self) -> RowLineage:
        """Compose the CSR arrays now (iteratively, so arbitrarily deep chains never recurse).

        Thread-safe: an integration (the OpenLineage emitter) may compose lineage on its own thread."""
        if self._offsets is not None:
            return self
        with _COMPOSE_LOCK:
            return self._materialize()

    def _materialize(self) -> RowLineage:
        order: list[RowLineage] = []
        stack, seen = [self], set()
        while stack:
            lin = stack[-1]
            pending = [d for d in lin._deps if d._offsets is None and id(d) not in seen]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            if id(lin) not in seen:
                seen.add(id(lin))
                order.append(lin)
        for lin in order:
            if lin._offsets is None:
                built = lin._build()
                lin._offsets = np.ascontiguousarray(built[0], dtype=np.int64)
                lin._ids = np.ascontiguousarray(built[1], dtype=np.int64)
                ctx = built[2] if len(built) > 2 else None
                lin._ctx = ctx if ctx is not None and ctx.has_refs() else None
                lin._has_ctx = lin._ctx is not None
                lin._build, lin._deps = None, ()  # release the inputs once composed
        return self

    @property
    def offsets(self) -> np.ndarray:
        if self._offsets is None:
            self.materialize()
        return self._offsets

    @property
    def ids(self) -> np.ndarray:
        """The direct ids (see the class docstring); ``context`` holds the shared sets."""
        if self._offsets is None:
            self.materialize()
        return self._ids

    @property
    def has_context(self) -> bool:
        """True if some row refers to shared sets (known without composing deferred lineage)."""
        return self._has_ctx

    @property
    def context(self) -> Context:
        """The rows' references to shared sets (an empty :class:`Context` when there are none)."""
        if self._offsets is None:
            self.materialize()
        return self._ctx if self._ctx is not None else Context.none(self._n)

    # ---------------------------------------------------------------- construction
    @classmethod
    def identity(cls, source: Source, node: OpNode) -> RowLineage:
        """Row i of a freshly loaded source depends on exactly source row i."""
        n = source.n_rows
        lin = cls(np.arange(n + 1, dtype=np.int64), encode(source.id, np.arange(n, dtype=np.int64)), node)
        lin._sids = np.array([source.id] if n else [], dtype=np.int64)
        return lin

    @classmethod
    def empty(cls, n: int, node: OpNode | None = None) -> RowLineage:
        """``n`` rows that depend on no source row (e.g. a table without lineage)."""
        return cls(np.zeros(n + 1, dtype=np.int64), _EMPTY, node)

    @classmethod
    def concat(cls, parts: list[RowLineage], node: OpNode | None = None) -> RowLineage:
        """Stack the rows of several lineages (``pd.concat`` along rows)."""
        parts = list(parts)
        if not parts:
            return cls.empty(0, node)

        def build():
            off, ids = _stack([(p.offsets, p.ids) for p in parts])
            if not any(p.has_context for p in parts):
                return off, ids
            ctxs = [p.context for p in parts]
            roff, refs = _stack([(c.ref_offsets, c.refs) for c in ctxs])
            return off, ids, Context(roff, refs, merge_blocks(*ctxs))

        return cls.deferred(sum(len(p) for p in parts), build, tuple(parts), node)

    @classmethod
    def union_rows(
        cls, a: RowLineage, ia: np.ndarray, b: RowLineage, ib: np.ndarray, node=None
    ) -> RowLineage:
        """Row k = a[ia[k]] ∪ b[ib[k]]; -1 in ``ia``/``ib`` means "no row on that side" (outer joins)."""
        ia = np.asarray(ia, dtype=np.int64)
        ib = np.asarray(ib, dtype=np.int64)
        if len(ia) != len(ib):
            raise ValueError("ia and ib must have the same length")
        return cls.deferred(len(ia), lambda: _union_rows(a, ia, b, ib), (a, b), node)

    # ---------------------------------------------------------------- shared sets
    def shared_sets(self, order, starts, ends, label: str) -> SetBlock:
        """A :class:`SetBlock` of sets over this lineage's rows, stored once.

        ``order`` lists row positions in the order the operation reads them (e.g. sorted within
        partitions); set ``j`` is the rows ``order[starts[j]:ends[j]]`` — overlapping segments (prefixes,
        rolling windows) share storage. A set's lineage is its rows' direct ids plus their context
        references, so nesting statistics stays sufficient.

        Examples
        --------
        >>> from traceprop_frames.lineage.context import Context
        >>> lin = RowLineage(np.arange(4), np.array([7, 8, 9]))
        >>> block = lin.shared_sets(np.arange(3), [0], [3], "sum")   # one set: all three rows
        >>> out = lin.with_context(np.zeros(3, dtype=np.int64), block)  # every row refers to it
        >>> out.row_ids(0).tolist(), out.row_ids(0, direct=True).tolist()
        ([7, 8, 9], [7])
        """
        pool, lo, hi, *refs = self._set_arrays(order, starts, ends)
        deps = self.context.blocks.values() if self.has_context else ()
        return SetBlock(pool, lo, hi, label, *refs, deps=deps)

    def deferred_sets(self, m: int, layout, label: str) -> SetBlock:
        """:meth:`shared_sets` whose ``(order, starts, ends) = layout()`` is computed, and the sets laid
        out, only when a reader first asks about them: recording costs O(1). Set ``j`` of the result is
        then exactly set ``j`` of ``shared_sets(*layout(), label)`` (``layout`` gives ``m`` sets)."""
        deps = tuple(self.context.blocks.values()) if self.has_context else ()
        return SetBlock.deferred(m, lambda: self._set_arrays(*layout()), label, deps)

    def _set_arrays(self, order, starts, ends) -> tuple[np.ndarray, ...]:
        """(pool, starts, ends, ref_pool, ref_starts, ref_ends) of :meth:`shared_sets`."""
        order = np.asarray(order, dtype=np.int64)
        starts = np.asarray(starts, dtype=np.int64)
        ends = np.asarray(ends, dtype=np.int64)
        if order.size and (order.min() < 0 or order.max() >= len(self)):
            raise UnknownRowError(f"positions outside 0..{len(self) - 1}")
        if starts.size and (starts.min() < 0 or ends.max() > len(order) or np.any(ends < starts)):
            raise ValueError("set segments must lie inside 0..len(order)")
        off = self.offsets
        same_order = len(order) == len(self) and np.array_equal(order, np.arange(len(self)))
        if same_order and off[0] == 0:  # in row order the ids are the pool and the offsets its positions
            pool, pos = self.ids[: off[-1]], off
        elif self.ids.size == len(self) and np.all(off[1:] - off[:-1] == 1):  # one id per row: a gather
            pool = self.ids[order]
            pos = np.arange(len(order) + 1, dtype=np.int64)
        else:
            lengths = off[order + 1] - off[order]
            pos = np.zeros(len(order) + 1, dtype=np.int64)
            np.cumsum(lengths, out=pos[1:])
            _, flat = _segments_gather(off, order)
            pool = self.ids[flat]
        if not self.has_context:
            return pool, pos[starts], pos[ends]
        # the members' references, laid out in `order` like the ids: set j refers to its members' slice
        ctx = self.context
        rpos, rflat = _segments_gather(ctx.ref_offsets, order)
        return pool, pos[starts], pos[ends], ctx.refs[rflat], rpos[starts], rpos[ends]

    def with_context(self, set_of_row, block: SetBlock, node: OpNode | None = None) -> RowLineage:
        """These rows, each also referring to set ``set_of_row[i]`` of ``block`` (-1: none)."""
        set_of_row = np.asarray(set_of_row, dtype=np.int64)
        if len(set_of_row) != len(self):
            raise ValueError(f"{len(set_of_row)} set references for {len(self)} rows")
        if set_of_row.size and set_of_row.max() >= block.m:
            raise ValueError(f"set index outside the block's {block.m} sets")
        return self.with_refs(CodeRefs(block.base, set_of_row, block.m), [block], node)

    def with_refs(self, layer, blocks, node: OpNode | None = None) -> RowLineage:
        """These rows, each also referring to the sets the reference layer ``layer`` gives it
        (:mod:`~traceprop_frames.lineage.refs`: O(1) for its compact forms), which live in ``blocks``."""
        ctx = self.context.with_layer(layer, blocks)
        out = RowLineage(self.offsets, self.ids, node if node is not None else self.node, ctx)
        out._sids = self._sids
        return out

    def with_refs_for_all(self, other: RowLineage, node: OpNode | None = None) -> RowLineage:
        """These rows, each also referring to every shared set that ``other``'s rows refer to.

        For broadcasting a statistic into rows (``X - X.mean(axis=0)``): the statistic is a lineage
        whose rows hold only references, so every row gains those few references and no ids are copied.
        ``other``'s direct ids (if any) must be empty: copy them with :meth:`union_rows` instead.
        """
        if other.n_ids:
            raise ValueError("other has direct ids; use union_rows to copy them into each row")
        if not other.has_context:
            return self.with_node(node) if node is not None else self
        oc = other.context
        return self.with_refs(AllRefs(len(self), oc.distinct_refs()), oc.blocks.values(), node)

    def direct(self, node: OpNode | None = None) -> RowLineage:
        """The same rows without their shared sets (only the rows whose values they carry)."""
        return RowLineage(self.offsets, self.ids, node if node is not None else self.node)

    def flattened(self) -> RowLineage:
        """Context folded into each row's list (O(rows x set size)): for consumers that take one list
        per row. Prefer the shared form wherever the consumer understands it."""
        if not self.has_context:
            return self
        ctx = self.context
        owners = np.repeat(np.arange(len(self), dtype=np.int64), np.diff(ctx.ref_offsets))
        o_extra, extra = ctx.expand(owners, ctx.refs)
        o_own = np.repeat(np.arange(len(self), dtype=np.int64), np.diff(self.offsets))
        o_all = np.concatenate([o_own, o_extra])
        order = np.argsort(o_all, kind="stable")
        parts_off = np.zeros(len(self) + 1, dtype=np.int64)
        np.cumsum(np.bincount(o_all, minlength=len(self)), out=parts_off[1:])
        off, ids = _dedupe_rows(parts_off, np.concatenate([self.ids, extra])[order])
        return RowLineage(off, ids, self.node)

    # ---------------------------------------------------------------- row operations
    def __len__(self) -> int:
        return self._n

    @property
    def n_ids(self) -> int:
        """Number of direct source-row references (the shared sets are counted once, apart)."""
        return int(self.offsets[-1] - self.offsets[0])

    def take(self, rows, node: OpNode | None = None) -> RowLineage:
        """Rows in the given order (repeats allowed): filters, sorts, samples, explode."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise UnknownRowError(f"positions outside 0..{len(self) - 1}")
        off, flat = _segments_gather(self.offsets, rows)
        ctx = self.context.take(rows) if self.has_context else None
        return RowLineage(off, self.ids[flat], node if node is not None else self.node, ctx)

    def group_union(self, codes, n_groups: int, node: OpNode | None = None) -> RowLineage:
        """Row g = union of the rows whose code is g; rows with code < 0 are dropped (NaN groups)."""
        codes = np.asarray(codes, dtype=np.int64)
        if len(codes) != len(self):
            raise ValueError(f"{len(codes)} group codes for {len(self)} rows")
        return RowLineage.deferred(n_groups, lambda: _group_union(self, codes, n_groups), (self,), node)

    def with_node(self, node: OpNode) -> RowLineage:
        """The same rows pointing at another op node (no copy; stays deferred if this one is)."""
        if self._offsets is None:
            return RowLineage.deferred(
                self._n, lambda: (self.offsets, self.ids, self._ctx), (self,), node
            )  # fmt: skip
        out = RowLineage(self._offsets, self._ids, node, self._ctx)
        out._inv = self._inv
        return out

    def row_ids(self, i: int, direct: bool = False) -> np.ndarray:
        """Unique sorted global ids behind row ``i`` (its shared sets too unless ``direct``)."""
        n = len(self)
        if not -n <= i < n:
            raise UnknownRowError(f"row position {i} outside a frame of {n} rows")
        i %= n
        own = self.ids[self.offsets[i] : self.offsets[i + 1]]
        if direct or not self.has_context:
            return sorted_unique(own)
        ctx = self.context
        return sorted_unique(np.concatenate([own, ctx.closure(ctx.row_refs(np.array([i])))]))

    def context_labels(self, i: int) -> list[str]:
        """What made the shared sets row ``i`` refers to directly (e.g. ``['mean(axis=0)']``)."""
        ctx = self.context
        return ctx.labels(sorted_unique(ctx.row_refs(np.array([int(i) % max(len(self), 1)]))))

    def _all_ids(self, rows=None, direct: bool = False) -> np.ndarray:
        lin = self if rows is None else self.take(rows)
        if direct or not lin.has_context:
            return lin.ids
        ctx = lin.context
        return np.concatenate([lin.ids, ctx.closure(ctx.refs)])

    # ---------------------------------------------------------------- backward queries
    def _direct_source_ids(self) -> np.ndarray:
        if self._sids is None:
            ids = self.ids
            self._sids = np.flatnonzero(np.bincount(ids >> np.int64(40))) if ids.size else _EMPTY
        return self._sids

    def source_ids(self) -> np.ndarray:
        """Sorted unique source ids referred to, shared sets included."""
        if not self.has_context:
            return self._direct_source_ids()
        parts = [self._direct_source_ids()]
        for b in self.context.blocks.values():
            if (
                b.pool.size
            ):  # the sources of the smallest and largest id; counted only when others lie between
                lo, hi = int(b.pool.min()) >> ROW_BITS, int(b.pool.max()) >> ROW_BITS
                if hi - lo < 2:
                    parts.append(np.arange(lo, hi + 1, dtype=np.int64))
                else:
                    parts.append(np.flatnonzero(np.bincount((b.pool >> np.int64(ROW_BITS)) - lo)) + lo)
        return sorted_unique(np.concatenate(parts))

    def sources(self, rows=None, direct: bool = False) -> dict[str, np.ndarray]:
        """``{path: sorted int64 row numbers}`` behind all rows (or the given positions).

        Shared sets (the rows a broadcast statistic read) are included unless ``direct=True``.
        Emits one :class:`MissingLineageWarning` naming the tables without lineage that fed these rows
        (recorded as ``missing_lineage`` in an op's parameters, e.g. by a SQL query).
        """
        self._warn_missing()
        pos = None
        if rows is not None:
            pos = np.atleast_1d(np.asarray(rows, dtype=np.int64)) % max(len(self), 1)
        ids = sorted_unique(self._all_ids(pos, direct))
        sids, rownums = decode(ids)
        out: dict[str, np.ndarray] = {}
        if ids.size == 0:
            return out
        cuts = np.flatnonzero(np.diff(sids)) + 1
        for seg_s, seg_r in zip(np.split(sids, cuts), np.split(rownums, cuts)):
            src = REGISTRY.get(int(seg_s[0]))
            prev = out.get(src.path)
            out[src.path] = seg_r if prev is None else union_ids(prev, seg_r)
        return out

    def sources_grouped(self, rows, counts, direct: bool = False) -> list[dict[str, np.ndarray]]:
        """:meth:`sources` of many groups of positions at once: ``rows`` holds the groups one after
        another, ``counts`` their sizes; returns one ``{path: sorted row numbers}`` per group.

        One gather and one sort for all groups (a batch of erasure requests), where :meth:`sources` per
        group costs a gather, a sort and a decode each. With shared sets (and not ``direct``) each
        group is asked separately.

        Examples
        --------
        >>> import os, tempfile, pandas as pd, traceprop_frames as tpf
        >>> path = os.path.join(tempfile.mkdtemp(), "t.csv")
        >>> pd.DataFrame({"x": range(5)}).to_csv(path, index=False)
        >>> lin = tpf.read_csv(path).tp.lineage()
        >>> [{os.path.basename(k): v.tolist() for k, v in d.items()} for d in lin.sources_grouped([4, 2, 1], [1, 2])]
        [{'t.csv': [4]}, {'t.csv': [1, 2]}]
        """
        rows = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        counts = np.asarray(counts, dtype=np.int64)
        if self.has_context and not direct:
            return [self.sources(rows=part) for part in np.split(rows, np.cumsum(counts)[:-1])]
        self._warn_missing()
        lin = self.take(rows % max(len(self), 1))
        group = np.repeat(np.repeat(np.arange(len(counts), dtype=np.int64), counts), np.diff(lin.offsets))
        sids, rownums = decode(lin.ids)
        usids, at = np.unique(sids, return_inverse=True)
        paths = [REGISTRY.get(int(s)).path for s in usids.tolist()]
        names = sorted(set(paths))
        path_of = np.array([names.index(p) for p in paths], dtype=np.int64)[at.reshape(-1)]
        group, path_of, rownums = _distinct_sorted(group, path_of, rownums)
        bounds = np.searchsorted(group, np.arange(len(counts) + 1))
        out = []
        for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            p, r = path_of[lo:hi], rownums[lo:hi]
            if hi - lo == 0:
                out.append({})
            elif p[0] == p[-1]:
                out.append({names[p[0]]: r})
            else:
                cuts = np.flatnonzero(np.diff(p)) + 1
                out.append({names[int(q[0])]: v for q, v in zip(np.split(p, cuts), np.split(r, cuts))})
        return out

    def _warn_missing(self) -> None:
        missing = sorted({m for n in self.node.topo() for m in n.params.get("missing_lineage", ())})
        if missing:
            warnings.warn(
                f"tables without lineage fed these rows and contribute no source rows: {missing}. Load "
                "them with con.read_csv / con.read_parquet / con.register(traced_df) to trace them.",
                MissingLineageWarning,
                stacklevel=3,
            )

    def trace(self, i: int, strict: bool = True, direct: bool = False) -> list[SourceRow]:
        """The source rows behind row ``i``, each checked against its file's sha256.

        Shared sets are included unless ``direct=True``. With ``strict=True`` (default) a changed or
        missing file raises :class:`SourceChangedError` / :class:`SourceMissingError`; with
        ``strict=False`` its rows come back with ``sha256_ok=False`` and a :class:`SourceChangedWarning`
        is emitted once per call.
        """
        ids = self.row_ids(i, direct=direct)
        sids, rownums = decode(ids)
        out: list[SourceRow] = []
        status: dict[int, bool | None] = {}
        for sid, r in zip(sids.tolist(), rownums.tolist()):
            src = REGISTRY.get(sid)
            if sid not in status:
                if strict:
                    src.verify()
                    status[sid] = None if not src.is_file else True
                else:
                    status[sid] = src.check()
                    if status[sid] is False:
                        warnings.warn(
                            f"source {src.path!r} changed or is missing since it was loaded; its rows are "
                            "flagged sha256_ok=False. Reload the file and re-run the pipeline.",
                            SourceChangedWarning,
                            stacklevel=2,
                        )
            out.append(SourceRow(src.path, r, src.sha256, status[sid], src.format, sid))
        return out

    def verify_sources(self) -> None:
        """Raise if any source file behind these rows changed or disappeared."""
        errors = []
        for sid in self.source_ids().tolist():
            try:
                REGISTRY.get(sid).verify()
            except (SourceChangedError, SourceMissingError) as e:
                errors.append(e)
        if errors:
            raise errors[0]

    # ---------------------------------------------------------------- forward queries
    def _inverted(self) -> tuple[np.ndarray, np.ndarray]:
        """(sorted ids, the row each entry belongs to) — built once, on demand."""
        if self._inv is None:
            order = np.argsort(self.ids, kind="stable")
            row_of = np.repeat(np.arange(len(self), dtype=np.int64), np.diff(self.offsets))
            self._inv = (self.ids[order], row_of[order])
        return self._inv

    def rows_from_ids(self, ids, direct: bool = False) -> np.ndarray:
        """Sorted positions of rows whose lineage contains any of ``ids`` (through shared sets
        too, unless ``direct=True``)."""
        sorted_ids, row_of = self._inverted()
        ids = np.asarray(ids, dtype=np.int64)
        lo = np.searchsorted(sorted_ids, ids, "left")
        hi = np.searchsorted(sorted_ids, ids, "right")
        lengths = hi - lo
        own = row_of[segments_flat(lo, hi)] if int(lengths.sum()) else _EMPTY
        if not direct and self.has_context:
            ctx = self.context
            own = np.concatenate([own, ctx.rows_referring(ctx.hit_sets(ids))])
        return sorted_unique(own)

    def rows_from_ids_grouped(self, ids, counts, direct: bool = False) -> list[np.ndarray]:
        """:meth:`rows_from_ids` of many groups of ids at once (``ids`` one group after another, ``counts``
        their sizes): one search and one sort for all groups; with shared sets (and not ``direct``)
        each group is asked separately.

        Examples
        --------
        >>> lin = RowLineage(np.arange(4), np.array([5, 6, 5]))
        >>> [g.tolist() for g in lin.rows_from_ids_grouped([5, 6, 7], [1, 2])]
        [[0, 2], [1]]
        """
        ids = np.atleast_1d(np.asarray(ids, dtype=np.int64))
        counts = np.asarray(counts, dtype=np.int64)
        if self.has_context and not direct:
            return [self.rows_from_ids(part) for part in np.split(ids, np.cumsum(counts)[:-1])]
        sorted_ids, row_of = self._inverted()
        lo = np.searchsorted(sorted_ids, ids, "left")
        hi = np.searchsorted(sorted_ids, ids, "right")
        own = row_of[segments_flat(lo, hi)] if int((hi - lo).sum()) else _EMPTY
        group = np.repeat(np.repeat(np.arange(len(counts), dtype=np.int64), counts), hi - lo)
        group, own = _distinct_sorted(group, own)
        bounds = np.searchsorted(group, np.arange(len(counts) + 1)).tolist()
        return [own[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def rows_from_source(self, path, rows, direct: bool = False) -> np.ndarray:
        """Positions of derived rows that depend on any of ``rows`` of source ``path``.

        Rows that depend on them only through shared sets (a statistic) count unless ``direct=True``.
        Raises :class:`UnknownSourceError` if no row here comes from ``path`` and
        :class:`UnknownRowError` for row numbers the source does not have.
        """
        self.materialize()  # composing may register a source (an array-made tensor's, on first use)
        ids = REGISTRY.ids_for_rows(path, rows)
        return self.rows_from_ids(ids, direct=direct)

    # ---------------------------------------------------------------- pickling
    def __reduce__(self):
        """Pickle as composed CSR arrays + source records + op DAG, so an estimator holding lineage can be
        pickled (``joblib``, ``clone``) and loaded in another process, whose source ids may differ."""
        meta = manifest.build(self.source_ids(), self.node, len(self))
        return (
            from_csr,
            (self.offsets, self.ids, meta, context_payload(self.context) if self.has_context else None),
        )

    # ---------------------------------------------------------------- graph
    def ops(self) -> list[str]:
        return LineageDAG(self.node).ops()

    def ancestors(self) -> LineageDAG:
        return LineageDAG(self.node)

    def __repr__(self) -> str:
        extra = f", {self.context.n_sets} shared sets" if self.has_context else ""
        return f"RowLineage({len(self)} rows, {self.n_ids} source-row refs{extra}, op={self.node.op!r})"


def _stack(csrs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    ids = np.concatenate([c[1] for c in csrs])
    shifts = np.cumsum([0] + [len(c[1]) for c in csrs[:-1]])
    offsets = np.concatenate([csrs[0][0][:1]] + [c[0][1:] + s for c, s in zip(csrs, shifts)])
    return offsets - offsets[0], ids


def from_csr(offsets: np.ndarray, ids: np.ndarray, meta: dict, context: bytes | None = None) -> RowLineage:
    """Rebuild a RowLineage from CSR arrays saved with a :mod:`~traceprop_frames.lineage.manifest`
    (and the shared-context blob, if any): the sources are re-registered in this process and the
    source ids inside the row ids (and the shared sets' pools) remapped."""
    ids, node = manifest.remap(ids, meta)
    ctx = None
    if context is not None:
        ctx = context_from_payload(context, len(offsets) - 1, lambda pool: manifest.remap(pool, meta)[0])
    return RowLineage(offsets, ids, node, ctx)
