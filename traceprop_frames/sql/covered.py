"""FROM items whose lineage a shared set already holds: eager capture leaves their ids out of the row.

A scalar subquery that aggregates every row it reads witnesses all of them (see ``shared``): each row
of the query that uses it gets the whole set, as one marker id. Where the rows of some FROM items of that
query are rows the subquery read too, their ids add nothing to the row's lineage (a set): the row
already refers to a set holding them. Leaving them out keeps the lineage the same and spares the
``list()`` per group that DuckDB builds before HAVING drops most groups (TPC-H q11), or the grouping
CTE's lists (q15, which DuckDB then does not compute at all).

Two forms are recognised (``S`` the query, ``W`` the subquery; both as written, compared as SQL text):

- ``W`` reads one table or CTE ``X``, no join, no WHERE: every row of ``X`` is a witness, so each item
  of ``S`` that reads ``X`` is covered (q15: ``total_revenue = (SELECT max(total_revenue) FROM revenue)``).
- ``W`` has the same FROM and joins as ``S`` and its WHERE conjuncts are among ``S``'s: every row that
  passes ``S``'s joins and filters passes ``W``'s, so all of ``S``'s items are covered (q11's HAVING
  threshold over the same three-way join).

``W`` must aggregate, with no GROUP BY, HAVING, DISTINCT, QUALIFY, LIMIT, OFFSET, window, WITH of its
own or subquery in its FROM / WHERE; items are plain table or CTE names (no table function, no schema).
Anything else is left as it is (the ids stay in the row).
"""

from __future__ import annotations

from sqlglot import exp

from traceprop_frames.sql.dialect import DIALECT

_NOT_ALL_ROWS = ("group", "having", "distinct", "qualify", "limit", "offset", "windows", "with_", "with")


def _sql(e: exp.Expression | None) -> str:
    return "" if e is None else e.sql(dialect=DIALECT)


def _conjuncts(e: exp.Expression | None) -> list[str]:
    if e is None:
        return []
    e = e.this if isinstance(e, exp.Where) else e
    out = []
    for c in e.flatten() if isinstance(e, exp.And) else [e]:
        while isinstance(c, exp.Paren):
            c = c.this
        out.append(_sql(c))
    return out


def _plain_table(item: exp.Expression) -> bool:
    return isinstance(item, exp.Table) and isinstance(item.this, exp.Identifier) and not item.args.get("db")


def _reads_all(body: exp.Expression, aggs: frozenset[str]) -> bool:
    """``body`` is a SELECT of plain tables that aggregates every row of its FROM / WHERE (see ``shared``)."""
    if not isinstance(body, exp.Select) or body.args.get("from_") is None:
        return False
    if any(body.args.get(k) for k in _NOT_ALL_ROWS) or body.find(exp.Window) is not None:
        return False
    if not all(_plain_table(i) for i in _items(body)):
        return False
    for node in [body.args.get("where"), *(body.args.get("joins") or [])]:
        if node is not None and node.find(exp.Subquery, exp.Exists, exp.Query) is not None:
            return False
    return any(
        isinstance(n, exp.AggFunc) or (isinstance(n, exp.Anonymous) and n.name.lower() in aggs)
        for e in body.expressions
        for n in e.walk()
    )


def _items(sel: exp.Select) -> list[exp.Expression]:
    return [sel.args["from_"].this] + [j.this for j in sel.args.get("joins") or []]


def _from_sql(sel: exp.Select) -> list[str]:
    return [_sql(sel.args["from_"].this)] + [_sql(j) for j in sel.args.get("joins") or []]


def covered_items(sel: exp.Select, bodies: list[exp.Expression], aggs: frozenset[str]) -> set[int]:
    """``id()`` of the FROM items of ``sel`` whose rows every row of ``sel`` already refers to through
    the shared set of one of ``bodies`` (the SELECTs of the uncorrelated scalar subqueries of ``sel``
    whose witnesses became a marker id)."""
    if sel.args.get("from_") is None:
        return set()
    items = _items(sel)
    covered: set[int] = set()
    mine = None
    for body in bodies:
        if not _reads_all(body, aggs):
            continue
        if not body.args.get("joins") and body.args.get("where") is None:
            name = body.args["from_"].this.name.lower()
            covered.update(id(i) for i in items if _plain_table(i) and i.name.lower() == name)
            continue
        if mine is None:
            mine = (_from_sql(sel), set(_conjuncts(sel.args.get("where"))))
        if _from_sql(body) == mine[0] and set(_conjuncts(body.args.get("where"))) <= mine[1]:
            return {id(i) for i in items}
    return covered
