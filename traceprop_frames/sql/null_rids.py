"""A source row without a row id: a NULL ``__tp_rid`` read by a lineage question raises, never drops.

A row inserted into a traced table outside the traced connection (``con.raw.execute("INSERT INTO t (k, v)
VALUES (3, 1000)")``, a cursor, another connection) has a NULL ``__tp_rid``: it has no source row. A query
that reads it (its ``sum(v)`` includes 1000) cannot give a lineage that reproduces it, so the lineage
question raises :class:`~traceprop_frames.errors.SourceChangedError` naming the table, never a lineage
without it.

A NULL id also means "no row" where an outer join found none (``t LEFT JOIN u``: ``u.__tp_rid`` of an
unmatched row; ``POSITIONAL JOIN`` pads the shorter side), and a table made by ``CREATE TABLE ... AS`` over
an outer join stores those NULLs in its lists. So a NULL id raises only where nothing else can have made
it: the hidden columns as read hold a NULL id (Arrow's ``null_count``, kept with the array: no cost where
there is none), then, on that path only, the statement is parsed and NULLs are reported unless it has an
outer or positional join, or a NULL sits inside a list while the statement reads a table's stored lists
(``__tp_lin``). Not detected, therefore: a row inserted outside the connection that a query reads through
an outer join, or through a table's stored lists (made by ``CREATE TABLE ... AS`` from it).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import sqlglot
from sqlglot import exp

from traceprop_frames.errors import SourceChangedError
from traceprop_frames.sql.dialect import DIALECT
from traceprop_frames.sql.rewrite import LIN, RID

_OUTER_SIDES = frozenset(["LEFT", "RIGHT", "FULL"])


def null_ids(col) -> str | None:
    """ "id" where hidden column ``col`` (Arrow BIGINT or LIST<BIGINT>, or a pandas Series of ids) holds a
    NULL id, "list" where a NULL id is inside a list, None where it has none (metadata only for Arrow;
    a pandas nullable Int64 column's mask is scanned, as reading its ids does anyway)."""
    if isinstance(col, (pa.Array, pa.ChunkedArray)):
        chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
        if pa.types.is_integer(col.type):
            return "id" if col.null_count else None
        if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
            if any(c.values.null_count and c.flatten().null_count for c in chunks):
                return "list"
        return None
    if isinstance(col.dtype, np.dtype) and col.dtype.kind in "iu":  # numpy int64: no NULL
        return None
    return "id" if col.isna().any() else None  # (DuckDB's .df(): Int64, its mask scanned)


def found(cols, sql: str, catalog, names=None) -> SourceChangedError | None:
    """The error to raise where hidden columns ``cols`` of statement ``sql`` hold a NULL id no join made
    (see the module), else None. ``catalog``: called (only then) for the catalog (its ``hidden``: table
    -> hidden column kind); ``names``: the columns' names where ``cols`` do not carry them (Arrow)."""
    cols = list(cols)
    names = [_name(c) for c in cols] if names is None else [n.lower() for n in names]
    kinds = [null_ids(c) for c in cols]
    if not any(kinds):
        return None
    hidden = catalog().hidden
    try:
        stmt = sqlglot.parse_one(sql, dialect=DIALECT)
    except sqlglot.errors.ParseError:
        return None  # (not expected: the statement ran) not known to be no join's NULL
    read = sorted({t.name.lower() for t in stmt.find_all(exp.Table) if hidden.get(t.name.lower())})
    outer = [j for j in stmt.find_all(exp.Join) if _outer(j)]
    for name, kind in zip(names, kinds):
        if kind == "id" and outer:  # an outer join: NULL unless it reads a table on its preserved side
            table = _preserved_table(stmt, name, len(outer))
            if table is not None:
                return error([table])
        elif kind == "id" or (kind == "list" and not outer and not any(hidden.get(t) == LIN for t in read)):
            return error([t for t in read if hidden.get(t) == RID] or read)  # (stored lists: see module)
    return None


def _outer(j: exp.Join) -> bool:
    return str(j.side or "").upper() in _OUTER_SIDES or str(j.kind or "").upper() == "POSITIONAL"


def _name(col) -> str | None:
    """A pandas Series' name, lower case (an Arrow column has none)."""
    name = None if isinstance(col, (pa.Array, pa.ChunkedArray)) else getattr(col, "name", None)
    return str(name).lower() if name is not None else None


def _preserved_table(stmt: exp.Expression, name: str | None, n_outer: int) -> str | None:
    """The table whose ``__tp_rid`` hidden column ``name`` is, where every outer join of ``stmt`` is in the
    SELECT that reads it and that table is on none's NULL side (then its NULL is the table's own); None
    where not known so (the NULL may be an outer join's "no row")."""
    for sel in stmt.find_all(exp.Select):
        hit = [e for e in sel.expressions if e.alias_or_name.lower() == name]
        c = hit[0].this if hit and isinstance(hit[0], exp.Alias) else (hit[0] if hit else None)
        if not isinstance(c, exp.Column) or c.name != RID or not c.table:
            continue
        items = [sel.args.get("from_")] + [j for j in sel.args.get("joins") or []]
        aliases = [it.this.alias_or_name.lower() if it is not None else None for it in items]
        if c.table.lower() not in aliases or not isinstance(
            items[aliases.index(c.table.lower())].this, exp.Table
        ):
            return None
        p, joins = aliases.index(c.table.lower()), items[1:]
        if sum(_outer(j) for j in joins) != n_outer:  # an outer join elsewhere (around it): not known
            return None
        for i, j in enumerate(joins, start=1):
            side, kind = str(j.side or "").upper(), str(j.kind or "").upper()
            if (
                kind == "POSITIONAL"
                or side == "FULL"
                or (side == "LEFT" and i == p)
                or (side == "RIGHT" and i > p)
            ):
                return None
        return items[p].this.name.lower()
    return None


def in_table(table: pa.Table, n_data: int, n_frames: int, sql: str, catalog) -> SourceChangedError | None:
    """:func:`found` for an eager result ``table``: its hidden columns after ``n_data`` data columns, less
    ``n_frames`` window frames' (three position columns each)."""
    at = range(n_data, table.num_columns - 3 * n_frames)
    return found(map(table.column, at), sql, catalog, [table.column_names[i] for i in at])


def check(cols, sql: str, catalog, names=None) -> None:
    """Raise the error :func:`found` gives (a lineage question reading ``cols`` now)."""
    err = found(cols, sql, catalog, names)
    if err is not None:
        raise err


def raising(err: SourceChangedError):
    """A lineage build (or a part for ``join_refs.compose``) that raises ``err``: an eager result keeps
    its data; the question about its lineage raises."""

    def build():
        raise err

    return build


def error(tables: list[str]) -> SourceChangedError:
    """The error for NULL row ids read from ``tables``."""
    names = ", ".join(tables) if tables else "a table the query read"
    return SourceChangedError(
        f"{names}: a row this lineage needs has no source row id ({RID} is NULL): rows inserted outside "
        "the traced connection (through con.raw, a cursor or another connection) have no source row, so "
        "the lineage cannot be computed exactly; insert through con.execute (into a table made by CREATE "
        "TABLE ... AS), or reload the table with con.read_* and run the query again"
    )
