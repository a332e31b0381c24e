"""Eager capture of a query that joins tables with stored lineage: row references, not list copies.

A table made by ``CREATE TABLE ... AS`` stores each row's lineage as a list (``__tp_lin``). The eager
rewrite of a query that reads such a table without aggregating (``SELECT a.*, b.n FROM a LEFT JOIN b
USING (k)``) returns ``b.__tp_lin`` per result row: DuckDB then carries every list through the join's
hash table and out to Arrow, and the result leaves DuckDB through Arrow (a list column does not convert
to pandas cheaply), which costs more than the join itself (credit ETL, 200k applicants: 1.5x plain).

Where every lineage part of the result is a plain column of a table of the FROM clause (``a.__tp_rid``,
``b.__tp_lin``), the query instead returns ``b.rowid`` (one BIGINT: NULL where an outer join found no
row), so every hidden column is an integer and the whole result converts with one ``.df()`` as the plain
query's does; then ``SELECT rowid, __tp_lin FROM b`` reads each joined table's lists once, and row ``r``
of the result gets the list of the row ``b.rowid`` names (a numpy gather, done when the lineage is first
read: the arrays it needs are read at capture). The query and the list reads run in one transaction (the
user's, where one is open), so the row ids they see are the same rows; they differ from the list query
only in what DuckDB checks when binding, so they cannot fail at run time where it would not (a failed
statement would abort the user's transaction). The lineage is the same, id for id.

Applies to a top-level SELECT without DISTINCT, GROUP BY or aggregates whose lineage parts are each a
column ``alias.__tp_rid`` / ``alias.__tp_lin`` of a base table (not a CTE, view or registered frame) in
its FROM / JOIN list that has no column named ``rowid`` of its own; anything else runs as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from sqlglot import exp

from traceprop_frames.errors import SourceChangedError
from traceprop_frames.sql.dialect import DIALECT
from traceprop_frames.sql.rewrite import LIN, RID, Catalog

_EMPTY = np.zeros(0, dtype=np.int64)


@dataclass
class JoinRefs:
    """How a query's lineage parts are read: ``tables[i]`` is None for a part that is a row id column
    (``__tp_rid``) and the table name for one that is a ``rowid`` into that table's ``__tp_lin``."""

    sql: str
    tables: list[str | None]


def plan_join_refs(rw, cat: Catalog, base_tables) -> JoinRefs | None:
    """A :class:`JoinRefs` for eager rewrite ``rw`` (after ``correlated.prepare``), or None where it does
    not apply. ``base_tables``: the names of DuckDB base tables (they have ``rowid``)."""
    if rw.constants or rw.frames or rw.correlated or rw.kind is None:
        return None
    sel = rw.expression
    if not isinstance(sel, exp.Select) or sel.args.get("distinct") or sel.args.get("group"):
        return None
    n = rw.n_hidden
    if n < 1 or len(sel.expressions) <= n:
        return None
    ctes = {c.alias_or_name.lower() for c in sel.find_all(exp.CTE)}
    items = [sel.args.get("from_")] + list(sel.args.get("joins") or [])
    aliases: dict[str, str] = {}
    for it in items:
        t = it.this if it is not None else None
        if not isinstance(t, exp.Table) or not isinstance(t.this, exp.Identifier) or t.args.get("db"):
            continue
        aliases[t.alias_or_name.lower()] = t.name.lower()
    tables: list[str | None] = []
    for part in sel.expressions[-n:]:
        col = part.this if isinstance(part, exp.Alias) else part
        if not isinstance(col, exp.Column) or not col.table or col.name not in (RID, LIN):
            return None
        table = aliases.get(col.table.lower())
        if table is None or table in ctes or cat.hidden.get(table) != col.name:
            return None
        if col.name == LIN and (
            table not in base_tables or any(c.lower() == "rowid" for c in cat.columns.get(table, ()))
        ):
            return None
        tables.append(table if col.name == LIN else None)
    if not any(tables):
        return None
    out = sel.copy()
    for part, table in zip(out.expressions[-n:], tables):
        if table is not None:
            col = part.this if isinstance(part, exp.Alias) else part
            col.replace(exp.column("rowid", table=col.table))
    return JoinRefs(out.sql(dialect=DIALECT), tables)


def rows_of(lists: pa.Table, rowids: np.ndarray, lineage_from_arrow) -> tuple[np.ndarray, ...]:
    """(offsets, ids, row) of a joined table's lists (``SELECT rowid, __tp_lin``): ``row[r]`` is the
    position in them of the row whose ``rowid`` is ``rowids[r]``; -1 (no row joined) stays -1."""
    off, ids = lineage_from_arrow(lists.column(1))
    return off, ids, row_positions(lists.column(0), rowids)


def row_positions(have_col, rowids: np.ndarray) -> np.ndarray:
    """``row[r]``: the position in ``have_col`` (a table's ``rowid`` column as read) of ``rowids[r]``;
    -1 (no row joined) stays -1. Raises SourceChangedError where a rowid is not there."""
    have = np.asarray(have_col.to_numpy(zero_copy_only=False), dtype=np.int64)
    valid = rowids >= 0
    row = np.full(len(rowids), -1, dtype=np.int64)
    if have.size and have.max() < 4 * len(have) + 1024:  # dense enough: a position per rowid
        pos = np.full(int(have.max()) + 1, -1, dtype=np.int64)
        pos[have] = np.arange(len(have), dtype=np.int64)
        ok = valid & (rowids < len(pos))
        row[ok] = pos[rowids[ok]]
    elif have.size:
        order = np.argsort(have, kind="stable")
        at = np.minimum(np.searchsorted(have[order], rowids), len(have) - 1)
        hit = valid & (have[order[at]] == rowids)
        row[hit] = order[at[hit]]
    if np.any(valid & (row < 0)):
        raise SourceChangedError(
            "a joined row's rowid is not in its table: the table changed between the query and the read of "
            "its lineage; run the query again"
        )
    return row


def compose(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """CSR of the result rows: row ``r`` is the concatenation over ``parts`` of ``ids[off[row[r]] :
    off[row[r] + 1]]`` (nothing where ``row[r]`` is -1). One pool, one gather for all parts."""
    n = len(parts[0][2])
    pools, starts, lengths, base = [], [], [], 0
    for off, ids, row in parts:
        if len(off) < 2:  # a table without rows (every row -1): one empty slot to point at
            off = np.zeros(2, dtype=np.int64)
        r = np.maximum(row, 0)
        lengths.append(np.where(row >= 0, off[r + 1] - off[r], 0))
        starts.append(off[r] + base)
        pools.append(ids)
        base += len(ids)
    lengths_rm = np.stack(lengths, axis=1).ravel()  # row-major: row r's parts in order
    starts_rm = np.stack(starts, axis=1).ravel()
    out_off = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths_rm.reshape(n, len(parts)).sum(axis=1), out=out_off[1:])
    total = int(out_off[-1])
    if not total:
        return out_off, _EMPTY
    seg_off = np.zeros(len(lengths_rm), dtype=np.int64)
    np.cumsum(lengths_rm[:-1], out=seg_off[1:])
    flat = np.arange(total, dtype=np.int64) + np.repeat(starts_rm - seg_off, lengths_rm)
    return out_off, np.concatenate(pools)[flat]


def id_part(vals: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A row id column (int64, -1 for NULL) as a part for :func:`compose`: one id per row."""
    return np.arange(len(vals) + 1, dtype=np.int64), vals, np.where(vals >= 0, np.arange(len(vals)), -1)
