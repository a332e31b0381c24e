"""Eager capture: a WHERE clause's correlated scalar aggregate and its witnesses from one subquery.

The eager rewrite keeps ``l_quantity < (SELECT 0.2 * avg(l_quantity) FROM lineitem WHERE l_partkey =
p_partkey)`` in the WHERE clause and gives each row the subquery's witnesses (the rows it aggregated) as a
second, list-valued copy of the subquery, which :mod:`traceprop_frames.sql.correlated` moves to a side
query re-reading ``lineitem`` after the query. On TPC-H q17 at SF 1 that side query and its Python cost
about 0.5x the plain query.

Where the comparison is a conjunct of the top-level WHERE and the scalar subquery reads the same FROM /
WHERE as the witness list, both come from one ``LATERAL`` subquery instead (as
:mod:`traceprop_frames.sql.exists_lateral` does for ``EXISTS``): ::

    FROM lineitem, part, LATERAL (SELECT 0.2 * avg(l_quantity) AS __tp_v, list(lineitem.__tp_rid) AS __tp_w
                                  FROM lineitem WHERE l_partkey = p_partkey) AS __tp_sv0
    WHERE ... AND l_quantity < __tp_sv0.__tp_v

The subquery's one expression is an aggregate and it has no GROUP BY, so it gives exactly one row per
outer row (over no rows too: ``avg`` NULL, ``count`` 0, as the scalar subquery gives): the join keeps
the outer rows as they are, ``__tp_v`` is the scalar subquery's value for the same outer row, and the list
holds the same rows the witness subquery lists (the same FROM / WHERE). The lineage part becomes
``flatten(list(__tp_sv0.__tp_w))`` (in an aggregate) or ``__tp_sv0.__tp_w``.

Applies only to a subquery correlated by equalities (see
:func:`traceprop_frames.sql.exists_lateral.equi_correlated`) without a nested subquery, window, GROUP BY,
HAVING, LIMIT or DISTINCT, compared by ``= <> < <= > >=`` as a conjunct of the top-level WHERE, and only
where nothing else can see the new FROM item (no ``*`` or ``COLUMNS(...)`` in the SELECT list, no
DISTINCT). Anything else keeps the side query. A form that DuckDB refuses to bind runs as it was (see
:func:`traceprop_frames.sql.correlated.run_eager`).
"""

from __future__ import annotations

from sqlglot import exp

from traceprop_frames.sql.exists_lateral import (
    _body,
    _hidden_star,
    _reads,
    equi_correlated,
    join_lateral,
    witness_lists,
)
from traceprop_frames.sql.shared import _conjuncts

_ALIAS = "__tp_sv"
_VALUE = "__tp_v"
_LIST = "__tp_w"
_COMPARE = (exp.EQ, exp.NEQ, exp.LT, exp.LTE, exp.GT, exp.GTE)


def _scalar(q: exp.Expression, has_agg, outer_columns) -> exp.Select | None:
    """The body of ``q`` if it is a subquery giving one aggregate value per outer row, correlated by
    equalities only (see the module docstring), else None."""
    if not isinstance(q, exp.Subquery):
        return None
    s = _body(q)
    if s is None or len(s.expressions) != 1 or _reads(s) is None:
        return None
    e = s.expressions[0]
    e = e.this if isinstance(e, exp.Alias) else e
    if isinstance(e, exp.Star) or e.find(exp.Window) is not None or not has_agg(e):
        return None
    if any(x is not s for x in s.find_all(exp.Query)):
        return None
    return s if equi_correlated(s, outer_columns(s)) else None


def _candidates(where: exp.Where, has_agg, outer_columns) -> dict[str, list[tuple[exp.Subquery, exp.Select]]]:
    """The scalar subqueries compared in a conjunct of ``where``, by what they read (see :func:`_reads`)."""
    found: dict[str, list[tuple[exp.Subquery, exp.Select]]] = {}
    for c in _conjuncts(where.this):
        if not isinstance(c, _COMPARE):
            continue
        for side in (c.this, c.expression):
            s = _scalar(side, has_agg, outer_columns)
            if s is not None:
                found.setdefault(_reads(s), []).append((side, s))
    return found


def lateral_scalar(
    sel: exp.Expression, n_hidden: int, n_lineage: int, aggregated: bool, outer_columns, has_agg
) -> int:
    """Merge each scalar aggregate subquery compared in a top-level WHERE conjunct of ``sel`` with its
    witness part among the first ``n_lineage`` hidden columns (see the module docstring); changes ``sel``
    in place. Returns how many were merged. ``outer_columns(s)``: the columns of subquery ``s`` that refer
    to the outer query, or None where that is not known; ``has_agg(e)``: whether ``e`` aggregates."""
    if not isinstance(sel, exp.Select) or sel.args.get("distinct") is not None or _hidden_star(sel):
        return 0
    where = sel.args.get("where")
    if where is None or sel.args.get("from_") is None:
        return 0
    found = _candidates(where, has_agg, outer_columns)
    if not found:
        return 0
    merged = 0
    for a, w in witness_lists(sel, n_hidden, n_lineage, aggregated):
        hit = found.get(_reads(w))
        if not hit:
            continue
        node, s = hit.pop(0)
        name = f"{_ALIAS}{merged}"
        merged += 1
        value = s.expressions[0]
        value = value.this if isinstance(value, exp.Alias) else value
        sub = w.copy()
        sub.set("expressions", [exp.alias_(value.copy(), _VALUE), exp.alias_(sub.expressions[0], _LIST)])
        node.replace(exp.column(_VALUE, table=name))
        join_lateral(sel, name, sub, a, _LIST, aggregated)
    return merged
