"""Rows many result rows share (uncorrelated subqueries) as shared lineage sets, not per-row copies.

An uncorrelated subquery's witnesses are the same for every row that uses them: a scalar subquery's
rows (``WHERE x > (SELECT avg(y) FROM t)``), or for ``x IN (SELECT v FROM q)`` the rows of ``q`` whose
value equals ``x`` (one set per distinct value). Inside DuckDB such a witness is one *marker id* per
row - source :data:`MARKER_SID`, row ``k << 32 | h`` for witness query ``k`` and key ``h`` (0 for a
scalar subquery; the 32-bit hash of the value for IN) - carried through joins, aggregates and CTEs
like any id. After the query, witness query ``k`` runs once as a side query returning
``(key, lineage)`` rows; its rows grouped by key become the sets of one
:class:`~traceprop_frames.lineage.context.SetBlock`, and each marker becomes a reference to its set.
Memory is O(rows + witness rows), never O(rows x witness size).

A hash collision can only add the rows of another value to a set (more rows, never fewer), so the
lineage stays sufficient.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import sqlglot
from sqlglot import exp

from traceprop_frames.errors import UnsupportedSQLError
from traceprop_frames.lineage import OpNode, RowLineage
from traceprop_frames.lineage.context import Context
from traceprop_frames.lineage.sources import ROW_BITS, ROW_MASK
from traceprop_frames.sql.dialect import DIALECT
from traceprop_frames.sql.rewrite import LIN
from traceprop_frames.sql.sources import MARKER_SID

KEY_BITS = 32
MAX_WITNESSES = 1 << (ROW_BITS - KEY_BITS)
_FIRST_MARKER = MARKER_SID << ROW_BITS  # the smallest marker id (no larger source id fits an int64)
_KEY_MASK = np.int64((1 << KEY_BITS) - 1)
_EMPTY = np.zeros(0, dtype=np.int64)
PRESENT = "__tp_present"  # placeholder in a flat side query: the marker keys a result refers to
_MAX_PRESENT = 10_000


def marker_base(k: int) -> int:
    """The marker id of witness query ``k`` with key 0."""
    return (MARKER_SID << ROW_BITS) | (k << KEY_BITS)


def side_query(wq: exp.Expression, kind: str, with_: str, keyed: bool) -> tuple[str, str]:
    """(SQL returning ``(key, lineage)`` per witness row, SQL to bind it with: its first column is the
    IN value, so binding it checks the witness runs on its own and gives the value's type)."""
    sub = f"({wq.sql(dialect=DIALECT)}) AS __tp_w(__tp_v)"
    # the hash's high bits: a filter on a range of hash(v) reaches the witness's scan (lazy lineage asks
    # for the witnesses of a few keys), where one on hash(v) % n is not pushed below an aggregate
    key = f"CAST(hash(__tp_w.__tp_v) >> {KEY_BITS} AS BIGINT)" if keyed else "CAST(0 AS BIGINT)"
    prefix = with_
    return (
        f"{prefix}SELECT {key} AS __tp_key, __tp_w.{kind} FROM {sub}",
        f"{prefix}SELECT __tp_w.__tp_v, __tp_w.{kind} FROM {sub}",
    )


def flat_side_query(wq: exp.Expression, kind: str, with_: str) -> str | None:
    """For an IN witness that groups (``x IN (SELECT k FROM t GROUP BY k HAVING sum(q) > 300)``): the
    side query listing each surviving group's member rows as ``(key, lineage)`` rows, one per member,
    instead of a ``list()`` per group (which DuckDB builds for every group before HAVING drops most).

    The groups are the witness query without its lineage column; its members are the rows of the same
    FROM / WHERE whose group-key values equal a group's (``IS NOT DISTINCT FROM``). A group's lineage
    is the union of its members' parts, so the sets are the same. None where the query is not of that
    form (GROUP BY ALL / ROLLUP / positions / aliases, DISTINCT, LIMIT, windows, a part that aggregates).
    """
    if not isinstance(wq, exp.Select) or len(wq.expressions) != 2:
        return None
    if any(wq.args.get(k) for k in ("distinct", "limit", "offset", "qualify", "windows")):
        return None
    if wq.find(exp.Window) is not None or wq.args.get("from_") is None:
        return None
    group = wq.args.get("group")
    if group is None:
        return None if wq.args.get("having") else _present_rows(wq, kind, with_)
    if kind != LIN or any(group.args.get(k) for k in ("all", "rollup", "cube", "grouping_sets", "totals")):
        return None
    aliases = {e.alias.lower() for e in wq.expressions if isinstance(e, exp.Alias)}
    keys = group.expressions
    if not keys or any(
        isinstance(k, exp.Literal)
        or (isinstance(k, exp.Column) and not k.table and k.name.lower() in aliases)
        for k in keys
    ):
        return None
    lin = wq.expressions[-1]
    parts = _member_parts(lin.this if isinstance(lin, exp.Alias) else lin)
    if parts is None:
        return None
    members = wq.copy()
    for k in ("group", "having", "order"):
        members.set(k, None)
    members.set(
        "expressions",
        [exp.alias_(k.copy(), f"__tp_k{i}") for i, k in enumerate(keys)] + [exp.alias_(parts, "__tp_p")],
    )
    groups = wq.copy()
    groups.set("order", None)
    value = groups.expressions[0]
    groups.set(
        "expressions",
        [exp.alias_(value.this if isinstance(value, exp.Alias) else value, "__tp_v")]
        + [exp.alias_(k.copy(), f"__tp_k{i}") for i, k in enumerate(keys)],
    )
    if any(value.this == k if isinstance(value, exp.Alias) else value == k for k in keys):
        # the value is a group key: only the groups of the values the result refers to are computed
        v = value.this if isinstance(value, exp.Alias) else value
        for q in (groups, members):
            q.where(f"hash({v.sql(dialect=DIALECT)}) >> {KEY_BITS} IN ({PRESENT})", copy=False)
    on = " AND ".join(f"__tp_g.__tp_k{i} IS NOT DISTINCT FROM __tp_m.__tp_k{i}" for i in range(len(keys)))
    return (
        f"{with_}SELECT CAST(hash(__tp_g.__tp_v) >> {KEY_BITS} AS BIGINT) AS __tp_key, __tp_m.__tp_p "
        f"FROM ({groups.sql(dialect=DIALECT)}) AS __tp_g JOIN ({members.sql(dialect=DIALECT)}) AS __tp_m "
        f"ON {on}"
    )


def scalar_flat_side_query(wq: exp.Expression, kind: str, with_: str) -> str | None:
    """For a scalar witness that aggregates every row it reads (``(SELECT sum(v) * 0.0001 FROM t, u
    WHERE ...)``, ``(SELECT max(total) FROM cte)``): the side query listing its members one row each
    (key 0) instead of one ``list()`` over all of them, which DuckDB builds as one huge list (and, over
    a grouping CTE, a list per CTE group first).

    A query without GROUP BY, HAVING, DISTINCT, LIMIT or windows reads every row of its FROM / WHERE,
    so its lineage is the union of their parts. Where the FROM is one CTE that itself groups (no
    HAVING, DISTINCT, LIMIT, windows) and the query has no WHERE, every CTE group is read, and the
    union of the groups' members is every row of the CTE's own FROM / WHERE: those rows are listed
    directly. None where the query is not of that form."""
    if kind != LIN or not isinstance(wq, exp.Select) or len(wq.expressions) != 2:
        return None
    if any(wq.args.get(k) for k in ("group", "having", "distinct", "limit", "offset", "qualify", "windows")):
        return None
    if wq.find(exp.Window) is not None or wq.args.get("from_") is None:
        return None
    value, lin = wq.expressions
    if not _has_agg_call(value.this if isinstance(value, exp.Alias) else value):
        return None  # a scalar subquery that does not aggregate returns one of its rows, not all
    parts = _member_parts(lin.this if isinstance(lin, exp.Alias) else lin)
    if parts is None:
        return None
    members = wq.copy()
    members.set("order", None)
    members.set("expressions", [exp.alias_(parts, "__tp_p")])
    inner = _cte_members(members, with_)
    if inner is not None:
        members = inner
    return f"{with_}SELECT CAST(0 AS BIGINT) AS __tp_key, __tp_m.__tp_p FROM ({members.sql(dialect=DIALECT)}) AS __tp_m"


def _cte_members(members: exp.Select, with_: str) -> exp.Select | None:
    """``SELECT cte.lin FROM cte`` (every row of a grouping CTE) as the CTE's own member rows, or None."""
    src = members.args["from_"].this
    part = members.expressions[0].this
    if any(members.args.get(k) for k in ("joins", "where", "with", "with_")) or not isinstance(
        src, exp.Table
    ):
        return None
    if not (isinstance(part, exp.Column) and part.name.lower() == LIN.lower()) or not with_:
        return None
    try:
        outer = sqlglot.parse_one(f"{with_}SELECT 1", read=DIALECT)
    except Exception:
        return None
    ctes = {c.alias_or_name.lower(): c.this for c in outer.find_all(exp.CTE)}
    cte = ctes.get(src.name.lower())
    if not isinstance(cte, exp.Select) or src.args.get("db") or cte.args.get("from_") is None:
        return None
    if any(cte.args.get(k) for k in ("having", "distinct", "limit", "offset", "qualify", "windows")):
        return None
    group = cte.args.get("group")
    if cte.find(exp.Window) is not None or (
        group is not None
        and any(group.args.get(k) for k in ("all", "rollup", "cube", "grouping_sets", "totals"))
    ):
        return None
    lin = [e for e in cte.expressions if e.alias_or_name.lower() == LIN.lower()]
    if len(lin) != 1 or not isinstance(lin[0], exp.Alias):
        return None
    if group is None and not any(_has_agg_call(e) for e in cte.expressions):
        return None  # a CTE that does not group: its rows are listed as they are
    agg = lin[0].this
    if isinstance(agg, exp.ArrayAgg) and set(k for k, v in agg.args.items() if v) == {"this"}:
        agg = exp.Anonymous(this="list", expressions=[agg.this.copy()])  # sqlglot reads LIST as ArrayAgg
    parts = _member_parts(agg)
    if parts is None:
        return None
    out = cte.copy()
    for k in ("group", "order"):
        out.set(k, None)
    out.set("expressions", [exp.alias_(parts, "__tp_p")])
    return out


def _present_rows(wq: exp.Select, kind: str, with_: str) -> str | None:
    """A witness that does not group: its side query restricted to the rows whose value's key the
    result refers to (``WHERE ... AND hash(value) >> KEY_BITS IN (keys)``), or None where it aggregates."""
    value = wq.expressions[0]
    value = value.this if isinstance(value, exp.Alias) else value
    if any(_has_agg_call(e) for e in wq.expressions) or value.find(exp.Subquery, exp.Star) is not None:
        return None
    rows = wq.copy()
    rows.where(f"hash({value.sql(dialect=DIALECT)}) >> {KEY_BITS} IN ({PRESENT})", copy=False)
    return side_query(_one_scan(rows), kind, with_, keyed=True)[0]


def _conjuncts(e: exp.Expression) -> list[exp.Expression]:
    while isinstance(e, exp.Paren):
        e = e.this
    if isinstance(e, exp.And):
        return _conjuncts(e.this) + _conjuncts(e.expression)
    return [e]


def _scalar_body(s: exp.Subquery) -> exp.Select | None:
    """The SELECT of a one-expression scalar subquery with a FROM and no grouping, limit or nesting."""
    q = s.this
    if not isinstance(q, exp.Select) or len(q.expressions) != 1 or q.args.get("from_") is None:
        return None
    if any(
        q.args.get(k) for k in ("group", "having", "distinct", "limit", "offset", "qualify", "with_", "order")
    ):
        return None
    if q.find(exp.Window) is not None or any(x is not q for x in q.find_all(exp.Query)):
        return None
    return q


def _field(table: str, name: str) -> exp.Expression:
    return exp.Dot(this=exp.column("__tp_s", table=table), expression=exp.to_identifier(name))


def _same_scan(body: exp.Select) -> str:
    """A subquery's FROM, joins and WHERE as text: two subqueries with the same read the same rows."""
    return "|".join(
        body.args[k].sql(dialect=DIALECT) if body.args.get(k) else "" for k in ("from_", "where")
    ) + ("|".join(j.sql(dialect=DIALECT) for j in body.args.get("joins") or []))


def _one_scan(wq: exp.Select) -> exp.Select:
    """A witness row query whose WHERE compares with a correlated aggregate and whose lineage lists the
    same subquery's rows (TPC-H q20's ``ps_availqty > (SELECT 0.5 * sum(l_quantity) FROM lineitem WHERE
    l_partkey = ps_partkey ...)`` beside ``(SELECT list(lineitem.__tp_rid) FROM lineitem WHERE <same>)``),
    with both computed by one subquery: DuckDB decorrelates each subquery into its own scan and
    aggregate of ``lineitem``. The query's single table becomes a derived table of the same name with
    the other conjuncts and a ``struct_pack(__tp_v := value, __tp_l := list)`` column ``__tp_s``; the
    comparison reads ``__tp_s.__tp_v`` and the lineage ``__tp_s.__tp_l``. A scalar subquery that
    aggregates returns one row whether or not rows match, so both read what they read before. ``wq``
    unchanged where it is not of that form."""
    src = wq.args.get("from_")
    where = wq.args.get("where")
    if where is None or src is None or not isinstance(src.this, exp.Table) or wq.args.get("joins"):
        return wq
    if any(wq.args.get(k) for k in ("group", "having", "distinct", "limit", "offset", "qualify", "windows")):
        return wq
    lin = wq.expressions[-1]
    lists = {}
    for s in lin.find_all(exp.Subquery):
        body = _scalar_body(s)
        if (
            body is not None
            and _call(body.expressions[0], "list", 1)
            and s.find_ancestor(exp.Subquery) is None
        ):
            lists.setdefault(_same_scan(body), s)
    conj = _conjuncts(where.this)
    for i, c in enumerate(conj):
        for sv in c.find_all(exp.Subquery):
            body = _scalar_body(sv)
            if body is None or not _has_agg_call(body.expressions[0]):
                continue
            sl = lists.get(_same_scan(body))
            if sl is None or sv.find_ancestor(exp.Subquery) is not None:
                continue
            name = src.this.alias_or_name
            both = body.copy()
            value = both.expressions[0]
            both.set(
                "expressions",
                [
                    exp.Anonymous(
                        this="struct_pack",
                        expressions=[
                            exp.PropertyEQ(this=exp.to_identifier("__tp_v"), expression=value),
                            exp.PropertyEQ(
                                this=exp.to_identifier("__tp_l"), expression=sl.this.expressions[0].copy()
                            ),
                        ],
                    )
                ],
            )
            inner = exp.select("*", exp.alias_(exp.Subquery(this=both), "__tp_s")).from_(src.this.copy())
            rest = [x.copy() for j, x in enumerate(conj) if j != i]
            if rest:
                inner.where(exp.and_(*rest), copy=False)
            out = wq.copy()
            cmp_ = c.copy()  # the comparison and the lineage read the struct's fields
            next(x for x in cmp_.find_all(exp.Subquery) if x == sv).replace(_field(name, "__tp_v"))
            out.set("where", exp.Where(this=cmp_))
            next(x for x in out.expressions[-1].find_all(exp.Subquery) if x == sl).replace(
                _field(name, "__tp_l")
            )
            alias = exp.TableAlias(this=exp.to_identifier(name))
            out.set("from_", exp.From(this=exp.Subquery(this=inner, alias=alias)))
            return out
    return wq


def _has_agg_call(e: exp.Expression) -> bool:
    """True if ``e`` calls an aggregate outside subqueries (``list``, ``sum``, ...)."""
    if isinstance(e, (exp.Subquery, exp.Query)):
        return False
    if isinstance(e, exp.AggFunc) or _call(e, "list") or _call(e, "flatten"):
        return True
    return any(_has_agg_call(c) for c in e.iter_expressions())


def with_present(sql: str, keys: np.ndarray | None) -> str:
    """``sql`` with the :data:`PRESENT` placeholder of :func:`flat_side_query` bound: the filter keeps
    the groups whose key is one of ``keys`` (the marker keys the result refers to); with ``keys`` None
    (not known) or too many of them, every group."""
    if PRESENT not in sql:
        return sql
    if keys is None or len(keys) > _MAX_PRESENT:
        return sql.replace(f"IN ({PRESENT})", ">= 0")  # hash() >> n is never NULL: always true
    listed = ", ".join(str(int(k)) for k in keys) if len(keys) else "NULL"
    return sql.replace(f"IN ({PRESENT})", f"IN ({listed})")


def present_keys(ids: np.ndarray, k: int) -> np.ndarray:
    """The distinct keys of witness query ``k``'s marker ids among ``ids``."""
    low = ids[(ids >> np.int64(ROW_BITS)) == MARKER_SID] & np.int64(ROW_MASK)
    return np.unique(low[(low >> np.int64(KEY_BITS)) == k] & _KEY_MASK)


def _member_parts(e: exp.Expression) -> exp.Expression | None:
    """One member row's lineage from a group's lineage expression built of ``list(id)``,
    ``flatten(list(ids))``, constant ``[marker]`` arrays and ``list_concat`` of those; None otherwise."""
    args = e.expressions if _call(e, "list_concat") else [e]
    scalars, lists = [], []
    for a in args:
        if _call(a, "flatten", 1) and _call(a.expressions[0], "list", 1):
            lists.append(a.expressions[0].expressions[0])
        elif _call(a, "list", 1):
            scalars.append(a.expressions[0])
        elif isinstance(a, exp.Array) and not a.find(exp.Column, exp.Subquery):
            lists.append(a)
        else:
            return None
    if any(p.find(exp.AggFunc) is not None for p in scalars + lists):
        return None
    if len(scalars) == 1 and not lists:
        return scalars[0].copy()
    parts = ([exp.Array(expressions=[p.copy() for p in scalars])] if scalars else []) + [
        p.copy() for p in lists
    ]
    return parts[0] if len(parts) == 1 else exp.Anonymous(this="list_concat", expressions=parts)


def _call(e: exp.Expression, name: str, n: int | None = None) -> bool:
    return isinstance(e, exp.Anonymous) and e.name.lower() == name and (n is None or len(e.expressions) == n)


def marker_expression(k: int, value: exp.Expression | None, value_type: str | None) -> exp.Expression:
    """The per-row marker id: a constant, or for IN the hash of the row's value in the list's type."""
    base = exp.cast(exp.Literal.number(marker_base(k)), "BIGINT")
    if value is None:
        return base
    cast = exp.TryCast(this=value.copy(), to=exp.DataType.build(value_type, dialect="duckdb"))
    h = exp.BitwiseRightShift(
        this=exp.Anonymous(this="hash", expressions=[cast]), expression=exp.Literal.number(KEY_BITS)
    )
    return exp.Add(this=exp.cast(exp.Paren(this=h), "BIGINT"), expression=base)


def resolve_markers(off, ids, blocks, to_process, node: OpNode | None = None) -> RowLineage:
    """Rows ``(off, ids)`` with marker ids replaced by references to the witness sets in ``blocks``.

    ``blocks[k]`` is ``(SetBlock, sorted keys)`` for witness query ``k``; a marker whose key has no
    set (the value matched no witness row) refers to nothing. ``to_process`` maps database ids to this
    process's ids (applied to the non-marker ids only).

    Examples
    --------
    >>> from traceprop_frames.lineage import RowLineage
    >>> w = RowLineage(np.arange(3), np.array([100, 101])).shared_sets([0, 1], [0], [2], "scalar")
    >>> m = marker_base(0)
    >>> lin = resolve_markers(np.array([0, 2, 3]), np.array([10, m, 11]), [(w, np.array([0]))], lambda x: x)
    >>> lin.row_ids(0).tolist(), lin.row_ids(1).tolist(), lin.n_ids
    ([10, 100, 101], [11], 2)
    """
    off = np.asarray(off, dtype=np.int64)
    ids = np.asarray(ids, dtype=np.int64)
    # MARKER_SID is the largest source id an int64 can hold: an id is a marker iff it is >= _FIRST_MARKER,
    # so one max() (no temporaries) tells whether there is any; most results have none
    if not ids.size or int(ids.max()) < _FIRST_MARKER:
        return RowLineage(off, to_process(ids), node)
    is_m = (ids >> np.int64(ROW_BITS)) == MARKER_SID
    n = len(off) - 1
    row_of = np.repeat(np.arange(n, dtype=np.int64), np.diff(off))
    direct_off = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(row_of[~is_m], minlength=n), out=direct_off[1:])
    low = ids[is_m] & np.int64(ROW_MASK)
    which, keys, owners = low >> np.int64(KEY_BITS), low & _KEY_MASK, row_of[is_m]
    ref_rows, ref_sets, used = [], [], []
    for k in np.unique(which).tolist():
        block, uk = blocks[k]
        sel = which == k
        pos = np.searchsorted(uk, keys[sel])
        hit = pos < len(uk)
        hit[hit] = uk[pos[hit]] == keys[sel][hit]
        ref_rows.append(owners[sel][hit])
        ref_sets.append(block.base + pos[hit])
        used.append(block)
    pairs = unique_pairs(np.concatenate(ref_rows), np.concatenate(ref_sets))
    roff = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(pairs[:, 0], minlength=n), out=roff[1:])
    ctx = Context(roff, pairs[:, 1], used)
    return RowLineage(direct_off, to_process(ids[~is_m]), node, ctx)


def unique_pairs(rows: np.ndarray, sets: np.ndarray) -> np.ndarray:
    """The distinct ``(row, set)`` pairs, sorted by row then set, as an ``(n, 2)`` int64 array: what
    ``np.unique(np.stack([rows, sets], axis=1), axis=0)`` gives, by a 1-D unique of ``row * m + set``
    (``axis=0`` sorts the pairs as opaque bytes: 10-30x slower; q22's 6,384 markers 3.5 ms -> 0.1 ms).
    Both arrays hold non-negative integers; where ``row * m + set`` could overflow, ``axis=0``.

    Examples
    --------
    >>> unique_pairs(np.array([1, 0, 1, 1]), np.array([2, 5, 2, 0])).tolist()
    [[0, 5], [1, 0], [1, 2]]
    """
    rows = np.asarray(rows, dtype=np.int64)
    sets = np.asarray(sets, dtype=np.int64)
    if not rows.size:
        return np.zeros((0, 2), dtype=np.int64)
    m = int(sets.max()) + 1
    if int(rows.max()) * m + m - 1 >= 1 << 62 or int(min(rows.min(), sets.min())) < 0:
        return np.unique(np.stack([rows, sets], axis=1), axis=0)
    key = np.unique(rows * np.int64(m) + sets)
    return np.stack([key // m, key % m], axis=1)


def witness_blocks(tables: list[tuple[pa.Table, str]], lineage_from_arrow, to_process) -> list:
    """One ``(SetBlock, sorted keys)`` per side query result, in order (a later one may refer to an
    earlier one's markers: a witness built on a CTE that itself read a scalar subquery)."""
    blocks: list = []
    for table, label in tables:
        keys = np.asarray(table.column(0).to_numpy(zero_copy_only=False), dtype=np.int64)
        lin = resolve_markers(*lineage_from_arrow(table.column(1)), blocks, to_process)
        order, uk, starts, ends = key_segments(keys)
        blocks.append((lin.shared_sets(order, starts, ends, label), uk))
    return blocks


def key_segments(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(order, sorted distinct keys, starts, ends)``: the rows of key ``uk[j]`` are
    ``order[starts[j]:ends[j]]``, in row order within a key. Keys already in order (a scalar witness's
    side query: one key) are not sorted again (an ``argsort`` and a ``unique`` of every member row).

    Examples
    --------
    >>> [a.tolist() for a in key_segments(np.array([0, 0, 0]))]
    [[0, 1, 2], [0], [0], [3]]
    >>> [a.tolist() for a in key_segments(np.array([5, 2, 5, 2]))]
    [[1, 3, 0, 2], [2, 5], [0, 2], [2, 4]]
    """
    n = len(keys)
    if n and bool(np.all(keys[1:] >= keys[:-1])):
        starts = np.concatenate(([0], np.flatnonzero(keys[1:] != keys[:-1]) + 1)).astype(np.int64)
        ends = np.append(starts[1:], n).astype(np.int64)
        return np.arange(n, dtype=np.int64), keys[starts], starts, ends
    order = np.argsort(keys, kind="stable")
    uk, starts = np.unique(keys[order], return_index=True)
    ends = np.append(starts[1:], len(keys)).astype(np.int64) if len(uk) else starts
    return order, uk, starts, ends


def with_frames(lin: RowLineage, bounds: list, sides: list, lineage_from_arrow, blocks, to_process):
    """Each window frame as shared sets: row i of ``lin`` also refers to its frame's rows.

    ``bounds[j]`` holds the result's (partition id, frame start, frame end) columns for frame ``j``;
    ``sides[j]`` is ``(table, label)``: the window's input rows as (partition id, position in the
    partition's order, lineage). Sorted by (partition, position), a frame is one segment of that
    order, so every frame of a partition shares one pool (running sums cost O(rows), not O(rows^2)).

    Examples
    --------
    >>> side = pa.table({"p": [1, 1, 1], "pos": [0, 1, 2], "lin": pa.array([7, 8, 9], pa.int64())})
    >>> from traceprop_frames.sql.connection import lineage_from_arrow
    >>> lin = RowLineage(np.arange(4), np.array([7, 8, 9]))
    >>> cols = [pa.array([1, 1, 1]), pa.array([0, 0, 0]), pa.array([1, 2, 3])]  # running frames
    >>> out = with_frames(lin, [cols], [(side, "running sum")], lineage_from_arrow, [], lambda x: x)
    >>> [out.row_ids(i).tolist() for i in range(3)]
    [[7], [7, 8], [7, 8, 9]]
    """
    for (pid, start, end), (table, label) in zip(bounds, sides):
        col = [np.asarray(c.to_numpy(zero_copy_only=False), dtype=np.int64) for c in (pid, start, end)]
        spid, spos = (
            np.asarray(table.column(i).to_numpy(zero_copy_only=False), dtype=np.int64) for i in (0, 1)
        )
        side = resolve_markers(*lineage_from_arrow(table.column(2)), blocks, to_process)
        order = np.lexsort((spos, spid))
        first = np.searchsorted(spid[order], col[0], "left")
        last = np.searchsorted(spid[order], col[0], "right")
        starts, ends = first + col[1], first + col[2]
        if len(starts) and ((starts < first).any() or (ends > last).any() or (ends < starts).any()):
            raise UnsupportedSQLError(
                f"{label}: DuckDB placed a frame outside its partition when counting its rows, so its "
                "lineage cannot be given exactly; write the frame with other bounds (for example "
                "ROWS instead of RANGE, or CURRENT ROW for a 0 offset)"
            )
        block = side.shared_sets(order, starts, ends, label)
        lin = lin.with_context(np.arange(len(lin), dtype=np.int64), block)
    return lin
