"""One row's lineage in microseconds: the look-up behind ``X.sources(rows=[i])`` and ``X.trace(i)``.

The first query composes the tensor's lineage (see :class:`~traceprop_frames.lineage.RowLineage`) and
builds a :class:`RowIndex` beside it, cached per lineage table. Asking about one row then reads that
row's slice of the CSR arrays; the rows a shared set stands for (a column mean reads every row) are
decoded once per distinct set and reused, so a row whose own source rows lie inside its shared sets
costs a slice, one binary search and a copy of the cached answer. Anything else falls back to the
general :meth:`RowLineage.sources` / :meth:`RowLineage.trace`, whose answers these equal.
"""

from __future__ import annotations

import weakref

import numpy as np

from traceprop_frames.errors import UnknownRowError
from traceprop_frames.lineage import REGISTRY, RowLineage, SourceRow, decode
from traceprop_frames.lineage.refs import union_ids
from traceprop_frames.lineage.rowsets import sorted_unique
from traceprop_frames.lineage.sources import ROW_BITS, ROW_MASK

_INDEX: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LAST: list[RowIndex | None] = [None]  # the index asked last (keeps that one lineage alive until the next)


def row_index(lin: RowLineage) -> RowIndex:
    """The cached :class:`RowIndex` of ``lin`` (built, and ``lin`` composed, on first use)."""
    last = _LAST[0]
    if last is not None and last.lin is lin:  # the usual loop asks one tensor many times
        return last
    idx = _INDEX.get(lin)
    if idx is None:
        idx = _INDEX[lin] = RowIndex(lin)
    _LAST[0] = idx
    return idx


def one_row(rows, n: int) -> int | None:
    """``rows`` as one row position when it names exactly one row (``i``, ``[i]``, a 1-element int
    array), else None. Raises :class:`UnknownRowError` for a position outside ``n`` rows."""
    if type(rows) is list and len(rows) == 1:
        rows = rows[0]
    elif isinstance(rows, np.ndarray) and rows.size == 1 and rows.dtype.kind in "iu":
        rows = int(rows.reshape(-1)[0])
    if type(rows) is not int and not isinstance(rows, np.integer):
        return None
    i = int(rows)
    if not -n <= i < n:
        raise UnknownRowError(f"row position {i} outside a tensor of {n} rows")
    return i % n


class RowIndex:
    """A composed lineage's arrays plus the decoded answers of its shared sets."""

    __slots__ = ("lin", "off", "ids", "roff", "refs", "ctx", "missing", "_sets", "_traces", "_made")

    def __init__(self, lin: RowLineage) -> None:
        self.lin = lin
        self.off, self.ids = lin.offsets, lin.ids
        self.ctx = lin.context if lin.has_context else None
        self.roff = self.ctx.ref_offsets if self.ctx is not None else None
        self.refs = self.ctx.refs if self.ctx is not None else None
        self.missing = any(n.params.get("missing_lineage") for n in lin.node.topo())
        self._sets: dict[bytes, tuple[np.ndarray, dict[str, np.ndarray]]] = {}
        self._traces: dict = {}  # shared-set key (in-memory sources) or (key, file status) -> rows
        self._made: dict[tuple, SourceRow] = {}

    def _shared(self, i: int):
        """(key, sorted ids, answer) of the shared sets row ``i`` refers to, or None when it refers to none."""
        a, b = self.roff[i], self.roff[i + 1]
        if a == b:
            return None
        key = self.refs[a:b].tobytes()
        hit = self._sets.get(key)
        if hit is None:
            ids = sorted_unique(self.ctx.closure(self.refs[a:b]))
            hit = self._sets[key] = (ids, _answer(ids))
        return key, hit[0], hit[1]

    def sources(self, i: int, direct: bool) -> dict[str, np.ndarray]:
        """``RowLineage.sources(rows=[i], direct=direct)``."""
        if self.missing:
            return self.lin.sources([i], direct=direct)  # warns about the tables without lineage
        own = self.ids[self.off[i] : self.off[i + 1]]
        shared = None if direct or self.ctx is None else self._shared(i)
        if shared is None:
            return _answer(own)
        _, ids, answer = shared
        if _inside(own, ids):
            return {k: v.copy() for k, v in answer.items()}
        return _answer(np.concatenate([own, ids]))

    def trace(self, i: int, strict: bool, direct: bool) -> list[SourceRow]:
        """``RowLineage.trace(i, strict, direct)``: source rows checked against their files' sha256."""
        own = self.ids[self.off[i] : self.off[i + 1]]
        shared = None if direct or self.ctx is None else self._shared(i)
        if shared is None:
            if own.size > 1:
                return self.lin.trace(i, strict=strict, direct=direct)
            return [self._row(x, _status(x >> ROW_BITS, strict)) for x in own.tolist()]
        key, ids, _ = shared
        if not _inside(own, ids):
            return self.lin.trace(i, strict=strict, direct=direct)
        rows = self._traces.get(key)  # sets of in-memory sources only: no file to check, the same rows
        if rows is not None:
            return list(rows)
        sids = _distinct_sources(ids)
        status = tuple(_status(s, strict) for s in sids)
        if not any(REGISTRY.get(s).is_file for s in sids):
            rows = self._traces[key] = [self._row(x, None) for x in ids.tolist()]
            return list(rows)
        rows = self._traces.get((key, status))
        if rows is None:
            by_sid = dict(zip(sids, status))
            rows = [self._row(x, by_sid[x >> ROW_BITS]) for x in ids.tolist()]
            self._traces[(key, status)] = rows
        return list(rows)

    def _row(self, x: int, status: bool | None) -> SourceRow:
        """The (immutable) SourceRow of global id ``x`` with this status, made once."""
        row = self._made.get((x, status))
        if row is None:
            src = REGISTRY.get(x >> ROW_BITS)
            row = self._made[(x, status)] = SourceRow(
                src.path, x & ROW_MASK, src.sha256, status, src.format, src.id
            )
        return row


def _inside(own: np.ndarray, ids: np.ndarray) -> bool:
    """Whether every id of ``own`` is in the sorted array ``ids``."""
    if own.size == 0:
        return True
    if own.size == 1:  # the usual row: one own id (scalar calls, no temporaries)
        x = own[0]
        j = ids.searchsorted(x)
        return bool(j < ids.size and ids[j] == x)
    pos = ids.searchsorted(own)
    return bool(pos.max() < ids.size and np.array_equal(ids[pos], own))


def _answer(ids: np.ndarray) -> dict[str, np.ndarray]:
    """``{path: sorted unique row numbers}`` of global ids, sources of one path merged."""
    if ids.size == 1:
        x = int(ids[0])
        return {REGISTRY.get(x >> ROW_BITS).path: np.array([x & ROW_MASK], dtype=np.int64)}
    ids = sorted_unique(ids)
    out: dict[str, np.ndarray] = {}
    if ids.size == 0:
        return out
    sids, rownums = decode(ids)
    cuts = np.flatnonzero(np.diff(sids)) + 1
    for seg_s, seg_r in zip(np.split(sids, cuts), np.split(rownums, cuts)):
        path = REGISTRY.get(int(seg_s[0])).path
        prev = out.get(path)
        out[path] = seg_r if prev is None else union_ids(prev, seg_r)
    return out


def _distinct_sources(ids: np.ndarray) -> list[int]:
    first, last = int(ids[0]) >> ROW_BITS, int(ids[-1]) >> ROW_BITS
    if first == last:
        return [first]
    return sorted_unique(ids >> np.int64(ROW_BITS)).tolist()


def _status(sid: int, strict: bool) -> bool | None:
    """What ``RowLineage.trace`` records as ``sha256_ok`` for source ``sid`` (raising/warning as it does)."""
    src = REGISTRY.get(sid)
    if not src.is_file:
        return None
    if strict:
        src.verify()
        return True
    ok = src.check()
    if ok is False:
        import warnings

        from traceprop_frames.errors import SourceChangedWarning

        warnings.warn(
            f"source {src.path!r} changed or is missing since it was loaded; its rows are flagged "
            "sha256_ok=False. Reload the file and re-run the pipeline.",
            SourceChangedWarning,
            stacklevel=4,
        )
    return ok
