"""An IN list whose rows compare with a correlated aggregate, computed once for the answer and the lineage.

TPC-H q20's ``s_suppkey IN (SELECT ps_suppkey FROM partsupp WHERE ... AND ps_availqty > (SELECT 0.5 *
sum(l_quantity) FROM lineitem WHERE l_partkey = ps_partkey ...))``: under eager capture the query runs
as written and its IN witness (the partsupp rows of each value, with the lineitem rows their sum read)
runs again as a side query, so ``lineitem`` is scanned and aggregated twice. Here the witness rows -
value and lineage, the sum and its rows computed by one subquery (``shared._one_scan``) - are written
once to a temporary table; the query's IN reads its values from that table (the same values: the
witness rows are the subquery's rows), and the side query reads the lineage of the values the result
refers to from it. The table lives from just before the query to just after its side queries.

Only for an uncorrelated IN witness (it binds on its own) of that form; anything else is left to the
usual side query.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp

from traceprop_frames.sql.dialect import DIALECT
from traceprop_frames.sql.shared import KEY_BITS, PRESENT, _one_scan, _present_rows, side_query

PREFIX = "__tp_in_"


def members_sql(wq: exp.Expression, kind: str, with_: str) -> str | None:
    """``(value, lineage)`` per witness row of IN witness ``wq``, where its rows compare with a correlated
    aggregate whose rows its lineage lists (one scan, see ``shared._one_scan``); None otherwise."""
    if not isinstance(wq, exp.Select) or len(wq.expressions) != 2:
        return None
    if _present_rows(wq, kind, with_) is None:  # aggregates, or its value reads a subquery or a star
        return None
    one = _one_scan(wq.copy())
    if one.find(exp.Dot) is None or "__tp_s" not in one.sql(dialect=DIALECT):
        return None
    return side_query(one, kind, with_, keyed=True)[1]


def create_sql(name: str, members: str) -> str:
    return f"CREATE OR REPLACE TEMP TABLE {name} AS {members}"


def side_sql(name: str, kind: str) -> str:
    """The witness's side query over its table: ``(key, lineage)`` of the values the result refers to."""
    key = f"hash(__tp_v) >> {KEY_BITS}"
    return f"SELECT CAST({key} AS BIGINT) AS __tp_key, {kind} FROM {name} WHERE {key} IN ({PRESENT})"


def read_from(in_node: exp.Expression, name: str) -> None:
    """Make ``x IN (subquery)`` read its values from the witness table ``name`` (in place)."""
    in_node.set("query", exp.Subquery(this=sqlglot.parse_one(f"SELECT __tp_v FROM {name}", read=DIALECT)))
