"""Lazy lineage capture: a query records what it needs to answer later; lineage is a backward query.

``tpf.connect(capture="lazy")`` runs a query almost as it is and keeps, per result row, only a cheap
*key* that names the row again later:

- ``group``: a ``GROUP BY`` query keeps its group-key values (one row per group);
- ``rows``: a query that neither aggregates nor deduplicates keeps, per FROM item, a loaded table's
  row id (``__tp_rid``; ``rowid`` for a table made by ``CREATE TABLE ... AS``), or the group-key
  columns of a CTE / derived table that groups (nothing for a one-row aggregate);
- ``one``: an aggregate without ``GROUP BY`` (or a query without FROM) has at most one row: no key.

Asking for lineage (``df.tp.sources()``, ``trace()``, ``rows_from_source()``, saving it) runs the
*eager* rewrite of the same query (see :mod:`traceprop_frames.sql.rewrite`) as a backward query,
joined on the keys of just the rows asked (and filtered by them, so DuckDB reads only those groups
or rows where it can), and builds their lineage exactly as eager capture does: the answers are the
same sets. A plain ``GROUP BY`` whose lineage is ``list()`` of its tables' row ids lists its member
rows' ids directly instead (the union is the same set); an ``EXISTS`` whose witnesses a member lists
joins them instead (:func:`_exists_joined`). The backward plan (:class:`BackwardPlan`) and its witness
sets are cached per query text and table state (a table changed or replaced: another key, and the
fingerprint check raises first); the first request plans only the query for one row, the queries for
several rows wait until asked. Other query shapes (DISTINCT, set operations, window
functions at the top, a join with a derived table that does not group) are captured eagerly.

The tables a query read are fingerprinted when it runs (DuckDB's table oid, and a per-connection
count of the statements that changed them); a backward query on changed tables raises
:class:`~traceprop_frames.errors.SourceChangedError`, never a wrong row. Changes made through
``con.raw`` are seen only when they replace the table (its oid changes). Closing the connection
resolves the lineage of results still alive, so it survives the connection.
"""

from __future__ import annotations

import functools
import itertools
import weakref
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
from sqlglot import exp

from traceprop_frames.errors import SourceChangedError, UnknownRowError
from traceprop_frames.lineage import OpNode, RowLineage
from traceprop_frames.lineage.sources import ROW_BITS, ROW_MASK
from traceprop_frames.sql.deferred_oids import UNREAD
from traceprop_frames.sql.dialect import DIALECT
from traceprop_frames.sql.flat_exists import grouped
from traceprop_frames.sql.lazy_lateral import lateral_witnesses
from traceprop_frames.sql.rewrite import (
    LIN,
    RID,
    Catalog,
    _has_agg,
    _windows_in,
    rewrite_query,
    select_like_roots,
)
from traceprop_frames.sql.shared import KEY_BITS, PRESENT, key_segments, resolve_markers, with_present
from traceprop_frames.sql.sources import MARKER_SID

_LITERAL_ROWS = 64  # up to this many rows asked: also filter the backward query by their key values
_LITERAL_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
                  "UINTEGER", "UBIGINT", "DECIMAL", "VARCHAR", "DATE", "BOOLEAN", "DOUBLE", "FLOAT")  # fmt: skip
_PLANS = 64  # backward plans (and their witness sets) kept per connection
_PIN = "__tp_pin__"  # where one row's key values go in a backward query for that row
_PIN_COMBOS = 4096  # rows of a join asked together: pinned while their keys' combinations are this few
_names = itertools.count()
_UNREAD_NOTE = (  # see sql.deferred_oids
    " (A statement ran on this database outside the traced connection - through a cursor or another "
    "connection - after the query, before the state of its tables was recorded: they count as changed.)"
)


@dataclass
class Shape:
    """How a query's rows are named again: ``mode`` and, for ``rows``, (table reference, id column)."""

    mode: str  # "group" | "rows" | "one"
    items: list[tuple[exp.Identifier, str]]
    n_keys: int = 0
    keyed: dict = field(default_factory=dict)  # pending tables read (sql.lazy_tables) -> key columns
    reused: list | None = None  # per key: the output column holding it, None if appended (sql.lazy_reuse)
    by_value: bool = False  # a row named by an output column's unique value, not its row id (sql.lazy_unique)


def shape_of(stmt: exp.Expression, cat: Catalog, tables: set[str], keyed: dict | None = None) -> Shape | None:
    """The lazy shape of a top-level query, or None where lazy capture does not apply (eager then).

    ``tables`` are the names of DuckDB base tables (they have ``rowid``); ``keyed`` maps tables whose
    rows are named by key columns instead (pending lazy CTAS tables: their rowids move when filled)."""
    shape = _shape_of(stmt, cat, tables, keyed or {})
    if shape is not None:
        shape.keyed = dict(keyed or {})
    return shape


def _shape_of(stmt: exp.Expression, cat: Catalog, tables: set[str], keyed: dict) -> Shape | None:
    if not isinstance(stmt, exp.Select) or stmt.args.get("distinct") is not None:
        return None
    if any(True for root in select_like_roots(stmt) for _ in _windows_in(root)):
        return None
    group = stmt.args.get("group")
    if group is not None:
        if any(group.args.get(k) for k in ("all", "rollup", "cube", "grouping_sets", "totals")):
            return None
        exprs = group.expressions
        if not exprs or any(isinstance(e, exp.Literal) for e in exprs):
            return None
        return Shape("group", [])
    aggs = cat.aggregates
    having = stmt.args.get("having")
    if any(_has_agg(e, aggs) for e in stmt.expressions) or (having is not None and _has_agg(having, aggs)):
        return Shape("one", [])
    return _row_shape(stmt, cat, tables, keyed)


def _row_shape(stmt: exp.Select, cat: Catalog, tables: set[str], keyed: dict) -> Shape | None:
    from_ = stmt.args.get("from_")
    if from_ is None:
        return Shape("one", [])
    ctes = {c.alias_or_name.lower(): c.this for c in (stmt.args.get("with_") or exp.With()).expressions}
    joins = stmt.args.get("joins") or []
    if any((j.args.get("kind") or "").upper() in ("SEMI", "ANTI") or j.args.get("method") for j in joins):
        return None
    items: list[tuple[exp.Identifier, str]] = []
    for t in [from_.this] + [j.this for j in joins]:
        keys = _item_keys(t, ctes, cat, tables, keyed)
        if keys is None:
            return None
        items += keys
    return Shape("rows", items)


def _item_keys(
    t, ctes: dict, cat: Catalog, tables: set[str], keyed: dict
) -> list[tuple[exp.Identifier, str]] | None:
    """(table reference, column) pairs naming a FROM item's row: a table's row id; for a CTE or derived
    table that groups, its group-key columns (one row per group; none for a one-row aggregate)."""
    alias = t.args.get("alias")
    if alias is not None and alias.columns:
        return None
    if isinstance(t, exp.Subquery) and isinstance(t.this, exp.Select) and alias is not None:
        return _grouped_keys(t.this, alias.this, cat)
    if not isinstance(t, exp.Table) or not isinstance(t.this, exp.Identifier) or t.args.get("db"):
        return None
    ref = alias.this if alias is not None and alias.this else t.this
    name = t.name.lower()
    if name in ctes:
        return _grouped_keys(ctes[name], ref, cat) if isinstance(ctes[name], exp.Select) else None
    if name in keyed:
        return [(ref, c) for c in keyed[name]]
    kind = cat.hidden.get(name)
    if kind is None or (kind == LIN and name not in tables):
        return None
    return [(ref, RID if kind == RID else "rowid")]


def _grouped_keys(
    body: exp.Select, ref: exp.Identifier, cat: Catalog
) -> list[tuple[exp.Identifier, str]] | None:
    """The output columns of a grouping ``body`` that hold its group keys, or None."""
    group = body.args.get("group")
    if group is None:
        aggs = cat.aggregates
        one = any(_has_agg(e, aggs) for e in body.expressions) and body.args.get("distinct") is None
        return [] if one else None
    if any(group.args.get(k) for k in ("all", "rollup", "cube", "grouping_sets", "totals")):
        return None
    out = []
    for g in group.expressions:
        hit = None
        for e in body.expressions:
            inner = e.this if isinstance(e, exp.Alias) else e
            if _has_agg(inner, cat.aggregates):
                continue
            named = isinstance(g, exp.Column) and not g.table and e.alias_or_name.lower() == g.name.lower()
            if inner == g or named:
                hit = e.alias_or_name
                break
        if not hit:
            return None
        out.append((ref, hit))
    return out


def key_columns(sel: exp.Select, shape: Shape) -> list[exp.Expression]:
    """The key expressions of ``sel``'s rows (its GROUP BY expressions, or its tables' row ids)."""
    if shape.mode == "group":
        return [e.copy() for e in sel.args["group"].expressions]
    if shape.mode == "rows":
        return [exp.Column(this=exp.to_identifier(col), table=ref.copy()) for ref, col in shape.items]
    return []


def add_keys(sel: exp.Select, shape: Shape) -> int:
    """Append the key columns ``__tp_k0, __tp_k1, ...`` to ``sel``; returns how many."""
    keys = key_columns(sel, shape)
    for i, k in enumerate(keys):
        sel.append("expressions", exp.alias_(k, f"__tp_k{i}"))
    return len(keys)


def read_tables(stmt: exp.Expression, cat: Catalog) -> list[str]:
    """Names of the traced tables ``stmt`` reads (CTE names excluded), sorted."""
    ctes = {c.alias_or_name.lower() for c in stmt.find_all(exp.CTE)}
    names = {
        t.name.lower()
        for t in stmt.find_all(exp.Table)
        if isinstance(t.this, exp.Identifier) and t.name.lower() in cat.hidden and t.name.lower() not in ctes
    }
    return sorted(names)


class Resolver:
    """Answers the lineage of a lazily captured result's rows by backward queries (one per request).

    Holds the connection, the statement's text, the result's key columns (an Arrow table) and the
    fingerprint of the tables read. Once every row is resolved, the whole lineage is kept.
    """

    def __init__(self, con, text: str, keys: pa.Table, key_types: list[str], shape: Shape, node, fp):
        self.con, self.text, self.shape = con, text, shape
        self.keys, self.key_types = keys, key_types
        self.node = node
        self.fingerprint = fp
        self.n = keys.num_rows
        self._all: RowLineage | None = None
        self._plan = None
        self._closed_error: str | None = None

    # ------------------------------------------------------------------ backward query
    def _backward(self) -> BackwardPlan:
        """The backward plan of this query, once per query text and state of the tables it read (shared
        by every result of that query on this connection). Planned for one row asked first: the general
        queries (several rows, or a fallback) are planned when first needed (:meth:`_general`)."""
        if self._plan is None:
            key = (self.text, tuple(sorted(self.fingerprint.items())), self.shape.by_value)
            cache = self.con._backward_plans
            if key not in cache:
                while len(cache) >= _PLANS:
                    cache.pop(next(iter(cache)))
                cache[key] = self._plan_one_row()
            self._plan = cache[key]
        return self._plan

    def _rewrite(self) -> tuple[exp.Select, list[str], list]:
        """(the eager rewrite of the query, its hidden column names, its witness queries), from a fresh
        parse (changed in place after; nothing generates its SQL unless asked), or the one the capture
        made and kept for the first plan (:mod:`traceprop_frames.sql.first_plan`)."""
        con = self.con
        kept = None if con._pending else con._first_rewrites.take(self.text, con._catalog())
        if kept is not None:
            return kept
        stmt = con._parse(self.text)[0]
        if con._pending:
            con._materialise_reads(stmt)
        consts: list = []
        rw = rewrite_query(
            stmt, con._catalog(), split=True, copy=False, constant=con._constant_witness(consts)
        )
        sel = rw.expression
        for k in ("order", "limit", "offset"):
            sel.set(k, None)
        return sel, [e.alias for e in sel.expressions[-rw.n_hidden :]], consts

    def _plan_one_row(self) -> BackwardPlan:
        """The plan's query for one row asked (``one``): the flat member listing without the conjuncts
        its group keys decide (:func:`_without_key_conjuncts`), or a ``rows`` query without its WHERE
        (:func:`_pinned`); its WHERE holds the :data:`_PIN` placeholder for the row's key values (in the
        query itself: DuckDB does not push a filter on a derived table through a correlated subquery's
        join into the scans). Built in place on one rewrite, no copies: for an aggregate without GROUP
        BY it is the flat listing itself (``flat``); otherwise the general queries wait."""
        sel, hidden, consts = self._rewrite()
        plan = BackwardPlan(hidden, WitnessSets(self.con, consts), consts)
        plan.pins = [k.sql(dialect=DIALECT) for k in key_columns(sel, self.shape)]
        cat = self.con._catalog()
        aggs = cat.aggregates
        if _member_parts(sel, self.shape, aggs) is not None:
            lateral_witnesses(sel, cat)  # a correlated aggregate and its witnesses: one scan (q17)
            if self.shape.mode == "one":
                flat = _flat_members(sel, self.shape, aggs, copy=False)
                plan.flat = (_LazySQL(flat[0]), flat[1])
            else:
                lean_sel = _without_key_conjuncts(sel, self._binds, copy=False)
                lean = _flat_members(lean_sel, self.shape, aggs, copy=False)
                plan.one, plan.one_columns = _pin_sql(lean[0]), lean[1]
        elif self.shape.mode == "rows":  # (by value: a key found more than once goes to the general query)
            pinned = _pinned(sel, self.shape, copy=False)
            plan.one = _pin_sql(pinned) if pinned is not None else None
            if pinned is None:
                self._general(plan, sel)
        else:
            self._general(plan, sel)
        return plan

    def _general(self, plan: BackwardPlan, sel: exp.Select | None = None) -> None:
        """Fill ``plan``'s general queries: the backward query with the key columns, and for a group's
        lineage its flat member listing (see :func:`_flat_members`). From ``sel`` (the rewrite, not yet
        changed), or a fresh rewrite whose witness queries must be the plan's (they are: one text)."""
        if plan.sql is not None:
            return
        if sel is None:
            sel, _, consts = self._rewrite()
            if consts != plan.constants:  # not expected: the markers would name other witness queries
                plan.blocks, plan.constants = WitnessSets(self.con, consts), consts
        if plan.flat is _UNPLANNED:
            flat = _flat_members(sel, self.shape, self.con._catalog().aggregates)
            plan.flat = (_LazySQL(flat[0]), flat[1]) if flat is not None else None
        add_keys(sel, self.shape)
        plan.sql = _LazySQL(sel)

    def _binds(self, query: exp.Expression) -> bool:
        """True if ``query`` binds on its own (it is not correlated with the query around it)."""
        try:
            _ = self.con._raw.sql(query.sql(dialect=DIALECT)).types
        except duckdb.Error:
            return False
        return True

    def check(self) -> None:
        """Raise if a table the query read changed since it ran (or the connection is closed)."""
        if self._closed_error is not None:
            raise SourceChangedError(self._closed_error)
        if self.con._closed:
            raise SourceChangedError(
                "the connection that ran this query is closed and its lineage was not resolved: ask for "
                "lineage before con.close(), or use tpf.connect(capture='eager')"
            )
        now = self.con._fingerprint(list(self.fingerprint))
        changed = sorted(t for t, v in self.fingerprint.items() if now.get(t) != v)
        if changed:
            unread = any(v[0] is UNREAD for v in self.fingerprint.values())
            raise SourceChangedError(
                f"table(s) {changed} changed since this query ran, so its lineage (captured lazily) can no "
                "longer be computed exactly: re-run the query, or use tpf.connect(capture='eager') to keep "
                "lineage that outlives changes to its tables" + (_UNREAD_NOTE if unread else "")
            )

    def lineage(self, rows: np.ndarray) -> RowLineage:
        """Eager-identical lineage of result rows ``rows`` (positions, repeats allowed), in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        if self._all is not None:
            return self._all.take(rows)
        self.check()
        for t in [t for t in self.fingerprint if t in self.con._pending]:
            self.con._materialise(t)  # a pending table it read (again pending after a ROLLBACK): filled
        plan = self._backward()
        flat = self.shape.mode != "rows" and plan.flat is not None
        if (
            flat
            and plan.flat is _UNPLANNED
            and not (plan.one is not None and np.unique(rows).size <= _LITERAL_ROWS)
        ):
            self._general(plan)
            flat = plan.flat is not None
        if flat:  # a group's member rows straight from the scan, no list() per group
            try:
                return self._rows_of(plan, rows, True)
            except duckdb.Error:  # e.g. a GROUP BY naming a SELECT alias the flat query drops
                plan.flat, plan.one = None, None  # the plan is shared: later results do not try again
        return self._rows_of(plan, rows, False)

    def _query(self, plan: BackwardPlan, flat: bool) -> tuple[str, list[str]]:
        """(SQL, hidden column names) of the plan's flat listing or its general backward query."""
        if flat and isinstance(plan.flat, tuple):
            return plan.flat
        self._general(plan)
        return plan.flat if flat else (plan.sql, plan.hidden)

    def _rows_of(self, plan: BackwardPlan, rows: np.ndarray, flat: bool) -> RowLineage:
        if self.shape.mode == "one" or not self.keys.num_columns:
            return self._one(plan, rows, flat)
        uniq = np.unique(rows)
        if not uniq.size:
            return RowLineage.empty(0, self.node)
        lin = self._keyed(plan, uniq, flat)
        if len(uniq) == self.n:
            self._all = lin
        return lin.take(np.searchsorted(uniq, rows))

    def resolve_all(self) -> RowLineage:
        if self._all is None:
            self._all = self.lineage(np.arange(self.n, dtype=np.int64))
        return self._all

    def _one(self, plan: BackwardPlan, rows: np.ndarray, flat: bool) -> RowLineage:
        sql, hidden = self._query(plan, flat)
        blocks = plan.blocks
        cols = ", ".join(f"__tp_b.{h}" for h in hidden)
        query = f"SELECT {cols} FROM ({sql}) AS __tp_b"
        table = self.con._raw.sql(grouped(query) if flat else query).to_arrow_table()
        if flat:  # every member row of the one result row
            lin = _one_row(self.con._lineage_of(table, 0, len(hidden), self.node, blocks, query))
            return lin.take(np.zeros(len(rows), dtype=np.int64))
        if table.num_rows != min(self.n, 1) and self.n:
            raise SourceChangedError(
                f"the backward query returned {table.num_rows} rows for a result of {self.n}: its tables "
                "changed since the query ran; re-run the query"
            )
        lin = self.con._lineage_of(table, 0, len(hidden), self.node, blocks, query)
        if self.n == 1 and rows.size:
            self._all = lin
        return lin.take(np.zeros(len(rows), dtype=np.int64)) if rows.size else lin.take(rows)

    def _keyed(self, plan: BackwardPlan, uniq: np.ndarray, flat: bool) -> RowLineage:
        """Lineage of the result rows ``uniq`` (sorted, distinct positions), in that order."""
        nk = self.keys.num_columns
        blocks = plan.blocks
        req = self.keys.take(pa.array(uniq)).append_column("__tp_pos", pa.array(uniq, pa.int64()))
        one, pins = plan.one, plan.pins
        if one is not None and len(uniq) == 1 and (flat or not any(c.null_count for c in req.columns[:nk])):
            pin = self._literal_filter(req, pins)
            if pin:  # the row's key values, in the query itself
                hidden = plan.one_columns
                cols = ", ".join(f"__tp_b0.{h}" for h in hidden)
                query = one.replace(_PIN, f"({pin})")
                query = f"SELECT {cols} FROM ({query}) AS __tp_b0"
                table = self.con._raw.sql(grouped(query) if flat else query).to_arrow_table()
                if not table.num_rows:
                    raise SourceChangedError(
                        f"the backward query found no row for result row {int(uniq[0])}: the tables the "
                        "query read changed since it ran; re-run the query"
                    )
                lin = self.con._lineage_of(table, 0, len(hidden), self.node, blocks, query)
                if flat:  # one row per member: their union
                    return _one_row(lin)
                if table.num_rows == 1:
                    return lin
        if flat and one is not None and 1 < len(uniq) <= _LITERAL_ROWS:
            pin = self._literal_filter(req, pins)
            if pin:  # several groups: the one-row query (key-decided conjuncts dropped), their keys in it
                sql = one.replace(_PIN, f"({pin})")
                return self._joined(sql, plan.one_columns, blocks, req, uniq, flat)
        if not flat and one is not None and 1 < len(uniq) <= _LITERAL_ROWS:
            pin = self._pins_together(req, pins)
            if pin:  # several rows of a join: their tables' rows pinned together, no WHERE clause
                sql, hidden = one.replace(_PIN, f"({pin})"), plan.one_columns
                try:
                    lin = self._joined(sql, hidden, blocks, req, uniq, flat, exact=True)
                except duckdb.Error:  # a combination no result row has can fail (a cast): run the query
                    lin = None
                if lin is not None:
                    return lin
        sql, hidden = self._query(plan, flat)
        return self._joined(sql, hidden, blocks, req, uniq, flat)

    def _pins_together(self, req: pa.Table, pins: list[str]) -> str:
        """``k0 IN (...) AND k1 IN (...)`` over the rows asked (each key's distinct values), for the
        pinned query of a ``rows`` shape; "" where a key is NULL, a type has no exact literal, or the
        combinations of values (the pinned rows' cross product) exceed :data:`_PIN_COMBOS`.

        The pinned query has no WHERE clause: it computes each combination of the pinned rows, and the
        join on all keys keeps the rows asked; each one's lineage columns depend on its own rows only
        (see :func:`_pinned`), so they are the ones a row asked alone gets."""
        nk = len(pins)
        if any(req.column(i).null_count for i in range(nk)):
            return ""
        if not all(t.split("(")[0] in _LITERAL_TYPES for t in self.key_types):
            return ""
        values = [pa.compute.unique(req.column(i)).to_pylist() for i in range(nk)]
        if np.prod([len(v) for v in values], dtype=np.float64) > _PIN_COMBOS:
            return ""
        parts = []
        for i, (vals, t) in enumerate(zip(values, self.key_types)):
            lits = ", ".join(
                f"CAST('{(repr(v) if isinstance(v, float) else str(v)).replace(chr(39), chr(39) * 2)}' AS {t})"
                for v in vals
            )
            parts.append(f"({pins[i]}) IN ({lits})")
        return " AND ".join(parts)

    def _joined(
        self, sql, hidden: list[str], blocks, req: pa.Table, uniq: np.ndarray, flat: bool, exact: bool = False
    ) -> RowLineage | None:
        """Lineage of the rows asked (``req``: their keys and positions ``uniq``) from ``sql`` (the
        general or pinned backward query with key columns), joined null-safely on their keys. ``exact``:
        None where a row asked matched more than one row of ``sql`` (the caller runs the general query)."""
        nk = self.keys.num_columns
        name = f"__tp_req{next(_names)}"
        on = " AND ".join(f"__tp_b.__tp_k{i} IS NOT DISTINCT FROM __tp_r.__tp_k{i}" for i in range(nk))
        where = ""
        if len(uniq) <= _LITERAL_ROWS:
            where = self._literal_filter(req, [f"__tp_b0.__tp_k{i}" for i in range(nk)])
            where = f" WHERE {where}" if where else ""
        cols = ", ".join(f"__tp_b.{h}" for h in hidden)
        query = (
            f"SELECT __tp_r.__tp_pos, {cols} FROM (SELECT * FROM ({sql}) AS __tp_b0{where}) AS __tp_b "
            f"JOIN {name} AS __tp_r ON {on}"
        )
        self.con._raw.register(name, req)
        try:
            table = self.con._raw.sql(grouped(query) if flat else query).to_arrow_table()
        finally:
            self.con._raw.unregister(name)
        pos = np.asarray(table.column(0).to_numpy(zero_copy_only=False), dtype=np.int64)
        order = np.argsort(pos, kind="stable")
        found, first = np.unique(pos[order], return_index=True)
        if exact and len(found) != len(pos):
            return None
        if self.shape.by_value and len(found) != len(pos):  # unique in the result it came from
            raise SourceChangedError(
                "the backward query found several rows for one result row: the tables the query read "
                "changed since it ran; re-run the query"
            )
        if len(found) != len(uniq):
            missing = np.setdiff1d(uniq, found)[:5].tolist()
            raise SourceChangedError(
                f"the backward query found no row for result rows {missing}: the tables the query read "
                "changed since it ran; re-run the query"
            )
        lin = self.con._lineage_of(table, 1, len(hidden), self.node, blocks, query)
        if flat:  # one row per member: the union per result row
            codes = np.searchsorted(uniq, pos)
            return lin.group_union(codes, len(uniq), self.node).materialize()
        return lin.take(order[first])

    def _literal_filter(self, req: pa.Table, cols: list[str]) -> str:
        """``(c0 = v AND c1 IS NULL ...) OR ...`` for the rows asked (key ``i`` is ``cols[i]``), where
        every key's type has an exact literal; "" otherwise (the join alone then selects the rows)."""
        types = self.key_types
        if not all(t.split("(")[0] in _LITERAL_TYPES for t in types):
            return ""
        conds = []
        for row in req.drop_columns(["__tp_pos"]).to_pylist():
            parts = []
            for i, (v, t) in enumerate(zip(row.values(), types)):
                if v is None:
                    parts.append(f"({cols[i]}) IS NULL")
                else:
                    text = repr(v) if isinstance(v, float) else str(v)
                    parts.append(f"({cols[i]}) = CAST('{text.replace(chr(39), chr(39) * 2)}' AS {t})")
            conds.append("(" + " AND ".join(parts) + ")")
        return " OR ".join(conds)


_UNPLANNED = "unplanned"  # a plan's flat listing not planned yet (None: there is none)


class BackwardPlan:
    """A query's backward queries: ``one`` (one row asked, its key values in place of :data:`_PIN`;
    its columns ``one_columns``), ``flat`` (SQL and column names of the member listing, None where
    there is none, :data:`_UNPLANNED` before it is planned), ``sql`` (the general backward query with
    the key columns ``__tp_k*``; None before it is planned), the hidden column names, the key
    expressions (``pins``) and the witness sets of the marker ids."""

    __slots__ = ("hidden", "blocks", "constants", "pins", "one", "one_columns", "flat", "sql")

    def __init__(self, hidden: list[str], blocks: WitnessSets, constants: list) -> None:
        self.hidden, self.blocks, self.constants = hidden, blocks, constants
        self.pins: list[str] = []
        self.one: str | None = None
        self.one_columns: list[str] = hidden
        self.flat = _UNPLANNED
        self.sql = None


class WitnessSets:
    """The witness sets (see :mod:`traceprop_frames.sql.shared`) of a backward plan, computed when rows
    asked refer to them: a scalar subquery's witnesses whole, once; an ``IN`` subquery's only for the
    hashed values the rows asked refer to (the side query filtered by them, so DuckDB reads the
    matching witness rows only), kept per set of values. A row's sets are the same either way."""

    def __init__(self, con, constants: list[tuple[str, str]]) -> None:
        self.con, self.constants = con, constants
        self._whole: dict[int, tuple] = {}
        self._part: dict[tuple, tuple] = {}

    def for_ids(self, ids: np.ndarray) -> list:
        """Blocks for :func:`~traceprop_frames.sql.shared.resolve_markers`: every one ``ids`` refer to."""
        blocks: list = [None] * len(self.constants)
        self._fill(ids, blocks)
        return blocks

    def _fill(self, ids: np.ndarray, blocks: list) -> None:
        is_m = (ids >> np.int64(ROW_BITS)) == MARKER_SID
        if not is_m.any():
            return
        low = ids[is_m] & np.int64(ROW_MASK)
        which, keys = low >> np.int64(KEY_BITS), low & np.int64((1 << KEY_BITS) - 1)
        for k in np.unique(which).tolist():
            if blocks[k] is not None:
                continue
            sql, label = self.constants[k]
            hashes = np.unique(keys[which == k])
            flat = PRESENT in sql  # shared.flat_side_query: its own filter on the keys referred to
            by_value = label.startswith("IN") and sql.endswith(" AS __tp_w(__tp_v)")
            if k in self._whole or not (flat or by_value) or len(hashes) > 8:
                if k not in self._whole:
                    self._whole[k] = self._block(with_present(sql, None), label, blocks)
                blocks[k] = self._whole[k]
                continue
            part = (k, tuple(hashes.tolist()))
            if part not in self._part:
                if flat:
                    query = with_present(sql, hashes)
                else:  # key h = hash(v) >> 32: a range of hash(v), which DuckDB pushes into the scan
                    ranges = " OR ".join(
                        f"hash(__tp_w.__tp_v) BETWEEN CAST({h << KEY_BITS} AS UBIGINT) AND "
                        f"CAST({((h + 1) << KEY_BITS) - 1} AS UBIGINT)"
                        for h in part[1]
                    )
                    query = f"{sql} WHERE {ranges}"
                while len(self._part) >= _PLANS:
                    self._part.pop(next(iter(self._part)))
                self._part[part] = self._block(query, label, blocks)
            blocks[k] = self._part[part]

    def _block(self, sql: str, label: str, blocks: list) -> tuple:
        table = self.con._raw.sql(sql).to_arrow_table()
        self.con._check_ids([table.column(1)], sql)  # a witness row without an id (sql.null_rids)
        off, ids = self.con._lineage_csr(table.column(1))
        self._fill(ids, blocks)  # the witnesses of a witness (a CTE that read a scalar subquery)
        lin = resolve_markers(off, ids, blocks, self.con._sources.to_process)
        keys = np.asarray(table.column(0).to_numpy(zero_copy_only=False), dtype=np.int64)
        # as shared.witness_blocks: a scalar witness's one key (or keys in order) is not sorted again
        order, uk, starts, ends = key_segments(keys)
        return lin.shared_sets(order, starts, ends, label), uk


class _LazySQL:
    """SQL text generated when first used (a one-row request with a pinned query never uses the plan's
    general queries: generating them costs more than planning the rest)."""

    __slots__ = ("_expr", "_text")

    def __init__(self, expr: exp.Expression) -> None:
        self._expr, self._text = expr, None

    def __str__(self) -> str:
        if self._text is None:
            self._text, self._expr = self._expr.sql(dialect=DIALECT, copy=False), None
        return self._text

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def _one_row(members: RowLineage) -> RowLineage:
    """One row holding every id of ``members`` (and every shared set they refer to)."""
    if members.has_context:
        return members.group_union(np.zeros(len(members), dtype=np.int64), 1, members.node).materialize()
    ids, n = members.ids, len(members)
    k = ids.size // n if n else 0
    if k > 1 and ids.size == k * n and np.array_equal(members.offsets, np.arange(0, ids.size + 1, k)):
        ids = ids.reshape(n, k).T.ravel()  # k ids a member (one per table): each table's ids together
    return RowLineage(np.array([0, ids.size], dtype=np.int64), ids, members.node)


def _flat_members(
    sel: exp.Select, shape: Shape, aggs: frozenset[str], copy: bool = True
) -> tuple[exp.Select, list[str]] | None:
    """For an eager aggregate whose lineage is a union of per-member parts (``list(a.__tp_rid)``,
    ``flatten(list(d.__tp_lin))``, ``list(marker)``, a correlated subquery's ``flatten(list((SELECT
    list(...) ...)))``, a constant ``[marker]``; ``list_concat`` of several): the query listing each
    member row's parts and keys (no GROUP BY, no list), or None. A group's lineage is the union of its
    members' parts, so both give the same sets; the flat one is cheaper to run. ``copy=False``: ``sel``
    itself becomes the listing (where there is one)."""
    cols = _member_parts(sel, shape, aggs)
    if cols is None:
        return None
    flat = sel.copy() if copy else sel
    keys = [exp.alias_(k, f"__tp_k{i}") for i, k in enumerate(key_columns(flat, shape))]
    for k in ("group", "having", "order", "limit", "offset", "qualify", "windows", "distinct"):
        flat.set(k, None)
    flat.set("expressions", [exp.alias_(c.copy(), f"__tp_f{i}") for i, c in enumerate(cols)] + keys)
    _exists_joined(flat)
    return flat, [f"__tp_f{i}" for i in range(len(cols))]


def _member_parts(sel: exp.Select, shape: Shape, aggs: frozenset[str]) -> list[exp.Expression] | None:
    """The per-member parts of ``sel``'s lineage expression (see :func:`_flat_members`), or None."""
    if shape.mode not in ("group", "one") or not isinstance(sel, exp.Select):
        return None
    expr = sel.expressions[-1].this if isinstance(sel.expressions[-1], exp.Alias) else None
    if expr is None:
        return None
    args = expr.expressions if _call(expr, "list_concat") else [expr]
    cols = []
    for a in args:
        if _call(a, "flatten", 1) and _call(a.expressions[0], "list", 1):
            part = a.expressions[0].expressions[0]  # a list per member row
        elif _call(a, "list", 1):
            part = a.expressions[0]  # an id (or a marker id) per member row
        elif isinstance(a, exp.Array) and not a.find(exp.Column, exp.Subquery):
            part = a  # a group-level constant (an uncorrelated subquery's marker)
        else:
            return None
        if _has_agg(part, aggs):
            return None
        cols.append(part)
    return cols


_ONE_BODY = (
    "group",
    "having",
    "distinct",
    "limit",
    "offset",
    "order",
    "qualify",
    "windows",
    "with_",
    "joins",
)


def _exists_joined(flat: exp.Select) -> None:
    """In a flat member listing, a correlated witness part ``(SELECT list(w.__tp_rid) FROM w WHERE p)``
    whose rows are also a WHERE conjunct ``EXISTS (SELECT ... FROM w WHERE p)`` becomes a join: ``w``
    joins the FROM with ``p`` as a WHERE conjunct, the EXISTS goes and the part is ``w.__tp_rid``.

    A member row then repeats once per witness row instead of carrying their list; a row without one
    is dropped, as the EXISTS dropped it. The union over members is the same set, and DuckDB runs a
    join instead of a mark join for the EXISTS beside a list per member (TPC-H q04, q21: several times
    the query's own cost). ``p`` is read in the outer scope now: an unqualified column that both
    ``w`` and an outer table have is ambiguous there, a binder error (the caller then falls back to
    the general backward query), never another column. Changes ``flat`` in place."""
    where = flat.args.get("where")
    if where is None:
        return
    conj = list(where.this.flatten()) if isinstance(where.this, exp.And) else [where.this]
    outer = {
        t.alias_or_name.lower()
        for t in [flat.args["from_"].this] + [j.this for j in flat.args.get("joins") or []]
    }
    changed = False
    for e in flat.expressions:
        if not isinstance(e, exp.Alias) or not e.alias.startswith("__tp_f"):
            continue
        sub = e.this
        while isinstance(sub, exp.Paren):
            sub = sub.this
        w = sub.this if isinstance(sub, exp.Subquery) else None
        if not isinstance(w, exp.Select) or w.args.get("where") is None or w.args.get("from_") is None:
            continue
        if (
            any(w.args.get(k) for k in _ONE_BODY)
            or len(w.expressions) != 1
            or not _call(w.expressions[0], "list", 1)
        ):
            continue
        rid, table = w.expressions[0].expressions[0], w.args["from_"].this
        if not isinstance(rid, exp.Column) or rid.name != RID or not isinstance(table, exp.Table):
            continue
        if table.alias_or_name.lower() in outer or rid.table.lower() != table.alias_or_name.lower():
            continue
        match = next(
            (
                c
                for c in conj
                if isinstance(c, exp.Exists)
                and isinstance(c.this, exp.Select)
                and not any(c.this.args.get(k) for k in _ONE_BODY)
                and not any(x.find(exp.Func) for x in c.this.expressions)  # (an aggregate: always true)
                and c.this.args.get("from_") == w.args["from_"]
                and c.this.args.get("where") == w.args["where"]
            ),
            None,
        )
        if match is None:
            continue
        conj = [c for c in conj if c is not match] + [w.args["where"].this.copy()]
        flat.append("joins", exp.Join(this=table.copy()))
        e.set("this", rid.copy())
        outer.add(table.alias_or_name.lower())
        changed = True
    if changed:
        flat.set("where", exp.Where(this=exp.and_(*conj)))


def _pin_sql(sel: exp.Select) -> str:
    """SQL of ``sel`` with the :data:`_PIN` placeholder added to its WHERE clause (changes ``sel``)."""
    return sel.where(exp.column(_PIN), copy=False).sql(dialect=DIALECT, copy=False)


def _pinned(sel: exp.Select, shape: Shape, copy: bool = True) -> exp.Select | None:
    """For a ``rows`` query: its backward query without the WHERE clause, or None.

    A result row is one combination of its FROM items' rows, each named by its key (a row id, or a
    grouping item's group keys). Filtered by the (non-NULL) keys of one row in the result, the WHERE
    clause holds for it already, and the lineage columns are functions of the pinned rows alone (a
    correlated subquery's witnesses included), so the clause is not run again: DuckDB reads the pinned
    rows only. (For one row only: an OR of several rows' keys is not pushed into the scans.)"""
    if shape.mode != "rows" or not shape.items:
        return None
    pinned = sel.copy() if copy else sel
    pinned.set("where", None)
    add_keys(pinned, shape)
    return pinned


def _without_key_conjuncts(sel: exp.Select, binds, copy: bool = True) -> exp.Select:
    """``sel`` without the WHERE conjuncts that depend on its group keys only (``o_orderkey IN (SELECT
    ...)`` grouped by ``o_orderkey``): such a conjunct has one value per group, and a group in the result
    had a member for which it held, so it holds for every member. Subqueries in a dropped conjunct must
    bind on their own (``binds``): a correlated one could depend on other columns."""
    where, group = sel.args.get("where"), sel.args.get("group")
    if where is None or group is None:
        return sel
    keys = [g for g in group.expressions if isinstance(g, exp.Column)]
    conj = list(where.this.flatten()) if isinstance(where.this, exp.And) else [where.this]
    keep = [c for c in conj if not keys or not _key_only(c, keys, binds)]
    if len(keep) == len(conj):
        return sel
    out = sel.copy() if copy else sel
    out.set("where", exp.Where(this=exp.and_(*(c.copy() for c in keep))) if keep else None)
    return out


def _key_only(cond: exp.Expression, keys: list[exp.Column], binds) -> bool:
    """True if ``cond`` reads only the group-key columns ``keys`` and subqueries that bind alone."""
    stack, subqueries = [cond], []
    while stack:
        node = stack.pop()
        if isinstance(node, exp.Query):
            subqueries.append(node)
            continue
        if isinstance(node, exp.Column):
            name, table = node.name.lower(), node.table.lower()
            if not any(
                k.name.lower() == name and (not table or not k.table or k.table.lower() == table)
                for k in keys
            ):
                return False
        elif isinstance(node, (exp.Star, exp.Window, exp.Rand, exp.Uuid, exp.Anonymous)):
            return False  # (an unknown function may not be deterministic)
        stack.extend(node.iter_expressions())
    return all(binds(q) for q in subqueries)


def _call(e: exp.Expression, name: str, n: int | None = None) -> bool:
    """``e`` is a call of function ``name`` (with ``n`` arguments, if given)."""
    return isinstance(e, exp.Anonymous) and e.name.lower() == name and (n is None or len(e.expressions) == n)


def _resolve_rows(resolver: Resolver, rows: np.ndarray) -> tuple:
    """``LazyRowLineage``'s arrays: the lineage of ``rows`` of ``resolver``'s result."""
    lin = resolver.lineage(rows)
    return lin.offsets, lin.ids, (lin.context if lin.has_context else None)


class LazyRowLineage(RowLineage):
    """Lineage of rows of a lazily captured SQL result: resolved by a backward query when first read.

    Taking rows (a filter, ``df.tp.trace(i)``, ``df.tp.sources(rows=...)``) stays lazy, so asking for
    one row runs a backward query for that row only. Reading the arrays (``offsets``, ``ids``, saving,
    pickling) resolves every row this object covers, once.
    """

    __slots__ = ("_resolver", "_rows", "_node")

    def __init__(self, resolver: Resolver, rows: np.ndarray, node: OpNode | None = None) -> None:
        self._offsets = self._ids = self._ctx = None
        self._has_ctx = True  # not known before resolving: readers ask has_context, which resolves
        self._n = len(rows)
        # not a bound method of self (a reference cycle: the result's resolver, keys and rows would then
        # live until Python's cycle collector runs, not until the frame goes)
        self._rows = np.asarray(rows, dtype=np.int64)
        self._build = functools.partial(_resolve_rows, resolver, self._rows)
        self._deps = ()
        self._inv = None
        self._sids = None
        self._resolver = resolver
        self._node = node
        resolver.con._lazy.add(resolver)

    @property
    def node(self) -> OpNode:
        return self._node if self._node is not None else self._resolver.node

    @node.setter
    def node(self, value: OpNode) -> None:
        self._node = value

    @property
    def has_context(self) -> bool:
        if self._offsets is None:
            self.materialize()
        return self._has_ctx

    def take(self, rows, node: OpNode | None = None) -> RowLineage:
        if self._offsets is not None:
            return super().take(rows, node)
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise UnknownRowError(f"positions outside 0..{len(self) - 1}")
        return LazyRowLineage(self._resolver, self._rows[rows], node if node is not None else self._node)


def live_resolvers() -> weakref.WeakSet:
    """A set of the resolvers whose results are still alive (resolved when the connection closes)."""
    return weakref.WeakSet()
