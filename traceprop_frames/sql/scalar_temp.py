"""Eager capture: an uncorrelated scalar aggregate computed once for the answer and its witnesses.

TPC-H q22's ``c_acctbal > (SELECT avg(c_acctbal) FROM customer WHERE c_acctbal > 0.00 AND ...)``: under
eager capture the query runs as written (DuckDB scans ``customer`` for the average) and the subquery's
witnesses (every row the average read, one shared set stored once) come from a side query that scans
``customer`` again. Here the subquery's value and its lineage are computed by one query into a one-row
temporary table (``(value, list of ids)``, the witness query the side query wraps); the query reads the
value from that table (``(SELECT __tp_v FROM temp.__tp_sc_0)``: the same value, of the same type) and the
side query reads the lineage from it. The table lives from just before the query to just after its
side queries (as :mod:`traceprop_frames.sql.temp_witness`'s IN tables do).

Only for a witness that aggregates without GROUP BY, HAVING, DISTINCT, LIMIT or windows (exactly one
row, whatever it reads), whose subquery text is found in the rewritten query (where the text could
name different tables in two scopes - a CTE defined twice, or named like a table it hides - it is left
to the usual side query).
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
    if value.find(exp.Star) is not None or not _has_agg_call(value):
        return None
    return Candidate(index, wq.copy(), kind, with_)


def _ambiguous(stmt: exp.Expression, read: set[str], tables: set[str]) -> bool:
    """True if a name the witness reads (``read``) could mean two things in ``stmt``: a CTE defined
    twice, or a CTE named like a table (``tables``: the database's), visible in one scope only."""
    names = [c.alias_or_name.lower() for c in stmt.find_all(exp.CTE)]
    return len(names) != len(set(names)) or bool(read & set(names) & tables)


def apply(stmt: exp.Expression, consts: list, temps: list, found: list[Candidate], catalog_tables) -> None:
    """Make each candidate's subquery in ``stmt`` read its value from a one-row temporary table, and its
    witness side query (``consts[index]``) read the lineage from it; appends the table's (name, CREATE
    SQL) to ``temps``. ``catalog_tables``: the names of the database's tables. Changes ``stmt`` in place."""
    for c in found:
        body = c.wq.copy()
        body.set("expressions", body.expressions[:1])
        text = body.sql(dialect=DIALECT)
        if _ambiguous(stmt, {t.name.lower() for t in c.wq.find_all(exp.Table)}, set(catalog_tables)):
            continue
        nodes = [
            s
            for s in stmt.find_all(exp.Subquery)
            if isinstance(s.this, exp.Select) and s.this.sql(dialect=DIALECT) == text
        ]
        if not nodes:
            continue
        name = f"{PREFIX}{c.index}"
        one = f"{c.with_}SELECT __tp_w.__tp_v, __tp_w.{c.kind} FROM ({c.wq.sql(dialect=DIALECT)}) AS __tp_w(__tp_v)"
        temps.append((name, f"CREATE OR REPLACE TEMP TABLE {name} AS {one}"))
        consts[c.index] = (
            f"SELECT CAST(0 AS BIGINT) AS __tp_key, {c.kind} FROM temp.{name}",
            consts[c.index][1],
        )
        for s in nodes:
            s.set("this", sqlglot.parse_one(f"SELECT __tp_v FROM temp.{name}", read=DIALECT))
