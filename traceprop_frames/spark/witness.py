"""The query of a shared set's ids on Spark, for a witness alone or over the query's CTEs.

A scalar subquery's *witness* (``wq``, from the rewriter's ``constant`` callback) is the subquery
rewritten to carry its rows' lineage column. Its shared set is ``SELECT EXPLODE(__tp_w.__tp_lin) AS id
FROM (wq) AS __tp_w`` (or the ``__tp_rid`` column). A witness that reads the query's CTEs (TPC-H q15:
``(SELECT max(total_revenue) FROM revenue)``) needs their rewritten definitions in front; the rewriter
passes them as DuckDB SQL text, which does not print back to the same Spark SQL in general (``CAST``
comes back as ``TRY_CAST``, functions by DuckDB's names), so the set is built from the rewritten query's
own CTE trees instead, once the rewrite is done, and only if they print to exactly that text (the
trees the witness was written against). Otherwise None: the caller copies the rows into each row.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlglot
from sqlglot import exp

from traceprop_frames.sql.dialect import DIALECT
from traceprop_frames.sql.rewrite import LIN


def witness_ids(wq: exp.Expression, kind: str) -> exp.Select:
    """``SELECT <ids> AS id FROM (wq) AS __tp_w``: one row per id of the witness's rows."""
    w = exp.Subquery(this=wq.copy(), alias=exp.TableAlias(this=exp.to_identifier("__tp_w")))
    col = f"__tp_w.{kind}"
    return exp.select(f"EXPLODE({col}) AS id" if kind == LIN else f"{col} AS id").from_(w)


def cte_witness(tree: exp.Expression, wq: exp.Expression, kind: str, with_: str, frame_of: Callable):
    """``frame_of`` of the ids query of witness ``wq`` with the CTEs ``with_`` (DuckDB text) taken from
    the rewritten ``tree``, or None where they are not found unchanged there (or the side does not run
    on its own: ``frame_of`` gives None)."""
    try:
        parsed = sqlglot.parse_one(with_ + "SELECT 1", read=DIALECT).args.get("with_")
    except sqlglot.errors.SqlglotError:
        return None
    if parsed is None:
        return None
    defs: dict[str, list[exp.CTE]] = {}
    for cte in tree.find_all(exp.CTE):
        defs.setdefault(cte.alias_or_name.lower(), []).append(cte)
    chosen = []
    for c in parsed.expressions:
        found = defs.get(c.alias_or_name.lower(), [])
        if len(found) != 1:  # gone, or two CTEs of that name at different levels: not guessed
            return None
        chosen.append(found[0].copy())
    with_tree = exp.With(expressions=chosen, recursive=bool(parsed.args.get("recursive")))
    if with_tree.sql(dialect=DIALECT) + " " != with_:
        return None
    side = witness_ids(wq, kind)
    side.set("with_", with_tree)
    return frame_of(side)
