"""Eager capture: a grouping derived table's member rows read once, for the query and its lineage.

:mod:`traceprop_frames.sql.correlated` gives a grouping derived table (TPC-H q13: ``SELECT c_count,
count(*) FROM (SELECT c_custkey, count(o_orderkey) FROM customer LEFT JOIN orders ON ... GROUP BY
c_custkey) AS c_orders(c_custkey, c_count) GROUP BY c_count``) its group key instead of a ``list()`` per
group, and a side query lists the members of the groups the result kept by evaluating the derived
table's FROM / WHERE a second time. On q13 that second join (and its ``NOT LIKE`` on every order's
comment) costs as much as the plain query.

Where the top-level SELECT reads only that derived table (no join, WHERE, HAVING, QUALIFY, LIMIT or
OFFSET: every group reaches exactly one result row), the member rows are read once instead: ::

    M = SELECT c_custkey AS __tp_v0, o_orderkey AS __tp_v1,     -- every column the groups read
               c_custkey AS __tp_k0,                            -- the group key
               customer.__tp_rid AS __tp_x0, orders.__tp_rid AS __tp_x1   -- each member's lineage
        FROM customer LEFT JOIN orders ON ...                   -- the derived table's FROM / WHERE

``M`` comes back as an Arrow table registered as :data:`MEMBERS`; the derived table becomes ``SELECT
__tp_v0 AS c_custkey, count(__tp_v1) ... FROM __tp_gm GROUP BY __tp_v0`` (the same expressions on the
same values: the same groups, the same aggregates), and a result row's lineage is the members whose key
is one of its groups' keys. For a single integer key that match is a lookup table in numpy; otherwise
an SQL join of ``M`` with the keys (``IS NOT DISTINCT FROM``, as before).

Not applied (the side query stays) where the derived table's columns would not keep their names (an
unaliased expression without a column list), where its SELECT / GROUP BY / HAVING hold a subquery, a
star or ``COLUMNS(...)``, or a name that is also one of its select aliases.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from sqlglot import exp

from traceprop_frames.sql.dialect import DIALECT

MEMBERS = "__tp_gm"  # the registered member rows
_BODY_ARGS = {"expressions", "from_", "joins", "where", "group", "having"}
_TOP_NONE = ("joins", "where", "having", "qualify", "limit", "offset", "distinct", "windows")


def _only_item(sel: exp.Select, ref: exp.Column) -> exp.Subquery | None:
    """The derived table ``ref.table`` where it is all that ``sel`` reads, else None."""
    item = sel.args["from_"].this if sel.args.get("from_") is not None else None
    if any(sel.args.get(k) for k in _TOP_NONE) or not isinstance(item, exp.Subquery):
        return None
    return item if item.alias_or_name.lower() == ref.table.lower() else None


def _named(item: exp.Subquery, body: exp.Select) -> bool:
    """True if every column of ``body`` keeps its name when its expressions change: a column list on
    the derived table names them all, or each is an alias or a column."""
    alias = item.args.get("alias")
    if alias is not None and len(alias.columns) >= len(body.expressions):
        return True  # the column-list wrapper: __tp_lin plus one name per column of the body
    return all(isinstance(e, (exp.Alias, exp.Column)) for e in body.expressions[:-1])


def _columns(roots: list[exp.Expression], aliases: set[str]) -> list[exp.Column] | None:
    """Every column under ``roots``; None where one cannot be moved to ``M`` (see the module docstring)."""
    out = []
    for r in roots:
        for node in r.find_all(exp.Column, exp.Star, exp.Columns, exp.Query, exp.Subquery, exp.Window):
            if isinstance(node, exp.Star) and isinstance(node.parent, exp.Count):
                continue
            if not isinstance(node, exp.Column) or isinstance(node.this, exp.Star):
                return None
            if node.args.get("db") or node.args.get("catalog"):
                return None
            if not node.table and node.name.lower() in aliases:
                return None
            out.append(node)
    return out


def roots_of(body: exp.Select) -> list[exp.Expression]:
    """What a grouping SELECT reads of its rows: its expressions but the lineage, GROUP BY, HAVING."""
    having = body.args.get("having")
    return (
        list(body.expressions[:-1])
        + list(body.args["group"].expressions)
        + ([having] if having is not None else [])
    )


def materialise(sel, ref, body, keys, lin, parts):
    """``(key struct column, side SQL over M, number of lineage columns, M's SQL)`` for the grouping
    derived table ``body`` behind ``ref`` (checked by the caller as for its side query: ``keys``, its
    lineage alias ``lin`` and one member's ``parts``), ``body`` changed in place to read :data:`MEMBERS`;
    None where it does not apply (``body`` unchanged)."""
    item = _only_item(sel, ref)
    if item is None or {k for k, v in body.args.items() if v} - _BODY_ARGS or not _named(item, body):
        return None
    aliases = {e.alias.lower() for e in body.expressions if isinstance(e, exp.Alias)}
    group = body.args["group"]
    cols = _columns(roots_of(body), aliases)
    if cols is None:
        return None
    # a key that is a column is read once, as __tp_k{i}; every other column as __tp_v{j}
    names = {k.sql(dialect=DIALECT): f"__tp_k{i}" for i, k in enumerate(keys) if isinstance(k, exp.Column)}
    read = [exp.alias_(k.copy(), f"__tp_k{i}") for i, k in enumerate(keys)]
    for c in cols:
        if c.sql(dialect=DIALECT) not in names:
            names[c.sql(dialect=DIALECT)] = f"__tp_v{len(read)}"
            read.append(exp.alias_(c.copy(), f"__tp_v{len(read)}"))
    members = exp.select(*read, *[exp.alias_(p.copy(), f"__tp_x{i}") for i, p in enumerate(parts)])
    for k in ("from_", "joins", "where"):
        members.set(k, body.args.get(k).copy() if body.args.get(k) is not None else None)
    members_sql = members.sql(dialect=DIALECT)
    # the groups read M: same expressions over the same values, names kept
    for i, e in enumerate(body.expressions[:-1]):
        if isinstance(e, exp.Column):
            body.expressions[i].replace(exp.alias_(e.copy(), e.args["this"].copy()))
    for c in _columns(roots_of(body), set()):
        c.replace(exp.column(names[c.sql(dialect=DIALECT)], table=MEMBERS))
    body.set("from_", exp.From(this=exp.to_table(MEMBERS)))
    body.set("joins", None)
    body.set("where", None)
    lin.set("this", key_struct(group.expressions))
    on = " AND ".join(f"__tp_m.__tp_k{i} IS NOT DISTINCT FROM __tp_cv.__tp_c{i}" for i in range(len(keys)))
    xs = ", ".join(f"__tp_m.__tp_x{i}" for i in range(len(parts)))
    side = (
        f"SELECT __tp_cv.__tp_pos, {xs} FROM {MEMBERS} AS __tp_m "
        f"JOIN (SELECT DISTINCT * FROM __tp_cv) AS __tp_cv ON {on}"
    )
    return ref.copy(), side, len(parts), members_sql


def member_rows(members: pa.Table, pos: np.ndarray, values: pa.StructArray) -> np.ndarray | None:
    """For each row of ``members`` (M), the result row whose groups include its key (-1: none), from
    the result's (row, key) pairs ``pos`` / ``values``; None where this does not apply (more than one
    key, a key that is not an integer, a key in more than one result row): the SQL join then runs."""
    if values.type.num_fields != 1:
        return None
    key, mk = values.field(0), members.column("__tp_k0").combine_chunks()
    if not (pa.types.is_integer(key.type) and pa.types.is_integer(mk.type)):
        return None
    if pa.types.is_uint64(key.type) or pa.types.is_uint64(mk.type):
        return None  # (may not fit int64)
    valid = key.is_valid().to_numpy(zero_copy_only=False)
    k = np.asarray(key.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)[valid]
    kp = pos[valid]
    null_pos = pos[~valid]
    if len(null_pos) > 1:
        return None
    mvalid = mk.is_valid().to_numpy(zero_copy_only=False)
    m = np.asarray(mk.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
    out = np.full(len(m), -1, dtype=np.int64)
    if len(k):
        lo, hi = int(k.min()), int(k.max())
        if hi - lo <= 4 * (len(m) + len(k)) + 1024:  # dense: one slot per key value
            slot = np.full(hi - lo + 1, -1, dtype=np.int64)
            slot[k - lo] = kp
            if np.count_nonzero(slot >= 0) != len(k):
                return None  # a key in two result rows
            if not mk.null_count and len(m) and m.min() >= lo and m.max() <= hi:
                out = slot[m - lo]  # (every member's key has a slot: one gather)
            else:
                inside = mvalid & (m >= lo) & (m <= hi)
                out[inside] = slot[m[inside] - lo]
        else:
            order = np.argsort(k, kind="stable")
            ks, ps = k[order], kp[order]
            if np.any(ks[1:] == ks[:-1]):
                return None
            at = np.minimum(np.searchsorted(ks, m), len(ks) - 1)
            hit = mvalid & (ks[at] == m)
            out[hit] = ps[at[hit]]
    if len(null_pos):
        out[~mvalid] = null_pos[0]
    return out


def member_parts(members: pa.Table, rows: np.ndarray, n: int, n_fields: int) -> list | None:
    """One CSR part ``(offsets, ids)`` over ``n`` result rows: the ids of the lineage columns
    ``__tp_x{i}`` of ``members`` (member row ``j``'s ids go to result row ``rows[j]``; -1: none, NULL:
    no id), sorted by result row once; None where a column is not one id per member (a list: the
    caller's general path)."""
    cols = [members.column(f"__tp_x{i}").combine_chunks() for i in range(n_fields)]
    if not all(pa.types.is_integer(c.type) for c in cols):
        return None
    keep = rows >= 0
    small = np.uint8 if n <= 1 << 8 else np.uint16 if n <= 1 << 16 else np.int64
    owners, ids = [], []
    for col in cols:
        ok = keep if not col.null_count else keep & col.is_valid().to_numpy(zero_copy_only=False)
        every = bool(ok.all())
        owners.append(rows.astype(small) if every else rows[ok].astype(small))
        values = np.asarray(col.fill_null(0).to_numpy() if col.null_count else col.to_numpy(), dtype=np.int64)
        ids.append(values if every else values[ok])
    owner = owners[0] if len(owners) == 1 else np.concatenate(owners)
    order = np.argsort(owner, kind="stable")  # radix sort for the small types: O(len)
    off = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(owner, minlength=n), out=off[1:])
    return [(off, (ids[0] if len(ids) == 1 else np.concatenate(ids))[order])]


def key_struct(keys) -> exp.Anonymous:
    """``struct_pack(__tp_c0 := key0, ...)``: a group's keys as one value (copies of ``keys``)."""
    return exp.Anonymous(
        this="struct_pack",
        expressions=[
            exp.PropertyEQ(this=exp.to_identifier(f"__tp_c{i}"), expression=k.copy())
            for i, k in enumerate(keys)
        ],
    )
