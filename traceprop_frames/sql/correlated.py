"""Eager capture: a correlated subquery's witnesses by one side query on the values it reads.

The eager rewrite gives a row the witnesses of a correlated subquery (``EXISTS (SELECT * FROM lineitem
WHERE l_orderkey = o_orderkey ...)``, a correlated scalar ``(SELECT min(...) ... WHERE p_partkey =
ps_partkey)``) as a list computed per member row inside the query: ``flatten(list((SELECT list(rid) FROM
lineitem WHERE l_orderkey = o_orderkey ...)))``. DuckDB decorrelates that into a join, a ``list()`` per
member and a flatten per group, which cost 4-5x the plain query on TPC-H q04 and q21 at SF 1.

A witness depends on the member row only through the outer columns the subquery reads (``o_orderkey``).
So the query keeps, per result row, the list of those values (``list(struct_pack(c0 := o_orderkey))``:
a few ints per member, cheap as a row-id list), and after the query one *side query* joins the distinct
(result row, values) pairs of the result's rows with the subquery's tables under its own WHERE clause,
the outer columns replaced by the values: ``SELECT r.pos, lineitem.__tp_rid FROM lineitem, r WHERE
l_orderkey = r.c0 ...``. It returns the same witness rows (the same expressions on the same values), for
the rows the result kept only (after LIMIT), and they join each row's lineage as CSR arrays.

Applies to a top-level SELECT's lineage parts of the form ``flatten(list(S))`` (a witness per member of
an aggregate) and ``S`` (a row-level witness of a query that does not aggregate), where ``S`` is
``(SELECT list(x) | flatten(list(x)) | list_concat(...) FROM <tables> [WHERE ...])`` with no nested
subquery, GROUP BY, HAVING, LIMIT or DISTINCT, reading catalog tables whose columns are known (so every
unqualified column is resolved as DuckDB resolves it: inner tables first). Anything else keeps the
in-query list.

The same holds for a grouping derived table the top-level SELECT reads (TPC-H q13: ``SELECT c_count,
count(*) FROM (SELECT c_custkey, count(o_orderkey) FROM customer LEFT JOIN orders ON ... GROUP BY
c_custkey) AS c_orders(c_custkey, c_count) GROUP BY c_count``): a group's lineage is the union of its
member rows' parts, and its members are the rows of the derived table's FROM / WHERE whose group-key
values are not distinct from the group's. So the derived table carries its group key (a struct) instead
of a ``list()`` per group (which DuckDB builds for every one of q13's 150,000 groups, and the outer query
flattens again), and a side query lists the members of the groups the result kept: ``SELECT r.pos,
customer.__tp_rid, orders.__tp_rid FROM (<FROM / WHERE, keys and parts per row>) m JOIN r ON m.k0 IS NOT
DISTINCT FROM r.c0``. Same rows, one per member, no list per group.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from traceprop_frames.sql import group_counts, member_join
from traceprop_frames.sql.dialect import DIALECT
from traceprop_frames.sql.exists_join import join_exists
from traceprop_frames.sql.exists_lateral import lateral_exists
from traceprop_frames.sql.group_members import MEMBERS, key_struct, materialise, member_parts, member_rows
from traceprop_frames.sql.member_csr import member_csr, member_owners
from traceprop_frames.sql.null_rids import null_ids
from traceprop_frames.sql.rewrite import HIDDEN, LIN, Catalog, _has_agg
from traceprop_frames.sql.scalar_lateral import lateral_scalar

VALUES = "__tp_cv"  # the registered (position, values) table a side query joins
_POS = "__tp_pos"


@dataclass
class CorrelatedSide:
    """One correlated witness left to a side query: its SQL (reads the table :data:`VALUES`), the
    result column holding each row's outer values (a list of structs, or one struct) and how many
    lineage columns the side query returns after the position."""

    sql: str
    column: str
    per_row: bool  # True: one struct per result row (no aggregate); False: a list of structs
    n_fields: int
    members: str | None = None  # SQL of the member rows the query reads first (see group_members)


def _call(e: exp.Expression, name: str, n: int | None = None) -> bool:
    return isinstance(e, exp.Anonymous) and e.name.lower() == name and (n is None or len(e.expressions) == n)


def _lineage_exprs(e: exp.Expression, constants: bool = False) -> list[exp.Expression] | None:
    """The per-row lineage expressions of a witness select's one expression ``list(x)``,
    ``flatten(list(x))`` or ``list_concat`` of those, or None. ``constants``: a constant array (a HAVING
    subquery's ``[marker]``) is kept as it is."""
    args = e.expressions if _call(e, "list_concat") else [e]
    out = []
    for a in args:
        if constants and isinstance(a, exp.Array) and not a.find(exp.Column, exp.Subquery):
            out.append(a)
        elif _call(a, "flatten", 1) and _call(a.expressions[0], "list", 1):
            out.append(a.expressions[0].expressions[0])
        elif _call(a, "list", 1):
            out.append(a.expressions[0])
        else:
            return None
    return out


def _outer_columns(s: exp.Select, cat: Catalog, ctes: set[str]) -> list[exp.Column] | None:
    """The columns of ``s`` that refer to the query around it, or None where that cannot be decided
    (an inner table with unknown columns and an unqualified column, a nested subquery, ...)."""
    items = [s.args["from_"].this] + [j.this for j in s.args.get("joins") or []]
    names: set[str] = set()
    cols: set[str] = set()
    for t in items:
        if not isinstance(t, exp.Table) or not isinstance(t.this, exp.Identifier) or t.args.get("db"):
            return None
        name = t.name.lower()
        if name in ctes or name not in cat.columns:
            return None
        names.add(t.alias_or_name.lower())
        cols.update(c.lower() for c in cat.columns[name])
        cols.update(h.lower() for h in HIDDEN if cat.hidden.get(name) == h)
    outer = []
    for c in s.find_all(exp.Column):
        if c.args.get("db") or c.args.get("catalog") or isinstance(c.this, exp.Star):
            return None
        if c.table:
            if c.table.lower() not in names:
                outer.append(c)
        elif c.name.lower() not in cols:
            outer.append(c)
    return outer


def _side(s: exp.Select, cat: Catalog, ctes: set[str]):
    """(struct expression of the outer values, side SELECT, number of lineage columns) or None."""
    if not isinstance(s, exp.Select) or len(s.expressions) != 1:
        return None
    if any(s.args.get(k) for k in ("group", "having", "limit", "offset", "distinct", "qualify", "with_")):
        return None
    if s.args.get("from_") is None or any(q is not s for q in s.find_all(exp.Query)):
        return None
    joins = s.args.get("joins") or []
    if any((j.args.get("kind") or "").upper() in ("SEMI", "ANTI") or j.args.get("method") for j in joins):
        return None
    parts = _lineage_exprs(s.expressions[0])
    if not parts:
        return None
    side = s.copy()
    outer = _outer_columns(side, cat, ctes)
    if not outer:
        return None
    for j in side.args.get("joins") or []:  # the values join last: a join condition cannot see them
        if any(o is c for o in outer for c in j.find_all(exp.Column)):
            return None
    fields: dict[str, tuple[str, exp.Column]] = {}
    for c in outer:
        key = c.sql(dialect=DIALECT)
        if key not in fields:
            fields[key] = (f"__tp_c{len(fields)}", c.copy())
        c.replace(exp.column(fields[key][0], table=VALUES))
    side.set(
        "expressions",
        [exp.column(_POS, table=VALUES)] + [exp.alias_(p.copy(), f"__tp_x{i}") for i, p in enumerate(parts)],
    )
    distinct = exp.select("*").from_(VALUES).distinct()
    side.append(
        "joins",
        exp.Join(this=exp.Subquery(this=distinct, alias=exp.TableAlias(this=exp.to_identifier(VALUES)))),
    )
    struct = exp.Anonymous(
        this="struct_pack",
        expressions=[
            exp.PropertyEQ(this=exp.to_identifier(name), expression=col) for name, col in fields.values()
        ],
    )
    return struct, side, len(parts)


_NO_GROUP_SIDE = ("distinct", "limit", "offset", "qualify", "windows", "with_", "order")


def _group_parts(e: exp.Expression) -> list[exp.Expression] | None:
    """One member row's lineage parts from a group's lineage expression: ``list(x)`` gives ``x``,
    ``flatten(list(l))`` gives ``l``, a constant ``[marker]`` array (a HAVING subquery's witness) stays
    as it is; ``list_concat`` of those. None for anything else (an aggregate or subquery inside a part:
    its value is not one member row's)."""
    out = _lineage_exprs(e, constants=True)
    if out is None or any(p.find(exp.AggFunc, exp.Subquery, exp.Window) is not None for p in out):
        return None
    return out


def _grouping_body(sel: exp.Select, ref: exp.Column) -> exp.Select | None:
    """The grouping SELECT behind the derived table ``ref.table`` of ``sel``'s FROM, or None. A column
    list alias wraps it as ``(SELECT __tp_lin, * EXCLUDE (__tp_lin) FROM (body) AS __tp_hN) AS t(...)``."""
    items = [sel.args["from_"].this] + [j.this for j in sel.args.get("joins") or []]
    found = [t for t in items if isinstance(t, exp.Subquery) and t.alias_or_name.lower() == ref.table.lower()]
    if len(found) != 1 or sum(1 for t in items if t.alias_or_name.lower() == ref.table.lower()) != 1:
        return None
    body = found[0].this
    if (
        isinstance(body, exp.Select)
        and isinstance(body.expressions[0], exp.Column)
        and body.expressions[0].name == LIN
        and not any(body.args.get(k) for k in ("joins", "where", "group", "having", "distinct", "limit"))
        and isinstance(body.args["from_"].this, exp.Subquery)
        and body.args["from_"].this.args.get("alias") is not None
        and not body.args["from_"].this.args["alias"].columns
    ):
        body = body.args["from_"].this.this  # the column-list wrapper
    return body if isinstance(body, exp.Select) else None


def _group_side(sel: exp.Select, ref: exp.Column, ctes: set[str]):
    """(key struct column, side SELECT, number of lineage columns) for the lineage column ``ref`` of a
    grouping derived table in ``sel``'s FROM, the derived table changed in place to carry its group key
    instead of its ``list()``; None where that does not apply (see the module docstring)."""
    if (
        not ref.table
        or sum(1 for c in sel.find_all(exp.Column) if c.name == LIN and c.table.lower() == ref.table.lower())
        != 1
    ):
        return None  # the lineage column is read elsewhere too (a window frame, a subquery)
    body = _grouping_body(sel, ref)
    if body is None or any(body.args.get(k) for k in _NO_GROUP_SIDE) or body.find(exp.Window):
        return None
    group = body.args.get("group")
    if group is None or not group.expressions or body.args.get("from_") is None:
        return None
    if any(group.args.get(k) for k in ("all", "rollup", "cube", "grouping_sets", "totals")):
        return None
    lin = body.expressions[-1]
    if not (isinstance(lin, exp.Alias) and lin.alias == LIN):
        return None
    aliases = {e.alias.lower() for e in body.expressions if isinstance(e, exp.Alias)}
    keys = group.expressions
    for k in keys:
        if isinstance(k, exp.Literal) or k.find(exp.Subquery, exp.AggFunc, exp.Window) is not None:
            return None
        if isinstance(k, exp.Column) and not k.table and k.name.lower() in aliases:
            return None  # GROUP BY a select alias: the members query has no such name
    parts = _group_parts(lin.this)
    if not parts:
        return None
    for t in body.find_all(exp.Table):
        if t.name.lower() in ctes and not t.args.get("db"):
            return None  # reads a CTE of the statement: the side query would not see it
    once = materialise(sel, ref, body, keys, lin, parts)  # the members read once (group_members)
    if once is not None:
        return once
    members = body.copy()
    for k in ("group", "having", "order"):
        members.set(k, None)
    members.set(
        "expressions",
        [exp.alias_(k.copy(), f"__tp_k{i}") for i, k in enumerate(keys)]
        + [exp.alias_(p.copy(), f"__tp_x{i}") for i, p in enumerate(parts)],
    )
    on = " AND ".join(f"__tp_m.__tp_k{i} IS NOT DISTINCT FROM {VALUES}.__tp_c{i}" for i in range(len(keys)))
    xs = ", ".join(f"__tp_m.__tp_x{i}" for i in range(len(parts)))
    side = (
        f"SELECT {VALUES}.{_POS}, {xs} FROM ({members.sql(dialect=DIALECT)}) AS __tp_m "
        f"JOIN (SELECT DISTINCT * FROM {VALUES}) AS {VALUES} ON {on}"
    )
    lin.set("this", key_struct(keys))
    return ref.copy(), side, len(parts)


def split_correlated(
    sel: exp.Expression, cat: Catalog, n_hidden: int, n_lineage: int
) -> list[CorrelatedSide]:
    """Move the correlated witnesses of ``sel``'s first ``n_lineage`` hidden columns (the last columns
    but any window-frame columns) to side queries; changes ``sel`` in place, appending one outer-values
    column per witness at the end. Returns the side queries, in the order of those columns."""
    if not isinstance(sel, exp.Select) or sel.args.get("distinct") is not None:
        return []
    group = sel.args.get("group")
    if group is not None and any(group.args.get(k) for k in ("all", "rollup", "cube", "grouping_sets")):
        return []
    ctes = {c.alias_or_name.lower() for c in (sel.args.get("with_") or exp.With()).expressions}
    cols = sel.expressions[len(sel.expressions) - n_hidden :][:n_lineage]
    aggregated = group is not None or any(_has_agg(e, cat.aggregates) for e in sel.expressions)
    out: list[CorrelatedSide] = []
    for col in cols:
        if not isinstance(col, exp.Alias):
            continue
        e = col.this
        args = list(e.expressions) if _call(e, "list_concat") else [e]
        keep = []
        for a in args:
            found = None
            if _call(a, "flatten", 1) and _call(a.expressions[0], "list", 1):
                inner = a.expressions[0].expressions[0]
                if isinstance(inner, exp.Paren):
                    inner = inner.this
                if isinstance(inner, exp.Subquery):
                    found = _side(inner.this, cat, ctes)
                elif isinstance(inner, exp.Column) and inner.name == LIN:
                    found = _group_side(sel, inner, ctes)
                per_row = False
            elif isinstance(a, exp.Subquery) and not aggregated:
                found = _side(a.this, cat, ctes)
                per_row = True
            elif isinstance(a, exp.Column) and a.name == LIN and not aggregated:
                found = _group_side(sel, a, ctes)
                per_row = True
            if found is None:
                keep.append(a)
                continue
            struct, side, n, *members = found
            name = f"__tp_cw{len(out)}"
            value = struct if per_row else exp.Anonymous(this="list", expressions=[struct])
            side_sql = side if isinstance(side, str) else side.sql(dialect=DIALECT)
            out.append(CorrelatedSide(side_sql, name, per_row, n, *members))
            sel.append("expressions", exp.alias_(value, name))
        if len(keep) == len(args):
            continue
        if not keep:
            col.set("this", exp.cast(exp.null(), "BIGINT[]"))
        elif len(keep) == 1:
            col.set("this", keep[0])
        else:
            e.set("expressions", keep)
    return out


def side_pairs(
    con_raw,
    table: pa.Table,
    sides: list[CorrelatedSide],
    first: int,
    lineage_from_arrow,
    members=None,
    nulls: list | None = None,
):
    """Run each side query on the outer values in ``table``'s columns ``first ..``; returns CSR parts
    ``(offsets, ids)`` over ``table``'s rows (one per side query: its lineage columns in order, sorted
    by result row once) and the table without the outer-values columns. ``members``: the member rows
    (an Arrow table) of the side with ``members`` SQL, registered as ``group_members.MEMBERS``; ``nulls``:
    gets (side SQL, its lineage columns) of each side whose lineage holds a NULL id (``sql.null_rids``)."""
    n = table.num_rows
    parts = []
    for j, side in enumerate(sides):
        col = table.column(first + j).combine_chunks()
        if side.per_row:
            pos = np.flatnonzero(col.is_valid().to_numpy(zero_copy_only=False)).astype(np.int64)
            values = col.filter(col.is_valid())
        else:
            pos = np.asarray(pc.list_parent_indices(col).to_numpy(zero_copy_only=False), dtype=np.int64)
            values = pc.list_flatten(col)
            if values.null_count:  # a NULL struct (an outer join's missing row) reads no member
                valid = values.is_valid()
                pos, values = pos[valid.to_numpy(zero_copy_only=False)], values.filter(valid)
        fields = values.flatten() if len(values) else [pa.array([], f.type) for f in values.type]
        vt = pa.table(
            {_POS: pa.array(pos, pa.int64()), **{values.type.field(i).name: f for i, f in enumerate(fields)}}
        )
        rows = None
        if side.members is not None and members is not None:
            owner = member_owners(members, pos, values, n)  # a result of few rows: member_csr
            done = member_csr(members, owner, n, side.n_fields) if owner is not None else None
            if done is not None:
                parts.extend(done)
                continue
            rows = member_rows(members, pos, values)
        done = member_parts(members, rows, n, side.n_fields) if rows is not None else None
        if done is not None:  # one integer key: matched in numpy, no join
            parts.extend(done)
            continue
        if rows is not None:
            keep = rows >= 0
            rpos = rows[keep]
            res = members.select([f"__tp_x{i}" for i in range(side.n_fields)]).filter(pa.array(keep))
            res = res.add_column(0, _POS, pa.array(rpos))
        else:
            con_raw.register(VALUES, vt)
            try:
                res = con_raw.sql(f"SELECT * FROM ({side.sql}) AS __tp_s").to_arrow_table()
            finally:
                con_raw.unregister(VALUES)
            rpos = np.asarray(res.column(0).to_numpy(zero_copy_only=False), dtype=np.int64)
        owners, all_ids = [], []
        cols = [res.column(1 + i) for i in range(side.n_fields)]
        if nulls is not None and any(map(null_ids, cols)):  # (metadata: Arrow's null counts)
            nulls.append((side.sql, cols))
        for i in range(side.n_fields):  # every lineage column of the side query: one part, one sort
            col = res.column(1 + i).combine_chunks()
            if pa.types.is_integer(col.type):  # one id per row (NULL: none)
                if col.null_count:
                    ids = np.asarray(col.drop_null().to_numpy(), dtype=np.int64)
                    owners.append(rpos[col.is_valid().to_numpy(zero_copy_only=False)])
                else:
                    ids = np.asarray(col.to_numpy(), dtype=np.int64)
                    owners.append(rpos)
            else:
                off, ids = lineage_from_arrow(col)
                owners.append(np.repeat(rpos, np.diff(off)))
            all_ids.append(ids)
        owner = owners[0] if len(owners) == 1 else np.concatenate(owners)
        ids = all_ids[0] if len(all_ids) == 1 else np.concatenate(all_ids)
        order = _stable_order(owner, n)
        out_off = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(owner, minlength=n), out=out_off[1:])
        parts.append((out_off, ids[order]))
    return parts, table.select(list(range(first)))


def _stable_order(owner: np.ndarray, n: int) -> np.ndarray:
    """``np.argsort(owner, kind="stable")`` for row positions below ``n``; a result of at most 65,536
    rows sorts as uint16 (numpy's radix sort: O(len), 5x faster than int64's on 1.5M ids)."""
    if n <= 1 << 16:
        return np.argsort(owner.astype(np.uint16), kind="stable")
    return np.argsort(owner, kind="stable")


def prepare(rw, cat: Catalog) -> None:
    """Split ``rw``'s correlated witnesses into side queries (see :func:`split_correlated`): sets
    ``rw.correlated`` and ``rw.split_sql``. Changes ``rw.expression`` in place."""
    n_lineage = rw.n_hidden - 3 * len(rw.frames)
    sel = rw.expression
    merged = 0
    if isinstance(sel, exp.Select):
        group = sel.args.get("group")
        aggregated = group is not None or any(_has_agg(e, cat.aggregates) for e in sel.expressions)
        ctes = {c.alias_or_name.lower() for c in (sel.args.get("with_") or exp.With()).expressions}
        outer = lambda s: _outer_columns(s, cat, ctes)  # noqa: E731
        merged = lateral_exists(sel, rw.n_hidden, n_lineage, aggregated, outer)
        has_agg = lambda e: _has_agg(e, cat.aggregates)  # noqa: E731
        merged += lateral_scalar(sel, rw.n_hidden, n_lineage, aggregated, outer, has_agg)
        if merged == 1:  # one EXISTS in a grouped query: a join grouped per outer row (sql.exists_join)
            join_exists(sel, cat, aggregated, outer)
    rw.correlated = split_correlated(sel, cat, rw.n_hidden, n_lineage)
    rw.split_sql = rw.expression.sql(dialect=DIALECT) if rw.correlated or merged else None


def run_eager(raw, sql: str, rw, lineage_from_arrow) -> tuple[pa.Table, list]:
    """Run the eager query ``sql`` (rewrite ``rw`` after :func:`prepare`) with its correlated witnesses as
    side queries where they apply; returns the result (the layout of ``sql``'s) and the extra CSR lineage
    parts of its rows. Where the split query or a side query fails in DuckDB, ``sql`` runs as it is."""
    sides = rw.correlated
    if rw.split_sql is not None:
        once = [s.members for s in sides if s.members is not None]
        members = None
        try:
            if once:  # the member rows the split query groups, read once (see group_members)
                members = member_join.members(raw, once[0])  # a LEFT JOIN on one key: each table alone
                members = raw.sql(once[0]).to_arrow_table() if members is None else members
                raw.register(MEMBERS, members)
            table = group_counts.run(raw, rw, members) if members is not None else None  # counts: numpy
            if table is None:
                table = raw.sql(rw.split_sql).to_arrow_table()
            first = table.num_columns - len(sides)
            return side_pairs(raw, table, sides, first, lineage_from_arrow, members, rw.null_sides)[::-1]
        except duckdb.Error:
            pass
        finally:
            if members is not None:
                raw.unregister(MEMBERS)
    return raw.sql(sql).to_arrow_table(), []
