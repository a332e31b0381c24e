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
outer or positional join, or a NULL sits inside a list while the statement reads stored lists (``__tp_lin``)
of a table not known to be made without an outer join (:class:`InnerLists`: this connection records, per
``CREATE TABLE ... AS`` / ``INSERT``, whether its statement had one). Where an outer join's NULLs were let
through, the traced tables read are counted for rows without an id (:func:`_outer_rows`, only then); a
table that has one makes a flat id column be asked again per row (matched by the join: the row's), and
an eager grouped outer join's lists are asked again per group (:func:`_matched_in_lists`); any other
shape raises (sufficient, not exact). Witness rows (a subquery's side query or witness sets) are checked
the same way. A table made here over an outer join is recorded by a count of the tables it reads
(:meth:`InnerLists.made`): none with a row without an id, its NULLs are the join's; some, any NULL in its
lists raises. Not detected: a NULL inside stored lists of a table made by another connection, in an
earlier session, or over an outer join from a table made by an inner join.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import sqlglot
from sqlglot import exp

from traceprop_frames.errors import SourceChangedError
from traceprop_frames.sql.dialect import DIALECT, quote_name
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


def found(
    cols, sql: str, catalog, names=None, inner=None, tables=(), raw=None, joined=False
) -> SourceChangedError | None:
    """The error to raise where hidden columns ``cols`` of statement ``sql`` hold a NULL id no join made
    (see the module), else None. ``catalog``: called (only then) for the catalog (its ``hidden``: table
    -> hidden column kind); ``names``: the columns' names where ``cols`` do not carry them (Arrow);
    ``inner``: the connection's :class:`InnerLists` (stored lists no outer join wrote); ``tables``: the
    tables to name where ``sql`` reads none with lineage (a witness side query over a temp table);
    ``raw``: the DuckDB connection, to tell an outer join's NULLs from a row's (:func:`_outer_rows`);
    ``joined``: ``sql`` reads what an outer join made elsewhere (a witness side query over a temp table
    of the statement's FROM): its NULLs are treated as an outer join's, ``tables`` counted."""
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
    outer = [j for j in stmt.find_all(exp.Join) if _outer(j)] or ([None] if joined else [])
    for name, kind in zip(names, kinds):
        if kind == "id" and outer:  # an outer join: NULL unless it reads a table on its preserved side
            table = _preserved_table(stmt, name, len(outer))
            if table is not None:
                return error([table])
        elif kind == "id" or (kind == "list" and not outer and not any(hidden.get(t) == LIN for t in read)):
            return error([t for t in read if hidden.get(t) == RID] or read or sorted(tables))  # (see module)
        elif kind == "list" and not outer and inner is not None:  # stored lists read: an inner join's?
            if all(t in inner.tables for t in read if hidden.get(t) == LIN):
                rids = {t for t in read if hidden.get(t) == RID}.union(
                    *(inner.tables[t] for t in read if t in inner.tables)
                )
                return error(sorted(rids) or read)
    if raw is None or not outer:
        return None
    if inner is not None and "list" in kinds:  # an outer join over stored lists that may hold a row's NULL
        bad = [  # (only tables that store lists: a table made one row for one keeps a row id column)
            t for t in read if t in inner.tables and hidden.get(t) == LIN and _lists_hold_null(raw, t)
        ]
        if bad:
            return error(sorted(set().union(*(inner.tables[t] for t in bad))) or bad)
    return _outer_rows(raw, stmt, names, kinds, sorted(set(read) | set(tables)), hidden)


def _outer_rows(raw, stmt, names, kinds, read, hidden) -> SourceChangedError | None:
    """Where an outer join's NULLs were let through by :func:`found`: the traced tables read that hold a
    row without an id (one count each, run only where an outer join gave NULL ids); none: every NULL is a
    join's "no row". Else a flat id column of a base table on a NULL side is asked again per row (matched,
    its ``rowid`` not NULL, with a NULL id: the row's); a list, or any other shape, raises (sufficient:
    such a table has a row without an id, and the join may have read it)."""
    bad = []
    for t in (t for t in read if hidden.get(t) == RID):
        if raw.execute(f"SELECT count(*) FROM {quote_name(t)} WHERE {RID} IS NULL").fetchall()[0][0]:
            bad.append(t)
    if not bad:
        return None
    for name, kind in zip(names, kinds):
        if kind == "list" and not _matched_in_lists(raw, stmt, name, bad, hidden):
            continue  # every NULL in these lists: a join's "no row"
        if kind is not None and (kind != "id" or _matched_null(raw, stmt, name, bad, hidden)):
            return error(bad)
    return None


_LIST_NODES = (exp.Alias, exp.ArrayConcat, exp.ArrayAgg, exp.Column, exp.Identifier)


def _matched_in_lists(raw, stmt: exp.Expression, name: str | None, bad: list[str], hidden: dict) -> bool:
    """Whether lists column ``name`` of ``stmt`` may hold a NULL id of a row a join matched, for the one
    shape an eager grouped outer join writes: ``list_concat`` of ``array_agg(alias.__tp_rid)`` over base
    tables of its SELECT (no CTE): that SELECT run again, alone (every group), with the column as the
    ``bool_or`` of ``alias.__tp_rid IS NULL AND alias.rowid IS NOT NULL`` over the aliases of ``bad``
    tables (only the row without an id a join matched is true). True where not known (another shape,
    or DuckDB refuses it)."""
    root = stmt.copy()
    ctes = {c.alias_or_name.lower() for c in root.find_all(exp.CTE)}
    for sel in root.find_all(exp.Select):
        hit = [e for e in sel.expressions if e.alias_or_name.lower() == name]
        if not hit:
            continue
        col = hit[0].this if isinstance(hit[0], exp.Alias) else hit[0]
        if not all(isinstance(n, _LIST_NODES) for n in col.walk()):
            return True
        items = [sel.args.get("from_")] + list(sel.args.get("joins") or [])
        tables = {it.this.alias_or_name.lower(): it.this for it in items if it is not None}
        asks = []
        for agg in list(col.find_all(exp.ArrayAgg)):
            c = agg.this
            t = tables.get(c.table.lower()) if isinstance(c, exp.Column) and c.table else None
            if not isinstance(t, exp.Table) or c.name != RID or t.name.lower() in ctes:
                return True
            if t.name.lower() in bad:
                a = quote_name(c.table)
                asks.append(f"bool_or({a}.{RID} IS NULL AND {a}.rowid IS NOT NULL)")
            elif hidden.get(t.name.lower()) != RID:
                return True
        if not asks:
            return False  # the NULLs are of tables without rows lacking an id: the join's
        hit[0].replace(sqlglot.parse_one(" OR ".join(asks), dialect=DIALECT).as_(name))
        return _any_row(raw, root, sel, name)
    return True


def _matched_null(raw, stmt: exp.Expression, name: str | None, bad: list[str], hidden: dict) -> bool:
    """Whether hidden column ``name`` of ``stmt`` (``alias.__tp_rid`` in the SELECT that makes it, the
    statement's own or one inside: a lazy backward query's derived table) may hold a NULL id of a row a
    join matched: that SELECT run again, alone (all its rows: a superset of those the statement keeps),
    with the column as ``alias.__tp_rid IS NULL AND alias.rowid IS NOT NULL``. True where not known
    (another shape, or DuckDB refuses it)."""
    root = stmt.copy()
    for sel in root.find_all(exp.Select):
        hit = [e for e in sel.expressions if e.alias_or_name.lower() == name]
        c = hit[0].this if hit and isinstance(hit[0], exp.Alias) else (hit[0] if hit else None)
        if c is None:
            continue
        if not isinstance(c, exp.Column) or not c.table:
            return True
        items = [sel.args.get("from_")] + list(sel.args.get("joins") or [])
        tables = {it.this.alias_or_name.lower(): it.this for it in items if it is not None}
        t = tables.get(c.table.lower())
        if isinstance(t, exp.Subquery) and c.name.lower() == name:
            continue  # passed on from a derived table: its SELECT (found next) makes it
        if not isinstance(t, exp.Table) or c.name != RID:
            return True
        if t.name.lower() in {c.alias_or_name.lower() for c in root.find_all(exp.CTE)}:
            return True  # a CTE's ids (no rowid to tell a matched row by)
        if t.name.lower() not in bad:
            return hidden.get(t.name.lower()) != RID  # a traced table without such rows: the join's NULL
        rowid = exp.column("rowid", table=c.table)
        c.replace(exp.and_(exp.column(RID, table=c.table).is_(exp.null()), exp.not_(rowid.is_(exp.null()))))
        return _any_row(raw, root, sel, name)
    return True


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


def in_table(
    table: pa.Table, n_data: int, n_frames: int, sql: str, catalog, inner=None, raw=None
) -> SourceChangedError | None:
    """:func:`found` for an eager result ``table``: its hidden columns after ``n_data`` data columns, less
    ``n_frames`` window frames' (three position columns each)."""
    at = range(n_data, table.num_columns - 3 * n_frames)
    return found(map(table.column, at), sql, catalog, [table.column_names[i] for i in at], inner, raw=raw)


def check(cols, sql: str, catalog, names=None, inner=None, raw=None) -> None:
    """Raise the error :func:`found` gives (a lineage question reading ``cols`` now)."""
    err = found(cols, sql, catalog, names, inner, raw=raw)
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


class InnerLists:
    """The tables this connection made (``CREATE TABLE ... AS``) whose stored lists no outer join wrote:
    a NULL id inside their lists is a source row's (one without an id), not a join's "no row"; each with
    the loaded tables its lists' ids come from (named by the error); :attr:`joins`: those made over an outer
    join from tables without a row lacking an id (their NULLs are a join's). A table in neither (made by
    another connection, in an earlier session, over an outer join from an inner-recorded table, or dropped
    here since) keeps the rule that a NULL inside stored lists may be a join's. Each statement's text is parsed once (a repeated CTAS: a lookup)."""

    def __init__(self) -> None:
        self.tables: dict[str, frozenset[str]] = {}
        self.joins: set[str] = set()  # made over an outer join from tables without rows lacking an id
        self._reads: dict[str, tuple[bool, frozenset[str]]] = {}

    def made(self, target: str, text: str, hidden: dict | None, insert: bool = False, raw=None) -> None:
        """``target`` made (or, ``insert``, added to) by statement ``text`` (``CREATE TABLE ... AS`` /
        ``INSERT INTO ... SELECT``, as the user wrote it); ``hidden``: the catalog's table -> hidden column
        kind before it ran (None: not known, the table is left out). A statement with an outer join whose
        stored lists it reads are all of :attr:`joins` (or none): the loaded tables it reads are counted
        for rows without an id (``raw()``: the connection, asked only then): none, every NULL in its lists is a join's
        (:attr:`joins`); some, any NULL in them raises (:attr:`tables`: sufficient, not exact)."""
        target = target.lower()
        was_joins = target in self.joins
        self.joins.discard(target)
        if hidden is None:
            self.tables.pop(target, None)
            return
        hit = self._reads.get(text)
        if hit is None:
            q = sqlglot.parse_one(text, dialect=DIALECT)
            q = q.expression if isinstance(q, (exp.Create, exp.Insert)) else q
            tables = frozenset(t.name.lower() for t in q.find_all(exp.Table))
            hit = self._reads[text] = (any(_outer(j) for j in q.find_all(exp.Join)), tables)
        outer, read = hit
        sources = {t for t in read if hidden.get(t) == RID}
        unknown, joined = False, False
        for t in read:
            if t in self.tables:
                sources |= self.tables[t]
            elif t in self.joins:
                joined = True  # lists whose NULLs are a join's (no row without an id)
            elif hidden.get(t) == LIN:
                unknown = True  # lists of unknown making: their NULLs may be a join's
        joined = joined or (insert and was_joins)  # (its NULLs so far: a join's)
        if insert and not (target in self.tables or was_joins):
            unknown = True  # rows of unknown making already in it
        if (
            unknown
            or ((outer or joined) and any(t in self.tables for t in read))
            or ((outer or joined) and raw is None)
        ):
            self.tables.pop(target, None)  # (an outer join over lists that may hold a row's NULL: not known)
        elif outer or joined:
            try:
                held = any(_has_null_rid(raw(), t) for t in sorted(sources))
            except duckdb.Error:  # (a source dropped since): not known
                self.tables.pop(target, None)
                return
            if held:
                self.tables[target] = frozenset(
                    sources | (self.tables.get(target, set()) if insert else set())
                )
            elif insert and target in self.tables:
                self.tables.pop(target, None)  # its NULLs: a row's (not counted) and now a join's: not known
            else:
                self.tables.pop(target, None)
                self.joins.add(target)
        else:
            self.tables[target] = frozenset(sources | (self.tables.get(target, set()) if insert else set()))

    def dropped(self, targets) -> None:
        for t in targets:
            self.tables.pop(t.lower(), None)
            self.joins.discard(t.lower())


def _lists_hold_null(raw, table: str) -> bool:
    """Whether the stored lists of ``table`` hold a NULL id (a scan of its lists: run only where an
    outer join's result read them and shows a NULL inside a list)."""
    q = f"SELECT count(*) FROM {quote_name(table)} WHERE list_count({LIN}) < len({LIN})"
    return bool(raw.execute(q).fetchall()[0][0])


def _has_null_rid(raw, table: str) -> bool:
    """Whether loaded table ``table`` holds a row without an id (one ``count``)."""
    return bool(raw.execute(f"SELECT count(*) FROM {quote_name(table)} WHERE {RID} IS NULL").fetchall()[0][0])


def in_lists(table: str, lists: pa.Table, rows: np.ndarray, inner) -> SourceChangedError | None:
    """The error where ``table`` (in ``inner``: its stored lists no outer join wrote) holds a NULL id in
    the list of a row the result reads; ``lists``: its ``SELECT rowid, __tp_lin``; ``rows``: the
    positions in it read (-1: none). Metadata only unless the lists hold a NULL id."""
    if inner is None or table not in inner.tables or null_ids(lists.column(1)) != "list":
        return None
    col = lists.column(1)
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    off = np.asarray(arr.offsets, dtype=np.int64)
    bad = np.concatenate([[0], np.cumsum(~arr.values.is_valid().to_numpy(zero_copy_only=False))])
    nulls = bad[off[1:]] - bad[off[:-1]]
    rows = rows[rows >= 0]
    return error(sorted(inner.tables[table]) or [table]) if nulls[rows].any() else None


def _any_row(raw, root, sel, name: str) -> bool:
    """Whether column ``name`` of ``sel`` (changed to the test asked; its CTEs from ``root`` where it is a
    SELECT inside) is true on some row; True where DuckDB cannot run it (sufficient: the question raises)."""
    with_ = root.args.get("with_") if sel is not root else None
    sub = sel.copy()
    if with_ is not None:
        sub.set("with_", with_.copy())
    q = f"SELECT bool_or({quote_name(name)}) FROM ({sub.sql(dialect=DIALECT)}) AS __tp_q"
    try:
        return bool(raw.execute(q).fetchall()[0][0])
    except duckdb.Error:
        return True
