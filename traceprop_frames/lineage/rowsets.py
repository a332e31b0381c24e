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
from traceprop_frames.lineage.graph import LineageDAG, OpNode
from traceprop_frames.lineage.sources import REGISTRY, Source, decode, encode

_EMPTY = np.zeros(0, dtype=np.int64)


def sorted_unique(a: np.ndarray) -> np.ndarray:
    """Sorted distinct values (sort-based; numpy's hash-based ``unique`` is far slower on int64 ids)."""
    if a.size < 2:
        return np.array(a, dtype=np.int64)
    a = np.sort(a)
    keep = np.empty(a.size, dtype=bool)
    keep[0] = True
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    return a[keep]


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


def _group_union(lin: RowLineage, codes: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    keep = codes >= 0
    if keep.all():
        order = _stable_group_order(codes, n_groups)
    else:
        members = np.flatnonzero(keep)
        order = members[_stable_group_order(codes[members], n_groups)]
    offsets = lin.offsets
    lengths = offsets[1:] - offsets[:-1]
    counts = np.bincount(codes[order], weights=lengths[order], minlength=n_groups).astype(np.int64)
    off = np.zeros(n_groups + 1, dtype=np.int64)
    np.cumsum(counts, out=off[1:])
    if lengths.size and lengths.min() == 1 and lengths.max() == 1:
        return off, lin.ids[order]  # one id per input row (fresh sources): a plain gather
    _, flat = _segments_gather(offsets, order)
    return _dedupe_rows(off, lin.ids[flat])  # members' sets may overlap (e.g. after a join)


def _union_rows(
    a: RowLineage, ia: np.ndarray, b: RowLineage, ib: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    la = np.where(ia >= 0, a.offsets[ia + 1] - a.offsets[np.maximum(ia, 0)], 0)
    lb = np.where(ib >= 0, b.offsets[ib + 1] - b.offsets[np.maximum(ib, 0)], 0)
    off = np.zeros(len(ia) + 1, dtype=np.int64)
    np.cumsum(la + lb, out=off[1:])
    out = np.empty(int(off[-1]), dtype=np.int64)
    for src, idx, lens, first in ((a, ia, la, None), (b, ib, lb, la)):
        rows = np.flatnonzero(lens)
        if rows.size == 0:
            continue
        _, flat = _segments_gather(src.offsets, idx[rows])
        dst_start = off[rows] if first is None else off[rows] + first[rows]
        seg_off = np.zeros(rows.size + 1, dtype=np.int64)
        np.cumsum(lens[rows], out=seg_off[1:])
        dst = np.arange(flat.size, dtype=np.int64)
        dst += np.repeat(dst_start - seg_off[:-1], lens[rows])
        out[dst] = src.ids[flat]
    if np.intersect1d(a.source_ids(), b.source_ids()).size:
        return _dedupe_rows(off, out)  # both sides may hold the same source row (self-joins)
    return off, out


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

    Operations that rebuild rows (:meth:`union_rows` for joins, :meth:`group_union` for group-bys,
    :meth:`concat`) only *record* their inputs — the row-position arrays the operation produced — and
    compose the CSR arrays on first access to ``offsets``/``ids`` (deferred lineage, as in lineage
    capture systems such as SmokedDuck). A pipeline therefore pays for capturing positions, and the
    first query pays for composing them once; the result is cached.
    """

    __slots__ = ("_offsets", "_ids", "_n", "_build", "_deps", "node", "_inv", "_sids", "__weakref__")

    def __init__(self, offsets: np.ndarray, ids: np.ndarray, node: OpNode | None = None) -> None:
        self._offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        self._ids = np.ascontiguousarray(ids, dtype=np.int64)
        self._n = len(self._offsets) - 1
        self._build = None
        self._deps: tuple[RowLineage, ...] = ()
        self.node = node if node is not None else OpNode("lineage")
        self._inv: tuple[np.ndarray, np.ndarray] | None = None
        self._sids: np.ndarray | None = None

    @classmethod
    def deferred(cls, n: int, build, deps: tuple[RowLineage, ...], node: OpNode | None) -> RowLineage:
        """``n`` rows whose CSR arrays ``build()`` computes from the lineages ``deps`` when first needed."""
        obj = cls.__new__(cls)
        obj._offsets = obj._ids = None
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
        """Compose the CSR arrays now (iteratively, so arbitrarily deep chains never recurse)."""
        if self._offsets is not None:
            return self
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
                off, ids = lin._build()
                lin._offsets = np.ascontiguousarray(off, dtype=np.int64)
                lin._ids = np.ascontiguousarray(ids, dtype=np.int64)
                lin._build, lin._deps = None, ()  # release the inputs once composed
        return self

    @property
    def offsets(self) -> np.ndarray:
        if self._offsets is None:
            self.materialize()
        return self._offsets

    @property
    def ids(self) -> np.ndarray:
        if self._offsets is None:
            self.materialize()
        return self._ids

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
            ids = np.concatenate([p.ids for p in parts])
            shifts = np.cumsum([0] + [len(p.ids) for p in parts[:-1]])
            offsets = np.concatenate(
                [parts[0].offsets[:1]] + [p.offsets[1:] + s for p, s in zip(parts, shifts)]
            )
            return offsets - offsets[0], ids

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

    # ---------------------------------------------------------------- row operations
    def __len__(self) -> int:
        return self._n

    @property
    def n_ids(self) -> int:
        return int(self.offsets[-1] - self.offsets[0])

    def take(self, rows, node: OpNode | None = None) -> RowLineage:
        """Rows in the given order (repeats allowed): filters, sorts, samples, explode."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise UnknownRowError(f"positions outside 0..{len(self) - 1}")
        off, flat = _segments_gather(self.offsets, rows)
        return RowLineage(off, self.ids[flat], node if node is not None else self.node)

    def group_union(self, codes, n_groups: int, node: OpNode | None = None) -> RowLineage:
        """Row g = union of the rows whose code is g; rows with code < 0 are dropped (NaN groups)."""
        codes = np.asarray(codes, dtype=np.int64)
        if len(codes) != len(self):
            raise ValueError(f"{len(codes)} group codes for {len(self)} rows")
        return RowLineage.deferred(n_groups, lambda: _group_union(self, codes, n_groups), (self,), node)

    def with_node(self, node: OpNode) -> RowLineage:
        """The same rows pointing at another op node (no copy; stays deferred if this one is)."""
        if self._offsets is None:
            return RowLineage.deferred(self._n, lambda: (self.offsets, self.ids), (self,), node)
        out = RowLineage(self._offsets, self._ids, node)
        out._inv = self._inv
        return out

    def row_ids(self, i: int) -> np.ndarray:
        """Unique sorted global ids behind row ``i``."""
        n = len(self)
        if not -n <= i < n:
            raise UnknownRowError(f"row position {i} outside a frame of {n} rows")
        i %= n
        return sorted_unique(self.ids[self.offsets[i] : self.offsets[i + 1]])

    # ---------------------------------------------------------------- backward queries
    def source_ids(self) -> np.ndarray:
        """Sorted unique source ids referred to (cached)."""
        if self._sids is None:
            ids = self.ids
            self._sids = np.flatnonzero(np.bincount(ids >> np.int64(40))) if ids.size else _EMPTY
        return self._sids

    def sources(self, rows=None) -> dict[str, np.ndarray]:
        """``{path: sorted int64 row numbers}`` behind all rows (or the given positions).

        Emits one :class:`MissingLineageWarning` naming the tables without lineage that fed these rows
        (recorded as ``missing_lineage`` in an op's parameters, e.g. by a SQL query).
        """
        self._warn_missing()
        lin = (
            self
            if rows is None
            else self.take(np.atleast_1d(np.asarray(rows, dtype=np.int64)) % max(len(self), 1))
        )
        ids = sorted_unique(lin.ids)
        sids, rownums = decode(ids)
        out: dict[str, np.ndarray] = {}
        if ids.size == 0:
            return out
        cuts = np.flatnonzero(np.diff(sids)) + 1
        for seg_s, seg_r in zip(np.split(sids, cuts), np.split(rownums, cuts)):
            src = REGISTRY.get(int(seg_s[0]))
            prev = out.get(src.path)
            out[src.path] = seg_r if prev is None else np.union1d(prev, seg_r)
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

    def trace(self, i: int, strict: bool = True) -> list[SourceRow]:
        """The source rows behind row ``i``, each checked against its file's sha256.

        With ``strict=True`` (default) a changed or missing file raises :class:`SourceChangedError` /
        :class:`SourceMissingError`; with ``strict=False`` its rows come back with ``sha256_ok=False``
        and a :class:`SourceChangedWarning` is emitted once per call.
        """
        ids = self.row_ids(i)
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

    def rows_from_ids(self, ids) -> np.ndarray:
        """Sorted positions of rows whose lineage contains any of ``ids``."""
        sorted_ids, row_of = self._inverted()
        ids = np.asarray(ids, dtype=np.int64)
        lo = np.searchsorted(sorted_ids, ids, "left")
        hi = np.searchsorted(sorted_ids, ids, "right")
        if ids.size == 1:
            return sorted_unique(row_of[lo[0] : hi[0]])
        lengths = hi - lo
        total = int(lengths.sum())
        if total == 0:
            return _EMPTY
        off = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(lengths, out=off[1:])
        flat = np.arange(total, dtype=np.int64) + np.repeat(lo - off[:-1], lengths)
        return sorted_unique(row_of[flat])

    def rows_from_source(self, path, rows) -> np.ndarray:
        """Positions of derived rows that depend on any of ``rows`` of source ``path``.

        Raises :class:`UnknownSourceError` if no row here comes from ``path`` and
        :class:`UnknownRowError` for row numbers the source does not have.
        """
        ids = REGISTRY.ids_for_rows(path, rows)
        return self.rows_from_ids(ids)

    # ---------------------------------------------------------------- pickling
    def __reduce__(self):
        """Pickle as composed CSR arrays + source records + op DAG, so an estimator holding lineage can be
        pickled (``joblib``, ``clone``) and loaded in another process, whose source ids may differ."""
        return (from_csr, (self.offsets, self.ids, manifest.build(self.source_ids(), self.node, len(self))))

    # ---------------------------------------------------------------- graph
    def ops(self) -> list[str]:
        return LineageDAG(self.node).ops()

    def ancestors(self) -> LineageDAG:
        return LineageDAG(self.node)

    def __repr__(self) -> str:
        return f"RowLineage({len(self)} rows, {self.n_ids} source-row refs, op={self.node.op!r})"


def from_csr(offsets: np.ndarray, ids: np.ndarray, meta: dict) -> RowLineage:
    """Rebuild a RowLineage from CSR arrays saved with a :mod:`~traceprop_frames.lineage.manifest`:
    the sources are re-registered in this process and the source ids inside the row ids remapped."""
    ids, node = manifest.remap(ids, meta)
    return RowLineage(offsets, ids, node)
