"""An ``EXISTS`` over a query that provably returns one row holds for every row.

``EXISTS (SELECT count(*) FROM l WHERE l.k = t.k)`` aggregates without GROUP BY: it returns one row
whether or not any ``l`` row matches, so it is true for every outer row (``NOT EXISTS``: for none).
The rows it reads decide nothing, so the rewrite names no witnesses for it: a row's lineage is its
other sources alone, which is sufficient (re-run on those rows, the subquery still returns its one
row). The subquery itself stays in the rewritten SQL and runs as written (its errors too).

Shapes that can drop that one row (HAVING, QUALIFY, a window, OFFSET, LIMIT 0) are not covered here:
see :func:`traceprop_frames.sql.exists_lateral.refuse_one_row_exists`.
"""

from __future__ import annotations

from sqlglot import exp


def _select(q: exp.Expression) -> exp.Select | None:
    while isinstance(q, (exp.Subquery, exp.Paren)):
        q = q.this
    return q if isinstance(q, exp.Select) else None


def _positive_limit(s: exp.Select) -> bool:
    """True where ``s`` has no OFFSET and no LIMIT, or a LIMIT of a positive integer literal."""
    if s.args.get("offset") is not None:
        return False
    limit = s.args.get("limit")
    if limit is None:
        return True
    n = limit.expression if isinstance(limit, exp.Limit) else None
    return isinstance(n, exp.Literal) and n.is_int and int(n.name) > 0


def always_one_row(s: exp.Expression, has_agg) -> bool:
    """True where the query ``s`` provably returns exactly one row: it aggregates without GROUP BY
    (``has_agg(e)``: whether a SELECT expression holds an aggregate outside windows and subqueries),
    and has no HAVING, QUALIFY, window, OFFSET or LIMIT below 1 that could drop that row. An ``EXISTS``
    over it holds for every row whatever the rows it reads (``NOT EXISTS`` for none): those rows decide
    nothing, so it names no witnesses (the subquery still runs, as written)."""
    s = _select(s)
    if s is None or not _positive_limit(s):
        return False
    if any(s.args.get(k) for k in ("group", "having", "qualify", "windows")):
        return False
    if any(e.find(exp.Window) for e in s.expressions):
        return False
    return any(has_agg(e) for e in s.expressions)
