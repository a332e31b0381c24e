"""Lazy capture: a result row named by an output column's value, where that value is unique in the result.

A lazy ``rows`` result names each row by its FROM items' keys (:mod:`traceprop_frames.sql.lazy`); where
one loaded table's row id is the only key left (:mod:`traceprop_frames.sql.lazy_determined`), the capture
statement carries it (``a.__tp_rid AS __tp_k0``). Fetching it costs DuckDB and pandas about as much as a
column of the result (the credit ETL's final query: ≈ 1 ms of ≈ 21 ms). Where the statement outputs a plain
column of that table (``a.*``, ``a.c``) whose values are distinct among the result's rows, the value names
the row as well: the general backward query re-runs the statement's FROM and WHERE filtered on that
column, and each value finds the one row the result had (same tables: fingerprinted, a change raises
first; same statement: deterministic, see :func:`candidates`). For one or a few rows asked, the pinned
query (FROM without the WHERE, filtered on the values: ``lazy._pinned``) runs first: its rows include the
result's, so a value it finds once is that row; a value found more than once (a row the WHERE dropped
repeats it) sends the request to the general query, as a repeated key did before.

Uniqueness is known only once the result is there, so it is checked on every result:
- the first run carries the row id, and checks the candidate columns in its frame; the first column of
  integers, without NULLs, whose values are distinct, is taken;
- later runs of the same text (and plan) omit the row id, and check that column in the frame returned;
- a check that fails (NULLs or duplicates now: the data changed) runs the statement again with the row
  id and returns that frame (the same statement on the same data), and that text is not tried again.
The backward query also checks that each value found one row (otherwise: ``SourceChangedError``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from sqlglot import exp

from traceprop_frames.sql.dialect import VOLATILE
from traceprop_frames.sql.lazy import Shape
from traceprop_frames.sql.rewrite import RID

# what may give another row set when run again on the same tables: not named by value
_VOLATILE = (*VOLATILE, exp.TableSample, exp.Limit, exp.Offset, exp.Fetch, exp.Window)


@dataclass
class UniqueKey:
    """Per query text: the row-id shape it was planned for, the candidate output columns (position,
    column of the keyed table, the output's name), the capture statement without the row id, and, once a
    first run found one unique, the by-value shape (``on``)."""

    shape: Shape
    candidates: list[tuple[int, str, str]]
    sql: str
    by_value: Shape | None = None
    on: bool = False
    tried: bool = False


def candidates(stmt: exp.Select, shape: Shape, cat, tables: set[str]) -> list[tuple[int, str, str]]:
    """(output position, table column, output name) of each plain output column of the one table whose
    row id names ``stmt``'s rows (a base table: one of ``tables``, not a view, whose query could hold
    what follows); [] where there is none, or where the statement may not give the same rows when run
    again (LIMIT / OFFSET / SAMPLE, random(), now(), unknown functions, windows)."""
    if shape.mode != "rows" or len(shape.items) != 1 or shape.items[0][1] != RID:
        return []
    if stmt.find(*_VOLATILE) is not None or stmt.args.get("qualify") is not None:
        return []
    ref = shape.items[0][0].name.lower()
    from_ = stmt.args.get("from_")
    items = [from_.this] + [j.this for j in stmt.args.get("joins") or []]
    table = next((t for t in items if isinstance(t, exp.Table) and t.alias_or_name.lower() == ref), None)
    if table is None or table.name.lower() not in tables or table.args.get("db"):
        return []
    cols = cat.columns.get(table.name.lower())
    out: list[tuple[int, str, str]] = []
    pos = 0
    for e in stmt.expressions:
        inner = e.this if isinstance(e, exp.Alias) else e
        if isinstance(inner, exp.Star):
            return []  # columns of every item: not followed
        if isinstance(inner, exp.Column) and inner.is_star:
            star = inner.this
            if inner.table.lower() != ref or cols is None or any(star.args.values()):
                return []  # another item's star, or EXCLUDE / REPLACE / RENAME: positions not followed
            out += [(pos + i, c, c) for i, c in enumerate(cols)]
            pos += len(cols)
            continue
        if isinstance(inner, exp.Column) and inner.table.lower() == ref:
            out.append((pos, inner.name, e.alias_or_name))
        pos += 1
    return out


def choose(spec: UniqueKey, df) -> None:
    """After the first run (row id carried): take the first candidate column of ``df`` (the result's
    frame) that holds distinct integers without NULLs, under the name the statement gives it."""
    spec.tried = True
    cols, names = df.iloc(axis=1), df.columns
    for pos, col, name in spec.candidates:
        if pos >= len(names) or str(names[pos]).lower() != name.lower():
            return  # the output is not laid out as read from the statement: not named by value
        values = cols[pos].to_numpy()
        if values.dtype.kind in "iu" and distinct(values):
            ref = spec.shape.items[0][0]
            spec.by_value = Shape("rows", [(ref, col)], 0, spec.shape.keyed, [pos], True)
            spec.on = True
            return


def checked_keys(keys: pa.Table) -> pa.Table | None:
    """The result's key column (its by-value candidate), where it holds distinct integers without NULLs;
    None otherwise (the statement is then run again with the row id). ``keys`` is already a copy, not
    the frame's memory (the user may change the frame: ``Connection._capture_frame`` copies it)."""
    col = keys.column(0)
    if col.null_count or not pa.types.is_integer(col.type):
        return None
    if not distinct(col.to_numpy()):
        return None
    return keys


def distinct(v: np.ndarray) -> bool:
    """True if the integers ``v`` are pairwise distinct: increasing, or one mark per value over a dense
    range (as many marks set as values; ≈ 32 us for 20,000, a count per value ≈ 44 us), else sorted."""
    n = len(v)
    if n < 2:
        return True
    if bool((v[1:] > v[:-1]).all()):
        return True
    lo, hi = int(v.min()), int(v.max())
    if hi - lo < 4 * n + 1024:
        seen = np.zeros(hi - lo + 1, dtype=np.bool_)
        seen[(v - v.dtype.type(lo)).astype(np.intp, copy=False)] = True
        return int(np.count_nonzero(seen)) == n
    s = np.sort(v)
    return not bool((s[1:] == s[:-1]).any())
