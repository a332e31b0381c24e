"""Eager capture: an uncorrelated scalar aggregate computed once for the answer and its witnesses.

TPC-H q22's ``c_acctbal > (SELECT avg(c_acctbal) FROM customer WHERE c_acctbal > 0.00 AND ...)``: under
eager capture the query runs as written (DuckDB scans ``customer`` for the average) and the subquery's
witnesses (every row the average read, one shared set stored once) come from a side query that scans
``customer`` again. Here the subquery's value and its lineage are computed by one query into a one-row
temporary table (``(value, list of ids)``: the witness query the side query wraps), and a DuckDB
variable holds the value (``SET VARIABLE __tp_sc_0 = (SELECT __tp_v FROM temp.__tp_sc_0)``: the same
value, of the same type). The query reads ``getvariable('__tp_sc_0')`` (a constant when DuckDB plans it,
so a filter on it reaches the scan, as it would for a literal; inside ``IN`` / ``ANY`` / ``ALL`` it reads
``(SELECT __tp_v FROM temp.__tp_sc_0)``), and the side query reads the lineage from the table. Both live
from just before the query to just after its side queries (as :mod:`traceprop_frames.sql.temp_witness`'s
IN tables do).

Only for a witness that aggregates without GROUP BY, HAVING, DISTINCT, LIMIT or windows (exactly one
row, whatever it reads), whose subquery text is found in the rewritten query, and that reads no CTE of
the statement (the query computes a CTE once for itself and the subquery; and a CTE's name could mean a
table in another scope). Where the query around the subquery reads the same FROM / WHERE (TPC-H q11),
DuckDB computes those rows once for both: left to the usual side query too.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlglot
from sqlglot import exp

from traceprop_frames.sql.dialect import DIALECT
from traceprop_frames.sql.shared import _has_agg_call

PREFIX = "__tp_sc_"
_ONE_ROW_ONLY = ("group", "having", "distinct", "limit", "offset", "qualify", "windows")


@dataclass
class Candidate:
    """An uncorrelated scalar witness bound as marker ``index``: its witness query (value, lineage)."""

    index: int
    wq: exp.Select
    kind: str
    with_: str


def candidate(index: int, wq: exp.Expression, kind: str, with_: str) -> Candidate | None:
    """A :class:`Candidate` where the witness query ``wq`` gives exactly one row, else None."""
    if not isinstance(wq, exp.Select) or len(wq.expressions) != 2 or wq.args.get("from_") is None:
        return None
    if any(wq.args.get(k) for k in _ONE_ROW_ONLY) or wq.find(exp.Window) is not None:
        return None
    value = wq.expressions[0]
    value = value.this if isinstance(value, exp.Alias) else value
    if isinstance(value, exp.Star) or not _has_agg_call(value):
        return None
    return Candidate(index, wq.copy(), kind, with_)


def _reads_cte(stmt: exp.Expression, read: set[str]) -> bool:
    """True if the witness reads (``read``: the names of its FROM items) a CTE of ``stmt``: the query
    computes the CTE once for itself and the subquery (TPC-H q15's ``(SELECT max(total_revenue) FROM
    revenue)``), a query of its own would compute it again (measured: q15 1.7x -> 2.7x plain); and a
    name could mean the CTE in one scope and a table in another."""
    return bool(read & {c.alias_or_name.lower() for c in stmt.find_all(exp.CTE)})


def _reads(s: exp.Select) -> list[str]:
    return [s.args[k].sql(dialect=DIALECT) for k in ("from_", "where") if s.args.get(k) is not None] + [
        j.sql(dialect=DIALECT) for j in s.args.get("joins") or []
    ]


def _same_rows(outer: exp.Select | None, body: exp.Select) -> bool:
    """True if the query around the subquery reads the rows it reads (TPC-H q11's ``HAVING sum(...) >
    (SELECT sum(...) * 0.0001 FROM <the same FROM / WHERE>)``): DuckDB computes them once for both (a
    common subplan), so a query of its own would read them again."""
    return outer is not None and _reads(outer) == _reads(body)


def matching_subqueries(stmt: exp.Expression, c: Candidate) -> tuple[exp.Select, list[exp.Subquery]]:
    """(candidate ``c``'s subquery as a one-column SELECT, the subqueries of ``stmt`` that are that SELECT);
    no subqueries where it reads one of ``stmt``'s CTEs (left to the side query)."""
    body = c.wq.copy()
    body.set("expressions", body.expressions[:1])
    text = body.sql(dialect=DIALECT)
    if _reads_cte(stmt, {t.name.lower() for t in c.wq.find_all(exp.Table)}):
        return body, []
    nodes = [
        s
        for s in stmt.find_all(exp.Subquery)
        if isinstance(s.this, exp.Select) and s.this.sql(dialect=DIALECT) == text
    ]
    return body, nodes


def apply(stmt: exp.Expression, consts: list, temps: list, found: list[Candidate]) -> None:
    """Make each candidate's subquery in ``stmt`` read its value from a one-row temporary table, and its
    witness side query (``consts[index]``) read the lineage from it; appends the table's (name, CREATE
    SQL) to ``temps``. Changes ``stmt`` in place."""
    for c in found:
        body, nodes = matching_subqueries(stmt, c)
        if not nodes or any(_same_rows(s.find_ancestor(exp.Select), body) for s in nodes):
            continue
        name = f"{PREFIX}{c.index}"
        one = f"{c.with_}SELECT __tp_w.__tp_v, __tp_w.{c.kind} FROM ({c.wq.sql(dialect=DIALECT)}) AS __tp_w(__tp_v)"
        create = f"CREATE OR REPLACE TEMP TABLE {name} AS {one}; "
        create += f"SET VARIABLE {name} = (SELECT __tp_v FROM temp.{name})"
        temps.append((name, create))
        consts[c.index] = (
            f"SELECT CAST(0 AS BIGINT) AS __tp_key, {c.kind} FROM temp.{name}",
            consts[c.index][1],
        )
        for s in nodes:
            if isinstance(s.parent, (exp.In, exp.Any, exp.All, exp.Exists)):
                s.set("this", sqlglot.parse_one(f"SELECT __tp_v FROM temp.{name}", read=DIALECT))
            else:  # a constant at DuckDB's planning: filters on it reach the scans, as on a literal
                s.replace(exp.Anonymous(this="getvariable", expressions=[exp.Literal.string(name)]))


def drop_sql(name: str) -> str | None:
    """What :func:`apply`'s ``CREATE`` also made and dropping the table leaves: the variable."""
    return f"RESET VARIABLE {name}" if name.startswith(PREFIX) else None
