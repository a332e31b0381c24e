"""Eager capture: a grouped query's one ``EXISTS`` and its witnesses by a join grouped per outer row.

:mod:`traceprop_frames.sql.exists_lateral` turns TPC-H q04's ``EXISTS`` and its witness list into one
``LATERAL`` subquery: ::

    SELECT o_orderpriority, count(*), list_concat(list(orders.__tp_rid), flatten(list(__tp_ew0.__tp_w)))
    FROM orders, LATERAL (SELECT list(lineitem.__tp_rid) AS __tp_w, count(*) AS __tp_n
                          FROM lineitem WHERE l_orderkey = o_orderkey AND ...) AS __tp_ew0
    WHERE <outer conditions> AND __tp_ew0.__tp_n > 0 GROUP BY o_orderpriority

DuckDB runs that LATERAL as a join of the distinct outer keys with ``lineitem``, an aggregate per key and a
second join back to the outer rows. Where the query groups, one table is outer and one is inner, this
module writes it as the inner join of the two, grouped once per outer row: ::

    SELECT o_orderpriority, count(*), list_concat(list(orders.__tp_rid), flatten(list(orders.__tp_w)))
    FROM (SELECT orders.__tp_rid AS __tp_rid, orders.o_orderpriority AS o_orderpriority,
                 list(lineitem.__tp_rid) AS __tp_w
          FROM orders JOIN lineitem ON orders.o_orderkey = lineitem.l_orderkey AND ...
          WHERE <outer conditions> GROUP BY orders.rowid, orders.__tp_rid, orders.o_orderpriority) AS orders
    GROUP BY o_orderpriority

Same rows and same lineage: an outer row that passes the outer conditions joins at least one inner row
exactly when the EXISTS holds (the join condition is the subquery's WHERE, every column qualified as it
resolved in the subquery), and grouping by the outer row's ``rowid`` (unique in a DuckDB table) gives one
derived row per such outer row with the list of exactly the rows the witness subquery lists. The outer
query then aggregates the same rows with the same column values as before. TPC-H q04 at SF 1, DuckDB
alone (CPU): 1.32-1.59x plain against the LATERAL's 1.81-1.92x.

Applies only where nothing else can tell the difference: the query aggregates, exactly one EXISTS was
merged (no other LATERAL), its FROM is one catalog table holding row ids (``__tp_rid``) and no joins, the
subquery reads one other catalog table (its own alias), the query holds no other subquery and no window,
and every column the query reads is a known column of the outer table (or a SELECT alias). Anything else
keeps the LATERAL. A form DuckDB refuses to bind runs as the plain eager rewrite does (see
:func:`traceprop_frames.sql.correlated.run_eager`).
"""

from __future__ import annotations

from sqlglot import exp

from traceprop_frames.sql.exists_lateral import _ALIAS, _COUNT, _LIST
from traceprop_frames.sql.rewrite import RID, Catalog
from traceprop_frames.sql.shared import _conjuncts

_PLAIN_TABLE = ("db", "catalog", "joins", "laterals", "pivots")
_LATERAL = f"{_ALIAS}0"  # the first (here: only) LATERAL that lateral_exists adds


def _table(t: exp.Expression, cat: Catalog) -> tuple[str, list[str]] | None:
    """(alias, columns) of a plain catalog table holding row ids, or None."""
    if not isinstance(t, exp.Table) or not isinstance(t.this, exp.Identifier):
        return None
    if any(t.args.get(k) for k in _PLAIN_TABLE) or t.args.get("alias") and t.args["alias"].columns:
        return None
    name = t.name.lower()
    if cat.hidden.get(name) != RID or name not in cat.columns:
        return None
    return t.alias_or_name, list(cat.columns[name])


def _carried(sel: exp.Select, alias: str, columns: list[str], lateral: str) -> list[str] | None:
    """The outer table's columns the query reads outside its FROM / WHERE (catalog spelling), or None
    where a column is not the outer table's, a SELECT alias, its row id or the witness list."""
    by_lower = {c.lower(): c for c in columns}
    aliases = {e.alias.lower() for e in sel.expressions if isinstance(e, exp.Alias)}
    out: dict[str, str] = {}
    for key, value in sel.args.items():
        if key in ("from_", "joins", "where") or value is None:
            continue
        for node in value if isinstance(value, list) else [value]:
            for c in node.find_all(exp.Column) if isinstance(node, exp.Expression) else []:
                name, table = c.name.lower(), c.table.lower()
                if c.args.get("db") or c.args.get("catalog") or not isinstance(c.this, exp.Identifier):
                    return None
                if (table, name) in ((lateral.lower(), _LIST), (alias.lower(), RID)):
                    continue
                if table not in ("", alias.lower()):
                    return None
                if name in by_lower:
                    out[name] = by_lower[name]
                elif table or name not in aliases:
                    return None
    return list(out.values())


def _qualify(cond: exp.Expression, outer_ids: set[int] | None, outer, inner) -> exp.Expression | None:
    """``cond`` with every unqualified column named by the table it resolves to: the outer one (``outer``:
    (alias, columns)) where its id is in ``outer_ids`` (None: every column is the outer table's), else the
    inner one. None where an outer column is not the outer table's (a SELECT alias, another table)."""
    cols = {c.lower() for c in outer[1]}
    for c in list(cond.find_all(exp.Column)):
        if c.args.get("db") or c.args.get("catalog") or not isinstance(c.this, exp.Identifier):
            return None
        is_outer = outer_ids is None or id(c) in outer_ids
        if not is_outer:
            if not c.table:
                c.set("table", exp.to_identifier(inner))
        elif c.table:
            if c.table.lower() != outer[0].lower():
                return None
        elif c.name.lower() in cols:
            c.set("table", exp.to_identifier(outer[0]))
        else:
            return None
    return cond


def _lateral(sel: exp.Select) -> exp.Lateral | None:
    joins = sel.args.get("joins") or []
    if len(joins) != 1 or not isinstance(joins[0].this, exp.Lateral):
        return None
    lat = joins[0].this
    return lat if lat.alias == _LATERAL else None


def join_exists(sel: exp.Expression, cat: Catalog, aggregated: bool, outer_columns) -> bool:
    """Rewrite ``sel`` (after :func:`~traceprop_frames.sql.exists_lateral.lateral_exists` merged one
    EXISTS) as the join grouped per outer row of the module docstring; changes ``sel`` in place. Returns
    True where it did. ``outer_columns(s)``: the columns of subquery ``s`` that refer to the outer query
    (or None)."""
    lat = _lateral(sel) if aggregated and isinstance(sel, exp.Select) else None
    if lat is None or sel.args.get("windows") or sel.args.get("qualify") or sel.find(exp.Window):
        return False
    outer = _table(sel.args["from_"].this, cat)
    sub = lat.this.this
    if outer is None or sub.args.get("joins") or sub.args.get("where") is None:
        return False
    inner = _table(sub.args["from_"].this, cat)
    if inner is None or inner[0].lower() == outer[0].lower() or "rowid" in map(str.lower, outer[1]):
        return False
    if any(q not in (sel, lat.this, sub) for q in sel.find_all(exp.Query)):
        return False  # another subquery (in the WHERE, the SELECT list, ...): keep the LATERAL
    carried = _carried(sel, outer[0], outer[1], lat.alias)
    sub = sub.copy()  # (qualified below; the LATERAL stays as it is where this returns False)
    outer_cols = outer_columns(sub)
    if carried is None or outer_cols is None:
        return False
    conds = _conjuncts(sel.args["where"].this)
    where = [c for c in conds if not _is_count_test(c, lat.alias)]
    if len(where) != len(conds) - 1:
        return False
    where = [_qualify(c.copy(), None, outer, inner[0]) for c in where]
    on = _qualify(sub.args["where"].this, {id(c) for c in outer_cols}, outer, inner[0])
    if on is None or any(c is None for c in where):
        return False
    _build(sel, outer[0], carried, sub, on, where)
    return True


def _is_count_test(c: exp.Expression, alias: str) -> bool:
    return (
        isinstance(c, exp.GT)
        and isinstance(c.this, exp.Column)
        and c.this.table == alias
        and c.this.name == _COUNT
        and c.expression == exp.Literal.number(0)
    )


def _build(sel, alias: str, carried: list[str], sub, on, where) -> None:
    """Replace ``sel``'s FROM, LATERAL and WHERE by the grouped join (the module docstring)."""
    q = exp.to_identifier(alias)
    cols = [exp.column(exp.to_identifier(c, quoted=True), table=q.copy()) for c in carried]
    rid = exp.column(RID, table=q.copy())
    witness = sub.expressions[0]  # list(...) AS __tp_w
    inner = exp.select(
        exp.alias_(rid.copy(), RID), *(exp.alias_(c.copy(), c.name, quoted=True) for c in cols), witness
    )
    inner.set("from_", sel.args["from_"].copy())
    inner.append("joins", exp.Join(this=sub.args["from_"].this.copy(), on=on, kind="INNER"))
    if where:
        inner.set("where", exp.Where(this=exp.and_(*where)))
    group = [exp.column("rowid", table=q.copy()), rid.copy(), *(c.copy() for c in cols)]
    inner.set("group", exp.Group(expressions=group))
    derived = exp.Subquery(this=inner, alias=exp.TableAlias(this=q.copy()))
    sel.set("from_", exp.From(this=derived))
    sel.set("joins", None)
    sel.set("where", None)
    for c in list(sel.find_all(exp.Column)):
        if c.table == _LATERAL and c.name == _LIST:
            c.set("table", q.copy())
