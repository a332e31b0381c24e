"""Eager capture: a grouping derived table of counts computed in numpy from its member rows.

:mod:`traceprop_frames.sql.group_members` reads a grouping derived table's member rows once (``M``, an
Arrow table registered as ``__tp_gm``) and the split query groups them again in DuckDB: on TPC-H q13,
``SELECT __tp_gm.__tp_k0 AS c_custkey, count(__tp_gm.__tp_v1), struct_pack(__tp_c0 := __tp_gm.__tp_k0)
FROM __tp_gm GROUP BY __tp_gm.__tp_k0`` groups 1.53 million members into 150,000 groups (a hash
aggregate: ~55 ms CPU at SF 1, plain q13 ~190 ms).

Where that grouping SELECT is only counts over one integer key column, the groups are counted in numpy
instead (``np.bincount`` over the key: ~12 ms) and the split query reads them from a registered Arrow
table (:data:`GROUPS`: the key ``__tp_k0`` and one ``__tp_n{j}`` per count):

- the grouping SELECT reads ``__tp_gm`` alone (no join, WHERE, HAVING, QUALIFY, DISTINCT, ORDER BY,
  LIMIT or window) and groups by exactly one expression, the key column ``__tp_gm.__tp_k0``;
- each of its columns but the lineage is that key column or ``count(*)`` / ``count(__tp_gm.<column>)``
  (no DISTINCT, FILTER, OVER or second argument), under an alias or not; its lineage column is the key
  struct ``struct_pack(__tp_c0 := __tp_gm.__tp_k0)``;
- ``__tp_gm`` is read nowhere else in the statement;
- at run time: the key is an integer column (not ``UBIGINT``) whose values span at most a few slots
  per member (``np.bincount`` over the range).

The groups are those of ``GROUP BY``: one per distinct non-NULL key, and one for the NULL key if any
member has it; ``count(*)`` counts a group's members, ``count(c)`` those whose ``c`` is not NULL (a
LEFT JOIN's unmatched row is a member with NULL columns: ``count(*)`` 1, ``count(o_orderkey)`` 0). The
counts are BIGINT as DuckDB's, the key keeps its type. Anything else, or a failure of the query over
the groups in DuckDB, keeps the split query over ``M`` (the same answer, its usual cost).
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa
from sqlglot import exp

from traceprop_frames.sql.dialect import DIALECT
from traceprop_frames.sql.group_members import MEMBERS

GROUPS = "__tp_gd"  # the registered groups: __tp_k0 and one __tp_n{j} per count
_KEY = "__tp_k0"
_BODY_ARGS = {"expressions", "from_", "group"}


@dataclass(frozen=True)
class CountPlan:
    """The split query reading :data:`GROUPS` and, per ``__tp_n{j}``, the column of ``M`` it counts
    (None: ``count(*)``)."""

    sql: str
    counted: tuple[str | None, ...]


_plans: dict[str, CountPlan | None] = {}  # split SQL -> its plan over GROUPS (None: does not apply)


def _key(e: exp.Expression) -> bool:
    return isinstance(e, exp.Column) and e.table == MEMBERS and e.name == _KEY and not e.args.get("db")


def _counted(e: exp.Expression) -> tuple[bool, str | None]:
    """(True, counted column or None for ``*``) for ``count(*)`` / ``count(__tp_gm.c)``; (False, None)
    for anything else."""
    if not isinstance(e, exp.Count) or e.args.get("expressions"):
        return False, None
    x = e.this
    if isinstance(x, exp.Star):
        return True, None
    if (
        isinstance(x, exp.Column)
        and x.table == MEMBERS
        and not x.args.get("db")
        and x.name.startswith("__tp_")
    ):
        return True, x.name
    return False, None


def _lineage(e: exp.Expression) -> bool:
    """True for ``struct_pack(__tp_c0 := __tp_gm.__tp_k0) AS __tp_lin``."""
    if not (isinstance(e, exp.Alias) and e.alias == "__tp_lin"):
        return False
    s = e.this
    named = isinstance(s, exp.Anonymous) and s.name.lower() == "struct_pack"
    if not (named or isinstance(s, exp.Struct)) or len(s.expressions) != 1:
        return False
    f = s.expressions[0]
    return isinstance(f, exp.PropertyEQ) and f.this.name == "__tp_c0" and _key(f.expression)


def _plan(tree: exp.Expression) -> CountPlan | None:
    """The plan for the split query ``tree`` (not changed), or None where it does not apply."""
    tables = [t for t in tree.find_all(exp.Table) if t.name == MEMBERS]
    if len(tables) != 1 or tables[0].args.get("db") or not isinstance(tables[0].parent, exp.From):
        return None
    body = tables[0].parent.parent
    if not isinstance(body, exp.Select) or body.args["from_"].this is not tables[0]:
        return None
    if {k for k, v in body.args.items() if v} - _BODY_ARGS or any(
        q is not body for q in body.find_all(exp.Query, exp.Subquery, exp.Window)
    ):
        return None
    group = body.args.get("group")
    if group is None or len(group.expressions) != 1 or not _key(group.expressions[0]):
        return None
    if any(group.args.get(k) for k in ("all", "rollup", "cube", "grouping_sets", "totals")):
        return None
    if not body.expressions or not _lineage(body.expressions[-1]):
        return None
    body = body.copy()  # (a copy of the body, then the statement around it rebuilt with it)
    counted: list[str | None] = []
    for e in body.expressions[:-1]:
        inner = e.this if isinstance(e, exp.Alias) else e
        ok, col = _counted(inner)
        if ok:
            inner.replace(exp.column(f"__tp_n{len(counted)}", table=GROUPS))
            counted.append(col)
        elif not _key(inner):
            return None
    for c in list(body.find_all(exp.Column)):
        if _key(c):
            c.replace(exp.column(_KEY, table=GROUPS))
    if any(c.table == MEMBERS for c in body.find_all(exp.Column)):
        return None
    body.set("from_", exp.From(this=exp.to_table(GROUPS)))
    body.set("group", None)
    out = tree.copy()
    old = next(t for t in out.find_all(exp.Table) if t.name == MEMBERS).parent.parent
    old.replace(body)
    return CountPlan(out.sql(dialect=DIALECT), tuple(counted))


def plan(rw) -> CountPlan | None:
    """The plan for eager rewrite ``rw``'s split query (``rw.split_sql``, the SQL of ``rw.expression``),
    kept per SQL text; None where it does not apply."""
    sql = rw.split_sql
    if sql is None or MEMBERS not in sql:
        return None
    if sql not in _plans:
        if len(_plans) >= 256:
            _plans.pop(next(iter(_plans)))
        tree = rw.expression
        _plans[sql] = _plan(tree) if tree.sql(dialect=DIALECT) == sql else None
    return _plans[sql]


def _bitmap(t: pa.DataType) -> bool:
    """True if a NULL of type ``t`` is marked in its validity bitmap, as DuckDB's ``count()`` counts:
    not a NULL-typed column (no bitmap), a union or run-end encoded one (NULLs held in children) or a
    dictionary (a NULL may be a dictionary value)."""
    return not (
        pa.types.is_null(t)
        or pa.types.is_union(t)
        or pa.types.is_dictionary(t)
        or pa.types.is_run_end_encoded(t)
        or isinstance(t, pa.BaseExtensionType)
    )


def _valid(col: pa.Array) -> np.ndarray | None:
    """``col``'s validity as a bool array (from the bitmap: no per-value conversion); None where its
    NULLs are not all in a validity bitmap."""
    if not _bitmap(col.type):
        return None
    bitmap = col.buffers()[0]
    if not col.null_count:
        return np.ones(len(col), dtype=bool)
    if bitmap is None:
        return None
    bits = np.unpackbits(np.frombuffer(bitmap, np.uint8), bitorder="little", count=col.offset + len(col))
    return bits[col.offset :].view(bool)


def groups(members: pa.Table, counted: tuple[str | None, ...]) -> pa.Table | None:
    """The groups of ``members`` by ``__tp_k0``: the key and one BIGINT count per ``counted`` column
    (None: every member), the NULL key's group last; None where the key is not an integer column over
    a range of at most a few slots per member, or a counted column is not in ``members``."""
    if _KEY not in members.column_names or any(
        c is not None and c not in members.column_names for c in counted
    ):
        return None
    mk = members.column(_KEY).combine_chunks()
    if not pa.types.is_integer(mk.type) or pa.types.is_uint64(mk.type):
        return None  # (a UBIGINT may not fit int64)
    k = np.asarray((mk.fill_null(0) if mk.null_count else mk).to_numpy(), dtype=np.int64)
    kv = _valid(mk) if mk.null_count else None
    known = k if kv is None else k[kv]
    lo, size = 0, 0
    if len(known):
        lo, hi = int(known.min()), int(known.max())
        if hi - lo > 4 * len(k) + 1024:
            return None  # sparse keys: DuckDB's hash aggregate
        if 0 <= lo <= hi - lo + 1024:
            lo = 0  # keys from near 0: counted by the key itself (no shifted copy)
        size = hi - lo + 1
    idx = k - lo if lo else k
    per = np.bincount(idx if kv is None else idx[kv], minlength=size)
    present = np.flatnonzero(per)
    keys = pa.array(present + lo, pa.int64()).cast(mk.type)
    cols = {}
    for j, name in enumerate(counted):
        c = mk if name == _KEY else None if name is None else members.column(name).combine_chunks()
        n, n_null = per, 0 if kv is None else int(len(k) - np.count_nonzero(kv))
        ok = _valid(c) if c is not None else None
        if c is not None and ok is None:
            return None  # NULLs not (only) in a validity bitmap: the split query over M
        if c is not None and c.null_count:
            miss = ~ok
            if kv is not None:
                n_null -= int(np.count_nonzero(miss & ~kv))
                miss &= kv
            n = per - np.bincount(idx[miss], minlength=size)
        cols[f"__tp_n{j}"] = (n[present], n_null)
    if kv is not None:  # the NULL key's group
        keys = pa.concat_arrays([keys, pa.nulls(1, mk.type)])
        cols = {name: np.append(v, n_null) for name, (v, n_null) in cols.items()}
    else:
        cols = {name: v for name, (v, _) in cols.items()}
    return pa.table({_KEY: keys, **{name: pa.array(v, pa.int64()) for name, v in cols.items()}})


def run(raw: duckdb.DuckDBPyConnection, rw, members: pa.Table) -> pa.Table | None:
    """``rw``'s split query answered over the groups of ``members`` counted in numpy, or None where that
    does not apply (the caller runs the split query over ``M``)."""
    p = plan(rw)
    g = groups(members, p.counted) if p is not None else None
    if g is None:
        return None
    raw.register(GROUPS, g)
    try:
        return raw.sql(p.sql).to_arrow_table()
    except duckdb.Error:
        return None
    finally:
        raw.unregister(GROUPS)
