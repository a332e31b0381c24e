"""Eager queries read a loaded source's row ids from DuckDB's virtual ``rowid``, not the stored column.

A table loaded by ``con.read_csv`` / ``con.read_parquet`` stores its global row ids in ``__tp_rid``
(``base + file row``). Reading that column costs a scan; DuckDB's ``rowid`` costs none. But rowids are
positions: a DELETE (then a checkpoint) compacts them, an UPDATE moves a row to a new one. So
``t.__tp_rid`` is replaced by ``(t.rowid + base)`` only where ``rowid + base = __tp_rid`` is known to hold
for every row:

- the equality was checked on the whole table right after the load (one scan, at load time);
- the database is a plain in-memory one (``:memory:``), so no other connection can reach it;
- user code has not been handed the DuckDB connection (``con.raw``: touching it turns this off for good);
- no statement run through the connection since could have changed the table: every statement that is
  not a plain SELECT (by DuckDB's own parser) counts; a CREATE / DROP of a table or view, an INSERT,
  UPDATE or DELETE takes the tables it names out, anything else (ALTER, CHECKPOINT, ATTACH, SET, USE,
  transactions, unparsed text ...) takes every table out;
- the reference is a plain, unqualified table name in its query's scope (not a CTE, subquery or
  ``schema.table``), and the table has no column of its own called ``rowid``.

Anything else keeps ``__tp_rid``: the lineage is the same either way, only its cost differs.
"""

from __future__ import annotations

import copy

import duckdb
import sqlglot
from sqlglot import exp
from sqlglot.optimizer.scope import traverse_scope

from traceprop_frames.sql.dialect import DIALECT, quote_name

RID = "__tp_rid"
_NAMED = (exp.Insert, exp.Update, exp.Delete)  # change only the table they name
_MADE = ("TABLE", "VIEW")  # CREATE / DROP of these: only the named object


class RowidScans:
    """Which loaded tables an eager query may read by ``rowid`` (``tables``: name -> base)."""

    def __init__(self, database) -> None:
        self.on = isinstance(database, str) and database == ":memory:"
        self.tables: dict[str, int] = {}
        self._effects: dict[str, tuple[str, ...] | None] = {}  # statement text -> tables it may change
        self._sql: dict[tuple, str] = {}  # (SQL, tables) -> SQL reading rowid
        self._bad: set[str] = set()  # SQL whose rowid version DuckDB did not bind (then: the stored column)
        self.changes = 0  # moves whenever the safe set may have changed
        self.stamp: dict[str, int] = {}  # table -> ``changes`` when it entered the safe set (sql.key_lineage)

    def off(self) -> None:
        """For good (user code holds the raw connection)."""
        self.on = False
        self.tables.clear()
        self.changes += 1

    def loaded(self, raw: duckdb.DuckDBPyConnection, name: str, base: int, in_txn: bool) -> None:
        """``name`` was just loaded by tpf with ids ``base + row``: checked on every row, then kept."""
        name = name.lower()
        self.tables.pop(name, None)
        self.changes += 1
        if not self.on or in_txn:
            return
        q = quote_name(name)
        cols = {c.lower() for c, *_ in raw.execute(f"DESCRIBE {q}").fetchall()}
        if "rowid" in cols:
            return
        bad = raw.execute(f"SELECT count(*) FROM {q} WHERE {RID} IS DISTINCT FROM rowid + {int(base)}")
        if bad.fetchall()[0][0] == 0:
            self.tables[name] = int(base)
            self.stamp[name] = self.changes  # what was read of an earlier table of this name is not this

    def forget(self, name: str) -> None:
        self.tables.pop(name.lower(), None)
        self.changes += 1

    def before(self, raw: duckdb.DuckDBPyConnection, text: str) -> None:
        """Before ``text`` runs through the connection: take out the tables it may change."""
        if not self.tables:
            return
        if text not in self._effects:
            while len(self._effects) >= 512:
                self._effects.pop(next(iter(self._effects)))
            self._effects[text] = _changed_by(raw, text)
        changed = self._effects[text]
        if changed != ():
            self.changes += 1
        if changed is None:
            self.tables.clear()
        for t in changed or ():
            self.tables.pop(t, None)

    def apply(self, sql: str | None) -> str | None:
        """``sql`` with ``t.__tp_rid`` of the tables known safe read as ``(t.rowid + base)``."""
        if sql is None or not self.tables or RID not in sql or sql in self._bad:
            return sql
        key = (sql, tuple(sorted(self.tables.items())))
        out = self._sql.get(key)
        if out is None:
            while len(self._sql) >= 256:
                self._sql.pop(next(iter(self._sql)))
            out = self._sql[key] = _with_rowid(sql, self.tables)
        return out

    def run(self, run, sql: str, rw):
        """``run(sql, rw)`` reading rowid where it may; where DuckDB rejects the rowid version (a construct
        whose sides have no ``rowid``, e.g. a NEAREST join), the stored column, and not tried again."""
        fast, fast_rw = self.apply(sql), self.apply_split(rw)
        if fast is sql and fast_rw is rw:
            return run(sql, rw)
        try:
            return run(fast, fast_rw)
        except duckdb.Error:
            self._bad.add(sql)
            if len(self._bad) > 256:
                self._bad.clear()
            return run(sql, rw)

    def apply_split(self, rw):
        """``rw``, or a shallow copy whose correlated split query (``rw.split_sql``) reads rowid (the
        cached plan itself is not changed)."""
        split = getattr(rw, "split_sql", None)
        new = self.apply(split)
        if new is split:
            return rw
        out = copy.copy(rw)
        out.split_sql = new
        return out


def _changed_by(raw: duckdb.DuckDBPyConnection, text: str) -> tuple[str, ...] | None:
    """The tables statement(s) ``text`` may change: () for plain SELECTs, None for "any"."""
    try:
        kinds = [st.type for st in raw.extract_statements(text)]
    except duckdb.Error:
        return None
    if all(k == duckdb.StatementType.SELECT for k in kinds):
        return ()
    try:
        stmts = sqlglot.parse(text, read=DIALECT)
    except sqlglot.errors.SqlglotError:
        return None
    stmts = [st for st in stmts if st is not None]
    if len(stmts) != len(kinds):
        return None
    out: list[str] = []
    for kind, st in zip(kinds, stmts):
        if kind == duckdb.StatementType.SELECT:
            continue
        named = isinstance(st, _NAMED) or (
            isinstance(st, (exp.Create, exp.Drop)) and str(st.args.get("kind")).upper() in _MADE
        )
        tables = _targets(st) if named else []
        if not tables:
            return None
        out += tables
    return tuple(out)


def _targets(st: exp.Expression) -> list[str]:
    if isinstance(st, exp.Drop) and st.args.get("tables"):
        targets = list(st.args["tables"])
    else:
        targets = [st.this]
    targets = [t.this if isinstance(t, exp.Schema) else t for t in targets]
    if not all(isinstance(t, exp.Table) and t.name for t in targets):
        return []
    return [t.name.lower() for t in targets]


def _with_rowid(sql: str, tables: dict[str, int]) -> str:
    """Replace the qualified ``__tp_rid`` references whose source is a safe base table."""
    try:
        tree = sqlglot.parse_one(sql, read=DIALECT)
        scopes = traverse_scope(tree)
    except (sqlglot.errors.SqlglotError, RecursionError):
        return sql
    changed = False
    for scope in scopes:
        for col in scope.columns:
            if col.name != RID or not col.table:
                continue
            src = scope.sources.get(col.table)
            if not isinstance(src, exp.Table) or src.args.get("db") or src.args.get("catalog"):
                continue
            base = tables.get(src.name.lower())
            if base is None or not isinstance(src.this, exp.Identifier):
                continue
            rowid = exp.Column(this=exp.to_identifier("rowid"), table=col.args["table"].copy())
            new = exp.paren(exp.Add(this=rowid, expression=exp.Literal.number(base)))
            if isinstance(col.parent, exp.Select) and col.arg_key == "expressions":
                new = exp.alias_(new, RID)  # a bare projection keeps its name
            col.replace(new)
            changed = True
    return tree.sql(dialect=DIALECT) if changed else sql
