"""Per-row references to shared sets, in compact forms that are expanded only when asked.

A :class:`~traceprop_frames.lineage.context.Context` says, for each of ``n`` rows, which global set ids
the row refers to. Most cross-row calls give every row a reference of one simple shape, so a context is
a list of *layers*, each one of the shapes below, and a row's references are the union over the layers:

==================  ===============================================  ===================================
layer               row ``i`` refers to                              made by
==================  ===============================================  ===================================
:class:`CsrRefs`    ``refs[offsets[i]:offsets[i+1]]``                 anything (the general form)
:class:`EachRefs`   ``base + i`` if ``lo <= i < hi``, else nothing    ``shift`` (offset), ``cumsum``
                                                                     (prefix), ``rolling`` (window):
                                                                     set ``i`` is the rows row ``i`` read
:class:`CodeRefs`   ``base + codes[i]`` if ``codes[i] >= 0``          group ``transform`` (set = group),
                                                                     a subset of rows, a ``take``
:class:`AllRefs`    every id of ``set_ids``                           a statistic broadcast into rows
                                                                     (``s / s.sum()``, a z-score)
==================  ===============================================  ===================================

Recording one costs O(1) (or keeps an array the call computed anyway); :meth:`csr` expands a layer to the
general form for readers that walk all rows, while the per-row questions (:meth:`gather`,
:meth:`take`, :meth:`rows_referring`, :meth:`distinct`) are answered on the compact form.
"""

from __future__ import annotations

import numpy as np

_EMPTY = np.zeros(0, dtype=np.int64)


def segments_flat(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(starts[k], ends[k])`` for all k (vectorised; an empty segment where
    ``ends[k] <= starts[k]``)."""
    lengths = np.maximum(ends - starts, 0)
    total = int(lengths.sum())
    if total == 0:
        return _EMPTY
    off = np.zeros(len(starts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=off[1:])
    return np.arange(total, dtype=np.int64) + np.repeat(starts - off[:-1], lengths)


def sorted_unique(a: np.ndarray) -> np.ndarray:
    """Sorted distinct values of an int64 id array (sort-based: numpy >= 2.3's hash-based ``np.unique`` is
    10-40 times slower on int64 ids, e.g. 6 ms against 0.4 ms for 40,000 ids)."""
    if a.size < 2:
        return np.array(a, dtype=np.int64).reshape(-1)
    a = np.asarray(a).reshape(-1)
    keep = np.empty(a.size, dtype=bool)
    keep[0] = True
    np.greater(a[1:], a[:-1], out=keep[1:])
    if keep.all():  # already strictly increasing (a backward query's answer, a range): one pass, no sort
        return a.copy()
    rises = int(np.count_nonzero(keep))
    # Few ascending runs (a backward query's columns one after another, a parallel scan's chunks): timsort
    # (numpy's stable sort of int64) merges them in about one pass; random order, a descent at every
    # other place: quicksort. The values sorted are the same either way.
    a = np.sort(a, kind="stable" if 3 * (a.size - rises) < a.size else None)
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    return a[keep]


def _rows_with_hit(hit: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Sorted rows ``i`` of a CSR with a True in ``hit[offsets[i]:offsets[i+1]]`` (one prefix sum)."""
    cum = np.zeros(len(hit) + 1, dtype=np.int64)
    np.cumsum(hit, out=cum[1:])
    return np.flatnonzero(cum[offsets[1:]] > cum[offsets[:-1]])


def _in_sorted(values: np.ndarray, sorted_members: np.ndarray) -> np.ndarray:
    """Which ``values`` are in ``sorted_members`` (sorted, distinct), by binary search."""
    if sorted_members.size == 0:
        return np.zeros(np.shape(values), dtype=bool)
    pos = np.searchsorted(sorted_members, values)
    np.minimum(pos, sorted_members.size - 1, out=pos)
    return sorted_members[pos] == values


def isin_ids(values: np.ndarray, members: np.ndarray) -> np.ndarray:
    """``np.isin(values, members)`` for int64 ids, by the method that suits the members' count.

    A handful of members (an erasure request's rows) is compared one by one, a pass per member; numpy's
    default would pick a lookup table over the members' value range, about 20 times slower over a large
    pool. Many members are sorted once and searched (numpy >= 2.3's default goes through its hash-based
    ``np.unique``: 2.2 s against 0.3 s for a million ids in a million).
    """
    members = np.asarray(members)
    if members.size <= 32:
        return np.isin(values, members, kind="sort")
    values = np.asarray(values)
    members = sorted_unique(members)
    if values.size <= 4096:
        return _in_sorted(values, members)
    order = np.argsort(values.reshape(-1))  # sorted needles search 4x faster than random ones
    hit = np.empty(values.size, dtype=bool)
    hit[order] = _in_sorted(values.reshape(-1)[order], members)
    return hit.reshape(values.shape)


def setdiff_ids(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``np.setdiff1d(a, b)`` for id arrays: the sorted distinct ids of ``a`` not in ``b``."""
    ua = sorted_unique(a)
    return ua[~_in_sorted(ua, sorted_unique(b))]


def union_ids(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``np.union1d(a, b)`` for id arrays (sorted, distinct)."""
    return sorted_unique(np.concatenate([np.asarray(a).reshape(-1), np.asarray(b).reshape(-1)]))


def intersect_ids(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``np.intersect1d(a, b)`` for id arrays (sorted, distinct)."""
    ua = sorted_unique(a)
    return ua[_in_sorted(ua, sorted_unique(b))]


class CsrRefs:
    """Row ``i`` refers to ``refs[offsets[i]:offsets[i+1]]`` (the general form)."""

    __slots__ = ("offsets", "refs")

    def __init__(self, offsets, refs) -> None:
        self.offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        self.refs = np.ascontiguousarray(refs, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def any(self) -> bool:
        return bool(self.refs.size)

    def csr(self) -> tuple[np.ndarray, np.ndarray]:
        return self.offsets, self.refs

    def gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(count per row, the references of ``rows`` one row after another)."""
        lo, hi = self.offsets[rows], self.offsets[rows + 1]
        return hi - lo, self.refs[segments_flat(lo, hi)]

    def take(self, rows: np.ndarray) -> CsrRefs:
        counts, refs = self.gather(rows)
        off = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(counts, out=off[1:])
        return CsrRefs(off, refs)

    def rows_referring(self, set_ids: np.ndarray) -> np.ndarray:
        hit = isin_ids(self.refs, set_ids)
        if not hit.any():
            return _EMPTY
        return _rows_with_hit(hit, self.offsets)

    def distinct(self) -> np.ndarray:
        return sorted_unique(self.refs)

    @property
    def nbytes(self) -> int:
        return self.offsets.nbytes + self.refs.nbytes


class EachRefs:
    """Row ``i`` refers to set ``base + i`` when ``lo <= i < hi`` (one set per row: offsets, prefixes,
    windows), and to nothing otherwise."""

    __slots__ = ("n", "base", "lo", "hi")

    def __init__(self, n: int, base: int, lo: int = 0, hi: int | None = None) -> None:
        self.n, self.base = int(n), int(base)
        self.lo = min(max(int(lo), 0), self.n)
        self.hi = max(min(self.n if hi is None else int(hi), self.n), self.lo)

    def __len__(self) -> int:
        return self.n

    def any(self) -> bool:
        return self.hi > self.lo

    def csr(self) -> tuple[np.ndarray, np.ndarray]:
        off = np.clip(np.arange(self.n + 1, dtype=np.int64) - self.lo, 0, self.hi - self.lo)
        return off, np.arange(self.base + self.lo, self.base + self.hi, dtype=np.int64)

    def _valid(self, rows: np.ndarray) -> np.ndarray:
        return (rows >= self.lo) & (rows < self.hi)

    def gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        valid = self._valid(rows)
        return valid.astype(np.int64), self.base + rows[valid]

    def take(self, rows: np.ndarray) -> CodeRefs:
        return CodeRefs(self.base, np.where(self._valid(rows), rows, -1), self.n)

    def rows_referring(self, set_ids: np.ndarray) -> np.ndarray:
        local = sorted_unique(np.asarray(set_ids, dtype=np.int64) - self.base)
        return local[(local >= self.lo) & (local < self.hi)]

    def distinct(self) -> np.ndarray:
        return np.arange(self.base + self.lo, self.base + self.hi, dtype=np.int64)

    nbytes = 0


class CodeRefs:
    """Row ``i`` refers to set ``base + codes[i]`` when ``codes[i] >= 0`` (all codes below ``m``)."""

    __slots__ = ("base", "codes", "m", "_any")

    def __init__(self, base: int, codes, m: int) -> None:
        self.base, self.m = int(base), int(m)
        self.codes = np.ascontiguousarray(codes, dtype=np.int64)
        self._any = None

    def __len__(self) -> int:
        return len(self.codes)

    def any(self) -> bool:
        if self._any is None:
            self._any = bool(self.codes.size) and bool(self.codes.max() >= 0)
        return self._any

    def csr(self) -> tuple[np.ndarray, np.ndarray]:
        valid = self.codes >= 0
        off = np.zeros(len(self.codes) + 1, dtype=np.int64)
        np.cumsum(valid, out=off[1:])
        return off, self.base + self.codes[valid]

    def gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = self.codes[rows]
        valid = c >= 0
        return valid.astype(np.int64), self.base + c[valid]

    def take(self, rows: np.ndarray) -> CodeRefs:
        return CodeRefs(self.base, self.codes[rows], self.m)

    def rows_referring(self, set_ids: np.ndarray) -> np.ndarray:
        local = np.asarray(set_ids, dtype=np.int64) - self.base
        local = local[(local >= 0) & (local < self.m)]
        if not local.size:
            return _EMPTY
        wanted = np.zeros(self.m + 1, dtype=bool)  # slot m: the rows without a set (code -1)
        wanted[local] = True
        return np.flatnonzero(wanted[self.codes])

    def distinct(self) -> np.ndarray:
        c = self.codes[self.codes >= 0]
        return self.base + np.flatnonzero(np.bincount(c, minlength=self.m)) if c.size else _EMPTY

    @property
    def nbytes(self) -> int:
        return self.codes.nbytes


class AllRefs:
    """Every one of ``n`` rows refers to every id of ``set_ids`` (sorted, distinct)."""

    __slots__ = ("n", "set_ids")

    def __init__(self, n: int, set_ids) -> None:
        self.n = int(n)
        self.set_ids = sorted_unique(np.asarray(set_ids, dtype=np.int64))

    def __len__(self) -> int:
        return self.n

    def any(self) -> bool:
        return self.n > 0 and self.set_ids.size > 0

    def csr(self) -> tuple[np.ndarray, np.ndarray]:
        k = len(self.set_ids)
        return np.arange(self.n + 1, dtype=np.int64) * k, np.tile(self.set_ids, self.n)

    def gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.full(len(rows), len(self.set_ids), dtype=np.int64), np.tile(self.set_ids, len(rows))

    def take(self, rows: np.ndarray) -> AllRefs:
        return AllRefs(len(rows), self.set_ids)

    def rows_referring(self, set_ids: np.ndarray) -> np.ndarray:
        if np.isin(self.set_ids, set_ids).any():
            return np.arange(self.n, dtype=np.int64)
        return _EMPTY

    def distinct(self) -> np.ndarray:
        return self.set_ids if self.n else _EMPTY

    @property
    def nbytes(self) -> int:
        return self.set_ids.nbytes


def union_csr(layers) -> tuple[np.ndarray, np.ndarray]:
    """One CSR of the per-row union of ``layers`` (each row: layer 0's references, then layer 1's ...)."""
    csrs = [layer.csr() for layer in layers]
    if len(csrs) == 1:
        return csrs[0]
    n = len(csrs[0][0]) - 1
    counts = [np.diff(off) for off, _ in csrs]
    off = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.sum(counts, axis=0), out=off[1:])
    out = np.empty(int(off[-1]), dtype=np.int64)
    before = off[:-1].copy()  # where each row's entries of the next layer go
    for (l_off, l_refs), c in zip(csrs, counts):
        if l_refs.size:
            out[np.arange(l_refs.size, dtype=np.int64) + np.repeat(before - l_off[:-1], c)] = l_refs
        before += c
    return off, out
