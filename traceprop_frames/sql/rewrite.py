"""Rewrite DuckDB SQL with sqlglot so every result row carries the global ids of its source rows.

Hidden columns
--------------
A table loaded with ``con.read_csv`` / ``con.read_parquet`` has a hidden ``__tp_rid BIGINT`` column (one
global row id per row); a table built by ``CREATE TABLE ... AS``, a view, or a registered traced frame has
a hidden ``__tp_lin BIGINT[]`` column (a set of ids per row). Every rewritten SELECT appends exactly one of
them as its last column (a top-level query may return one column per lineage part instead, concatenated
as CSR arrays by the caller), and ``SELECT *`` gets ``EXCLUDE (...)`` so user-visible columns never change.
NULL ids (the missing side of an outer join) and NULL lists mean "no row" and are dropped on the way out.

Rules (one small function per operator kind, see ``_QUERY_RULES`` and ``_FROM_RULES``)
--------------------------------------------------------------------------------------
- scan: a traced table contributes its hidden column; a table without lineage contributes nothing and is
  named in the result's ``missing_lineage`` (``df.tp.sources()`` warns once, naming it).
- projection / filter / ORDER BY / LIMIT: a row keeps the ids of the input rows it was computed from.
- window functions (in SELECT or QUALIFY, see ``_frame_lineage``): a row also gets the lineage of the rows
  its window value read - the window's frame (an aggregate without ORDER BY: the partition; with ORDER BY,
  by default every row ordered before it and its peers; an explicit ROWS / RANGE / GROUPS frame as written,
  ``EXCLUDE`` ignored); ranking functions: the rows ordered before it and its peers (``percent_rank``,
  ``cume_dist``, ``ntile``, ``fill``: the partition); ``lag``/``lead`` with offset k: the k rows up to the
  one read (the partition's start / end with IGNORE NULLS; the whole partition for an offset that is not a
  constant, or an ORDER BY among the arguments). Other window functions raise.
- join (inner, outer, cross, comma, USING/ON, ASOF, POSITIONAL): the ids of both rows are concatenated;
  the missing side of an outer join adds nothing. ANTI JOIN adds nothing from its right side; SEMI JOIN
  ... ON is rewritten as EXISTS (its witnesses join); NATURAL JOIN becomes USING (the columns both sides
  have, from the catalog); SEMI JOIN ... USING and MARK joins raise :class:`UnsupportedSQLError`.
- DISTINCT ON: a kept row keeps its own lineage (alone, it is the first of its group again).
- GROUP BY, aggregates without GROUP BY, DISTINCT: the union of the members of the group.
- UNION ALL: each row keeps its branch row's ids; UNION / INTERSECT: the union over every input row (of
  either side) equal to the output row; EXCEPT: the equal rows of the left side only. INTERSECT ALL:
  output copy i of a value keeps the i-th equal row of each side; EXCEPT ALL: every copy keeps all equal
  rows of both sides (the right side's rows decide how many copies remain, see ``_setop_all``).
- CTEs (chained, and WITH RECURSIVE ... UNION ALL) and derived tables are rewritten recursively. WITH
  RECURSIVE ... UNION (and USING KEY): the recursion runs as written; each of its rows gets one shared set,
  the anchor's rows and every row of the tables the recursive part reads (see ``_recursive_union``).
- Subqueries in WHERE / SELECT / HAVING / JOIN ON (see ``Rewriter._subquery``):
  * ``EXISTS (q)``: the rows of ``q`` that witnessed it (for a correlated ``q``, those matching the
    current outer row);
  * ``x IN (q)``: the rows of ``q`` whose value equals ``x``;
  * scalar ``(q)`` and ``x op ANY/ALL (q)``: every row that passed ``q``'s joins and filters (the rows
    its aggregate read); an uncorrelated one is a marker id per row, a shared set after the query;
  * under an odd number of NOT (``NOT EXISTS``, ``NOT IN``): nothing — the absence of rows has no
    witness row, and the result stays true on any subset of the source rows.
  A subquery's witnesses join the row's lineage; in an aggregate query, a subquery inside WHERE or inside
  an aggregate's argument adds to each member row, one in the SELECT list or HAVING to the group.
  Subqueries in GROUP BY / ORDER BY, ``COLUMNS(...)`` and PIVOT raise. ``LATERAL (q)`` is a derived table
  (its rows' lineage joins the row's); a subquery in LIMIT / OFFSET or an ANTI JOIN's condition adds nothing.

Guarantee (tested on TPC-H and on random queries against a brute-force oracle): without negation,
re-running the original query on only a row's lineage rows reproduces the row; with NOT EXISTS / NOT IN
it holds when the tables read only under the negation are kept whole.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp

from traceprop_frames.errors import UnsupportedSQLError
from traceprop_frames.sql.covered import covered_items
from traceprop_frames.sql.dialect import DIALECT
from traceprop_frames.sql.one_row_exists import always_one_row

RID = "__tp_rid"  # BIGINT: one global row id
LIN = "__tp_lin"  # BIGINT[]: a set of global row ids
HIDDEN = (RID, LIN)
_SIDE = "__tp_side"
_UNTRACED_OK = {"range", "generate_series", "unnest", "values"}
# catalog table functions / views that list columns: the hidden ones are filtered out (name column)
_COLUMN_LISTS = {
    "pragma_table_info": "name",
    "pragma_storage_info": "column_name",
    "duckdb_columns": "column_name",
    "columns": "column_name",  # information_schema.columns
}


def _t(sql: str) -> exp.Expression:
    return sqlglot.parse_one(sql, read=DIALECT)


def _col(name: str, table: str | exp.Identifier | None = None) -> exp.Column:
    tbl = None
    if table is not None:
        tbl = table.copy() if isinstance(table, exp.Identifier) else exp.to_identifier(table)
    return exp.Column(this=exp.to_identifier(name), table=tbl)


def _fn(name: str, *args: exp.Expression) -> exp.Expression:
    # a subquery as the only argument would be printed without its parentheses: list(SELECT ...)
    args = [exp.Paren(this=a) if isinstance(a, exp.Subquery) else a for a in args]
    return exp.Anonymous(this=name, expressions=args)


def _named(expr: exp.Expression, name: str) -> exp.Alias:
    """``expr AS name`` (``exp.alias_`` would give a subquery a table alias instead)."""
    return exp.Alias(this=expr, alias=exp.to_identifier(name))


def _null_list() -> exp.Expression:
    return _t("CAST(NULL AS BIGINT[])")


@dataclass
class Catalog:
    """What the rewriter needs to know: hidden column per table (lower-case name) and aggregate names."""

    hidden: dict[str, str] = field(default_factory=dict)  # table -> RID | LIN
    aggregates: frozenset[str] = frozenset()
    columns: dict[str, list[str]] = field(default_factory=dict)  # table/view -> visible columns, in order


@dataclass
class Lineage:
    """The lineage of one scope's rows: scalar id expressions and list expressions."""

    scalars: list[exp.Expression] = field(default_factory=list)
    lists: list[exp.Expression] = field(default_factory=list)

    def add(self, expr: exp.Expression, kind: str) -> None:
        (self.scalars if kind == RID else self.lists).append(expr)

    def row(self) -> tuple[exp.Expression, str]:
        """Per-row expression and its kind."""
        if len(self.scalars) == 1 and not self.lists:
            return self.scalars[0], RID
        if len(self.lists) == 1 and not self.scalars:
            return self.lists[0], LIN
        parts = ([exp.Array(expressions=self.scalars)] if self.scalars else []) + self.lists
        if not parts:
            return _null_list(), LIN
        return (parts[0] if len(parts) == 1 else _fn("list_concat", *parts)), LIN

    def aggregated(self, extra: list[exp.Expression] = ()) -> exp.Expression:
        """Group expression: ``list(id)`` per scalar, ``flatten(list(l))`` per list, plus ``extra``."""
        parts = [_fn("list", s) for s in self.scalars]
        parts += [_fn("flatten", _fn("list", x)) for x in self.lists]
        parts += list(extra)
        if not parts:
            return _null_list()
        return parts[0] if len(parts) == 1 else _fn("list_concat", *parts)


def _as_list(expr: exp.Expression, kind: str) -> exp.Expression:
    return exp.Array(expressions=[expr]) if kind == RID else expr


@dataclass
class RewriteResult:
    """A rewritten statement: the expression, its SQL, the hidden column kind and the tables read."""

    expression: exp.Expression
    kind: str | None
    traced: set[str]
    untraced: set[str]
    n_hidden: int = 1  # hidden columns at the end (``split=True`` gives one per lineage part)
    frames: list = field(default_factory=list)  # (side SQL, label) per window frame left as positions
    constants: list = field(default_factory=list)  # (SQL, label) of the witnesses behind marker ids
    correlated: list = field(default_factory=list)  # correlated witnesses left to side queries (eager)
    split_sql: str | None = None  # the query with those witnesses as outer-value columns
    null_sides: list = field(default_factory=list)  # (side SQL, its id columns) holding a NULL id (eager run)
    table_counts: tuple | None = None  # (expression, table -> times it names it): connection._table_count

    @property
    def sql(self) -> str:
        return self.expression.sql(dialect=DIALECT)


_SUBQ = (exp.Exists, exp.Any, exp.All, exp.Subquery, exp.Query)


def _scope_walk(node, neg: int = 0, in_agg: bool = False, aggs=frozenset()):
    """Yield (subquery-ish node, negation depth, inside-aggregate) without entering subqueries."""
    if isinstance(node, exp.In) and node.args.get("query") is not None:
        yield node, neg, in_agg
        yield from _scope_walk(node.this, neg, in_agg, aggs)
        return
    if isinstance(node, _SUBQ):
        yield node, neg, in_agg
        return
    if isinstance(node, exp.Not):
        neg += 1
    if _is_agg(node, aggs):
        in_agg = True
    if isinstance(node, exp.Window):
        in_agg = False
    for child in node.iter_expressions():
        yield from _scope_walk(child, neg, in_agg, aggs)


def _is_agg(node, aggs) -> bool:
    if isinstance(node, exp.AggFunc):
        return True
    return isinstance(node, exp.Anonymous) and node.name.lower() in aggs


def _windows_in(node):
    """Window function nodes under ``node``, not entering subqueries."""
    if isinstance(node, exp.Window):
        yield node
        return
    if isinstance(node, _SUBQ):
        return
    for child in node.iter_expressions():
        yield from _windows_in(child)


_RANKING = {"row_number", "rank", "dense_rank", "rank_dense"}  # the rows ordered before it and its peers
_WHOLE = {"percent_rank", "cume_dist", "ntile", "fill"}  # the partition's size / its nearest values
_VALUE = {"first_value", "last_value", "nth_value", "any_value"}  # read their frame, like aggregates
_OFFSET = {"lag": "PRECEDING", "lead": "FOLLOWING"}


def _frame_lineage(frame: tuple, row_list: exp.Expression) -> exp.Expression:
    """``flatten(list(row_list) OVER (frame))``: the lineage of every row the window value read."""
    return _fn("flatten", _over(_fn("list", row_list.copy()), frame))


def _over(fn: exp.Expression, frame: tuple, spec=None) -> exp.Window:
    """``fn OVER (PARTITION BY .. ORDER BY .. spec)`` for a frame ``(partition, order, spec)``."""
    partition, order, own_spec = frame
    spec = own_spec if spec is None else spec
    out = exp.Window(this=fn, over="OVER")
    if partition:
        out.set("partition_by", [p.copy() for p in partition])
    if order is not None:
        out.set("order", order.copy())
    if spec is not None:
        out.set("spec", spec.copy())
    return out


def frame_bounds(frame: tuple) -> tuple[exp.Expression, exp.Expression, exp.Expression, exp.Expression]:
    """SQL for a frame as positions: (partition id, row position in the partition's order, frame start,
    frame end). Start/end count rows in that order: end = rows up to the frame's end bound, start = end
    minus the frame's size (frames without EXCLUDE are contiguous runs of the order)."""
    partition, order, spec = frame
    spec = _zero_offsets_as_current_row(spec)
    frame = (partition, order, spec)
    pid = exp.Window(this=_fn("dense_rank"), over="OVER")
    if partition:
        pid.set("order", exp.Order(expressions=[exp.Ordered(this=p.copy()) for p in partition]))
    pos = exp.Sub(this=_over(exp.RowNumber(), (partition, order, None)), expression=exp.Literal.number(1))
    count = exp.Count(this=exp.Star())
    if spec is None:
        return pid, pos, exp.Literal.number(0), _over(count, frame)
    to_end = spec.copy()
    to_end.set("start", exp.var("UNBOUNDED"))
    to_end.set("start_side", "PRECEDING")
    end = _over(count.copy(), frame, to_end)
    return pid, pos, exp.Sub(this=end, expression=_over(count, frame)), end.copy()


def _zero_offsets_as_current_row(spec):
    """``spec`` with each ``0 PRECEDING`` / ``0 FOLLOWING`` bound written ``CURRENT ROW`` (the same rows
    in ROWS, RANGE and GROUPS frames). DuckDB 2.0 sometimes counts a RANGE frame ending at ``0 PRECEDING``
    short of the current row's peers (the user's own window is right; only the counts that place the
    frame are affected), so the counts are taken over the CURRENT ROW form."""
    if spec is None:
        return None
    spec = spec.copy()
    for bound, side in (("start", "start_side"), ("end", "end_side")):
        if _is_zero(spec.args.get(bound)):
            spec.set(bound, "CURRENT ROW")
            spec.set(side, None)
    return spec


def _is_zero(value) -> bool:
    """True for a numeric literal 0 (``0``, ``-0``, ``0.0``) as a frame bound's offset."""
    if isinstance(value, exp.Neg):
        value = value.this
    if not isinstance(value, exp.Literal) or value.is_string:
        return False
    try:
        return float(value.this) == 0
    except ValueError:
        return False


def _refuse_unstable_frame(spec) -> None:
    """DuckDB 2.0 answers ``RANGE BETWEEN UNBOUNDED PRECEDING AND 0 PRECEDING`` differently from run to
    run (plain DuckDB too: the current row's peers are sometimes cut short), so no lineage can match it."""
    if (
        spec is not None
        and str(spec.args.get("kind") or "").upper() == "RANGE"
        and spec.args.get("start") == "UNBOUNDED"
        and spec.args.get("end_side") == "PRECEDING"
        and _is_zero(spec.args.get("end"))
    ):
        raise UnsupportedSQLError(
            "RANGE BETWEEN UNBOUNDED PRECEDING AND 0 PRECEDING: DuckDB computes this frame inconsistently "
            "(its answer changes between runs); write RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW, "
            "the same frame"
        )


def _frame_of(win: exp.Window, named: dict, aggs) -> tuple:
    """(partition, order, spec) of the rows a window value reads (see the module docstring)."""
    fn, ignore_nulls = win.this, False
    while isinstance(fn, (exp.Filter, exp.IgnoreNulls, exp.RespectNulls)):
        ignore_nulls = ignore_nulls or isinstance(fn, exp.IgnoreNulls)
        fn = fn.this
    name = (fn.name if isinstance(fn, exp.Anonymous) else fn.sql_name()).lower()
    partition, order, spec = win.args.get("partition_by"), win.args.get("order"), win.args.get("spec")
    seen = set()
    base = win
    while isinstance(base.args.get("alias"), exp.Identifier):  # OVER w / OVER (w ...): a WINDOW entry,
        ref = base.args["alias"].name.lower()  # which may build on another one (w AS (base ROWS ...))
        base = named.get(ref)
        if base is None or ref in seen:
            raise UnsupportedSQLError(f"window {ref}: define it in the WINDOW clause of the same SELECT")
        seen.add(ref)
        partition = partition or base.args.get("partition_by")
        order = order or base.args.get("order")
        spec = spec or base.args.get("spec")
    if (name in _RANKING or name in _OFFSET) and fn.find(exp.Order) is not None:
        order = spec = None  # an argument ORDER BY (lead(x ORDER BY y)) counts rows in another order
    elif name in _RANKING:
        spec = (
            _t("SELECT sum(1) OVER (RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)")
            .expressions[0]
            .args["spec"]
        )
    elif name in _WHOLE:
        order = spec = None
    elif name in _OFFSET:
        k = fn.args.get("offset")
        if k is None:
            k = exp.Literal.number(1)
        if not (isinstance(k, exp.Literal) and not k.is_string and str(k.this).isdigit()):
            order = spec = None  # an offset known only when it runs (or negative): the whole partition
        else:
            reach = "UNBOUNDED" if ignore_nulls else str(k.this)
            frame = (
                f"{reach} PRECEDING AND CURRENT ROW"
                if name == "lag"
                else f"CURRENT ROW AND {reach} FOLLOWING"
            )
            spec = _t(f"SELECT sum(1) OVER (ROWS BETWEEN {frame})").expressions[0].args["spec"]
    elif name in _VALUE or _is_agg(fn, aggs):
        _refuse_unstable_frame(spec)
        if spec is not None and spec.args.get("exclude") is not None:
            spec = spec.copy()  # EXCLUDE drops rows that still decide which rows the frame reaches
            spec.set("exclude", None)
    else:
        raise UnsupportedSQLError(f"window function {name}: which rows it reads is not known to the rewriter")
    return partition, order, spec


def _has_agg(node, aggs) -> bool:
    """True if ``node`` holds an aggregate outside window functions and subqueries."""
    if isinstance(node, (exp.Window, *_SUBQ)):
        return False
    if _is_agg(node, aggs):
        return True
    return any(_has_agg(c, aggs) for c in node.iter_expressions())


class Rewriter:
    """One rewrite: holds the catalog, a counter for fresh aliases and the tables seen."""

    def __init__(self, catalog: Catalog, constant=None, cover: bool = False) -> None:
        self.catalog = catalog
        self.constant = constant  # see rewrite_query: uncorrelated witness -> marker id expression, or None
        self.cover = cover and constant is not None  # see rewrite_query and sql.covered
        self._scalar_markers: list[exp.Expression] = []  # the last _subqueries' marker scalar subqueries
        self.top: exp.Expression | None = None  # the top-level SELECT, whose frames may leave as positions
        self.top_frames: list[tuple] = []
        self._cte_defs: dict[str, exp.CTE] = {}  # rewritten CTEs, for witnesses that run on their own
        self._recursive: set[str] = set()
        self._with_sql: dict[tuple, str] = {}
        self.traced: set[str] = set()
        self.untraced: set[str] = set()
        self._ids = itertools.count()
        self._aggregated: dict[int, bool] = {}  # id(rewritten SELECT) -> whether it aggregates
        self._parts: dict[int, Lineage] = {}  # id(rewritten non-aggregate SELECT) -> its lineage parts
        self._cte_cols: dict[str, list[str] | None] = {}  # CTE name -> its visible columns, if known
        self._scopes: list[dict[str, tuple]] = []  # per open SELECT: FROM alias -> (columns | None, traced)

    def _alias(self, prefix: str) -> str:
        return f"__tp_{prefix}{next(self._ids)}"

    # ------------------------------------------------------------------ queries
    def query(self, q: exp.Expression, ctes: dict, trace: bool, force_list: bool = False):
        """Rewrite ``q`` in place (returns the possibly new node and the hidden kind, None untraced)."""
        ctes = dict(ctes)
        with_ = q.args.get("with_")
        if with_ is not None:
            for cte in with_.expressions:
                self._cte(cte, ctes, trace, bool(with_.args.get("recursive")))
        rule = _QUERY_RULES.get(type(q))
        if isinstance(q, exp.Values) and trace:  # a query of its own: SELECT * FROM (VALUES ...), no lineage
            sel = _t("SELECT * FROM x")
            sel.set("from_", exp.From(this=exp.Subquery(this=q, alias=exp.TableAlias(this=self._alias("v")))))
            return self.query(sel, ctes, trace, force_list)
        if rule is None:
            if isinstance(q, exp.Values) or not trace:
                return q, None
            if isinstance(q, exp.DML):
                raise UnsupportedSQLError(
                    f"{type(q).__name__.upper()} inside a query (a data-modifying CTE): run it as a statement of "
                    "its own first, then query the table"
                )
            raise UnsupportedSQLError(
                f"cannot carry lineage through a {type(q).__name__} query: write it as a plain SELECT, or run "
                "it on con.raw (without lineage)"
            )
        return rule(self, q, ctes, trace, force_list)

    def _cte(self, cte: exp.CTE, ctes: dict, trace: bool, recursive: bool) -> None:
        name = cte.alias_or_name.lower()
        recursive = recursive and _reads_table(cte.this, name)
        body = cte.this
        keyed = bool(cte.args.get("key_expressions"))  # USING KEY: rows replace rows (their lineage too)
        if keyed and trace and not isinstance(body, exp.SetOperation):
            raise UnsupportedSQLError("USING KEY on a CTE that is not a UNION: write it without USING KEY")
        if (
            (recursive or keyed)
            and trace
            and isinstance(body, exp.SetOperation)
            and (keyed or not _is_union_all(body))
        ):
            new, kind = self._recursive_union(cte, ctes)
            recursive = False  # the recursion moved into the CTE's own WITH RECURSIVE
        elif recursive and trace:
            ctes[name] = LIN
            new, kind = self.query(body, ctes, trace, force_list=True)
        else:
            new, kind = self.query(cte.this, ctes, trace)
        cte.set("this", new)
        ctes[name] = kind
        cols = _column_list(new, cte.args.get("alias") or exp.TableAlias())
        self._cte_cols[name] = cols if cols is not None else self._cte_cols.get(name)
        self._cte_defs[name] = cte
        if recursive:
            self._recursive.add(name)
        alias = cte.args.get("alias")
        if kind and alias is not None and alias.columns:
            self._cte_hidden_column(cte, kind, recursive)
            if recursive:  # the column list now names every column
                self._cte_cols[name] = [c.name for c in alias.columns if c.name not in HIDDEN]

    def _recursive_union(self, cte: exp.CTE, ctes: dict) -> tuple[exp.Select, str | None]:
        """``WITH RECURSIVE c AS (anchor UNION recursive part)``: UNION removes rows equal to earlier ones,
        so lineage cannot travel through the recursion (rows with other lineage would never be equal);
        ``USING KEY`` replaces rows by key (its aggregates would merge or drop lineage).
        The recursion runs untraced, as written, under a new name inside ``c`` itself; every row of ``c``
        gets one shared set: the lineage of every anchor row and every row of each traced table the
        recursive part reads. Re-run on those rows, the anchor gives the same rows and the recursive part
        reads whole tables, so ``c`` comes out the same (sufficient; coarse: not the one derivation)."""
        name, body = cte.alias_or_name, cte.this
        wq = self._recursive_witness(body, name.lower(), ctes)
        inner = self._alias("rec")
        new, _ = self.query(body, {**ctes, name.lower(): None}, False)
        for t in new.find_all(exp.Table):
            if _names_cte(t, name.lower()):
                if not t.alias and not t.args.get("db"):
                    t.set("alias", exp.TableAlias(this=t.this.copy()))
                t.set("this", exp.to_identifier(inner))
        alias = cte.args.get("alias")
        columns = list(alias.columns) if alias is not None else []
        anchor = body
        while isinstance(anchor, (exp.SetOperation, exp.Subquery)):
            anchor = anchor.this
        self._cte_cols[name.lower()] = [c.name for c in columns] or _column_list(anchor, exp.TableAlias())
        if alias is not None:
            alias.set("columns", None)
        rec = exp.CTE(this=new, alias=exp.TableAlias(this=exp.to_identifier(inner), columns=columns))
        rec.set("key_expressions", cte.args.get("key_expressions"))  # USING KEY (k): the recursion's own
        cte.set("key_expressions", None)
        out = exp.select("*").from_(inner)
        out.set("with_", exp.With(expressions=[rec], recursive=True))
        if wq is None:
            return out, None
        marker = self.constant(wq, LIN, None, self._with(ctes)) if self.constant is not None else None
        if marker is not None:
            out.append("expressions", _named(marker, RID))
            return out, RID
        shared = _t(f"(SELECT flatten(list(__tp_w.{LIN})) FROM x AS __tp_w)")
        shared.this.args["from_"].this.replace(exp.Subquery(this=wq, alias=exp.TableAlias(this="__tp_w")))
        out.append("expressions", _named(shared, LIN))
        return out, LIN

    def _recursive_witness(self, body: exp.SetOperation, name: str, ctes: dict) -> exp.Expression | None:
        """``SELECT 1, lineage`` over the anchor's rows and every row of each traced table (or CTE) the
        recursive part reads, rewritten; None if none of them is traced."""
        one = exp.alias_(exp.Literal.number(1), "__tp_v")
        anchor = exp.Subquery(
            this=body.this.copy(), alias=exp.TableAlias(this=exp.to_identifier(self._alias("a")))
        )
        parts, seen = [exp.select(one.copy()).from_(anchor)], set()
        for t in body.expression.find_all(exp.Table):
            key = t.name.lower()
            if (
                not isinstance(t.this, exp.Identifier)
                or _names_cte(t, name)
                or key in seen
                or t.args.get("db")
            ):
                continue
            seen.add(key)
            if ctes.get(key) if key in ctes else self.catalog.hidden.get(key):
                parts.append(exp.select(one.copy()).from_(exp.Table(this=t.this.copy())))
            elif key not in ctes and key in self.catalog.columns:
                self.untraced.add(key)  # a table without lineage: named in the result's missing_lineage
        union = parts[0]
        for part in parts[1:]:
            union = exp.Union(this=union, expression=part, distinct=False)
        wq, _ = self.query(union, ctes, True, force_list=True)
        branches = [wq]
        while isinstance(branches[0], exp.SetOperation):
            branches[:1] = [branches[0].this, branches[0].expression]
        return None if all(_reads_nothing(b) for b in branches) else wq

    def _cte_hidden_column(self, cte: exp.CTE, kind: str, recursive: bool) -> None:
        """``WITH c(a) AS (...)`` renames the body's first columns; the hidden column keeps its name."""
        alias = cte.args["alias"]
        if not recursive:
            inner = _t(f"SELECT {kind}, * EXCLUDE ({kind}) FROM x")
            inner.set("from_", exp.From(this=exp.Subquery(this=cte.this, alias=self._alias("h"))))
            cte.set("this", inner)
            alias.set("columns", [exp.to_identifier(kind), *alias.columns])
            return
        anchor = cte.this
        while isinstance(anchor, (exp.SetOperation, exp.Subquery)):
            anchor = anchor.this
        names = _column_list(anchor, exp.TableAlias()) or self._star_columns(anchor)
        given = [c.name for c in alias.columns]
        if names is None or len(names) < len(given):
            raise UnsupportedSQLError(
                f"WITH RECURSIVE {cte.alias}({', '.join(given)}): name every column of the CTE in its column "
                "list (or none)"
            )
        rest = [exp.to_identifier(n) for n in names[len(given) :]]  # the anchor's names for the others
        alias.set("columns", [*alias.columns, *rest, exp.to_identifier(kind)])

    def _star_columns(self, sel: exp.Expression) -> list[str] | None:
        """Visible columns of ``SELECT * FROM one item`` (rewritten) where the item's columns are known:
        a VALUES list (DuckDB names its columns col0, col1, ... unless aliased), a CTE, a table."""
        if not isinstance(sel, exp.Select) or sel.args.get("joins") or sel.args.get("from_") is None:
            return None
        shown = [e for e in sel.expressions if e.alias_or_name not in HIDDEN]
        star = shown[0] if len(shown) == 1 else None
        if not isinstance(star, exp.Star) or any(v for k, v in star.args.items() if k != "except_"):
            return None
        if any(c.name not in HIDDEN for c in star.args.get("except_") or []):
            return None
        item = sel.args["from_"].this
        alias = item.args.get("alias")
        renamed = [c.name for c in alias.columns] if alias is not None else []
        inner = item.this if isinstance(item, exp.Subquery) else item
        if isinstance(inner, exp.Values) and inner.expressions:
            renamed = renamed or [c.name for c in (inner.args.get("alias") or exp.TableAlias()).columns]
            first = inner.expressions[0]
            n = len(first.expressions) if isinstance(first, exp.Tuple) else 1
            names = [f"col{i}" for i in range(n)]
        elif (
            isinstance(item, exp.Table) and isinstance(item.this, exp.Identifier) and not item.args.get("db")
        ):
            name = item.name.lower()
            names = self._cte_cols.get(name) if name in self._cte_cols else self.catalog.columns.get(name)
        else:
            return None
        return None if names is None else renamed + list(names)[len(renamed) :]

    def _select(self, sel: exp.Select, ctes: dict, trace: bool, force_list: bool):
        self._scopes.append({})
        try:
            return self._select_scope(sel, ctes, trace, force_list)
        finally:
            self._scopes.pop()

    def _select_scope(self, sel: exp.Select, ctes: dict, trace: bool, force_list: bool):
        aggs = self.catalog.aggregates
        from_ = sel.args.get("from_")
        if from_ is not None and from_.this.args.get("joins"):  # FROM-first SQL: FROM a, b hangs b on a
            hanging = from_.this.args["joins"]
            from_.this.set("joins", None)
            sel.set("joins", [*hanging, *(sel.args.get("joins") or [])])
        distinct = sel.args.get("distinct")
        if trace:
            self._semi_to_exists(sel)
        lin = Lineage()
        exposed: dict[str, set[str]] = {}
        from_ = sel.args.get("from_")
        items = ([from_.this] if from_ is not None else []) + [j.this for j in sel.args.get("joins") or []]
        skip = set()
        item_parts: dict[int, list] = {}  # id(FROM item) -> its lineage parts (see sql.covered)
        for j in sel.args.get("joins") or []:
            kind = (j.args.get("kind") or "").upper()
            if kind == "MARK":
                raise UnsupportedSQLError(
                    "JOIN BY (TYPE mark): write the condition as EXISTS (...) or IN (...)"
                )
            if kind == "ANTI":
                skip.add(id(j.this))
        for item, parts in zip(
            items, self._join_items(items, sel.args.get("joins") or [], ctes, trace, exposed)
        ):
            if trace and parts and len(items) > 1 and self.constant is not None:
                parts = self._one_row_marker(item, ctes) or parts
            if trace and id(item) not in skip:
                item_parts[id(item)] = parts
                for e, k in parts:
                    lin.add(e, k)
        for item in items:  # an ANTI JOIN's right side has no columns in the output
            if id(item) in skip:
                exposed.pop(item.alias_or_name.lower(), None)
        self._hide_stars(sel, exposed)
        self._row_structs(sel, exposed)
        self._outer_aggregates(sel)
        is_agg = sel.args.get("group") is not None or any(
            _has_agg(sel.args.get(k), aggs) for k in ("having",) if sel.args.get(k) is not None
        )
        is_agg = is_agg or any(_has_agg(e, aggs) for e in sel.expressions)
        group_extra = self._subqueries(sel, ctes, trace, lin, is_agg)
        if trace and self.cover and self._scalar_markers:
            self._drop_covered(sel, lin, item_parts)
        if not trace:
            return sel, None
        wrap_distinct = False
        if distinct is not None and distinct.args.get("on") is not None:
            pass  # DISTINCT ON keeps whole rows: a kept row alone is the first of its group again
        elif distinct is not None:
            if is_agg:
                wrap_distinct = True
            elif any(e.find(exp.Window) for e in sel.expressions):
                raise UnsupportedSQLError("SELECT DISTINCT with window functions")
            else:
                _distinct_order_check(sel)
                sel.set("distinct", None)
                sel.set("group", exp.Group(all=True))
                is_agg = True
        named = {w.name.lower(): w for w in sel.args.get("windows") or []}
        windows = [w for root in select_like_roots(sel) for w in _windows_in(root)]
        if not (lin.scalars or lin.lists or group_extra):
            windows = []  # the rows a window reads carry no lineage: nothing to add
        if any(w.find(exp.Columns) for w in windows):  # one window per matched column: frames unknown here
            raise UnsupportedSQLError("COLUMNS(...) in a window over a traced table: list the columns")
        frames = [self._unalias(_frame_of(w, named, aggs), sel) for w in windows]
        if is_agg:
            base = lin.aggregated(group_extra)
            reads = [_frame_lineage(f, base) for f in frames]
            expr, kind = lin.aggregated(group_extra + reads), LIN
        else:
            if windows and sel is self.top and distinct is None:  # frames as shared sets, after the query
                self.top_frames = frames
            elif windows:
                base = _as_list(*lin.row())
                for f in frames:
                    lin.add(_frame_lineage(f, base), LIN)
            expr, kind = lin.row()
        if force_list or wrap_distinct:
            expr, kind = _as_list(expr, kind), LIN
        sel.append("expressions", _named(expr, kind))
        self._aggregated[id(sel)] = is_agg
        if not is_agg:
            self._parts[id(sel)] = lin
        if wrap_distinct:
            return self._distinct_wrap(sel), LIN
        return sel, kind

    def _unalias(self, frame: tuple, sel: exp.Select) -> tuple:
        """A window's PARTITION BY / ORDER BY may name a SELECT alias (``WINDOW w AS (ORDER BY a)``);
        copied into the lineage's own window, the alias is written out as its expression."""
        aliases = {e.alias.lower(): e.this for e in sel.expressions if isinstance(e, exp.Alias)}
        partition, order, spec = frame
        partition = [p.copy() for p in partition or []]
        order = order.copy() if order is not None else None
        if not aliases:
            return partition, order, spec
        items = list((self._scopes[-1] if self._scopes else {}).values())

        def written_out(col: exp.Expression) -> exp.Expression:
            name = col.name.lower() if isinstance(col, exp.Column) else ""
            if col.table if isinstance(col, exp.Column) else True:
                return col
            if name not in aliases:
                return col
            if any(name in (c.lower() for c in cols) for cols, _ in items if cols is not None):
                return col  # a column of a FROM item: DuckDB binds the column
            if any(cols is None for cols, _ in items):
                raise UnsupportedSQLError(
                    f"a window's PARTITION BY / ORDER BY names {col.name}, a SELECT alias or a column the "
                    "rewriter cannot see: write the expression itself"
                )
            return aliases[name].copy()

        partition = [p.transform(written_out) for p in partition]
        order = order.transform(written_out) if order is not None else None
        return partition, order, spec

    def _semi_to_exists(self, sel: exp.Select) -> None:
        """``a SEMI JOIN b ON c`` is ``a WHERE EXISTS (SELECT 1 FROM b WHERE c)``: its witnesses join."""
        for j in list(sel.args.get("joins") or []):
            if (j.args.get("kind") or "").upper() != "SEMI":
                continue
            if j.args.get("using") or j.args.get("on") is None:
                raise UnsupportedSQLError("SEMI JOIN with USING: write the condition with ON (...)")
            sub = exp.select("1").from_(j.this.copy()).where(j.args["on"].copy())
            j.pop()
            sel.where(exp.Exists(this=sub), copy=False)

    def _distinct_wrap(self, sel: exp.Select) -> exp.Select:
        sel.set("distinct", None)
        outer = _t(f"SELECT * EXCLUDE ({LIN}), flatten(list({LIN})) AS {LIN} FROM x GROUP BY ALL")
        for key in ("order", "limit", "offset"):
            if sel.args.get(key) is not None:
                outer.set(key, sel.args[key])
                sel.set(key, None)
        outer.set("from_", exp.From(this=exp.Subquery(this=sel, alias=exp.TableAlias(this=self._alias("d")))))
        return outer

    def _hide_stars(self, sel: exp.Select, exposed: dict[str, set[str]]) -> None:
        every = set().union(*exposed.values()) if exposed else set()
        self._hide_columns(sel, exposed, every)
        for e in sel.expressions:
            if isinstance(e, exp.Alias) and "\\" in e.alias and e.find(exp.Star):
                raise UnsupportedSQLError(
                    f"{e.sql(dialect=DIALECT)[:60]}: renaming the columns a star pattern matches: list them"
                )
            while isinstance(
                e, (exp.Alias, exp.Escape, exp.Like, exp.ILike, exp.SimilarTo, exp.Glob, exp.RegexpLike)
            ):
                e = e.this  # * LIKE '...' / * SIMILAR TO '...': the pattern could match a hidden column
            if isinstance(e, exp.Star) and e.args.get("ilike") is not None:  # * ILIKE 'p': EXCLUDE first
                e = e.replace(exp.ILike(this=exp.Star(), expression=e.args["ilike"])).this
            if isinstance(e, exp.Star):
                star, names = e, every
            elif isinstance(e, exp.Column) and isinstance(e.this, exp.Star):
                star, names = e.this, exposed.get(e.table.lower(), set())
            else:
                continue
            if names:
                have = star.args.get("except_") or []
                star.set("except_", list(have) + [_col(n) for n in sorted(names)])

    def _hide_columns(self, sel: exp.Select, exposed: dict[str, set[str]], every: set[str]) -> None:
        """``COLUMNS(*)`` / ``COLUMNS(t.*)`` of this SELECT get the hidden columns EXCLUDEd; a pattern or a
        lambda could match them: refused where a FROM item of this SELECT has a hidden column."""
        roots = [
            *sel.expressions,
            *(sel.args.get(k) for k in ("where", "having", "qualify", "group", "order")),
        ]
        for node in [c for r in roots if r is not None for c in r.find_all(exp.Columns)]:
            if not every or node.find_ancestor(exp.Select) is not sel:
                continue  # nothing hidden to match here (a subquery's own SELECT handles its COLUMNS)
            star, names = node.this, every
            if isinstance(star, exp.Column) and isinstance(star.this, exp.Star):
                star, names = star.this, exposed.get(star.table.lower(), set())
            if not isinstance(star, exp.Star) or star.args.get("ilike") is not None:
                raise UnsupportedSQLError(
                    f"{node.sql(dialect=DIALECT)[:60]} over a traced table could match its lineage columns: "
                    "use COLUMNS(*) (with EXCLUDE / REPLACE) or list the columns explicitly"
                )
            have = star.args.get("except_") or []
            star.set("except_", list(have) + [_col(n) for n in sorted(names)])

    def _row_structs(self, sel: exp.Select, exposed: dict[str, set[str]]) -> None:
        """A FROM item named as a value (``SELECT t FROM t``, ``(SELECT t)``) is its row as a STRUCT, which
        would show the hidden column: write it as ``{'a': t.a, ...}`` (a missing outer-join row gives
        NULL fields, as DuckDB's does), or refuse where the item's columns are not known."""
        for col in list(sel.find_all(exp.Column)):
            if col.table or not isinstance(col.this, exp.Identifier) or isinstance(col.parent, exp.Star):
                continue
            if col.find_ancestor(exp.Select) is not sel:
                continue
            cols = self._struct_of(col.name.lower())
            if cols is not None:
                pairs = ", ".join(
                    f"{exp.Literal.string(c).sql(dialect=DIALECT)}: {col.this.sql(dialect=DIALECT)}."
                    f"{exp.to_identifier(c, quoted=True).sql(dialect=DIALECT)}"
                    for c in cols
                )
                struct = _t(f"SELECT {{{pairs}}}").expressions[0]
                col.replace(exp.alias_(struct, col.this.copy()) if col.parent is sel else struct)

    def _outer_aggregates(self, sel: exp.Select) -> None:
        """``(SELECT sum(o.x) FROM t)`` with ``o`` a FROM item of an outer query aggregates the outer query
        (DuckDB binds it there), which the outer rewrite does not know: refused."""
        if len(self._scopes) < 2:
            return
        own = set(self._scopes[-1])
        outer = set().union(*self._scopes[:-1])
        for node in sel.find_all(exp.AggFunc, exp.Anonymous):
            if not _is_agg(node, self.catalog.aggregates) or isinstance(node.parent, exp.Window):
                continue
            if node.find_ancestor(exp.Select) is not sel:
                continue
            cols = list(node.find_all(exp.Column))
            tables = {c.table.lower() for c in cols}
            if not own and cols:  # no FROM here: every column is the outer query's
                tables = {t or next(iter(outer), "") for t in tables}
            if cols and "" not in tables and not tables & own and tables <= outer:
                raise UnsupportedSQLError(
                    f"{node.sql(dialect=DIALECT)[:60]} inside a subquery aggregates the outer query's rows: "
                    "compute it in the outer query (or a CTE) and refer to the result"
                )

    def _struct_of(self, name: str) -> list[str] | None:
        """The columns of the traced FROM item that the bare name ``name`` refers to as a row, or None
        if it names a column (or no traced item); raises where DuckDB's choice is not known here."""
        unsure = False
        for scope in reversed(self._scopes):
            known = [c for c, _ in scope.values() if c is not None]
            if any(name in (x.lower() for x in c) for c in known):
                return None  # a column: DuckDB binds columns before row values
            unsure = unsure or len(known) < len(scope)
            if name in scope:
                cols, traced = scope[name]
                if not traced:
                    return None
                if unsure or cols is None:
                    raise UnsupportedSQLError(
                        f"{name} as a row value (a STRUCT of its columns): its columns are not known to the "
                        f"rewriter; write {{'a': {name}.a, ...}} or struct_pack(a := {name}.a, ...)"
                    )
                return cols
        return None

    def _item(self, alias: str, cols: list[str] | None, traced: bool) -> None:
        """Record a FROM item of the SELECT being rewritten (for row values, see ``_row_structs``)."""
        if self._scopes:
            self._scopes[-1][alias.lower()] = (cols, traced)

    # ------------------------------------------------------------------ FROM items
    def _from_item(self, item, ctes: dict, trace: bool, exposed: dict) -> list[tuple[exp.Expression, str]]:
        rule = _FROM_RULES.get(type(item))
        if rule is None:
            raise UnsupportedSQLError(
                f"{type(item).__name__.upper()} in FROM: run it on con.raw (it would list the lineage columns), "
                "or select from the table itself"
            )
        return rule(self, item, ctes, trace, exposed)

    def _table(self, t: exp.Table, ctes: dict, trace: bool, exposed: dict):
        alias = t.args.get("alias")
        if _lists_columns(t):
            self._hide_column_rows(t)
            return []
        if not isinstance(t.this, exp.Identifier):  # a table function: read_csv(...), range(...)
            fname = _table_function_name(t)
            if trace and fname not in _UNTRACED_OK:
                self.untraced.add(t.this.sql(dialect=DIALECT)[:80])
            cols = [c.name for c in alias.columns] if alias is not None and alias.columns else None
            one_column = fname in ("range", "generate_series", "unnest")  # one column each: renamed
            self._item(t.alias_or_name or fname, cols if one_column else None, False)
            return []
        name = t.name.lower()
        ref = alias.this if alias is not None and alias.this else t.this
        cte = name in ctes and not t.args.get("db")
        if cte:
            kind = ctes[name]
        else:
            kind = self.catalog.hidden.get(name)
            if trace:
                (self.traced if kind else self.untraced).add(name)
        cols = self._cte_cols.get(name) if cte else self.catalog.columns.get(name)
        renamed = [c.name for c in alias.columns] if alias is not None and alias.columns else []
        if cols is not None and renamed:
            cols = renamed + cols[len(renamed) :]
        self._item(ref.name, cols, bool(kind))
        if not kind:
            return []
        exposed[ref.name.lower()] = {kind}
        if renamed:
            ref = self._hidden_first(t, kind).args["alias"].this
        return [(_col(kind, ref), kind)]

    def _hide_column_rows(self, t: exp.Table) -> None:
        """``pragma_table_info('t')`` and the like, without the rows of the hidden columns."""
        fname = _table_function_name(t)
        alias = t.args.get("alias")
        body = t.copy()
        body.set("alias", None)
        joins = body.args.get("joins")
        body.set("joins", None)
        inner = _t(f"SELECT * FROM x WHERE {_COLUMN_LISTS[fname]} NOT IN ('{RID}', '{LIN}')")
        inner.set("from_", exp.From(this=body))
        alias = alias.pop() if alias is not None else exp.TableAlias(this=exp.to_identifier(t.name or fname))
        t.replace(exp.Subquery(this=inner, alias=alias, joins=joins))
        self._item(alias.name, None, False)

    def _join_items(self, items: list, joins: list, ctes: dict, trace: bool, exposed: dict) -> list[list]:
        """Rewrite the FROM items of one join tree (``items[k + 1]`` is ``joins[k]``'s right side); each
        item's lineage parts. A NATURAL JOIN becomes ``USING (the columns both sides have)``."""
        out, groups = [], []
        for i, item in enumerate(items):
            before = set(self._scopes[-1]) if self._scopes else set()
            out.append(self._from_item(item, ctes, trace, exposed))
            groups.append([a for a in (self._scopes[-1] if self._scopes else {}) if a not in before])
            if i and (joins[i - 1].args.get("method") or "").upper() == "NATURAL":
                # joins bind tighter than commas: the left side starts after the last comma
                start = max((k for k in range(1, i) if _is_comma(joins[k - 1])), default=0)
                self._natural(joins[i - 1], [a for g in groups[start:i] for a in g], groups[i])
        return out

    def _natural(self, join: exp.Join, left: list[str], right: list[str]) -> None:
        """``a NATURAL JOIN b`` as ``a JOIN b USING (...)`` (NATURAL would also match the hidden columns)."""
        scope = self._scopes[-1] if self._scopes else {}
        sides = [[scope[a][0] for a in aliases] for aliases in (left, right)]
        if not all(sides) or any(c is None for side in sides for c in side):
            raise UnsupportedSQLError(
                "NATURAL JOIN: the columns of its sides are not known to the rewriter (a table function, a "
                "subquery with *, ...); write the join with USING (the shared columns)"
            )
        lcols = [c for cols in sides[0] for c in cols]
        rnames = {c.lower() for cols in sides[1] for c in cols}
        common = list(dict.fromkeys(c for c in lcols if c.lower() in rnames))
        if not common:
            raise UnsupportedSQLError("NATURAL JOIN: the two sides share no column name; write CROSS JOIN")
        join.set("method", None)
        join.set("using", [exp.to_identifier(c) for c in common])

    def _hidden_first(self, item: exp.Expression, kind: str) -> exp.Subquery:
        """``t AS v(a)`` renames t's first columns: the hidden column must not be one of them, wherever the
        list ends. ``(SELECT __tp_rid, * EXCLUDE (__tp_rid) FROM t) AS v(__tp_rid, a)`` renames the rest as
        written (the same for a derived table); the new item replaces ``item`` in the tree."""
        alias = item.args["alias"].pop()
        inner = _t(f"SELECT {kind}, * EXCLUDE ({kind}) FROM x")
        body = item.copy()
        joins = body.args.get("joins")  # FROM-first SQL can hang the next items on this one: keep them out
        body.set("joins", None)
        if isinstance(body, exp.Subquery):
            body.set("alias", exp.TableAlias(this=exp.to_identifier(self._alias("h"))))
        inner.set("from_", exp.From(this=body))
        alias.set("columns", [exp.to_identifier(kind), *alias.columns])
        new = exp.Subquery(this=inner, alias=alias, joins=joins)
        item.replace(new)
        return new

    def _derived(self, sub: exp.Subquery, ctes: dict, trace: bool, exposed: dict):
        inner = sub.this
        alias = sub.args.get("alias")
        if not isinstance(inner, exp.Query) or (isinstance(inner, exp.Subquery) and inner.args.get("joins")):
            # a parenthesised join: (a JOIN b ON ...), ((q) s JOIN b ON ...)
            if alias is not None and alias.name:  # (a JOIN b) AS j: the inner names are hidden
                sub.set("this", exp.select("*").from_(inner))
                return self._derived(sub, ctes, trace, exposed)
            joins = inner.args.get("joins") or []
            items = [inner] + [j.this for j in joins]
            return [p for parts in self._join_items(items, joins, ctes, trace, exposed) for p in parts]
        new, kind = _no_constant_lineage(*self.query(inner, ctes, trace))
        sub.set("this", new)
        if alias is None or not alias.name:
            alias = self._unnamed(alias)
            if kind:
                sub.set("alias", alias)
        self._item(alias.name, _column_list(new, alias), bool(kind))
        if not kind:
            return []
        if alias.columns:
            alias = self._hidden_first(sub, kind).args["alias"]
        exposed[alias.name.lower()] = {kind}
        return [(_col(kind, alias.this), kind)]

    def _unnamed(self, alias: exp.TableAlias | None) -> exp.TableAlias:
        """The name DuckDB gives an unaliased subquery: unnamed_subquery, unnamed_subquery2, ..."""
        n = sum(1 for a in (self._scopes[-1] if self._scopes else {}) if a.startswith("unnamed_subquery"))
        name = "unnamed_subquery" + (str(n + 1) if n else "")
        return exp.TableAlias(this=exp.to_identifier(name), columns=alias.columns if alias else [])

    def _lateral(self, item: exp.Lateral, ctes: dict, trace: bool, exposed: dict):
        """``LATERAL (q) AS s``: a derived table that may read the FROM items before it; a LATERAL table
        function (``unnest(t.l)``) reads only the current row, whose lineage the row has already."""
        inner, alias = item.this, item.args.get("alias")
        if not (isinstance(inner, exp.Subquery) and isinstance(inner.this, exp.Query)):
            self._item(item.alias_or_name or "lateral", None, False)
            return []
        new, kind = _no_constant_lineage(*self.query(inner.this, ctes, trace))
        if alias is None or not alias.name:
            alias = self._unnamed(alias)
        self._item(alias.name, _column_list(new, alias), bool(kind))
        if kind and alias.columns:  # hidden column first, as in _hidden_first
            wrapped = _t(f"SELECT {kind}, * EXCLUDE ({kind}) FROM x")
            wrapped.set("from_", exp.From(this=exp.Subquery(this=new, alias=self._alias("h"))))
            new = wrapped
            alias.set("columns", [exp.to_identifier(kind), *alias.columns])
        inner.set("this", new)
        if not kind:
            return []
        item.set("alias", alias)
        exposed[alias.name.lower()] = {kind}
        return [(_col(kind, alias.this), kind)]

    def _no_lineage(self, item, ctes: dict, trace: bool, exposed: dict):
        if item.alias_or_name:
            self._item(item.alias_or_name, None, False)
        return []

    def _unsupported_from(self, item, ctes: dict, trace: bool, exposed: dict):
        raise UnsupportedSQLError(f"{type(item).__name__.upper()} in FROM")

    # ------------------------------------------------------------------ subqueries
    def _subqueries(self, sel: exp.Select, ctes: dict, trace: bool, lin: Lineage, is_agg: bool):
        """Hide stars inside every subquery of this scope; add witness lineage; return group-level parts."""
        aggs = self.catalog.aggregates
        joins = sel.args.get("joins") or []
        anti = [j.args.get("on") for j in joins if (j.args.get("kind") or "").upper() == "ANTI"]
        where_like = [sel.args.get("where")] + [
            j.args.get("on") for j in joins if (j.args.get("kind") or "").upper() != "ANTI"
        ]
        # an ANTI JOIN's condition held for no row: nothing witnesses it (as NOT EXISTS); a LIMIT / OFFSET
        # subquery only bounds how many rows are kept: like NOT EXISTS, its tables count as kept whole
        for root in [*anti, sel.args.get("limit"), sel.args.get("offset")]:
            for node, neg, _ in list(_scope_walk(root, aggs=aggs)) if root is not None else []:
                self._subquery(node, neg, ctes, trace=False)
        select_like = list(sel.expressions) + [sel.args.get("having"), sel.args.get("qualify")]
        for key in ("group", "order"):
            node = sel.args.get(key)
            if node is not None and any(True for _ in _scope_walk(node, aggs=aggs)):
                raise UnsupportedSQLError(f"a subquery in {key.upper()} BY")
        group_extra: list[exp.Expression] = []
        scalar_markers = []
        keys = _group_keys(sel)
        for region, region_row_level in ((where_like, True), (select_like, False)):
            for root in region:
                if root is None:
                    continue
                # a subquery in a GROUP BY key is evaluated per input row: its witnesses are the members'
                row_level = region_row_level or _is_group_key(root, keys)
                for node, neg, in_agg in list(_scope_walk(root, aggs=aggs)):
                    found = self._subquery(node, neg, ctes, trace)
                    if found is None:
                        continue
                    w, marker = found
                    if marker and isinstance(node, exp.Subquery):
                        scalar_markers.append(node)
                    if marker:  # rows shared by many rows: one marker id, a shared set after the query
                        if row_level or in_agg or not is_agg:
                            lin.add(w, RID)
                        else:
                            group_extra.append(exp.Array(expressions=[w]))
                        continue
                    if row_level or in_agg or not is_agg:
                        lin.add(w, LIN)
                    else:
                        group_extra.append(w)
        self._scalar_markers = scalar_markers
        return group_extra

    def _drop_covered(self, sel: exp.Select, lin: Lineage, item_parts: dict[int, list]) -> None:
        """Leave out of ``lin`` the parts of the FROM items whose rows a scalar subquery's shared set
        (a marker in every row) already holds (see :mod:`traceprop_frames.sql.covered`)."""
        bodies = []
        for node in self._scalar_markers:
            body = node
            while isinstance(body, exp.Subquery):
                body = body.this
            bodies.append(body)
        drop = {
            id(e)
            for i in covered_items(sel, bodies, self.catalog.aggregates)
            for e, _ in item_parts.get(i, [])
        }
        if drop:
            lin.scalars = [e for e in lin.scalars if id(e) not in drop]
            lin.lists = [e for e in lin.lists if id(e) not in drop]

    def _subquery(self, node, neg: int, ctes: dict, trace: bool):
        """Rewrite one subquery in place (stars hidden); return its witness expression or None."""
        if isinstance(node, exp.In):
            q, mode = node.args["query"], "in"
            if isinstance(node.this, exp.Anonymous) and node.this.name.lower() == "row":
                node.set("this", exp.Tuple(expressions=node.this.expressions))  # row(a, b) is (a, b)
        elif isinstance(node, (exp.Exists, exp.Any, exp.All)):
            q, mode = node.this, ("exists" if isinstance(node, exp.Exists) else "all")
        else:
            q, mode = node, "all"
        while isinstance(q, exp.Subquery) and isinstance(q.this, exp.Query):
            q = q.this
        positive = neg % 2 == 0 or mode == "all"
        if mode == "exists" and always_one_row(q, lambda e: _has_agg(e, self.catalog.aggregates)):
            positive = False  # always true: the rows it reads decide nothing (see always_one_row)
        witness_q = q.copy() if trace and positive else None
        new, _ = self.query(q, ctes, trace=False)
        if new is not q:
            q.replace(new)
        if witness_q is None:
            return None
        wq, kind = self.query(witness_q, ctes, trace=True)
        if _reads_nothing(wq):  # no traced table inside: no witness rows to name
            return None
        if self.constant is not None:
            marker = self.constant(wq, kind, node.this if mode == "in" else None, self._with(ctes))
            if marker is not None:
                return marker, True
        simple = self._simple_witness(wq, kind, mode, node)
        if simple is not None:
            return simple, False
        alias = self._alias("w")
        agg = f"list({alias}.{RID})" if kind == RID else f"flatten(list({alias}.{LIN}))"
        if mode == "in":  # (a, b) IN (SELECT x, y ...): one column per element of the tuple
            values = node.this.expressions if isinstance(node.this, exp.Tuple) else [node.this]
            names = [f"__tp_v{i}" for i in range(len(values))]
            cond = " AND ".join(f"{alias}.{n} = y" for n in names)
            w = _t(f"(SELECT {agg} FROM x AS {alias}({', '.join(names)}, {kind}) WHERE {cond})")
            for eq, v in zip(w.this.find_all(exp.EQ), values):
                eq.set("expression", v.copy())
        else:
            w = _t(f"(SELECT {agg} FROM x AS {alias})")
        w.this.args["from_"].this.replace(
            exp.Subquery(this=wq, alias=w.this.args["from_"].this.args["alias"].copy())
        )
        return w, False

    def _one_row_marker(self, item, ctes: dict) -> list[tuple[exp.Expression, str]] | None:
        """A joined one-row aggregate (``FROM t, (SELECT avg(x) ...)`` or such a CTE): its rows, which
        every joined row depends on, as one marker id (a shared set) instead of a copy per row."""
        if isinstance(item, exp.Table) and isinstance(item.this, exp.Identifier):
            cte = self._cte_defs.get(item.name.lower()) if item.name.lower() in ctes else None
            body = cte.this if cte is not None else None
            wq = _t(f"SELECT * FROM {exp.to_identifier(item.name).sql(dialect=DIALECT)}") if cte else None
        elif isinstance(item, exp.Subquery) and isinstance(item.this, exp.Select):
            body, wq = item.this, item.this.copy()
        else:
            return None
        if not (
            isinstance(body, exp.Select) and self._aggregated.get(id(body)) and not body.args.get("group")
        ):
            return None
        marker = self.constant(wq, LIN, None, self._with(ctes))
        return [(marker, RID)] if marker is not None else None

    def _with(self, ctes: dict) -> str:
        """``WITH ...`` SQL of the rewritten CTEs visible here (so a witness can run as a query of its
        own), or ""; generated once per set of CTEs."""
        names = tuple(n for n in ctes if n in self._cte_defs)
        if names not in self._with_sql:
            defs = [self._cte_defs[n].copy() for n in names]
            w = exp.With(expressions=defs, recursive=any(n in self._recursive for n in names))
            self._with_sql[names] = w.sql(dialect=DIALECT) + " " if defs else ""
        return self._with_sql[names]

    def _simple_witness(self, wq, kind: str, mode: str, node) -> exp.Expression | None:
        """The witness as one flat subquery (no derived table) when ``wq`` is a plain SELECT."""
        agg = self._aggregated.get(id(wq))
        if agg is None or any(wq.args.get(k) for k in ("limit", "offset", "qualify", "distinct")):
            return None
        if wq.expressions[-1].find(exp.Window):  # a window cannot sit inside the witness's aggregate
            return None
        lin = wq.expressions[-1].this
        if agg:
            if mode == "in" or wq.args.get("group") or wq.args.get("having"):
                return None
            expr = lin
        else:
            expr = _fn("list", lin) if kind == RID else _fn("flatten", _fn("list", lin))
            if mode == "in":
                if len(wq.expressions) != 2 or isinstance(wq.expressions[0], exp.Star):
                    return None
                inner = {a.lower() for a in _from_aliases(wq)}
                outer_cols = list(node.this.find_all(exp.Column))
                if any(not c.table or c.table.lower() in inner for c in outer_cols):
                    return None  # the value would bind to the subquery's own columns
                value = wq.expressions[0]
                value = value.this if isinstance(value, exp.Alias) else value
                wq.where(exp.EQ(this=value.copy(), expression=node.this.copy()), copy=False)
        wq.set("expressions", [expr])
        wq.set("order", None)
        return exp.Subquery(this=wq)

    # ------------------------------------------------------------------ set operations
    def _setop(self, q: exp.SetOperation, ctes: dict, trace: bool, force_list: bool):
        distinct = bool(q.args.get("distinct"))
        if not trace:
            for key in ("this", "expression"):
                new, _ = self.query(q.args[key], ctes, False)
                q.set(key, new)
            return q, None
        by_name = bool(q.args.get("by_name"))
        _order_positions(q, self.catalog.columns)
        if isinstance(q, (exp.Intersect, exp.Except)) and not distinct:
            return self._setop_all(q, ctes, by_name), LIN
        if isinstance(q, exp.Union) and not distinct:
            kinds = []
            for key in ("this", "expression"):
                new, kind = self.query(q.args[key], ctes, True, force_list=force_list or by_name)
                q.set(key, new)
                kinds.append(kind)
            if by_name:  # columns match by name: the hidden one is wherever the left side has it
                return self._hidden_last(q), LIN
            if kinds[0] == kinds[1]:
                return q, kinds[0]
            for key in ("this", "expression"):
                _to_list(q.args[key])
            return q, LIN
        # UNION / INTERSECT / EXCEPT (distinct): tag the sides, UNION ALL them, group by every column.
        left, _ = self.query(q.this, ctes, True, force_list=True)
        if isinstance(q, exp.Except):
            right, _ = self.query(q.expression, ctes, False)
            right = self._tagged(right, 1, null_lineage=True)
        else:
            right, _ = self.query(q.expression, ctes, True, force_list=True)
            right = self._tagged(right, 1)
        both = exp.Union(this=self._tagged(left, 0), expression=right, distinct=False, by_name=by_name)
        having = {
            exp.Union: None,
            exp.Intersect: f"count(DISTINCT {_SIDE}) = 2",
            exp.Except: f"max({_SIDE}) = 0",
        }[type(q)]
        outer = _t(
            f"SELECT * EXCLUDE ({LIN}, {_SIDE}), flatten(list({LIN})) AS {LIN} FROM x GROUP BY ALL"
            + (f" HAVING {having}" if having else "")
        )
        outer.set(
            "from_", exp.From(this=exp.Subquery(this=both, alias=exp.TableAlias(this=self._alias("s"))))
        )
        _move_order(q, outer, self.catalog.columns)
        return outer, LIN

    def _setop_all(self, q: exp.SetOperation, ctes: dict, by_name: bool) -> exp.Select:
        """INTERSECT ALL / EXCEPT ALL: the sides tagged and grouped by every column, with each group's
        left and right lineage lists (``__tp_a``, ``__tp_b``); the group's output copies are a ``range``.
        INTERSECT ALL pairs copies: copy i keeps the i-th equal row of each side (re-run on any c copies'
        rows, each side has at least c and min(m, n) caps it: c copies again). EXCEPT ALL: each of the
        m - n copies keeps every equal row of both sides (re-run on them, the left side has its m rows
        again and the right side its n: the same m - n copies, so counts over them hold too)."""
        intersect = isinstance(q, exp.Intersect)
        left, _ = self.query(q.this, ctes, True, force_list=True)
        right, _ = self.query(q.expression, ctes, True, force_list=True)
        right = self._tagged(right, 1)
        both = exp.Union(this=self._tagged(left, 0), expression=right, distinct=False, by_name=by_name)
        group = _t(
            f"SELECT * EXCLUDE ({LIN}, {_SIDE}), list({LIN}) FILTER (WHERE {_SIDE} = 0) AS __tp_a, "
            f"list({LIN}) FILTER (WHERE {_SIDE} = 1) AS __tp_b FROM x GROUP BY ALL HAVING min({_SIDE}) = 0"
        )
        group.set(
            "from_", exp.From(this=exp.Subquery(this=both, alias=exp.TableAlias(this=self._alias("s"))))
        )
        g = self._alias("g")
        if intersect:
            copies = f"least(len({g}.__tp_a), coalesce(len({g}.__tp_b), 0))"
            lin = f"list_concat({g}.__tp_a[__tp_u + 1], {g}.__tp_b[__tp_u + 1])"
        else:
            copies = f"len({g}.__tp_a) - coalesce(len({g}.__tp_b), 0)"
            lin = f"list_concat(flatten({g}.__tp_a), flatten({g}.__tp_b))"
        outer = _t(
            f"SELECT * EXCLUDE (__tp_a, __tp_b, __tp_u), {lin} AS {LIN} FROM x AS {g}, "
            f"range({copies}) AS {self._alias('r')}(__tp_u)"
        )
        outer.args["from_"].this.replace(
            exp.Subquery(this=group, alias=exp.TableAlias(this=exp.to_identifier(g)))
        )
        _move_order(q, outer, self.catalog.columns)
        return outer

    def _hidden_last(self, q: exp.Union) -> exp.Select:
        """``SELECT * EXCLUDE (__tp_lin), __tp_lin FROM (q)``: a BY NAME union puts the columns only the
        right side has after the left side's hidden column; the hidden column must come last."""
        outer = _t(f"SELECT * EXCLUDE ({LIN}), {LIN} FROM x")
        _move_order(q, outer, self.catalog.columns)
        outer.set("from_", exp.From(this=exp.Subquery(this=q, alias=exp.TableAlias(this=self._alias("s")))))
        return outer

    def _tagged(self, q: exp.Expression, side: int, null_lineage: bool = False) -> exp.Select:
        extra = f"CAST(NULL AS BIGINT[]) AS {LIN}, " if null_lineage else ""
        sel = _t(f"SELECT *, {extra}{side} AS {_SIDE} FROM x")
        sel.set("from_", exp.From(this=exp.Subquery(this=q, alias=exp.TableAlias(this=self._alias("t")))))
        return sel

    def _paren(self, q: exp.Subquery, ctes: dict, trace: bool, force_list: bool):
        new, kind = self.query(q.this, ctes, trace, force_list)
        q.set("this", new)
        return q, kind


def _table_function_name(t: exp.Table) -> str:
    if isinstance(t.this, exp.Identifier):
        return t.name.lower()
    if isinstance(t.this, exp.Anonymous):
        return t.this.name.lower()
    return t.this.sql_name().lower() if isinstance(t.this, exp.Func) else type(t.this).__name__.lower()


def _lists_columns(t: exp.Table) -> bool:
    name = _table_function_name(t)
    if name == "columns":
        return (
            isinstance(t.this, exp.Identifier)
            and t.args.get("db") is not None
            and t.db.lower() == ("information_schema")
        )
    return name in _COLUMN_LISTS and (not isinstance(t.this, exp.Identifier) or name == "duckdb_columns")


def _group_keys(sel: exp.Select) -> set[str]:
    """GROUP BY keys as SQL text, lower-case names and 1-based positions."""
    group = sel.args.get("group")
    out: set[str] = set()
    for g in group.expressions if group is not None else []:
        out.add(g.sql(dialect=DIALECT))
        if isinstance(g, exp.Column) and not g.table:
            out.add(g.name.lower())
    return out


def _is_group_key(root: exp.Expression, keys: set[str]) -> bool:
    if not keys or root.parent is None or root.arg_key != "expressions":
        return False
    position = str(root.parent.expressions.index(root) + 1)
    expr = root.this if isinstance(root, exp.Alias) else root
    return bool({position, expr.sql(dialect=DIALECT), root.alias_or_name.lower()} & keys)


def _distinct_order_check(sel: exp.Select) -> None:
    """SELECT DISTINCT becomes GROUP BY ALL; an ORDER BY on anything but an output column would not bind."""
    order = sel.args.get("order")
    if order is None or any(e.find(exp.Star) for e in sel.expressions):
        return
    names = {e.alias_or_name.lower() for e in sel.expressions}
    exprs = {(e.this if isinstance(e, exp.Alias) else e).sql(dialect=DIALECT) for e in sel.expressions}
    for o in order.expressions:
        key = o.this
        if isinstance(key, exp.Literal) or key.sql(dialect=DIALECT) in exprs:
            continue
        if isinstance(key, exp.Column) and not key.table and key.name.lower() in names:
            continue
        if isinstance(key, exp.Var) and key.name.upper() == "ALL":
            continue
        raise UnsupportedSQLError(
            f"SELECT DISTINCT ... ORDER BY {key.sql(dialect=DIALECT)}: order by a column of the SELECT list "
            "(add it there, or use DISTINCT ON)"
        )


def _reads_nothing(q: exp.Expression) -> bool:
    """True for a rewritten SELECT whose lineage is the constant NULL list (it reads no traced table)."""
    if not isinstance(q, exp.Select) or not q.expressions:
        return False
    last = q.expressions[-1]
    return (last.this if isinstance(last, exp.Alias) else last) == _null_list()


def _names_cte(t: exp.Table, name: str) -> bool:
    """True if ``t`` reads the recursive CTE ``name`` (or its ``recurring.name`` table, USING KEY)."""
    db = t.args.get("db")
    return (
        t.name.lower() == name
        and isinstance(t.this, exp.Identifier)
        and (db is None or (db.name.lower() == "recurring" and not t.args.get("catalog")))
    )


def _reads_table(q: exp.Expression, name: str) -> bool:
    """True if ``q`` reads a table (or CTE) called ``name`` (a recursive CTE reading itself)."""
    return any(_names_cte(t, name) for t in q.find_all(exp.Table))


def _is_union_all(q: exp.Expression) -> bool:
    return isinstance(q, exp.Union) and not q.args.get("distinct")


def _no_constant_lineage(q: exp.Expression, kind: str | None) -> tuple[exp.Expression, str | None]:
    """A derived table that reads no traced table goes without a hidden column (its rows' lineage is
    the outer row's); DuckDB's binder loses a constant column of a lateral join in some plans."""
    if kind and _reads_nothing(q):
        q.expressions[-1].pop()
        return q, None
    return q, kind


def _is_comma(join: exp.Join) -> bool:
    return not any(join.args.get(k) for k in ("kind", "side", "method", "on", "using"))


def _column_list(q: exp.Expression, alias: exp.TableAlias) -> list[str] | None:
    """Visible output columns of a rewritten derived table under ``alias`` (None if not known here)."""
    while isinstance(q, exp.Subquery):
        q = q.this
    if not isinstance(q, exp.Select) or any(e.find(exp.Star) for e in q.expressions):
        return None
    names = [e.alias_or_name for e in q.expressions if e.alias_or_name not in HIDDEN]
    renamed = [c.name for c in alias.columns]
    return renamed + names[len(renamed) :]


def _output_names(q: exp.Expression, columns: dict | None = None) -> set[str] | None:
    """Lower-case output column names of a query (a set operation's left side, or every side's BY NAME);
    None if a side selects ``*`` (its names are only known to DuckDB)."""
    while isinstance(q, exp.Subquery):
        q = q.this
    if isinstance(q, exp.SetOperation):
        left = _output_names(q.this, columns)
        if not q.args.get("by_name"):
            return left  # columns are named by the left side
        right = _output_names(q.expression, columns)
        return None if left is None or right is None else left | right
    if not isinstance(q, exp.Select):
        return None
    names = {e.alias_or_name.lower() for e in q.expressions if not e.find(exp.Star)}
    if len(names) < len(q.expressions):  # a star: the columns of the tables it reads, from the catalog
        from_ = q.args.get("from_")
        items = ([from_.this] if from_ is not None else []) + [j.this for j in q.args.get("joins") or []]
        for item in items:
            cols = (columns or {}).get(item.name.lower()) if isinstance(item, exp.Table) else None
            if cols is None or not isinstance(item.this, exp.Identifier):
                return None
            names |= {c.lower() for c in cols}
    return names


def _order_positions(q: exp.SetOperation, columns: dict | None = None) -> None:
    """A set operation's ``ORDER BY`` key that is not an output column's name but one branch's SELECT
    expression (``SELECT a FROM t UNION SELECT b FROM u ORDER BY b``, ``ORDER BY t.a``), as DuckDB binds
    it: the position of that column (``ORDER BY 1``), where every branch that has it agrees."""
    order = q.args.get("order")
    if order is None or q.args.get("by_name"):
        return
    names = _output_names(q, columns)
    branches, leaves = [q.this, q.expression], []
    while branches:
        b = branches.pop()
        if isinstance(b, exp.SetOperation):
            branches += [b.this, b.expression]
        elif isinstance(b, exp.Subquery):
            branches.append(b.this)
        else:
            leaves.append(b)
    if any(not isinstance(b, exp.Select) or any(e.find(exp.Star) for e in b.expressions) for b in leaves):
        return
    for o in order.expressions:
        key = o.this
        if isinstance(key, exp.Literal) or (
            isinstance(key, exp.Column) and not key.table and names is not None and key.name.lower() in names
        ):
            continue
        found = {i + 1 for b in leaves for i, e in enumerate(b.expressions) if _same_key(e, key, b)}
        if len(found) == 1:
            o.set("this", exp.Literal.number(found.pop()))


def _same_key(e: exp.Expression, key: exp.Expression, branch: exp.Select) -> bool:
    """True if the SELECT expression ``e`` of ``branch`` is what an ORDER BY ``key`` names."""
    inner = e.this if isinstance(e, exp.Alias) else e
    if inner.sql(dialect=DIALECT) == key.sql(dialect=DIALECT):
        return True
    if not isinstance(key, exp.Column) or not isinstance(key.this, exp.Identifier):
        return False
    if not key.table:
        return e.alias_or_name.lower() == key.name.lower()
    if not isinstance(inner, exp.Column) or inner.name.lower() != key.name.lower():
        return False
    tables = {a.lower() for a in _from_aliases(branch)}
    return inner.table.lower() == key.table.lower() or (not inner.table and tables == {key.table.lower()})


def _move_order(q: exp.SetOperation, outer: exp.Select, columns: dict | None = None) -> None:
    """Move a set operation's ORDER BY / LIMIT / OFFSET to the query that wraps it. DuckDB binds the
    set operation's ORDER BY against the columns of any branch (``ORDER BY t1.x``); outside, only the
    output columns exist, so an ORDER BY that names anything else is refused (never bound otherwise)."""
    order = q.args.get("order")
    if order is not None:
        names = _output_names(q, columns)
        for col in order.find_all(exp.Column):
            if col.find_ancestor(exp.Subquery, exp.Select) is not None and col.find_ancestor(exp.Select):
                continue
            if col.table or (names is not None and col.name.lower() not in names):
                raise UnsupportedSQLError(
                    f"ORDER BY {col.sql(dialect=DIALECT)} after a set operation names a column of one of its "
                    "branches: order by the output column's name or position (ORDER BY 1)"
                )
    for key in ("order", "limit", "offset", "with_"):  # its own WITH too: every branch may read it
        if q.args.get(key) is not None:
            outer.set(key, q.args[key])
            q.set(key, None)


def select_like_roots(sel: exp.Select) -> list[exp.Expression]:
    """The SELECT list and QUALIFY: where a window value becomes part of (or decides) an output row."""
    return [e for e in [*sel.expressions, sel.args.get("qualify")] if e is not None]


def _from_aliases(sel: exp.Select) -> list[str]:
    from_ = sel.args.get("from_")
    items = ([from_.this] if from_ is not None else []) + [j.this for j in sel.args.get("joins") or []]
    return [i.alias_or_name for i in items]


def _to_list(q: exp.Expression) -> None:
    """Turn a rewritten branch whose last column is ``__tp_rid`` into one ending in ``__tp_lin``."""
    if isinstance(q, exp.Subquery):
        _to_list(q.this)
    elif isinstance(q, exp.SetOperation):
        _to_list(q.this)
        _to_list(q.expression)
    elif isinstance(q, exp.Select):
        last = q.expressions[-1]
        if last.alias == RID:
            last.replace(exp.alias_(exp.Array(expressions=[last.this]), LIN))


_QUERY_RULES = {
    exp.Select: Rewriter._select,
    exp.Union: Rewriter._setop,
    exp.Intersect: Rewriter._setop,
    exp.Except: Rewriter._setop,
    exp.Subquery: Rewriter._paren,
}

_FROM_RULES = {
    exp.Table: Rewriter._table,
    exp.Subquery: Rewriter._derived,
    exp.Values: Rewriter._no_lineage,
    exp.Unnest: Rewriter._no_lineage,
    exp.Lateral: Rewriter._lateral,
    exp.Pivot: Rewriter._unsupported_from,
}


def rewrite_query(
    q: exp.Expression,
    catalog: Catalog,
    trace: bool = True,
    force_list: bool = False,
    *,
    split: bool = False,
    copy: bool = True,
    constant=None,
    cover: bool = False,
) -> RewriteResult:
    """Rewrite one query expression; returns a :class:`RewriteResult`.

    ``split=True`` (for results that leave DuckDB): a top-level non-aggregate SELECT returns each lineage
    part (a join side's id or list, a subquery's witnesses) as its own hidden column instead of
    concatenating them in SQL; the caller concatenates the CSR parts (cheaper than ``list_concat``).
    ``constant(witness_query, kind, in_value, with_) -> expression | None`` may replace the witness list
    of an uncorrelated subquery by one marker id per row (for ``x IN (q)``, one per value of ``x``) that
    the caller resolves after the query into a shared set (so the rows a scalar subquery or an IN list
    read are stored once, never copied into every row). ``with_`` is the SQL of the CTEs it may use.
    ``cover=True`` (with ``constant``): a FROM item whose rows such a shared set already holds adds no
    ids of its own (:mod:`traceprop_frames.sql.covered`; the lineage is the same set).
    """  # fmt: skip
    rw = Rewriter(catalog, constant, cover)
    q = q.copy() if copy else q
    rw.top = q if split and trace and constant is not None else None
    new, kind = rw.query(q, {}, trace, force_list)
    out = RewriteResult(new, kind, rw.traced, rw.untraced)
    lin = rw._parts.get(id(new)) if split and trace else None
    side = new.copy() if rw.top_frames else None  # before its lineage splits into parts
    if lin is not None and len(lin.scalars) + len(lin.lists) > 1:
        new.expressions[-1].pop()
        parts = lin.scalars + lin.lists
        for i, part in enumerate(parts):
            new.append("expressions", _named(part.copy(), f"__tp_l{i}"))
        out.n_hidden = len(parts)
    if side is not None:
        out.frames = _frame_columns(new, side, rw.top_frames, kind)
        out.n_hidden += 3 * len(out.frames)
    return out


def _frame_columns(
    new: exp.Select, side: exp.Select, frames: list[tuple], kind: str
) -> list[tuple[str, str]]:
    """Append (partition id, frame start, frame end) columns per distinct frame to ``new``; return, per
    frame, the side query listing the window's input rows as (partition id, position, lineage)."""
    for key in ("qualify", "order", "limit", "offset", "windows"):
        side.set(key, None)
    lin = side.expressions[-1].this
    out, seen = [], set()
    for frame in frames:
        pid, pos, start, end = frame_bounds(frame)
        key = f"{pid.sql()}|{pos.sql()}|{start.sql()}|{end.sql()}"
        if key in seen:
            continue
        seen.add(key)
        j = len(out)
        for name, e in (("p", pid), ("s", start), ("e", end)):
            new.append("expressions", exp.alias_(e, f"__tp_f{j}{name}"))
        q = side.copy()
        q.set("expressions", [pid.copy(), pos, _named(lin.copy(), kind)])
        out.append((q.sql(dialect=DIALECT), f"window frame: {_over(exp.Star(), frame).sql(dialect=DIALECT)}"))
    return out
