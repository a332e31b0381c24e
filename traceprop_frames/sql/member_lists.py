"""Eager grouping ``CREATE TABLE ... AS`` without ``list()``: each group's members kept as (key, row id).

The eager rewrite of ``CREATE TABLE t AS SELECT k, count(x) FROM s WHERE ... GROUP BY k`` adds
``list(s.__tp_rid)``: DuckDB's ``list()`` aggregate then costs more than the statement itself (credit
ETL, 1 million bureau rows into 199,000 groups: 106 ms plain, 219 ms with the lists), while reading the
same rows' (key, row id) pairs costs 8 ms. Where the query groups by one integer column of its output,
reads one loaded source table (its ``__tp_rid``) without joins or subqueries, and the database is in
memory, the connection instead

- reads ``SELECT k AS __tp_k, s.__tp_rid AS __tp_r FROM s WHERE ...`` (the members: every row the
  groups aggregate, with the group key it has), into Arrow arrays kept by the connection, then
- runs the plain statement with a ``__tp_lin`` column of NULLs (as a lazy CTAS does), and
- records ``t`` as pending (:mod:`traceprop_frames.sql.lazy_tables`) with its members (:class:`MemberTable`).

The lineage is fixed when the table is made, as eager capture promises: row ``k`` of ``t`` has the
members with key ``k`` (``IS NOT DISTINCT FROM``: the NULL group has the members with a NULL key), a
snapshot that later changes to ``s`` do not touch. A query that joins ``t`` by ``rowid``
(:mod:`traceprop_frames.sql.join_refs`) reads ``t``'s (rowid, key) and groups the members in numpy when the
result's lineage is first read (:func:`group_members`); whatever else reads ``t``'s lineage column fills
it first, once (the members grouped the same way, written by one ``UPDATE``: :func:`fill_sql`). A table changed through
``con.raw`` so that a row no longer finds its members (a key changed, a row added) raises
:class:`~traceprop_frames.errors.SourceChangedError` when its lineage is read; rows deleted there are
simply gone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from sqlglot import exp

from traceprop_frames.errors import SourceChangedError
from traceprop_frames.sql import null_rids
from traceprop_frames.sql.dialect import DIALECT, VOLATILE
from traceprop_frames.sql.lazy_tables import PendingTable
from traceprop_frames.sql.rewrite import LIN, RID, Catalog

KEY, ROW = "__tp_k", "__tp_r"
_SOURCE = b"traceprop_null_rid_tables"  # schema metadata: the tables of members without a row id
# key types whose values are int64 exactly in numpy (UBIGINT and HUGEINT may not be)
_INT_TYPES = frozenset(["TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER"])


@dataclass
class MemberTable(PendingTable):
    """A pending table made by an eager grouping CTAS: its lineage is ``members`` grouped by key."""

    members: pa.Table | None = None  # (__tp_k, __tp_r): each member row's group key and DuckDB row id


def members_sql(rw, cat: Catalog) -> str | None:
    """The members query of eager rewrite ``rw`` of a grouping ``SELECT`` (its ``list(s.__tp_rid)`` last),
    or None where the members would not be exactly that list's ids per group: not one ``GROUP BY``
    expression, not one loaded source table (a join, a CTE, a subquery anywhere), DISTINCT, a window, a
    sample, a function in the filter or the key whose value may change between two statements."""
    sel = rw.expression
    if (
        rw.kind != LIN
        or rw.constants
        or rw.frames
        or rw.correlated
        or not isinstance(sel, exp.Select)
        or sel.args.get("distinct")
        or sel.args.get("with")
        or sel.args.get("joins")
        or sel.args.get("qualify")
        or any(sel.args.get(k) for k in ("laterals", "pivots"))
    ):
        return None
    group = sel.args.get("group")
    if (
        group is None
        or len(group.expressions) != 1
        or any(group.args.get(k) for k in ("all", "rollup", "cube", "grouping_sets", "totals"))
    ):
        return None
    if any(q is not sel for q in sel.find_all(exp.Query)) or sel.find(exp.Window, exp.TableSample):
        return None
    if sel.args.get("sample") or any(
        isinstance(f, VOLATILE)
        for part in (sel.args.get("where"), group)
        if part
        for f in part.find_all(exp.Func)
    ):
        return None  # the members query would not pick the rows the statement groups
    src = sel.args.get("from_")
    table = src.this if src is not None else None
    if not isinstance(table, exp.Table) or table.args.get("db") or cat.hidden.get(table.name.lower()) != RID:
        return None
    last = sel.expressions[-1]
    fn = last.this if isinstance(last, exp.Alias) and last.alias == LIN else None
    if not (
        isinstance(fn, exp.Anonymous)
        and str(fn.this).lower() == "list"
        and len(fn.expressions) == 1
        and isinstance(fn.expressions[0], exp.Column)
        and fn.expressions[0].name == RID
    ):
        return None
    out = exp.select(
        exp.alias_(group.expressions[0].copy(), KEY), exp.alias_(fn.expressions[0].copy(), ROW)
    ).from_(src.copy())
    if sel.args.get("where") is not None:
        out.set("where", sel.args["where"].copy())
    return out.sql(dialect=DIALECT)


def key_type_ok(types: list[str]) -> bool:
    """Whether a members query's bound types are (integer key, BIGINT row id)."""
    return len(types) == 2 and types[0] in _INT_TYPES and types[1] == "BIGINT"


def fill_table(members: pa.Table, rows: pa.Table) -> pa.Table:
    """(rowid, list) per row of a table read as ``rows`` = (rowid, key): the rows for :func:`fill_sql`."""
    off, ids = group_members(members, rows.column(1))
    return pa.table({ROW: rows.column(0), LIN: pa.LargeListArray.from_arrays(pa.array(off), pa.array(ids))})


def fill_sql(table: str, view: str, quote) -> str:
    """``UPDATE t SET __tp_lin = ...``: each row's list from ``view`` (:func:`fill_table`), by rowid."""
    t = quote(table)
    return f"UPDATE {t} SET {LIN} = __tp_f.{LIN} FROM {quote(view)} AS __tp_f WHERE {t}.rowid = __tp_f.{ROW}"


def _int_column(col: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray | None]:
    """(int64 values, NULL mask or None) of an integer Arrow column (NULLs read as 0)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if arr.null_count:
        nulls = arr.is_null().to_numpy(zero_copy_only=False)
        return np.asarray(arr.fill_null(0).to_numpy(), dtype=np.int64), nulls
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.int64), None


def key_positions(keys: pa.ChunkedArray, wanted: pa.ChunkedArray) -> np.ndarray:
    """For each value of ``wanted``, the position of the equal value in ``keys`` (unique values, NULL
    equal to NULL), -1 where there is none."""
    k, knull = _int_column(keys)
    w, wnull = _int_column(wanted)
    out = np.full(len(w), -1, dtype=np.int64)
    valid_k = np.ones(len(k), dtype=bool) if knull is None else ~knull
    valid_w = np.ones(len(w), dtype=bool) if wnull is None else ~wnull
    kv, kpos = k[valid_k], np.flatnonzero(valid_k)
    if kv.size:
        lo, hi = int(kv.min()), int(kv.max())
        if hi - lo < 4 * len(kv) + 1024:  # dense enough: a position per value
            pos = np.full(hi - lo + 1, -1, dtype=np.int64)
            pos[kv - lo] = kpos
            ok = valid_w & (w >= lo) & (w <= hi)
            out[ok] = pos[w[ok] - lo]
        else:
            order = np.argsort(kv)
            at = np.minimum(np.searchsorted(kv[order], w), len(kv) - 1)
            hit = valid_w & (kv[order[at]] == w)
            out[hit] = kpos[order[at[hit]]]
    if knull is not None and wnull is not None and knull.any():
        out[wnull] = int(np.flatnonzero(knull)[0])
    return out


def with_source(members: pa.Table, tables: list[str]) -> pa.Table:
    """``members`` naming the ``tables`` its statement read where a member has no row id (a row inserted
    outside the traced connection): reading their lineage raises (:func:`member_ids`). No cost otherwise."""
    if not members.column(1).null_count:
        return members
    return members.replace_schema_metadata({_SOURCE: ",".join(tables)})


def member_ids(members: pa.Table) -> np.ndarray:
    """The members' row ids (int64); :class:`SourceChangedError` where one is NULL (no source row)."""
    rid = members.column(1)
    if rid.null_count:
        names = (members.schema.metadata or {}).get(_SOURCE, b"").decode()
        raise null_rids.error([t for t in names.split(",") if t])
    return np.asarray(
        (rid.combine_chunks() if isinstance(rid, pa.ChunkedArray) else rid).to_numpy(), np.int64
    )


def group_members(members: pa.Table, keys: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """CSR (offsets, ids) over the rows whose group keys are ``keys``: row ``i`` has the row ids of the
    members whose key equals ``keys[i]``, in the members' order (as ``list()`` collects them)."""
    n = len(keys)
    row = key_positions(keys, members.column(0))
    ids = member_ids(members)
    keep = row >= 0
    if not keep.all():
        row, ids = row[keep], ids[keep]
    counts = np.bincount(row, minlength=n)
    if n and not counts.all():  # every group has a member: this row was not made by the statement
        raise SourceChangedError(
            "a row of a table made by CREATE TABLE ... AS has a group key none of the rows it was made "
            "from has: the table was changed outside this connection; re-create it"
        )
    off = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=off[1:])
    if n * len(row) < 2**62:  # a stable grouping by row: an unstable sort of unique (row, position)
        order = np.argsort(row * len(row) + np.arange(len(row), dtype=np.int64))
    else:
        order = np.argsort(row, kind="stable")
    return off, ids[order]


def member_part(members: pa.Table, keys: pa.ChunkedArray, row: np.ndarray):
    """A part for :func:`traceprop_frames.sql.join_refs.compose`, made when called: (offsets, ids) of the
    rows whose keys are ``keys`` (:func:`group_members`) and ``row`` (positions into them)."""
    return lambda: (*group_members(members, keys), row)
