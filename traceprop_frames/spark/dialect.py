"""The Spark SQL pieces of the lineage rewrite: one small function per construct that differs from DuckDB.

The rules live in :mod:`traceprop_frames.sql.rewrite` (one rule set for every engine). They build a few
list expressions by DuckDB name; :func:`to_spark` maps each to its Spark SQL equivalent, so the rewritten
tree prints as Spark SQL. Everything else (``* EXCEPT (...)``, ``GROUP BY ALL``, ``ARRAY(...)``,
``flatten``, ``CAST(NULL AS ARRAY<BIGINT>)``, ``collect_list`` from ``list``) sqlglot's Spark dialect
already prints, and Spark 4 runs.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlglot import exp

from traceprop_frames.sql.rewrite import LIN, RID

_EMPTY_IDS = "CAST(ARRAY() AS ARRAY<BIGINT>)"


def _list(node: exp.Anonymous) -> exp.Expression:
    """DuckDB ``list(x)`` (aggregate) is Spark's ``collect_list(x)`` (both skip no rows; NULL ids drop)."""
    return exp.Anonymous(this="collect_list", expressions=node.expressions)


def _list_concat(node: exp.Anonymous) -> exp.Expression:
    """DuckDB ``list_concat`` treats a NULL list as empty; Spark's ``concat`` would return NULL."""
    empty = exp.maybe_parse(_EMPTY_IDS, dialect="spark")
    args = [exp.Coalesce(this=a, expressions=[empty.copy()]) for a in node.expressions]
    return exp.Anonymous(this="concat", expressions=args)


# DuckDB function name (as the rewriter builds it) -> its Spark form
FUNCTIONS = {"list": _list, "list_concat": _list_concat}

# Spark aggregates that sqlglot may parse as anonymous functions (the rewriter must know they aggregate)
AGGREGATES = frozenset(
    """any any_value approx_count_distinct approx_percentile array_agg avg bit_and bit_or bit_xor bitmap_construct_agg
    bitmap_or_agg bool_and bool_or collect_list collect_set corr count count_if count_min_sketch covar_pop covar_samp
    every first first_value histogram_numeric hll_sketch_agg hll_union_agg kurtosis last last_value listagg max
    max_by mean median min min_by mode percentile percentile_approx percentile_cont percentile_disc regr_avgx
    regr_avgy regr_count regr_intercept regr_r2 regr_slope regr_sxx regr_sxy regr_syy skewness some std stddev
    stddev_pop stddev_samp string_agg sum try_avg try_sum var_pop var_samp variance""".split()
)


def to_spark(
    tree: exp.Expression, plain: dict[str, str] | None = None, standalone: Callable[[str], bool] | None = None
) -> str:
    """Spark SQL for a tree rewritten by :func:`traceprop_frames.sql.rewrite_query`.

    ``plain`` maps a source view's name to a view of the same files without ``__tp_rid``; a scan whose
    row ids the query does not use reads that one instead (see :func:`_plain_scans`). ``standalone(sql)``
    says whether a subquery's SQL runs on its own (is uncorrelated); given, a shared set that a HAVING
    query adds to every row is added after the HAVING filter (see :func:`_after_having`).

    Examples
    --------
    >>> import sqlglot
    >>> from traceprop_frames.sql import Catalog, rewrite_query
    >>> q = sqlglot.parse_one("SELECT k, count(*) AS n FROM a GROUP BY k", read="spark")
    >>> to_spark(rewrite_query(q, Catalog({"a": "__tp_rid"})).expression)
    'SELECT k, COUNT(*) AS n, COLLECT_LIST(a.__tp_rid) AS __tp_lin FROM a GROUP BY k'
    """

    def to_spark_call(node: exp.Expression) -> exp.Expression:
        fn = FUNCTIONS.get(node.name.lower()) if isinstance(node, exp.Anonymous) else None
        return node if fn is None else fn(node)

    # a copy first: the rewriter may place one call object at two spots of the tree (a copy gives each its
    # own), and a call may sit inside another's arguments (again until none is left)
    tree = tree.copy()
    for _ in range(16):  # a call may sit inside another's arguments: again until none is left
        tree = tree.transform(to_spark_call, copy=False)
        if not any(n.name.lower() in FUNCTIONS for n in tree.find_all(exp.Anonymous)):
            break
    n = 0
    for sub in list(tree.find_all(exp.Subquery)):
        n += _split_witness(sub, n)
    if standalone is not None:
        if isinstance(tree, exp.Select):
            tree = _after_having(tree, standalone)
        elif isinstance(tree, exp.Create) and isinstance(tree.expression, exp.Select):
            tree.set("expression", _after_having(tree.expression, standalone))
    if plain:
        _plain_scans(tree, plain)
    return tree.sql(dialect="spark")


def _after_having(sel: exp.Select, standalone: Callable[[str], bool]) -> exp.Select:
    """Add an uncorrelated subquery's ids (a shared set) to each row after HAVING, not to every group.

    The rewriter lists ``... HAVING sum(x) > (SELECT ...)``'s subquery rows in every row's lineage:
    ``concat(<group's ids>, (SELECT collect_list(...) ...)) AS __tp_lin``. Spark computes that in the
    aggregate, for every group, before HAVING drops most of them (TPC-H q11 at SF 1: ~30,000 groups x
    ~33,000 ids, for ~1,000 rows kept). ``SELECT * EXCEPT (__tp_lin), concat(__tp_lin, <subquery ids>)
    AS __tp_lin FROM (<the query, ORDER BY / LIMIT taken out>) ORDER BY ... LIMIT ...`` gives every row
    the same ids (``__tp_lin`` comes last; a lazy backward query selects its columns by name). Done only
    where the subquery runs on its own (it names nothing of the outer query) and ORDER BY names output
    columns; otherwise ``sel`` is returned as it is.
    """
    at = [i for i, e in enumerate(sel.expressions) if isinstance(e, exp.Alias) and e.alias == LIN]
    last = sel.expressions[at[0]] if len(at) == 1 else None  # last in a query; keys follow it backward
    if (
        sel.args.get("having") is None
        or not isinstance(last, exp.Alias)
        or last.alias != LIN
        or not isinstance(last.this, exp.Anonymous)
        or last.this.name.lower() != "concat"
        or sel.args.get("distinct") is not None
    ):
        return sel
    names = {e.alias_or_name.lower() for e in sel.expressions if e is not last}
    order = sel.args.get("order")
    for o in order.expressions if order is not None else []:
        key = o.this if isinstance(o, exp.Ordered) else o
        if not (isinstance(key, exp.Column) and not key.table and key.name.lower() in names):
            return sel
    shared, own = [], []
    for arg in last.this.expressions:
        subs = list(arg.find_all(exp.Subquery))
        outside = [c for c in arg.find_all(exp.Column) if not c.find_ancestor(exp.Subquery)]
        if subs and not outside and all(standalone(q.this.sql(dialect="spark")) for q in subs):
            shared.append(arg)
        else:
            own.append(arg)
    if not shared or not own:
        return sel
    inner = sel.copy()
    for k in ("order", "limit", "offset"):
        inner.set(k, None)
    rest = [a.copy() for a in own]
    lin = rest[0] if len(rest) == 1 else exp.Anonymous(this="concat", expressions=rest)
    inner.expressions[at[0]].set("this", lin)
    added = ", ".join(a.sql(dialect="spark") for a in shared)
    outer = exp.maybe_parse(
        f"SELECT * EXCEPT ({LIN}), CONCAT(__tp_q.{LIN}, {added}) AS {LIN} FROM ({inner.sql(dialect='spark')}) AS __tp_q",
        dialect="spark",
    )
    for k in ("order", "limit", "offset"):
        if sel.args.get(k) is not None:
            outer.set(k, sel.args[k].copy())
    return outer


def _plain_scans(tree: exp.Expression, plain: dict[str, str]) -> None:
    """Point scans whose ``__tp_rid`` nothing reads at the plain view of the same files (in place).

    A Parquet source view computes ``__tp_rid`` from Spark's ``_metadata.row_index``; once the file
    source has that metadata column, Spark reads the whole ``_metadata`` struct for every scan of the view
    even where ``__tp_rid`` is pruned (a lazy capture's GROUP BY, a NOT EXISTS side). The plain view
    has the same columns from the same files, so the query's answer is the same. A scan keeps the
    traced view where any ``__tp_rid`` may name it: qualified by its name, unqualified anywhere inside
    its SELECT, or a star of that SELECT that does not except it.
    """
    ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    used: set[int] = set()  # id() of the scans some __tp_rid names
    bare = []
    for c in tree.find_all(exp.Column):
        if not isinstance(c.this, exp.Identifier) or c.name.lower() != RID or c.find_ancestor(exp.Star):
            continue
        if not c.table:
            bare.append(c)
            continue
        sel = c.find_ancestor(exp.Select)
        while sel is not None:  # the nearest SELECT with a FROM item of that name owns the column
            hit = [t for t in _items(sel) if t.alias_or_name.lower() == c.table.lower()]
            if hit:
                used.update(id(t) for t in hit)
                break
            sel = sel.find_ancestor(exp.Select)
    for t in list(tree.find_all(exp.Table)):
        name = t.name.lower()
        if name not in plain or name in ctes or t.args.get("db") or not isinstance(t.this, exp.Identifier):
            continue
        sel = t.find_ancestor(exp.Select)
        if sel is None or id(t) in used or t not in _items(sel) or any(_within(c, sel) for c in bare):
            continue
        if any(_star_keeps_rid(e, t.alias_or_name.lower()) for e in sel.expressions):
            continue
        hiding = [e for e in sel.expressions if _star_hides_rid(e)]
        if hiding and len(_items(sel)) > 1:
            continue  # ``* EXCEPT (__tp_rid)`` may mean another item's column
        for star in hiding:  # the plain view has no __tp_rid to except
            rest = [x for x in _except_list(star) if x.name.lower() != RID]
            star.set("except_", rest or None)
        if not t.alias:
            t.set("alias", exp.TableAlias(this=exp.to_identifier(t.name)))
        t.set("this", exp.to_identifier(plain[name]))


def _items(sel: exp.Select) -> list[exp.Expression]:
    """The FROM and JOIN items of ``sel`` itself."""
    from_ = sel.args.get("from_")
    return ([from_.this] if from_ is not None else []) + [j.this for j in sel.args.get("joins") or []]


def _within(node: exp.Expression, ancestor: exp.Expression) -> bool:
    while node is not None:
        if node is ancestor:
            return True
        node = node.parent
    return False


def _except_list(star: exp.Star) -> list[exp.Expression]:
    return list(star.args.get("except_") or [])


def _star_hides_rid(e: exp.Expression) -> bool:
    return isinstance(e, exp.Star) and any(x.name.lower() == RID for x in _except_list(e))


def _star_keeps_rid(e: exp.Expression, ref: str) -> bool:
    star = e if isinstance(e, exp.Star) else None
    if isinstance(e, exp.Column) and isinstance(e.this, exp.Star):
        if e.table.lower() != ref:
            return False
        star = e.this
    if star is None:
        return False
    return RID not in {x.name.lower() for x in _except_list(star)}


def _conjuncts(cond: exp.Expression) -> list[exp.Expression]:
    return list(cond.flatten()) if isinstance(cond, exp.And) else [cond]


def _split_witness(sub: exp.Subquery, n: int) -> bool:
    """Replace a witness subquery with a non-equality correlation by a LEFT JOIN on its equalities.

    The rewriter lists a correlated subquery's rows as ``(SELECT collect_list(t.__tp_rid) FROM t WHERE
    t.k = o.k AND t.x <> o.x)``. Spark decorrelates a non-equality correlation by a *domain join*: every
    distinct outer ``o.x`` against every row of ``t`` (TPC-H q21 at SF 1: ~400 suppliers x 6M line items),
    and a subquery cannot sit inside ``filter(...)``. So the enclosing SELECT gets ``LEFT JOIN (SELECT
    t.k AS j0, collect_list(struct(t.x AS c0, t.__tp_rid AS r)) AS w FROM t WHERE <t's own conditions>
    GROUP BY t.k) AS __tp_wN ON __tp_wN.j0 = o.k`` (one row per key: no outer row is repeated), and the
    subquery becomes ``transform(filter(coalesce(__tp_wN.w, []), s -> s.r IS NOT NULL AND s.c0 <> o.x),
    s -> s.r)``: the ids of exactly the rows whose conditions are all TRUE, as the WHERE kept them.
    Left as it is (Spark then decorrelates it) unless the list is of one qualified column, every column
    is qualified, the outer columns are the enclosing SELECT's own, it is one of that SELECT's output
    expressions, and an equality correlation remains. Returns whether it replaced ``sub``.
    """
    sel = sub.this
    outer = sub.find_ancestor(exp.Select)
    if not isinstance(sel, exp.Select) or outer is None or len(sel.expressions) != 1:
        return False
    if sel.args.get("where") is None or any(
        sel.args.get(k) for k in ("group", "having", "qualify", "limit", "offset", "distinct", "with_")
    ):
        return False
    agg = sel.expressions[0]
    if not (
        isinstance(agg, exp.Anonymous)
        and agg.name.lower() == "collect_list"
        and len(agg.expressions) == 1
        and isinstance(agg.expressions[0], exp.Column)
        and agg.expressions[0].table
    ):
        return False
    items, outer_items = _items(sel), _items(outer)
    if not items or not all(isinstance(t, exp.Table) for t in items + outer_items):
        return False
    if any(_is_star(e) for e in outer.expressions):
        return False  # the joined columns would show
    node = sub
    while node.parent is not outer:
        node = node.parent
    if node.arg_key != "expressions" or sub.find_ancestor(exp.Join, exp.Select) is not outer:
        return False
    inner = {t.alias_or_name.lower() for t in items}
    outer_refs = {t.alias_or_name.lower() for t in outer_items}
    keep, eqs, move = [], [], []
    for c in _conjuncts(sel.args["where"].this):
        if c.find(exp.Subquery, exp.Exists, exp.Select):
            return False
        cols = list(c.find_all(exp.Column))
        if any(not col.table or col.table.lower() not in inner | outer_refs for col in cols):
            return False  # inner or outer (or further out)? unknown: leave the subquery alone
        sides = {col.table.lower() in inner for col in cols}
        if sides != {True, False}:
            keep.append(c)  # inner only (or constant): a filter of the subquery's own rows
        elif isinstance(c, exp.EQ) and all(
            len({col.table.lower() in inner for col in side.find_all(exp.Column)}) == 1
            for side in (c.this, c.expression)
        ):  # inner = outer: a join key
            left_inner = c.this.find(exp.Column).table.lower() in inner
            eqs.append((c.this, c.expression) if left_inner else (c.expression, c.this))
        else:
            move.append(c)
    if not move or not eqs or any(t.alias_or_name.lower() == f"__tp_w{n}" for t in outer_items):
        return False
    fields: dict[str, str] = {}  # inner column SQL -> struct field name

    def field(e: exp.Expression) -> exp.Expression:
        if isinstance(e, exp.Column) and e.table.lower() in inner:
            name = fields.setdefault(e.sql(dialect="spark"), f"c{len(fields)}")
            return exp.Dot(this=exp.to_identifier("__tp_s"), expression=exp.to_identifier(name))
        return e

    preds = [c.copy().transform(field) for c in move]
    elem = agg.expressions[0].sql(dialect="spark")
    struct = "".join(f"'{name}', {src}, " for src, name in fields.items())
    keys = [i.sql(dialect="spark") for i, _ in eqs]
    where = f" WHERE {exp.and_(*[c.copy() for c in keep]).sql(dialect='spark')}" if keep else ""
    body = (
        f"SELECT {', '.join(f'{k} AS __tp_j{i}' for i, k in enumerate(keys))}, "
        f"COLLECT_LIST(NAMED_STRUCT({struct}'__tp_r', {elem})) AS __tp_w "
        f"FROM {', '.join(t.sql(dialect='spark') for t in items)}{where} GROUP BY {', '.join(keys)}"
    )
    on = " AND ".join(f"__tp_w{n}.__tp_j{i} = {o.sql(dialect='spark')}" for i, (_, o) in enumerate(eqs))
    join = exp.maybe_parse(f"SELECT 1 FROM x LEFT JOIN ({body}) AS __tp_w{n} ON {on}", dialect="spark")
    outer.append("joins", join.args["joins"][0])
    cond = " AND ".join(f"({p.sql(dialect='spark')})" for p in preds)
    sub.replace(
        exp.maybe_parse(
            f"TRANSFORM(FILTER(COALESCE(__tp_w{n}.__tp_w, ARRAY()), __tp_s -> __tp_s.__tp_r IS NOT NULL "
            f"AND {cond}), __tp_s -> __tp_s.__tp_r)",
            dialect="spark",
        )
    )
    return True


def _is_star(e: exp.Expression) -> bool:
    return isinstance(e, exp.Star) or (isinstance(e, exp.Column) and isinstance(e.this, exp.Star))
