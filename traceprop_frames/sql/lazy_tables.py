"""Lazy ``CREATE TABLE ... AS``: a grouping table made now, its lineage column filled when first needed.

With ``capture="lazy"``, ``CREATE [OR REPLACE] TABLE t AS SELECT k, agg(...) FROM ... GROUP BY k`` (and
an aggregate without ``GROUP BY``) runs as the plain statement plus a ``__tp_lin`` column of NULLs (a
constant; in memory the column is only added when needed, see :mod:`traceprop_frames.sql.late_column`).
The table is *pending*: the connection records the query, the
columns of ``t`` that hold its group keys (each one a GROUP BY expression itself, so one row per key),
the traced tables it read and their state. Nothing per row is kept beyond the table's own key columns.

Whatever needs ``t``'s lineage resolves it first, once, for the whole table (*materialising* it): a
traced query's eager rewrite or backward query that reads ``t``, a statement that writes ``t`` or one
of the tables it read, a persist (``to_parquet``, a model's saved lineage, ``con.close()`` resolving
the results still alive). Materialising runs the eager rewrite of the recorded query and writes its
lineage lists into ``t.__tp_lin`` with one ``UPDATE ... FROM`` joined on the key columns; it checks
that every row of ``t`` got its list. Lazily captured results over a pending table name its rows by
their key values (not ``rowid``: DuckDB's ``UPDATE`` of a list column moves rows).

In a database file the record is a row of ``__tp_lazy_tables``, written in the same transaction as the
table (and deleted in the same transaction as the lineage is written), so a process killed at any
point leaves a table that is either pending with its record or complete; a later process resolves it
on demand. A table read by a pending one that changed since (through ``con.raw`` or another program:
its row count, or in this process its DuckDB oid) raises :class:`SourceChangedError` instead of a
wrong row; changes made through the traced connection materialise the dependent tables first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import duckdb
import sqlglot
from sqlglot import exp

from traceprop_frames.sql.dialect import DIALECT
from traceprop_frames.sql.rewrite import LIN, Catalog, _has_agg, _windows_in, select_like_roots

TABLE = "__tp_lazy_tables"


@dataclass
class PendingTable:
    """A table made by a lazily captured ``CREATE TABLE ... AS``, its lineage column not yet filled."""

    name: str  # lower-case table name
    query: str  # the SELECT it was made by, as SQL
    keys: list[str]  # GROUP BY expressions, as SQL ([] for an aggregate without GROUP BY)
    key_columns: list[str]  # the table's columns holding them, in that order
    inputs: dict[str, int]  # traced tables read -> their row count when made (-1 in memory: not counted)
    n_rows: int  # the table's rows when made (-1 in memory: counted when filled)
    fingerprint: dict = field(default_factory=dict)  # in this process: table -> (oid, version), see con
    verify: bool = False  # its rows are compared with its query before use (sql.deferred_oids, sql.ctas_rows)
    differs: bool = False  # compared, and they differ (see TracedConnection._rows_hold)

    def record(self) -> str:
        keep = ("query", "keys", "key_columns", "inputs", "n_rows")
        return json.dumps({k: getattr(self, k) for k in keep})

    @classmethod
    def from_record(cls, name: str, record: str) -> PendingTable:
        return cls(name=name, **json.loads(record))


@dataclass
class CreatePlan:
    """How a lazy ``CREATE TABLE ... AS`` runs: its SQL and what the pending table records."""

    sql: str
    query: str
    keys: list[str]
    key_positions: list[int]  # output positions of the key columns
    traced: list[str]
    untraced: list[str]
    tables: list[str]  # traced tables read (for the fingerprint and the record)
    target: str  # the table made (lower case)
    columns: list[str]  # its visible columns, as DuckDB names them
    plain_sql: str = ""  # the statement without the NULL lineage column (see sql.late_column)


def grouping_keys(sel: exp.Select, cat: Catalog) -> tuple[list[str], list[int]] | None:
    """(GROUP BY expressions as SQL, output positions holding them) for a query whose rows are named by
    output columns that *are* its group keys; ([], []) for an aggregate without GROUP BY; else None."""
    if sel.args.get("distinct") is not None or any(
        True for root in select_like_roots(sel) for _ in _windows_in(root)
    ):
        return None
    if any(not isinstance(s.parent, exp.Count) for e in sel.expressions for s in e.find_all(exp.Star)):
        return None  # a star's columns are DuckDB's to list (count(*) aside)
    group = sel.args.get("group")
    if group is None:
        aggs = cat.aggregates
        if any(_has_agg(e, aggs) for e in sel.expressions):
            return [], []
        return None
    if any(group.args.get(k) for k in ("all", "rollup", "cube", "grouping_sets", "totals")):
        return None
    exprs = group.expressions
    if not exprs or any(isinstance(g, exp.Literal) for g in exprs):
        return None
    keys, positions = [], []
    for g in exprs:
        pos = next(
            (i for i, e in enumerate(sel.expressions) if (e.this if isinstance(e, exp.Alias) else e) == g),
            None,
        )
        if pos is None or pos in positions:
            return None  # a key that is not an output column as it is: the table's rows could repeat it
        keys.append(g.sql(dialect=DIALECT))
        positions.append(pos)
    return keys, positions


def load_records(raw: duckdb.DuckDBPyConnection) -> dict[str, PendingTable]:
    """The pending tables recorded in a database file."""
    exists = raw.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND schema_name = 'main'", [TABLE]
    ).fetchall()[0][0]
    if not exists:
        return {}
    rows = raw.execute(f"SELECT name, record FROM {TABLE}").fetchall()
    return {name: PendingTable.from_record(name, rec) for name, rec in rows}


def save_record(raw: duckdb.DuckDBPyConnection, table: PendingTable) -> None:
    """Record ``table`` as pending (inside the caller's transaction)."""
    raw.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (name VARCHAR PRIMARY KEY, record VARCHAR)")
    raw.execute(f"DELETE FROM {TABLE} WHERE name = ?", [table.name])
    raw.execute(f"INSERT INTO {TABLE} VALUES (?, ?)", [table.name, table.record()])


def delete_record(raw: duckdb.DuckDBPyConnection, name: str) -> None:
    """Forget a pending table's record (inside the caller's transaction)."""
    exists = raw.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND schema_name = 'main'", [TABLE]
    ).fetchall()[0][0]
    if exists:
        raw.execute(f"DELETE FROM {TABLE} WHERE name = ?", [name])


def update_sql(table: PendingTable, backward: exp.Select, quote) -> str:
    """``UPDATE t SET __tp_lin = ...`` from ``backward`` (the eager rewrite of the table's query, its
    lineage list last), joined on the key columns."""
    sel = backward
    for k in ("order", "limit", "offset"):
        sel.set(k, None)
    hidden = sel.expressions[-1].alias_or_name
    t = quote(table.name)
    if not table.keys:
        return f"UPDATE {t} SET {LIN} = (SELECT __tp_b.{hidden} FROM ({sel.sql(dialect=DIALECT)}) AS __tp_b)"
    for i, key in enumerate(table.keys):
        sel.append("expressions", exp.alias_(sqlglot.parse_one(key, read=DIALECT), f"__tp_k{i}"))
    on = " AND ".join(
        f"{t}.{quote(c)} IS NOT DISTINCT FROM __tp_b.__tp_k{i}" for i, c in enumerate(table.key_columns)
    )
    return f"UPDATE {t} SET {LIN} = __tp_b.{hidden} FROM ({sel.sql(dialect=DIALECT)}) AS __tp_b WHERE {on}"
