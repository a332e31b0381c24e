"""Old training samples → rows of the table a pipeline re-run rebuilt, through lineage.

A sample is identified by its *direct* source rows (the rows whose values it carries; shared statistics
are not identity). After a re-run that skipped the erased rows, old sample ``i`` is the rebuilt row
whose direct rows are ``i``'s minus the erased ones; an old sample left with no rebuilt row *vanished*
(all its rows erased, or a filter now drops it), a rebuilt row no old sample maps to is *new*. Equal
keys (a row duplicated by the pipeline) pair up in order. The key is a 64-bit hash of the row's id set
(its size mixed in), all vectorised; every pair is then checked element by element, so a hash
collision can never pair two different samples (it only unpairs them: vanished + new, the same table).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from traceprop_frames.lineage.context import isin_ids, segments_flat
from traceprop_frames.lineage.refs import sorted_unique
from traceprop_frames.lineage.sources import ROW_BITS, ROW_MASK

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xC2B2AE3D27D4EB4F)


@dataclass
class SampleMap:
    """``new_of_old[i]``: the rebuilt row of old sample ``i`` (-1: vanished); ``new_rows``: rebuilt rows
    no old sample maps to (sorted)."""

    new_of_old: np.ndarray
    new_rows: np.ndarray

    @cached_property
    def vanished(self) -> np.ndarray:
        return np.flatnonzero(self.new_of_old < 0)

    @cached_property
    def matched(self) -> np.ndarray:
        return np.flatnonzero(self.new_of_old >= 0)


def _mix(x: np.ndarray, mult: np.uint64) -> np.ndarray:
    z = (x.astype(np.uint64) + mult) * mult
    z ^= z >> np.uint64(29)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    return z ^ (z >> np.uint64(32))


def _distinct(offsets: np.ndarray, ids: np.ndarray, drop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row of each entry, id) with duplicates within a row and the ids in ``drop`` removed, sorted."""
    row = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))
    keep = ~isin_ids(ids, drop) if drop.size else np.ones(len(ids), dtype=bool)
    row, ids = row[keep], ids[keep]
    if not np.any((row[1:] == row[:-1]) & (ids[1:] <= ids[:-1])):  # already sorted and distinct per row
        return row, ids
    order = np.lexsort((ids, row))
    row, ids = row[order], ids[order]
    first = np.ones(len(ids), dtype=bool)
    first[1:] = (row[1:] != row[:-1]) | (ids[1:] != ids[:-1])
    return row[first], ids[first]


def _keys(n: int, row: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: a 64-bit hash of its id set (order-free: a sum of mixed ids) and the set's size.

    ``row`` is sorted (from :func:`_distinct`), so the sums are segment sums of one cumulative sum.
    """
    size = np.bincount(row, minlength=n)
    ends = np.cumsum(size)
    with np.errstate(over="ignore"):
        cum = np.concatenate([np.zeros(1, np.uint64), np.cumsum(_mix(ids, _M1), dtype=np.uint64)])
        h = cum[ends] - cum[ends - size]
        h = _mix(h ^ (size.astype(np.uint64) * _M2), _M2)
    return h, size


def _rank_sorted(sc: np.ndarray) -> np.ndarray:
    """Occurrence number of each element of a sorted array among its equals (0, 1, ...)."""
    if not len(sc):
        return np.zeros(0, dtype=np.int64)
    start = np.r_[0, np.flatnonzero(sc[1:] != sc[:-1]) + 1]
    return np.arange(len(sc)) - np.repeat(start, np.diff(np.r_[start, len(sc)]))


def match_samples(old_lineage, new_lineage, erased: np.ndarray, old_erased=None) -> SampleMap:
    """Map old samples to rebuilt rows by their direct source rows minus ``erased`` (global row ids).

    ``old_erased``: ``isin(old_lineage.ids, erased)`` when the caller has it already (one scan less).

    Examples
    --------
    >>> from traceprop_frames.lineage.rowsets import RowLineage
    >>> old = RowLineage(np.array([0, 1, 3, 4]), np.array([10, 11, 12, 13]))
    >>> new = RowLineage(np.array([0, 1, 2]), np.array([11, 10]))  # 13 erased; 12 erased from row 1
    >>> m = match_samples(old, new, np.array([12, 13]))
    >>> m.new_of_old.tolist(), m.new_rows.tolist()
    ([1, 0, -1], [])
    """
    erased = sorted_unique(np.asarray(erased, dtype=np.int64))
    fast = _in_order(old_lineage, new_lineage, erased, old_erased)
    if fast is not None:
        return fast
    n_old, n_new = len(old_lineage), len(new_lineage)
    ro, io = _distinct(old_lineage.offsets, old_lineage.ids, erased)
    rn, inew = _distinct(new_lineage.offsets, new_lineage.ids, np.zeros(0, np.int64))
    (ko, so), (kn, _) = _keys(n_old, ro, io), _keys(n_new, rn, inew)
    oo, on = np.argsort(ko, kind="stable"), np.argsort(kn, kind="stable")
    ko_s, kn_s = ko[oo], kn[on]
    # the r-th new row with key k pairs with the r-th old sample with key k (sorted, stable: in order)
    cand = np.searchsorted(ko_s, kn_s, side="left") + _rank_sorted(kn_s)
    ok = cand < n_old
    ok[ok] = ko_s[cand[ok]] == kn_s[ok]
    at_o, at_n = oo[cand[ok]], on[ok]
    new_of_old = np.full(n_old, -1, dtype=np.int64)
    live = so[at_o] > 0  # an old sample with nothing left is never matched (vanished)
    new_of_old[at_o[live]] = at_n[live]
    _check_pairs(new_of_old, ro, io, rn, inew)
    taken = np.zeros(n_new, dtype=bool)
    taken[new_of_old[new_of_old >= 0]] = True
    new_rows = np.flatnonzero(~taken)
    return SampleMap(new_of_old, new_rows)


def _in_order(old, new, erased: np.ndarray, old_erased=None) -> SampleMap | None:
    """The usual re-run in one pass, no hashing: the rebuilt rows are the old samples in the same order,
    each carrying exactly its old direct ids minus the erased ones (in the same order within the row, or
    in another order: then only the rows that differ are sorted), samples left with none dropped. Returns None when the re-run is not of that form
    (rows reordered, filtered by a changed statistic, new): :func:`match_samples` then matches by keys.

    Rows holding the same ids hold equal id sets, and equal keys pair up in order in both, so the map is
    the one the keyed match gives.
    """
    ids, off = old.ids, old.offsets
    if not erased.size:
        keep = np.ones(len(ids), dtype=bool)
    else:
        keep = ~(isin_ids(ids, erased) if old_erased is None else old_erased)
    if int(np.count_nonzero(keep)) != len(new.ids):
        return None
    kept = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(keep, out=kept[1:])
    size = kept[off[1:]] - kept[off[:-1]]  # each old sample's ids that are not erased
    live = np.flatnonzero(size)
    if len(live) != len(new) or not np.array_equal(size[live], np.diff(new.offsets)):
        return None
    a = ids[keep] if erased.size else ids
    if not _same_rows_unordered(a, new.ids, new.offsets):
        return None
    new_of_old = np.full(len(old), -1, dtype=np.int64)
    new_of_old[live] = np.arange(len(live), dtype=np.int64)
    return SampleMap(new_of_old, np.zeros(0, dtype=np.int64))


def _same_rows_unordered(a: np.ndarray, b: np.ndarray, off: np.ndarray) -> bool:
    """Whether every row of the CSR ``(off, a)`` holds the same ids as the row of ``(off, b)``, in any order
    (a parallel SQL ``list()`` returns a row's ids in another order each run).

    Entries equal at the same position cancel, so only the differing entries are compared, per row as
    multisets: by :func:`_same_rows_by_owner` (no sort) when they are distinct and dense enough, else by
    one sort of ``row · width + dense id`` per side (no lexsort)."""
    if len(a) != len(b):
        return False
    at = np.flatnonzero(a != b)  # positions, then gathers: cheaper than three boolean masks
    if not at.size:
        return True
    row = np.repeat(np.arange(len(off) - 1, dtype=np.int64), np.diff(off))[at]
    xa, xb = a[at], b[at]
    owner = _same_rows_by_owner(xa, xb, row)
    if owner is not None:
        return owner
    lo = min(int(xa.min()), int(xb.min()))
    xa, xb = xa - lo, xb - lo  # non-negative; (x >> 40, x & mask) still tells ids apart
    bits, mask = np.int64(40), np.int64((1 << 40) - 1)
    span = max(int((xa & mask).max()), int((xb & mask).max())) + 1
    width = (max(int(xa.max()), int(xb.max())) >> 40) * span + span
    if width * (int(row[-1]) + 2) >= 1 << 62:  # the combined key would overflow: sort pairs instead
        return bool(np.array_equal(xa[np.lexsort((xa, row))], xb[np.lexsort((xb, row))]))
    base = row * width
    key_a = np.sort(base + (xa >> bits) * span + (xa & mask))
    return bool(np.array_equal(key_a, np.sort(base + (xb >> bits) * span + (xb & mask))))


def _same_rows_by_owner(xa: np.ndarray, xb: np.ndarray, row: np.ndarray) -> bool | None:
    """Whether, per row (``row[k]``: the row of entries ``xa[k]`` and ``xb[k]``), ``xa`` and ``xb`` hold
    the same ids, in O(n) and no sort: each id of ``xa`` marks its row in a table indexed by (source, row
    number); the rows hold the same sets iff every id of ``xb`` finds its own row there and ``xb`` holds
    no id twice (as many entries per row, no repeats, each a member: the same set). None when ``xa`` holds
    an id twice or the ids are too sparse for a table (the caller sorts then)."""
    if not xa.size:
        return True
    mask, bits = np.int64(ROW_MASK), np.int64(ROW_BITS)
    s0 = min(int(xa.min()), int(xb.min())) >> ROW_BITS
    s1 = max(int(xa.max()), int(xb.max())) >> ROW_BITS
    if int(row[-1]) >= (1 << 31) - 1:
        return None
    if s0 == s1:  # one source (the usual case): the row numbers are the slots
        base = np.int64(s0) << bits
        n_slots = max(int(xa.max()), int(xb.max())) - s0 * (1 << ROW_BITS) + 1
        if n_slots > 8 * xa.size + (1 << 16):
            return None
        slot_a, slot_b = xa - base, xb - base
    else:
        slot_a, slot_b = xa & mask, xb & mask  # the row numbers; each source's first slot is added below
        span = max(int(slot_a.max()), int(slot_b.max())) + 1
        sa, sb = xa >> bits, xb >> bits
        sa -= s0
        sb -= s0
        n_slots = (s1 - s0 + 1) * span
        if n_slots <= 8 * xa.size + (1 << 16):  # every source id from s0 to s1 gets ``span`` slots
            sa *= span
            sb *= span
        else:  # only the sources present, numbered 0, 1, ...
            present = np.zeros(s1 - s0 + 1, dtype=np.int64)
            present[sa] = 1
            present[sb] = 1
            n_slots = int(present.sum()) * span
            if n_slots > 8 * xa.size + (1 << 16):
                return None
            first = (np.cumsum(present) - 1) * span
            sa, sb = first[sa], first[sb]
        slot_a += sa
        slot_b += sb
    row32 = row.astype(np.int32)
    owner = np.full(n_slots, -1, dtype=np.int32)
    owner[slot_a] = row32
    if int(np.count_nonzero(owner >= 0)) != xa.size:
        return None  # an id twice in xa (a row listing a source row twice, or two rows sharing it)
    if not np.array_equal(owner[slot_b], row32):
        return False  # some id of xb is not among its row's ids in xa
    seen = np.zeros(n_slots, dtype=bool)
    seen[slot_b] = True
    return int(np.count_nonzero(seen)) == xb.size


def _check_pairs(new_of_old, ro, io, rn, inew) -> None:
    """Unpair any (old, new) whose id sets differ (a hash collision): they count as vanished + new."""
    olds = np.flatnonzero(new_of_old >= 0)
    if not olds.size:
        return
    news = new_of_old[olds]
    so, eo = np.searchsorted(ro, olds), np.searchsorted(ro, olds + 1)
    sn, en = np.searchsorted(rn, news), np.searchsorted(rn, news + 1)
    differ = (eo - so) != (en - sn)  # sizes are part of the key: never true, checked anyway
    same = ~differ
    a, b = io[segments_flat(so[same], eo[same])], inew[segments_flat(sn[same], en[same])]
    pair = np.repeat(np.flatnonzero(same), (eo - so)[same])
    differ[pair[a != b]] = True
    new_of_old[olds[differ]] = -1
