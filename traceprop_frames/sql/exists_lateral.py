"""Eager capture: a WHERE clause's correlated ``EXISTS`` and its witnesses from one subquery.

The eager rewrite keeps ``EXISTS (SELECT * FROM lineitem WHERE l_orderkey = o_orderkey AND ...)`` in the
WHERE clause and gives each row the witnesses as a second, list-valued copy of the subquery
(``flatten(list((SELECT list(lineitem.__tp_rid) FROM lineitem WHERE ...)))``, which
:mod:`traceprop_frames.sql.correlated` moves to a side query). DuckDB then reads ``lineitem`` twice: once
for the EXISTS (a semi join), once for the witnesses. On TPC-H q04 at SF 1 each read costs about what the
whole plain query costs, so eager capture cost 2.1x plain.

Where the EXISTS is a conjunct of the top-level WHERE and its subquery reads the same FROM / WHERE as
the witness list, both come from one ``LATERAL`` subquery instead: ::

    FROM orders, LATERAL (SELECT list(lineitem.__tp_rid) AS __tp_w, count(*) AS __tp_n
                          FROM lineitem WHERE l_orderkey = o_orderkey AND ...) AS __tp_ew0
    WHERE ... AND __tp_ew0.__tp_n > 0

An aggregate without GROUP BY gives exactly one row per outer row, so the join keeps the outer rows as
they are; ``count(*) > 0`` holds exactly when the subquery has a row (what EXISTS tests), and the list is
the same rows the witness subquery lists (the same FROM / WHERE on the same outer row). DuckDB reads
``lineitem`` once, for the distinct outer values. The lineage part becomes ``flatten(list(__tp_ew0.__tp_w))``
(in an aggregate) or ``__tp_ew0.__tp_w``.

Applies only to a subquery correlated by equalities (see :func:`equi_correlated`), and only where
nothing else can see the new FROM item: no ``*`` or ``COLUMNS(...)`` in the SELECT
list, no DISTINCT; anything else keeps the two reads. A form that DuckDB refuses to bind runs as it was
(see :func:`traceprop_frames.sql.correlated.run_eager`).
"""

from __future__ import annotations

from sqlglot import exp

from traceprop_frames.errors import UnsupportedSQLError
from traceprop_frames.sql.dialect import DIALECT
from traceprop_frames.sql.one_row_exists import always_one_row
from traceprop_frames.sql.shared import _conjuncts

_ALIAS = "__tp_ew"
_LIST = "__tp_w"
_COUNT = "__tp_n"
_PLAIN_ONLY = ("group", "having", "limit", "offset", "distinct", "qualify", "with_", "order", "windows")


def _call(e: exp.Expression, name: str) -> bool:
    return isinstance(e, exp.Anonymous) and e.name.lower() == name and len(e.expressions) == 1


def _body(q: exp.Expression) -> exp.Select | None:
    while isinstance(q, (exp.Subquery, exp.Paren)):
        q = q.this
    return q if isinstance(q, exp.Select) else None


def _reads(s: exp.Select) -> str | None:
    """The FROM / joins / WHERE of a plain subquery as SQL (what it reads), or None."""
    if s.args.get("from_") is None or any(s.args.get(k) for k in _PLAIN_ONLY):
        return None
    parts = [s.args["from_"], *(s.args.get("joins") or []), s.args.get("where")]
    return " ".join(p.sql(dialect=DIALECT) for p in parts if p is not None)


def _one_row(s: exp.Select) -> bool:
    """True where ``s`` aggregates without GROUP BY (``SELECT count(*) FROM l WHERE ...``): it returns
    one row whether or not any row matches."""
    if s.args.get("group") or s.args.get("having"):
        return False
    return any(_agg_func(e) for e in s.expressions)


def refuse_one_row_exists(stmt: exp.Expression) -> None:
    """Raise UnsupportedSQLError for an ``EXISTS`` over a query that aggregates without GROUP BY where
    that one row may still be dropped (QUALIFY, a window, OFFSET, LIMIT 0).

    Such a subquery returns one row whether or not any row matches; where nothing can drop that row
    (:func:`always_one_row`) the rewrite traces the ``EXISTS`` as always true. Otherwise eager capture
    merged it as "a row matched" (a different answer) and lazy capture left outer rows out of their
    group's lineage (an insufficient lineage): refused in both."""
    for e in stmt.find_all(exp.Exists):
        body = _body(e.this)
        if body is not None and _one_row(body) and not always_one_row(body, _agg_func):
            raise UnsupportedSQLError(
                f"EXISTS ({body.sql(dialect=DIALECT)[:80]}...) aggregates without GROUP BY, so it holds for "
                "every row whether or not any row matches; the traced connection cannot carry lineage "
                "through it yet: write TRUE (NOT EXISTS: FALSE), or EXISTS over the rows themselves "
                "(SELECT * FROM ... WHERE ...)"
            )


def _agg_func(e: exp.Expression) -> bool:
    """True if ``e`` (an item of a SELECT list) holds an aggregate sqlglot knows, outside windows and
    subqueries."""
    s = e.find_ancestor(exp.Select)
    return any(f.find_ancestor(exp.Window, exp.Select) is s for f in e.find_all(exp.AggFunc))


def _calls(s: exp.Select) -> bool:
    """True if ``s``'s SELECT list calls a function (possibly an aggregate: one row over no rows)."""
    return any(e.find(exp.Func) is not None for e in s.expressions)


def _witness_list(a: exp.Expression, aggregated: bool) -> exp.Select | None:
    """The witness subquery of the lineage part ``a``: ``flatten(list((S)))`` in an aggregate, ``(S)``
    otherwise, ``S`` a SELECT of one list-valued expression."""
    if aggregated:
        if not (_call(a, "flatten") and _call(a.expressions[0], "list")):
            return None
        a = a.expressions[0].expressions[0]
        while isinstance(a, exp.Paren):
            a = a.this
    if not isinstance(a, exp.Subquery):
        return None
    s = _body(a)
    if s is None or len(s.expressions) != 1 or isinstance(s.expressions[0], exp.Alias):
        return None
    e = s.expressions[0]
    ok = _call(e, "list") or (_call(e, "flatten") and _call(e.expressions[0], "list"))
    if not ok and isinstance(e, exp.Anonymous) and e.name.lower() == "list_concat":
        ok = all(
            _call(x, "list") or (_call(x, "flatten") and _call(x.expressions[0], "list"))
            for x in e.expressions
        )
    return s if ok else None


def _hidden_star(sel: exp.Select) -> bool:
    """True if the SELECT list names columns by a star or COLUMNS(...) (a new FROM item would show)."""
    for e in sel.expressions:
        for node in e.find_all(exp.Star, exp.Columns):
            if not (isinstance(node, exp.Star) and isinstance(node.parent, exp.Count)):
                return True
    return False


def equi_correlated(s: exp.Select, outer: list[exp.Column] | None) -> bool:
    """True if the subquery ``s`` reads the outer row only through ``inner = outer`` conjuncts of its
    WHERE (``outer``: its columns that refer to the outer query). DuckDB then finds each outer row's
    subquery rows by one hash join on those values; a correlation by an inequality (TPC-H q21's
    ``l2.l_suppkey <> l1.l_suppkey``) makes the merged form cost more than the two reads it replaces."""
    where = s.args.get("where")
    if not outer or where is None:
        return False
    eqs = {id(c) for c in _conjuncts(where.this) if isinstance(c, exp.EQ)}
    ids = {id(o) for o in outer}
    for o in outer:
        eq = o.parent
        if id(eq) not in eqs:
            return False
        other = eq.expression if eq.this is o else eq.this
        if not isinstance(other, exp.Column) or id(other) in ids:
            return False
    return True


def lateral_exists(
    sel: exp.Expression, n_hidden: int, n_lineage: int, aggregated: bool, outer_columns
) -> int:
    """Merge each top-level ``EXISTS`` conjunct of ``sel``'s WHERE with its witness part among the first
    ``n_lineage`` hidden columns (see the module docstring); changes ``sel`` in place. Returns how many
    were merged. ``outer_columns(s)``: the columns of subquery ``s`` that refer to the outer query, or
    None where that is not known; only a subquery correlated by equalities is merged (see
    :func:`equi_correlated`)."""
    if not isinstance(sel, exp.Select) or sel.args.get("distinct") is not None or _hidden_star(sel):
        return 0
    where = sel.args.get("where")
    if where is None or sel.args.get("from_") is None:
        return 0
    exists: dict[str, list[exp.Exists]] = {}
    for c in _conjuncts(where.this):
        body = _body(c.this) if isinstance(c, exp.Exists) else None
        reads = _reads(body) if body is not None else None
        if reads is not None and (_calls(body) or not equi_correlated(body, outer_columns(body))):
            reads = None
        if reads is not None:
            exists.setdefault(reads, []).append(c)
    if not exists:
        return 0
    merged = 0
    for a, s in witness_lists(sel, n_hidden, n_lineage, aggregated):
        found = exists.get(_reads(s))
        if not found:
            continue
        node = found.pop(0)
        name = f"{_ALIAS}{merged}"
        merged += 1
        sub = s.copy()
        sub.set("expressions", [exp.alias_(sub.expressions[0], _LIST), exp.alias_(_count_star(), _COUNT)])
        node.replace(exp.GT(this=exp.column(_COUNT, table=name), expression=exp.Literal.number(0)))
        join_lateral(sel, name, sub, a, _LIST, aggregated)
    return merged


def witness_lists(sel: exp.Select, n_hidden: int, n_lineage: int, aggregated: bool):
    """Each witness list among ``sel``'s lineage columns (a ``list_concat``'s arguments one by one), as
    (the list's expression in the SELECT, the subquery it lists)."""
    for col in sel.expressions[len(sel.expressions) - n_hidden :][:n_lineage]:
        if not isinstance(col, exp.Alias):
            continue
        e = col.this
        args = (
            list(e.expressions) if isinstance(e, exp.Anonymous) and e.name.lower() == "list_concat" else [e]
        )
        for a in args:
            s = _witness_list(a, aggregated)
            if s is not None:
                yield a, s


def join_lateral(
    sel: exp.Select, name: str, sub: exp.Select, a: exp.Expression, column: str, aggregated: bool
):
    """Join ``sub`` to ``sel`` as ``LATERAL (...) name`` and read the witness list ``a`` from its
    ``column`` (flattened over the group where ``sel`` aggregates)."""
    lateral = exp.Lateral(this=exp.Subquery(this=sub), alias=exp.TableAlias(this=exp.to_identifier(name)))
    sel.append("joins", exp.Join(this=lateral))
    ref = exp.column(column, table=name)
    new = exp.Anonymous(this="flatten", expressions=[exp.Anonymous(this="list", expressions=[ref])])
    a.replace(new if aggregated else ref)


def _count_star() -> exp.Expression:
    return exp.Count(this=exp.Star(), big_int=True)
