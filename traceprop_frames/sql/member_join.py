"""Eager capture: the member rows of a LEFT JOIN on one integer key, read from each table alone.

:mod:`traceprop_frames.sql.group_members` reads a grouping derived table's member rows ``M`` once. On
TPC-H q13 that is ::

    SELECT c_custkey AS __tp_k0, o_orderkey AS __tp_v1, customer.__tp_rid AS __tp_x0,
           orders.__tp_rid AS __tp_x1
    FROM customer LEFT OUTER JOIN orders ON c_custkey = o_custkey AND o_comment NOT LIKE '%special%requests%'

a hash join of 150,000 customers with 1.48 million orders that carries both row ids (1.53 million rows:
about 1.3x the plain query's CPU, where plain DuckDB aggregates the orders before joining). Here the
same rows are built from the two tables read alone: the left table's columns and join key (``C``), the
right table's columns and join key under the ON condition's other conjuncts (``O``), then matched in
numpy by a lookup table indexed by the key. Each right row whose key is one left row's key is a member
with that left row's columns; each left row that no right row matched is a member with NULL right
columns (as the LEFT JOIN's unmatched row). The result is ``M``'s rows (in another order: a hash join's
order is none), so everything after it is unchanged.

Applies only where that is provably the join's answer:

- ``M``'s SQL is ``SELECT <columns> FROM <table> LEFT [OUTER] JOIN <table> ON <a> = <b> [AND <p> ..]``:
  no WITH, WHERE, GROUP BY, DISTINCT, other joins, USING, NATURAL or ASOF; each select item a plain
  column of one of the two tables under an alias;
- the ON condition is one equality between a column of each table, AND-ed with conditions over the
  right table's columns alone (each row filter is then the same on the right table read alone) built
  only of columns, literals, comparisons, LIKE, IN lists, IS [NOT] NULL, BETWEEN, AND / OR / NOT and
  arithmetic (no function, no subquery: nothing volatile);
- every column is resolved to one table by its qualifier or, unqualified, by being a column of just one
  of them;
- at run time: both keys are integer columns (not ``UBIGINT``: compared by value as int64), the left
  table's non-NULL keys are distinct (a duplicated key would pair each right row with several left rows)
  and span at most a few slots per row.

Otherwise, or where DuckDB fails on a query over one table, None: the caller runs ``M``'s SQL.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa
from sqlglot import exp, parse_one

from traceprop_frames.sql.dialect import DIALECT

_JK = "__tp_jk"  # the join key column added to each table's query
# the node types a right-side condition may hold (anything else: M's SQL runs)
_PLAIN = (
    exp.Column, exp.Identifier, exp.Literal, exp.Null, exp.Boolean, exp.Paren, exp.And, exp.Or, exp.Not,
    exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Is, exp.Like, exp.ILike, exp.In, exp.Between,
    exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod, exp.Neg, exp.Tuple,
)  # fmt: skip
_SELECT_ARGS = {"kind", "expressions", "from_", "joins"}


@dataclass(frozen=True)
class JoinPlan:
    """The two tables' items, the select items (alias, column, side 0 left / 1 right), the key columns
    and the right table's conditions."""

    left: exp.Table
    right: exp.Table
    items: tuple[tuple[str, exp.Column, int], ...]
    keys: tuple[exp.Column, exp.Column]
    conds: tuple[exp.Expression, ...]


_plans: dict[str, JoinPlan | None] = {}  # M's SQL -> its plan (None: does not apply)
_PLANS = 256  # plans kept (the oldest dropped first), as sql.group_counts keeps its own


def _table(t: exp.Expression) -> bool:
    return isinstance(t, exp.Table) and isinstance(t.this, exp.Identifier) and not t.args.get("joins")


def _conjuncts(e: exp.Expression) -> list[exp.Expression]:
    while isinstance(e, exp.Paren):
        e = e.this
    return _conjuncts(e.this) + _conjuncts(e.expression) if isinstance(e, exp.And) else [e]


def parse(sql: str) -> JoinPlan | None:
    """``sql``'s plan where it has the shape of the module docstring (columns not yet resolved)."""
    if sql in _plans:
        return _plans[sql]
    plan = None
    try:
        sel = parse_one(sql, read=DIALECT)
    except Exception:  # noqa: BLE001 (not ours to parse: M's SQL runs)
        sel = None
    if isinstance(sel, exp.Select) and not {k for k, v in sel.args.items() if v} - _SELECT_ARGS:
        plan = _shape(sel)
    if len(_plans) >= _PLANS:
        _plans.pop(next(iter(_plans)))
    _plans[sql] = plan
    return plan


def _shape(sel: exp.Select) -> JoinPlan | None:
    joins, left = sel.args.get("joins") or [], sel.args["from_"].this
    if sel.args.get("kind") or len(joins) != 1 or not _table(left):
        return None
    j = joins[0]
    if (j.side or "").upper() != "LEFT" or (j.kind or "OUTER").upper() != "OUTER" or not _table(j.this):
        return None
    if {k for k, v in j.args.items() if v} - {"this", "side", "kind", "on"} or j.args.get("on") is None:
        return None  # USING, NATURAL, ASOF, POSITIONAL, a hint ..
    items = []
    for e in sel.expressions:
        if not isinstance(e, exp.Alias) or not isinstance(e.this, exp.Column) or e.this.args.get("db"):
            return None
        items.append((e.alias, e.this, -1))
    eq, conds = None, []
    for c in _conjuncts(j.args["on"]):
        if eq is None and isinstance(c, exp.EQ) and isinstance(c.this, exp.Column):
            if isinstance(c.expression, exp.Column):
                eq = c
                continue
        if any(not isinstance(n, _PLAIN) for n in c.walk()):
            return None
        conds.append(c)
    if eq is None or len({a.lower() for a, _, _ in items}) != len(items):
        return None
    return JoinPlan(left, j.this, tuple(items), (eq.this, eq.expression), tuple(conds))


def _side(col: exp.Column, names: tuple[str, str], cols: tuple[set[str], set[str]]) -> int:
    """0 (left) or 1 (right) for ``col``; -1 where it is not one table's column."""
    if col.table:
        sides = [i for i in (0, 1) if names[i] == col.table.lower()]
    else:
        sides = [i for i in (0, 1) if col.name.lower() in cols[i]]
    return sides[0] if len(sides) == 1 and col.name.lower() in cols[sides[0]] else -1


def _queries(raw, plan: JoinPlan) -> tuple[str, str, list[int], list[bool]] | None:
    """The SQL of ``C`` and ``O``, each select item's side and whether it is the left key column; None
    where a column is not resolved to one table, the key is not one column of each, or a condition
    reads the left table."""
    names = tuple(t.alias_or_name.lower() for t in (plan.left, plan.right))
    if names[0] == names[1]:
        return None
    cols = []
    for t in (plan.left, plan.right):
        rel = raw.sql(f"SELECT * FROM {t.sql(dialect=DIALECT)} LIMIT 0")
        cols.append({c.lower() for c in rel.columns})
    cols = tuple(cols)
    sides = [_side(c, names, cols) for _, c, _ in plan.items]
    ka, kb = (_side(k, names, cols) for k in plan.keys)
    if -1 in sides or {ka, kb} != {0, 1}:
        return None
    if any(_side(c, names, cols) != 1 for cond in plan.conds for c in cond.find_all(exp.Column)):
        return None
    keys = plan.keys if ka == 0 else plan.keys[::-1]
    out = []
    for s, t in enumerate((plan.left, plan.right)):
        read = [
            f"{c.sql(dialect=DIALECT)} AS __tp_c{i}"
            for i, (_, c, _) in enumerate(plan.items)
            if sides[i] == s
        ]
        read.append(f"{keys[s].sql(dialect=DIALECT)} AS {_JK}")
        where = " AND ".join(f"({c.sql(dialect=DIALECT)})" for c in plan.conds) if s else ""
        out.append(
            f"SELECT {', '.join(read)} FROM {t.sql(dialect=DIALECT)}" + (f" WHERE {where}" if where else "")
        )
    # an item that is the left key column: on a matched row, the right key's value (same type: no gather)
    is_key = [
        sides[i] == 0 and c.name.lower() == keys[0].name.lower() for i, (_, c, _) in enumerate(plan.items)
    ]
    return out[0], out[1], sides, is_key


def _int_key(col: pa.Array) -> tuple[np.ndarray, np.ndarray | None] | None:
    """(values as int64, validity or None) of an integer key column; None for any other type."""
    if not pa.types.is_integer(col.type) or pa.types.is_uint64(col.type):
        return None
    if not col.null_count:
        return np.asarray(col.to_numpy(), dtype=np.int64), None
    return np.asarray(col.fill_null(0).to_numpy(), dtype=np.int64), col.is_valid().to_numpy(
        zero_copy_only=False
    )


def _right_slots(rv: np.ndarray, rok: np.ndarray | None, base: int, hi: int) -> np.ndarray:
    """Each right key's slot in a table of ``hi - base + 2`` slots indexed by ``key - base``: a NULL key
    or one outside ``[base, hi]`` takes the last slot (no left row)."""
    if rok is None and len(rv) and base <= int(rv.min()) and int(rv.max()) <= hi:
        return rv - base if base else rv  # every key inside the table (q13): no masking pass
    idx = np.clip(rv, base, hi + 1) - base
    out = (rv < base) | (rv > hi)
    if rok is not None:
        out |= ~rok  # a NULL right key matches nothing
    idx[out] = hi - base + 1
    return idx


def match(left_key: pa.Array, right_key: pa.Array) -> tuple[np.ndarray, np.ndarray | None, np.ndarray] | None:
    """(left row of each matched right row, those right rows (None: all), the left rows no right row
    matched) for ``left LEFT JOIN right ON left_key = right_key``; None where a key is not an integer
    column, the left's non-NULL keys repeat, or the keys are sparse."""
    lk, rk = _int_key(left_key), _int_key(right_key)
    if lk is None or rk is None:
        return None
    (lv, lok), (rv, rok) = lk, rk
    n_left = len(lv)
    known = lv if lok is None else lv[lok]
    if not len(known):
        return np.empty(0, np.int64), np.empty(0, np.int64), np.arange(n_left, dtype=np.int64)
    lo, hi = int(known.min()), int(known.max())
    if hi - lo > 4 * (n_left + len(rv)) + 1024:
        return None  # sparse keys: M's SQL
    base = 0 if 0 <= lo <= hi - lo + 1024 else lo  # keys from near 0: indexed by the key itself
    slot = np.full(hi - base + 2, -1, dtype=np.int64)  # the last slot: no left row
    slot[known - base if base else known] = np.arange(n_left) if lok is None else np.flatnonzero(lok)
    if np.count_nonzero(slot >= 0) != len(known):
        return None  # a left key repeats: each right row would pair with several left rows
    li = slot[_right_slots(rv, rok, base, hi)]
    ri = None
    if len(li) and int(li.min()) < 0:
        ri = np.flatnonzero(li >= 0)
        li = li[ri]
    hit = np.zeros(n_left, dtype=bool)
    hit[li] = True
    return li, ri, np.flatnonzero(~hit)


def _take(col: pa.Array, rows: np.ndarray) -> pa.Array:
    """``col``'s values at ``rows`` (numpy's gather for an integer column without NULLs)."""
    if pa.types.is_integer(col.type) and not col.null_count:
        return pa.array(col.to_numpy()[rows], col.type)
    return col.take(pa.array(rows))


def members(raw: duckdb.DuckDBPyConnection, sql: str) -> pa.Table | None:
    """``M`` for the members SQL ``sql`` built from its two tables read alone; None where that does not
    apply (see the module docstring: the caller runs ``sql``)."""
    plan = parse(sql)
    if plan is None:
        return None
    try:
        q = _queries(raw, plan)
        if q is None:
            return None
        c, o = (raw.sql(s).to_arrow_table() for s in q[:2])
    except duckdb.Error:
        return None
    rk = o.column(_JK).combine_chunks()
    m = match(c.column(_JK).combine_chunks(), rk)
    if m is None:
        return None
    li, ri, lone = m
    c, o = c.drop_columns([_JK]), o.drop_columns([_JK])
    at = [0, 0]
    cols = []
    for i, (alias, _, _) in enumerate(plan.items):
        s = q[2][i]
        src = (c, o)[s].column(at[s]).combine_chunks()
        at[s] += 1
        if s == 0 and q[3][i] and rk.type == src.type:
            pair, rest = rk if ri is None else rk.take(pa.array(ri)), src.take(pa.array(lone))
        elif s == 0:
            pair, rest = _take(src, li), src.take(pa.array(lone))
        else:
            pair = src if ri is None else src.take(pa.array(ri))
            rest = pa.nulls(len(lone), src.type)
        cols.append((alias, pa.chunked_array([pair, rest], src.type)))
    return pa.table(dict(cols))
