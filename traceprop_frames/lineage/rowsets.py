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
    SourceChangedError,
    SourceChangedWarning,
    SourceMissingError,
    UnknownRowError,
)
from traceprop_frames.lineage.graph import LineageDAG, OpNode
from traceprop_frames.lineage.sources import REGISTRY, Source, decode, encode

_EMPTY = np.zeros(0, dtype=np.int64)


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
    """Lineage of ``n`` derived rows in CSR form, pointing at an :class:`OpNode`."""

    __slots__ = ("offsets", "ids", "node", "_inv", "__weakref__")

    def __init__(self, offsets: np.ndarray, ids: np.ndarray, node: OpNode | None = None) -> None:
        self.offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        self.ids = np.ascontiguousarray(ids, dtype=np.int64)
        self.node = node if node is not None else OpNode("lineage")
        self._inv: tuple[np.ndarray, np.ndarray] | None = None

    # ---------------------------------------------------------------- construction
    @classmethod
    def identity(cls, source: Source, node: OpNode) -> RowLineage:
        """Row i of a freshly loaded source depends on exactly source row i."""
        n = source.n_rows
        return cls(np.arange(n + 1, dtype=np.int64), encode(source.id, np.arange(n, dtype=np.int64)), node)

    @classmethod
    def empty(cls, n: int, node: OpNode | None = None) -> RowLineage:
        """``n`` rows that depend on no source row (e.g. a table without lineage)."""
        return cls(np.zeros(n + 1, dtype=np.int64), _EMPTY, node)

    @classmethod
    def concat(cls, parts: list[RowLineage], node: OpNode | None = None) -> RowLineage:
        """Stack the rows of several lineages (``pd.concat`` along rows)."""
        if not parts:
            return cls.empty(0, node)
        ids = np.concatenate([p.ids for p in parts])
        shifts = np.cumsum([0] + [len(p.ids) for p in parts[:-1]])
        offsets = np.concatenate([parts[0].offsets[:1]] + [p.offsets[1:] + s for p, s in zip(parts, shifts)])
        return cls(offsets - offsets[0], ids, node)

    @classmethod
    def union_rows(
        cls, a: RowLineage, ia: np.ndarray, b: RowLineage, ib: np.ndarray, node=None
    ) -> RowLineage:
        """Row k = a[ia[k]] ∪ b[ib[k]]; -1 in ``ia``/``ib`` means "no row on that side" (outer joins)."""
        ia = np.asarray(ia, dtype=np.int64)
        ib = np.asarray(ib, dtype=np.int64)
        la = np.where(ia >= 0, a.offsets[ia + 1] - a.offsets[np.maximum(ia, 0)], 0)
        lb = np.where(ib >= 0, b.offsets[ib + 1] - b.offsets[np.maximum(ib, 0)], 0)
        n = len(ia)
        off = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(la + lb, out=off[1:])
        out = np.empty(int(off[-1]), dtype=np.int64)
        for src, idx, lens, shift in ((a, ia, la, 0), (b, ib, lb, la)):
            rows = np.flatnonzero(lens)
            if rows.size == 0:
                continue
            _, flat = _segments_gather(src.offsets, idx[rows])
            dst_start = off[rows] + (shift[rows] if isinstance(shift, np.ndarray) else 0)
            dst = np.arange(flat.size, dtype=np.int64)
            seg_off = np.zeros(rows.size + 1, dtype=np.int64)
            np.cumsum(lens[rows], out=seg_off[1:])
            dst += np.repeat(dst_start - seg_off[:-1], lens[rows])
            out[dst] = src.ids[flat]
        return cls(off, out, node)

    # ---------------------------------------------------------------- row operations
    def __len__(self) -> int:
        return len(self.offsets) - 1

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
        keep = codes >= 0
        members = np.flatnonzero(keep)
        order = members[np.argsort(codes[members], kind="stable")]
        lengths = self.offsets[order + 1] - self.offsets[order]
        per_group = np.bincount(codes[order], weights=lengths, minlength=n_groups).astype(np.int64)
        off = np.zeros(n_groups + 1, dtype=np.int64)
        np.cumsum(per_group, out=off[1:])
        _, flat = _segments_gather(self.offsets, order)
        return RowLineage(off, self.ids[flat], node)

    def with_node(self, node: OpNode) -> RowLineage:
        out = RowLineage(self.offsets, self.ids, node)
        out._inv = self._inv
        return out

    def row_ids(self, i: int) -> np.ndarray:
        """Unique sorted global ids behind row ``i``."""
        n = len(self)
        if not -n <= i < n:
            raise UnknownRowError(f"row position {i} outside a frame of {n} rows")
        i %= n
        return np.unique(self.ids[self.offsets[i] : self.offsets[i + 1]])

    # ---------------------------------------------------------------- backward queries
    def source_ids(self) -> np.ndarray:
        """Sorted unique source ids referred to."""
        return np.unique(self.ids >> np.int64(40)) if self.ids.size else _EMPTY

    def sources(self, rows=None) -> dict[str, np.ndarray]:
        """``{path: sorted int64 row numbers}`` behind all rows (or the given positions)."""
        lin = (
            self
            if rows is None
            else self.take(np.atleast_1d(np.asarray(rows, dtype=np.int64)) % max(len(self), 1))
        )
        ids = np.unique(lin.ids)
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
            return np.unique(row_of[lo[0] : hi[0]])
        lengths = hi - lo
        total = int(lengths.sum())
        if total == 0:
            return _EMPTY
        off = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(lengths, out=off[1:])
        flat = np.arange(total, dtype=np.int64) + np.repeat(lo - off[:-1], lengths)
        return np.unique(row_of[flat])

    def rows_from_source(self, path, rows) -> np.ndarray:
        """Positions of derived rows that depend on any of ``rows`` of source ``path``.

        Raises :class:`UnknownSourceError` if no row here comes from ``path`` and
        :class:`UnknownRowError` for row numbers the source does not have.
        """
        ids = REGISTRY.ids_for_rows(path, rows)
        return self.rows_from_ids(ids)

    # ---------------------------------------------------------------- graph
    def ops(self) -> list[str]:
        return LineageDAG(self.node).ops()

    def ancestors(self) -> LineageDAG:
        return LineageDAG(self.node)

    def __repr__(self) -> str:
        return f"RowLineage({len(self)} rows, {self.n_ids} source-row refs, op={self.node.op!r})"
