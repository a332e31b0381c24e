"""Eager capture: a query and its scalar subquery over the same rows, those rows computed once.

TPC-H q11: ``SELECT ps_partkey, sum(v) ... FROM partsupp, supplier, nation WHERE <w> GROUP BY ps_partkey
HAVING sum(v) > (SELECT sum(v) * 0.0001 FROM partsupp, supplier, nation WHERE <w>)``. The subquery's
witnesses are every row of the join (one shared set, stored once); under eager capture they came from a
side query that joined the three tables again after the query had joined them for itself (and for the
subquery). Here the join's rows are written once to a temporary table: the columns the query and the
subquery read (``__tp_c0 ...``: plain column references only, so types and collations are the
table's) and each row's lineage ids (``__tp_p``). The query and the subquery then read the table (their
FROM, joins and WHERE replaced by it, column references by its columns), and the side query lists
its ``__tp_p``. The rows are the same rows, so the answer and the lineage are the same.

Writing the rows costs about what reading them again saves when they are many: only where DuckDB
estimates the rows at most a tenth of the most rows any step of their plan reads (q11: ~34k of 800k
``partsupp`` rows; measured: a 6M-row table grouped against its own total ran 1.95x -> 4.6x plain with
the table, a 1.5M-row join 2.05x -> 2.15x).

Only where :mod:`~traceprop_frames.sql.scalar_temp` leaves the subquery because the query around it reads
the same FROM / joins / WHERE (compared as SQL text), that query is the statement itself (a SELECT with
no WITH, window, QUALIFY or ``*``, every FROM item a plain table, no subquery but the scalar one, no
volatile function), each select item is a column or aliased, and no name the query filters, groups or
selects by is one of its aliases (ORDER BY may name an alias). Anything else is left to the side query.
"""

from __future__ import annotations

import re

import duckdb
from sqlglot import exp

from traceprop_frames.sql.dialect import DIALECT
from traceprop_frames.sql.scalar_temp import Candidate, _reads, matching_subqueries
from traceprop_frames.sql.shared import _member_parts

PREFIX = "__tp_sr_"
_VOLATILE = frozenset({"random", "rand", "uuid", "gen_random_uuid", "uuidv4", "uuidv7", "nextval", "setseed"})


_ESTIMATE = re.compile(r"~([0-9][0-9,]*) rows", re.IGNORECASE)


def few_rows(raw, sql: str) -> bool:
    """True if DuckDB binds the SELECT ``sql`` and estimates its rows (the plan's top step) at most a
    tenth of the most rows any step of its plan reads; False otherwise (or where no estimate shows)."""
    try:
        text = "\n".join(str(r[-1]) for r in raw.sql(f"EXPLAIN {sql}").fetchall())
    except duckdb.Error:
        return False
    rows = [int(m.replace(",", "")) for m in _ESTIMATE.findall(text)]
    return bool(rows) and rows[0] * 10 <= max(rows)


def _plain_items(sel: exp.Select) -> bool:
    items = [sel.args["from_"].this] + [j.this for j in sel.args.get("joins") or []]
    return all(
        isinstance(i, exp.Table) and isinstance(i.this, exp.Identifier) and not i.args.get("db")
        for i in items
    )


def _volatile(sel: exp.Select) -> bool:
    return any(
        isinstance(n, exp.Rand) or (isinstance(n, exp.Anonymous) and n.name.lower() in _VOLATILE)
        for n in sel.walk()
    )


def _shape_ok(stmt: exp.Expression, nodes: list[exp.Subquery]) -> bool:
    """``stmt`` is a SELECT of the form the module docstring names, around the subqueries ``nodes``."""
    if not isinstance(stmt, exp.Select) or stmt.args.get("from_") is None:
        return False
    if any(stmt.args.get(k) for k in ("with", "with_", "qualify", "windows")) or not _plain_items(stmt):
        return False
    if stmt.find(exp.Window, exp.Lambda) is not None or _volatile(stmt):
        return False  # (a lambda's parameters are columns to sqlglot)
    inner = {id(n) for s in nodes for n in s.walk()}
    if any(id(q) not in inner for q in stmt.find_all(exp.Query) if q is not stmt):
        return False  # another subquery (it could read the outer columns)
    return all(
        isinstance(e, exp.Alias) or (isinstance(e, exp.Column) and not isinstance(e.this, exp.Star))
        for e in stmt.expressions
    )


def _columns(stmt: exp.Select, nodes: list[exp.Subquery]) -> list[exp.Column] | None:
    """The column references to read from the table: those outside the FROM / joins / WHERE of ``stmt``
    and of the subqueries (the table's rows), ORDER BY's references to aliases left out; None where an
    alias is named outside ORDER BY (it could mean the alias or a column)."""
    aliases = {e.alias.lower() for e in stmt.expressions if isinstance(e, exp.Alias)}
    order = stmt.args.get("order")
    in_order = {id(n) for n in order.walk()} if order is not None else set()
    rows = [stmt] + [s.this for s in nodes]
    parts = [p for s in rows for k in ("from_", "where") if (p := s.args.get(k)) is not None]
    parts += [j for s in rows for j in s.args.get("joins") or []]
    read = {id(n) for p in parts for n in p.walk()}
    out = []
    for col in stmt.find_all(exp.Column):
        if id(col) in read:
            continue
        if not col.table and col.name.lower() in aliases:
            if id(col) not in in_order:
                return None
            continue
        out.append(col)
    return out


def _read_table(sel: exp.Select, name: str) -> None:
    sel.set("from_", exp.From(this=exp.to_table(f"temp.{name}")))
    sel.set("joins", None)
    sel.set("where", None)


def apply(stmt: exp.Expression, consts: list, temps: list, found: list[Candidate], few) -> None:
    """For each candidate whose subquery in ``stmt`` reads the rows the query reads: the rows written to
    a temporary table (its (name, CREATE SQL) appended to ``temps``), ``stmt`` and the subquery reading
    it, the witness side query (``consts[index]``) listing its lineage column. Changes ``stmt`` in place;
    at most one candidate applies (the query's FROM is replaced once). ``few(sql)``: True if the table's
    rows (the SELECT ``sql``) are few enough to write (see :func:`few_rows`); where not, nothing changes."""
    for c in found:
        _, nodes = matching_subqueries(stmt, c)
        lin = c.wq.expressions[1]
        parts = _member_parts(lin.this if isinstance(lin, exp.Alias) else lin)
        if not nodes or parts is None or not _shape_ok(stmt, nodes):
            continue
        if any(s.find_ancestor(exp.Select) is not stmt or _reads(stmt) != _reads(s.this) for s in nodes):
            continue
        cols = _columns(stmt, nodes)
        if cols is None:
            continue
        names: dict[str, str] = {}
        for col in cols:
            names.setdefault(col.sql(dialect=DIALECT), f"__tp_c{len(names)}")
        rows = _rows_sql(stmt, names, parts)
        if few(rows):
            _rewrite(stmt, nodes, cols, names, rows, c, consts, temps)
            return


def _rows_sql(stmt: exp.Select, names: dict[str, str], parts: exp.Expression) -> str:
    """The SELECT of the table's rows: ``stmt``'s FROM / joins / WHERE, the columns and the lineage."""
    rows = exp.Select(
        expressions=[exp.alias_(exp.maybe_parse(k, dialect=DIALECT), v) for k, v in names.items()]
        + [exp.alias_(parts.copy(), "__tp_p")]
    )
    rows.set("from_", stmt.args["from_"].copy())
    rows.set("joins", [j.copy() for j in stmt.args.get("joins") or []] or None)
    rows.set("where", stmt.args["where"].copy() if stmt.args.get("where") is not None else None)
    return rows.sql(dialect=DIALECT)


def _rewrite(stmt: exp.Select, nodes, cols, names, rows: str, c: Candidate, consts, temps) -> None:
    name = f"{PREFIX}{c.index}"
    temps.append((name, f"CREATE OR REPLACE TEMP TABLE {name} AS {rows}"))
    consts[c.index] = (f"SELECT CAST(0 AS BIGINT) AS __tp_key, __tp_p FROM temp.{name}", consts[c.index][1])
    new = [(col, exp.column(names[col.sql(dialect=DIALECT)])) for col in cols]
    for col, repl in new:
        if col.parent is stmt:  # a bare select item keeps its name as the output's
            repl = exp.alias_(repl, col.this.copy())
        col.replace(repl)
    for s in nodes:
        _read_table(s.this, name)
    _read_table(stmt, name)
