"""Eager capture: the member rows of a grouping derived table as CSR lineage, for a result of few rows.

:mod:`traceprop_frames.sql.group_members` reads a grouping derived table's member rows once (``M``, an
Arrow table: the group key ``__tp_k0`` and one id column ``__tp_x{i}`` per table read) and matches
each member to the result row whose groups hold its key. On TPC-H q13 that is 1.53 million members
(every customer and order) and 42 result rows, and building the CSR lineage cost about as much as half
the plain query. Here, where the key is one integer column over a dense range and the result has at
most :data:`MAX_ROWS` rows:

- each member's result row comes from one lookup table indexed by key, in the smallest unsigned type
  that holds a result row (``uint8`` for q13);
- the members are sorted by result row once (numpy's radix sort for those types: O(members)), not
  once per id column;
- each result row's ids are copied from each id column straight into place (``np.take(..., out=)``
  of one contiguous run per row and column: no concatenated copy of the id columns, no second sort).

The lineage is the same as :func:`group_members.member_parts`' (the same ids per row; within a row,
the ids of each column in turn). Where it does not apply it returns None and the caller's general
path runs.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

MAX_ROWS = 1024  # a result of more rows takes member_rows / member_parts (one sort of every id)


def _ints(col: pa.Array) -> np.ndarray:
    """An integer Arrow column as int64 (a NULL as 0: the caller masks it)."""
    return np.asarray((col.fill_null(0) if col.null_count else col).to_numpy(), dtype=np.int64)


def _ids(col: pa.Array) -> np.ndarray:
    """An id column as int64 without a copy where it is int64 (the values under a NULL are whatever
    the buffer holds: the caller reads only valid positions)."""
    if col.type != pa.int64() or not col.null_count:
        return _ints(col)
    return np.frombuffer(col.buffers()[1], dtype=np.int64, count=col.offset + len(col))[col.offset :]


def _exact(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) and not pa.types.is_uint64(t)  # (a uint64 may not fit int64)


def member_owners(members: pa.Table, pos: np.ndarray, values: pa.StructArray, n: int) -> np.ndarray | None:
    """For each row of ``members``, the result row (of ``n``) whose groups hold its key ``__tp_k0``,
    ``n`` where none does, from the result's (row, key) pairs ``pos`` / ``values``; the smallest
    unsigned type that holds ``n``. None where this does not apply: more than one key, a key that is
    not an integer, keys spread over more than a few slots per row, a key in two result rows, more
    than one result row for the NULL key, ``n`` above :data:`MAX_ROWS`."""
    if n > MAX_ROWS or values.type.num_fields != 1:
        return None
    key, mk = values.field(0), members.column("__tp_k0").combine_chunks()
    if not (_exact(key.type) and _exact(mk.type)):
        return None
    small = np.uint8 if n < 255 else np.uint16
    valid = key.is_valid().to_numpy(zero_copy_only=False)
    k, kp, null_pos = _ints(key)[valid], pos[valid], pos[~valid]
    if len(null_pos) > 1:
        return None
    m = _ints(mk)
    if not len(k):
        out = np.full(len(m), n, dtype=small)
    else:
        lo, hi = int(k.min()), int(k.max())
        if hi - lo > 4 * (len(m) + len(k)) + 1024:
            return None  # sparse keys: member_rows' sorted lookup
        if 0 <= lo <= hi - lo + 1024:
            lo = 0  # keys from near 0: indexed by the key itself (no shifted copy of every key)
        slot = np.full(hi - lo + 2, n, dtype=small)  # the last slot: a key outside [lo, hi]
        slot[k - lo] = kp
        if np.count_nonzero(slot != n) != len(k):
            return None  # a key in two result rows
        idx = m - lo if lo else m
        if len(m) and (int(m.min()) < lo or int(m.max()) > hi):
            idx = np.where((m < lo) | (m > hi), hi - lo + 1, m - lo)
        out = slot[idx]
    if mk.null_count:  # a NULL key is the NULL group's (GROUP BY puts NULLs together)
        out[~mk.is_valid().to_numpy(zero_copy_only=False)] = null_pos[0] if len(null_pos) else n
    return out


def member_csr(members: pa.Table, owner: np.ndarray, n: int, n_fields: int) -> list | None:
    """One CSR part ``(offsets, ids)`` over ``n`` result rows: row ``r`` holds the ids of the lineage
    columns ``__tp_x0 ..`` of the members whose ``owner`` is ``r`` (NULL: no id), column by column;
    None where a column is not one integer id per member."""
    cols = [members.column(f"__tp_x{i}").combine_chunks() for i in range(n_fields)]
    if not all(_exact(c.type) for c in cols):
        return None
    count = np.bincount(owner, minlength=n + 1)
    order = np.argsort(owner, kind="stable")[: len(owner) - int(count[n])]  # radix: uint8 / uint16
    runs = []  # per column: (ids, member order of its non-NULL ids, their count per row)
    for c in cols:
        if not c.null_count:
            runs.append((_ids(c), order, count[:n]))
            continue
        ok = c.is_valid().to_numpy(zero_copy_only=False)
        per_row = count - np.bincount(owner[~ok], minlength=n + 1)
        runs.append((_ids(c), order[ok[order]], per_row[:n]))
    lengths = np.sum([r[2] for r in runs], axis=0)
    off = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=off[1:])
    if n_fields == 1:
        return [(off, runs[0][0][runs[0][1]])]
    out = np.empty(int(off[-1]), dtype=np.int64)
    at = off[:-1].copy()
    for ids, ordered, per_row in runs:
        starts = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(per_row, out=starts[1:])
        # one contiguous run per result row (at most MAX_ROWS): each copied into place
        for r in np.flatnonzero(per_row).tolist():
            np.take(ids, ordered[starts[r] : starts[r + 1]], out=out[at[r] : at[r] + per_row[r]], mode="clip")
        at += per_row
    return [(off, out)]
