"""A joined table of members read by its group key in the result, not by ``rowid`` plus a list read.

An eager query that joins a table made by a grouping CTAS kept as members (:mod:`sql.member_lists`)
returns that table's ``rowid`` per result row (:mod:`sql.join_refs`) and then reads ``SELECT rowid, key``
of the table, in one transaction with the query, to find each joined row's group key (credit ETL at 20k
applicants: two such reads and the BEGIN / COMMIT ≈ 3.5 ms of a ≈ 40 ms run). Where the table's rows are
exactly the groups the CTAS made, the result can return the group key itself (``b.k`` instead of
``b.rowid``): the key names the row, and the members of that key are its lineage, id for id as the rowid
path gives them. No list read, so no transaction of our own either.

Sound only when (:func:`key_columns`), for every joined table the result reads lineage from:

- it is a member table made by this connection's CTAS and nothing that may change a table ran since
  (its record waits in :class:`~traceprop_frames.sql.deferred_oids.DeferredOids` and the catalog count has
  not moved: no ``con.raw`` / cursor / other connection statement since); the caller checks the count
  again after the query (:meth:`DeferredOids.unchanged`) and otherwise runs the rowid path;
- its members have no NULL key: then no row of the table has a NULL key, and a NULL key in the result
  means "no row joined" (with a NULL group, a join condition other than ``=`` could join it: the rowid
  path tells these apart).

A key in the result that none of the members has (impossible under these conditions) raises
:class:`~traceprop_frames.errors.SourceChangedError`, never an empty lineage.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from traceprop_frames.errors import SourceChangedError
from traceprop_frames.sql.dialect import DIALECT
from traceprop_frames.sql.join_refs import JoinRefs
from traceprop_frames.sql.member_lists import (
    MemberTable,
    _int_column,
    group_members,
    key_positions,
    member_ids,
)

_KEYED: dict[tuple[str, tuple], str] = {}  # (rowid query, key columns) -> the keyed query


def key_columns(refs: JoinRefs, pending: dict, deferred) -> tuple[str | None, ...] | None:
    """Per lineage part of ``refs``: the group key column of its member table (None for a row id part),
    or None where any joined table does not qualify (see the module docstring)."""
    if not deferred.records or not deferred.unchanged():
        return None
    waiting = {id(r) for r in deferred.records}
    out = []
    for t in refs.tables:
        if t is None:
            out.append(None)
            continue
        p = pending.get(t)
        if not isinstance(p, MemberTable) or id(p) not in waiting or p.members is None:
            return None
        if p.members.column(0).null_count or len(p.key_columns) != 1:
            return None
        out.append(p.key_columns[0])
    return tuple(out)


def keyed_sql(refs: JoinRefs, keys: tuple[str | None, ...]) -> str:
    """``refs.sql`` with each joined table's ``alias.rowid`` lineage part replaced by ``alias.key``."""
    hit = _KEYED.get((refs.sql, keys))
    if hit is not None:
        return hit
    sel = exp.maybe_parse(refs.sql, dialect=DIALECT).copy()
    for part, key in zip(sel.expressions[-len(keys) :], keys):
        col = part.this if isinstance(part, exp.Alias) else part
        if key is not None:
            assert isinstance(col, exp.Column) and col.name.lower() == "rowid"
            col.replace(exp.column(exp.to_identifier(key, quoted=True), table=col.table))
    out = sel.sql(dialect=DIALECT)
    while len(_KEYED) >= 256:
        _KEYED.pop(next(iter(_KEYED)))
    _KEYED[(refs.sql, keys)] = out
    return out


def key_values(col, signed: bool = False) -> tuple[np.ndarray, np.ndarray] | None:
    """(int64 values, NULL mask) of a hidden key column as read (a pandas Series or an Arrow column), or
    None where its values would not be exact (a float column) or, with ``signed``, are unsigned."""
    if isinstance(col, (pa.Array, pa.ChunkedArray)):
        if not (pa.types.is_signed_integer if signed else pa.types.is_integer)(col.type):
            return None
        nulls = np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        return np.asarray(col.fill_null(0).to_numpy(), dtype=np.int64), nulls
    if not pd.api.types.is_integer_dtype(col.dtype) or str(col.dtype) == "UInt64":
        return None  # (a nullable UInt64 beyond int64 would not convert)
    if signed and not pd.api.types.is_signed_integer_dtype(col.dtype):
        return None
    if col.dtype == np.int64:  # numpy int64 (no NULL): read in place (copy-on-write keeps it unchanged)
        return col.to_numpy(), np.zeros(len(col), dtype=bool)
    return col.to_numpy(dtype=np.int64, na_value=0), col.isna().to_numpy()


def key_part(members: pa.Table, vals: np.ndarray, nulls: np.ndarray, absent_ok: bool = False):
    """A part for :func:`traceprop_frames.sql.join_refs.compose`, made when called: result row ``r`` has
    the members whose key is ``vals[r]`` (nothing where ``nulls[r]``: no row joined). A key without
    members raises, unless ``absent_ok`` (``vals`` is the other side's key: there it means no row joined,
    see :mod:`traceprop_frames.sql.member_determined`)."""

    def build():
        off, ids, row = _by_key_slot(members, vals, nulls)
        if row is None:  # sparse keys: one row per distinct key
            keys = pc.unique(members.column(0))
            off, ids = group_members(members, keys)
            row = key_positions(keys, pa.array(vals, mask=nulls))
        empty = row < 0
        empty[~empty] = off[row[~empty] + 1] == off[row[~empty]]
        if not absent_ok and np.any(empty & ~nulls):
            raise SourceChangedError(
                "a joined row's group key is not among the rows its table was made from: the table changed "
                "between its CREATE TABLE ... AS and the query; re-create it and run the query again"
            )
        return off, ids, row

    return build


def _by_key_slot(members: pa.Table, vals: np.ndarray, nulls: np.ndarray):
    """(offsets, ids, row) over one slot per key value from the members' least to their greatest key
    (empty slots for the values no member has), where that range is dense; (None, None, None) else."""
    k, _ = _int_column(members.column(0))  # (no NULL key: see key_columns)
    if not k.size:
        return np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int64), np.full(len(vals), -1, np.int64)
    lo, hi = int(k.min()), int(k.max())
    if hi - lo >= 4 * len(k) + 1024 or (hi - lo + 1) * len(k) >= 2**62:
        return None, None, None
    slot = k - lo
    off = np.zeros(hi - lo + 2, dtype=np.int64)
    np.cumsum(np.bincount(slot, minlength=hi - lo + 1), out=off[1:])
    # members' order kept within a slot: a unique composite key and numpy's default sort (about 3x faster
    # than kind="stable" at 20k-200k members); the guard above keeps the composite within int64
    order = np.argsort(slot * len(k) + np.arange(len(k), dtype=np.int64))
    ids = member_ids(members)
    row = np.full(len(vals), -1, dtype=np.int64)
    ok = ~nulls & (vals >= lo) & (vals <= hi)
    row[ok] = vals[ok] - lo
    return off, ids[order], row
