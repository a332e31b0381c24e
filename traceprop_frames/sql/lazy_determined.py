"""Lazy capture: the key columns a ``rows`` result does not need to fetch.

A lazy ``rows`` result names each row by its FROM items' keys (see :mod:`traceprop_frames.sql.lazy`).
A grouping item (a table made by a lazy grouping ``CREATE TABLE ... AS``, a CTE or derived table that
groups) has one row per group key. Joined by ``LEFT`` or inner join on *all* of its group keys, each equal
to an expression of the items before it (``USING (k)``, ``ON b.k = a.k``), it matches at most one row per
row of those items: its row is a function of theirs, so the other items' keys already name the result row
and its own keys are not fetched. The backward query joins on the remaining keys; it finds the same row,
as the tables are fingerprinted (a changed one raises first).

Only where the comparison cannot make two distinct group keys equal: both sides the same exact type
(integers, DATE, BOOLEAN, UUID) or both signed integers (a wider integer holds both). Not strings: a
column's collation (``s COLLATE NOCASE``) does not show in its bound type, and makes ``'a' = 'A'`` match
two groups. Types are
read by binding two small queries once per query plan (cached with the capture).
"""

from __future__ import annotations

import duckdb
from sqlglot import exp

from traceprop_frames.sql.dialect import DIALECT
from traceprop_frames.sql.rewrite import RID

_SIGNED = frozenset(["TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT"])
_EXACT = _SIGNED | {
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "UHUGEINT",
    "DATE",
    "BOOLEAN",
    "UUID",
}


def drop_determined(stmt: exp.Select, shape, raw) -> int:
    """Remove from ``shape.items`` the keys of joined grouping items whose row the items before them
    decide (see the module); returns how many were removed."""
    if shape.mode != "rows" or not shape.items:
        return 0
    joins = stmt.args.get("joins") or []
    items = shape.items
    for j, join in enumerate(joins):
        t = join.this
        alias = t.args.get("alias")
        ref = alias.this if alias is not None and alias.this else t.this
        mine = [c for r, c in items if r is ref]
        if mine and _determined(stmt, j, ref, mine, raw):
            items = [it for it in items if it[0] is not ref]
    dropped = len(shape.items) - len(items)
    shape.items = items
    return dropped


def _determined(stmt: exp.Select, j: int, ref: exp.Identifier, cols: list[str], raw) -> bool:
    join = stmt.args["joins"][j]
    side = (join.args.get("side") or "").upper()
    kind = (join.args.get("kind") or "").upper()
    if join.args.get("method") or side not in ("", "LEFT") or kind not in ("", "INNER", "OUTER"):
        return False
    if any(c.lower() in ("rowid", RID) for c in cols):
        return False  # a row id, not a group key
    using = join.args.get("using")
    if using:
        names = {u.name.lower() for u in using}
        if not all(c.lower() in names for c in cols):
            return False
        others = [exp.column(c) for c in cols]  # the USING column of the items before
    else:
        others = _on_sides(join.args.get("on"), ref.name.lower(), cols)
        if others is None:
            return False
    mine = _types(stmt, j + 1, [exp.column(c, table=ref.copy()) for c in cols], raw)
    theirs = _types(stmt, j, others, raw)
    if mine is None or theirs is None:
        return False
    return all((m == t and m in _EXACT) or (m in _SIGNED and t in _SIGNED) for m, t in zip(mine, theirs))


def _on_sides(on, ref: str, cols: list[str]) -> list[exp.Expression] | None:
    """For each key column ``ref.col``: the column it equals in an ``ON`` conjunct (another FROM item's,
    qualified), or None where one has none."""
    if on is None:
        return None
    conj = list(on.flatten()) if isinstance(on, exp.And) else [on]
    out = []
    for col in cols:
        hit = None
        for c in conj:
            if not isinstance(c, exp.EQ):
                continue
            for mine, other in ((c.this, c.expression), (c.expression, c.this)):
                if (
                    isinstance(mine, exp.Column)
                    and mine.table.lower() == ref
                    and mine.name.lower() == col.lower()
                    and isinstance(other, exp.Column)
                    and other.table
                    and other.table.lower() != ref
                ):
                    hit = other
        if hit is None:
            return None
        out.append(hit.copy())
    return out


def _types(stmt: exp.Select, n_joins: int, exprs: list[exp.Expression], raw) -> list[str] | None:
    """DuckDB's types of ``exprs`` over ``stmt``'s FROM item and first ``n_joins`` joins (bound, not run);
    None where they do not bind."""
    sel = exp.Select(expressions=exprs)
    sel.set("from_", stmt.args["from_"].copy())
    sel.set("joins", [jn.copy() for jn in (stmt.args.get("joins") or [])[:n_joins]])
    with_ = stmt.args.get("with_")
    if with_ is not None:
        sel.set("with_", with_.copy())
    try:
        return [str(t) for t in raw.sql(sel.sql(dialect=DIALECT)).types]
    except duckdb.Error:
        return None
