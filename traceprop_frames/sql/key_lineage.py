"""Eager lineage of a table joined on its unique integer key: looked up after the query, not carried.

In ``SELECT ... FROM customer, orders, lineitem WHERE c_custkey = o_custkey AND l_orderkey = o_orderkey
GROUP BY ...`` the eager rewrite carries the row ids of all three tables through the hash joins and
aggregates three lists. Where ``o_orderkey`` is unique in ``orders``, the orders row of every joined tuple
is the one row whose key equals the tuple's ``l_orderkey``: it follows from the lineitem row. The same
holds for ``customer`` from that orders row (``c_custkey`` unique). So only lineitem's ids go through
DuckDB; the others are looked up afterwards, per id, in key columns read once and kept::

    orders row  = index_orders_by_o_orderkey[ l_orderkey[lineitem row] ]
    customer row = index_customer_by_c_custkey[ o_custkey[orders row] ]

As sets, per result row, this is exactly what the carried lists hold (each tuple's T row is the unique row
with ``T.k = X.c``; conditions on T, or between T and other tables, only decide which tuples exist).

Sound only while the tables are the ones whose columns were read. Applies only where all hold:

- every table of the query is in :class:`~traceprop_frames.sql.rowid_scan.RowidScans`' safe set (loaded by
  tpf, ``rowid + base`` is its row id, an in-memory database, ``con.raw`` never handed out, nothing run
  since that may change it); what was read of a table is dropped once it leaves that set (or is loaded
  again), and kept while only other tables change;
- the query's top level is a plain SELECT (no WITH, DISTINCT) over base tables each named once, joined by
  commas or joins without a condition, and its only hidden column is the lineage list
  ``list_concat(list(t.__tp_rid), ...)`` with one plain ``list`` per table and nothing else;
- ``T.k = X.c`` is a top-level conjunct of WHERE, both columns of a signed (or up to 32-bit unsigned)
  integer type, ``T.k`` unique among ``T``'s non-NULL values (checked on the whole column);
- every id looked up finds its row (otherwise the query runs again as before, carrying every list).

A key column is read only for a query text run before (reading a 6-million-row column costs more than
one query saves): a query run once costs what it did; from its second run on, the look-ups pay. And only
of tables of at most :data:`MAX_ROWS` rows, both the looked-up table and the one it is looked up from: a
whole-column read of a large table costs more than many runs save and stays in memory (TPC-H SF 1:
``lineitem`` / ``orders`` are carried, ``nation`` / ``region`` / ``part`` looked up from ``supplier`` /
``customer`` / ``partsupp``; the reads are under 1 million rows, at most a few MiB each).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import sqlglot
from sqlglot import exp

from traceprop_frames.sql.dialect import DIALECT, quote_name
from traceprop_frames.sql.lazy_unique import distinct

RID = "__tp_rid"
LIN = "__tp_lin"
_ID_BITS = 40  # a global row id is (source id << 40) | row
MAX_ROWS = 1_000_000  # only tables of at most this many rows are read (both sides of a look-up)


@dataclass
class _Shape:
    """What the SQL text alone says: aliases (-> table), the tables whose lists make up the lineage
    column (in order), and the column equalities among WHERE's top-level conjuncts."""

    tree: exp.Select
    aliases: dict[str, str]
    parts: list[str]
    eqs: list[tuple[tuple[str | None, str], tuple[str | None, str]]]


class KeyLineage:
    """The eager rewrite's key look-ups: plans per SQL text, key columns per table (kept while the
    table stays in the safe set with the ``RowidScans.stamp`` it had when read)."""

    def __init__(self) -> None:
        self._shapes: dict[str, _Shape | None] = {}
        self._sql: dict[tuple, str] = {}
        self._cols: dict[tuple[str, str], tuple | None] = {}  # (table, column) -> (values, valid) | None
        self._maps: dict[tuple[str, str], tuple | None] = {}  # (table, column) -> key index | None
        self._seen: dict[str, int | None] = {}  # table -> its RowidScans.stamp when read
        self._rows: dict[str, int] = {}  # table -> its row count (read with a column, dropped with it)
        self._runs: dict[str, None] = {}  # SQL texts planned before: only these read key columns
        self._scans = None

    def plan(self, raw, sql: str, rw, scans, columns: dict[str, list[str]]):
        """(SQL carrying only the lists that cannot be looked up, ``derive(table, lineage_from_arrow)``)
        for eager query ``sql`` of rewrite ``rw``, or None where nothing is looked up."""
        if (
            not scans.on
            or not scans.tables
            or rw.n_hidden != 1
            or rw.frames
            or rw.constants
            or getattr(rw, "correlated", None)
            or getattr(rw, "split_sql", None) is not None
            or RID not in sql
        ):
            return None
        self._scans = scans
        shape = self._shape(sql)
        if shape is None or any(t not in scans.tables for t in shape.aliases.values()):
            return None
        self._drop_stale(scans)
        may_read = sql in self._runs  # a query run once reads nothing it does not have
        while len(self._runs) >= 1024:
            self._runs.pop(next(iter(self._runs)))
        self._runs[sql] = None
        steps = self._steps(raw, shape, columns, may_read)
        if not steps:
            return None
        kept = [a for a in shape.parts if a not in steps]
        bases = {a: scans.tables[shape.aliases[a]] for a in shape.parts}
        if len({bases[a] for a in kept}) != len(kept) or any(
            b >> _ID_BITS << _ID_BITS != b for b in bases.values()
        ):
            return None  # ids of two kept tables could not be told apart
        order = _order(steps, kept)
        key = (sql, tuple(order))
        text = self._sql.get(key)
        if text is None:
            while len(self._sql) >= 256:
                self._sql.pop(next(iter(self._sql)))
            text = self._sql[key] = _without(shape, set(steps))
        links = [
            (a, self._cols[(shape.aliases[x], c)], self._maps[(shape.aliases[a], k)], x, bases[a], bases[x])
            for a in order
            for k, x, c in [steps[a]]
        ]
        return text, lambda table, from_arrow: _derive(table, from_arrow, links)

    def _drop_stale(self, scans) -> None:
        """Forget what was read of a table no longer in the safe set, or in it again since (re-loaded)."""
        for t, stamp in list(self._seen.items()):
            if t not in scans.tables or scans.stamp.get(t) != stamp:
                del self._seen[t]
                for key in [k for k in self._cols if k[0] == t]:
                    del self._cols[key]
                for key in [k for k in self._maps if k[0] == t]:
                    del self._maps[key]
                self._rows.pop(t, None)

    def _shape(self, sql: str) -> _Shape | None:
        if sql not in self._shapes:
            while len(self._shapes) >= 256:
                self._shapes.pop(next(iter(self._shapes)))
            self._shapes[sql] = _read_shape(sql)
        return self._shapes[sql]

    def _steps(self, raw, shape: _Shape, columns: dict, may_read: bool) -> dict[str, tuple[str, str, str]]:
        """alias -> (its key column, the alias it is looked up from, that alias's column), acyclic."""
        owners = {}
        for a, t in shape.aliases.items():
            for c in columns.get(t, ()):
                owners.setdefault(c.lower(), []).append(a)
        edges: dict[str, list[tuple[str, str, str]]] = {}
        for (a1, c1), (a2, c2) in shape.eqs:
            a1 = a1 if a1 is not None else _only(owners.get(c1))
            a2 = a2 if a2 is not None else _only(owners.get(c2))
            if a1 is None or a2 is None or a1 == a2 or a1 not in shape.parts or a2 not in shape.parts:
                continue
            if not (_has(columns, shape.aliases[a1], c1) and _has(columns, shape.aliases[a2], c2)):
                continue
            for t, k, x, c in ((a1, c1, a2, c2), (a2, c2, a1, c1)):
                tx, xx = shape.aliases[t], shape.aliases[x]
                if not (self._small(raw, tx, may_read) and self._small(raw, xx, may_read)):
                    continue
                if self._index(raw, tx, k, may_read) and self._column(raw, xx, c, may_read):
                    edges.setdefault(t, []).append((k, x, c))
        steps: dict[str, tuple[str, str, str]] = {}
        reached = [a for a in shape.parts if a not in edges]
        rest = [a for a in shape.parts if a in edges]
        while rest:
            grown = False
            for t in list(rest):
                hit = next((e for e in edges[t] if e[1] in reached), None)
                if hit is not None:
                    steps[t] = hit
                    reached.append(t)
                    rest.remove(t)
                    grown = True
            if not grown:  # a cycle of unique keys: carry the first one's ids
                reached.append(rest.pop(0))
        return steps

    def _small(self, raw, table: str, may_read: bool) -> bool:
        """Whether ``table`` has at most :data:`MAX_ROWS` rows (counted once per safe-set stamp; False
        where not counted yet and ``may_read`` is false)."""
        if table not in self._rows:
            if not may_read:
                return False
            self._seen.setdefault(table, self._scans.stamp.get(table))
            self._rows[table] = raw.sql(f"SELECT count(*) FROM {quote_name(table)}").fetchall()[0][0]
        return self._rows[table] <= MAX_ROWS

    def _column(self, raw, table: str, col: str, may_read: bool = True):
        """(values by row, valid or None) of an integer column, read once; None for other types (or not
        read yet where ``may_read`` is false)."""
        key = (table, col.lower())
        if key not in self._cols:
            if not may_read:
                return None
            self._seen.setdefault(table, self._scans.stamp.get(table))
            self._cols[key] = _read_column(raw, table, col)
        return self._cols[key]

    def _index(self, raw, table: str, col: str, may_read: bool = True):
        """A look-up from key value to row where ``col`` is unique in ``table``, else None."""
        key = (table, col.lower())
        if key not in self._maps:
            if not may_read and key not in self._cols:
                return None
            read = self._column(raw, table, col)
            self._maps[key] = None if read is None else _key_index(*read)
        return self._maps[key]


def _only(xs):
    return xs[0] if xs and len(xs) == 1 else None


def _has(columns: dict[str, list[str]], table: str, col: str) -> bool:
    return any(c.lower() == col for c in columns.get(table, ()))


def _read_shape(sql: str) -> _Shape | None:
    try:
        tree = sqlglot.parse_one(sql, read=DIALECT)
    except (sqlglot.errors.SqlglotError, RecursionError):
        return None
    if not isinstance(tree, exp.Select) or tree.args.get("with_") or tree.args.get("with"):
        return None
    if tree.args.get("distinct") or tree.args.get("qualify") or tree.args.get("laterals"):
        return None
    sources = [tree.args["from_"].this] if tree.args.get("from_") else []
    for j in tree.args.get("joins") or []:
        if j.args.get("on") or j.args.get("using") or j.args.get("side") or j.args.get("method"):
            return None
        if (j.args.get("kind") or "CROSS").upper() not in ("CROSS", "INNER"):
            return None
        sources.append(j.this)
    aliases: dict[str, str] = {}
    for s in sources:
        if not isinstance(s, exp.Table) or not isinstance(s.this, exp.Identifier):
            return None
        if any(v for k, v in s.args.items() if k not in ("this", "alias")):
            return None  # schema-qualified, sampled, a table function ...
        alias = s.args.get("alias")
        if alias is not None and alias.args.get("columns"):
            return None
        name = s.alias_or_name.lower()
        if name in aliases or s.name.lower() in aliases.values():
            return None  # a table named twice: ids not told apart
        aliases[name] = s.name.lower()
    last = tree.expressions[-1] if tree.expressions else None
    if not isinstance(last, exp.Alias) or last.alias != LIN:
        return None
    body = last.this
    args = [body.this, *body.expressions] if isinstance(body, exp.ArrayConcat) else [body]
    parts = []
    for a in args:
        plain = isinstance(a, exp.ArrayAgg) and not any(v for k, v in a.args.items() if k != "this")
        col = a.this if plain else None  # no FILTER, ORDER BY or DISTINCT inside
        if not isinstance(col, exp.Column) or col.name != RID or col.table.lower() not in aliases:
            return None
        parts.append(col.table.lower())
    if len(set(parts)) != len(parts):
        return None
    return _Shape(tree, aliases, parts, _equalities(tree.args.get("where")))


def _equalities(where) -> list:
    out = []
    conj = [where.this] if where is not None else []
    while conj:
        e = conj.pop()
        if isinstance(e, exp.Paren):
            conj.append(e.this)
        elif isinstance(e, exp.And):
            conj += [e.this, e.expression]
        elif (
            isinstance(e, exp.EQ) and isinstance(e.this, exp.Column) and isinstance(e.expression, exp.Column)
        ):
            sides = [(c.table.lower() or None, c.name.lower()) for c in (e.this, e.expression)]
            if not any(c.args.get("db") or c.args.get("catalog") for c in (e.this, e.expression)):
                out.append(tuple(sides))
    return out


def _order(steps: dict, kept: list[str]) -> list[str]:
    """The looked-up aliases, each after the alias it is looked up from."""
    done, out = set(kept), []
    while len(out) < len(steps):
        for t, (_, x, _) in steps.items():
            if t not in done and x in done:
                done.add(t)
                out.append(t)
    return out


def _without(shape: _Shape, dropped: set[str]) -> str:
    tree = shape.tree.copy()
    last = tree.expressions[-1]
    body = last.this
    args = [body.this, *body.expressions] if isinstance(body, exp.ArrayConcat) else [body]
    keep = [a for a, p in zip(args, shape.parts) if p not in dropped]
    new = keep[0] if len(keep) == 1 else exp.ArrayConcat(this=keep[0], expressions=keep[1:])
    last.set("this", new)
    return tree.sql(dialect=DIALECT)


_TYPES = (pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32())


def _read_column(raw, table: str, col: str):
    t = raw.sql(f"SELECT rowid, {quote_name(col)} FROM {quote_name(table)}").to_arrow_table()
    if t.schema.field(1).type not in _TYPES:
        return None
    n = t.num_rows
    rows = np.asarray(t.column(0).to_numpy(), dtype=np.int64)
    if n and (rows.min() < 0 or rows.max() != n - 1):
        return None
    vals = t.column(1).combine_chunks()
    valid = None
    if vals.null_count:
        valid = np.empty(n, dtype=bool)
        valid[rows] = vals.is_valid().to_numpy(zero_copy_only=False)
        vals = vals.fill_null(0)
    got = vals.to_numpy(zero_copy_only=False)
    small = not len(got) or (int(got.min()) >= -(2**31) and int(got.max()) < 2**31)
    values = np.empty(n, dtype=np.int32 if small else np.int64)  # 4 bytes a row where the values fit
    values[rows] = got
    return values, valid


def _key_index(values: np.ndarray, valid):
    """("dense", row by key) or ("sorted", keys, rows) where the non-NULL keys are unique, else None."""
    rows = np.arange(len(values), dtype=np.int64) if valid is None else np.flatnonzero(valid)
    keys = values if valid is None else values[valid]
    if not len(keys):
        return "dense", np.full(0, -1, dtype=np.int64)
    if not distinct(keys):
        return None
    lo, hi = int(keys.min()), int(keys.max())
    if lo >= 0 and hi < 4 * len(keys) + 1024:
        by_key = np.full(hi + 1, -1, dtype=np.int32 if len(values) < 2**31 else np.int64)
        by_key[keys] = rows
        return "dense", by_key
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    return "sorted", sk, rows[order]


def _look_up(index, v: np.ndarray) -> np.ndarray:
    """Rows of key values ``v`` (-1 where none)."""
    if index[0] == "dense":
        by_key = index[1]
        inside = (v >= 0) & (v < len(by_key))
        found = by_key[np.where(inside, v, 0)] if len(by_key) else -1
        return np.where(inside, found, -1).astype(np.int64, copy=False)
    sk, rows = index[1], index[2]
    if not len(sk):
        return np.full(len(v), -1, dtype=np.int64)
    i = np.minimum(np.searchsorted(sk, v), len(sk) - 1)
    return np.where(sk[i] == v, rows[i], -1).astype(np.int64, copy=False)


def _derive(table: pa.Table, from_arrow, links) -> list | None:
    """The looked-up tables' CSR parts for ``table``'s rows, or None where a look-up finds no row."""
    off, ids = from_arrow(table.column(table.num_columns - 1))
    n = len(off) - 1
    owner = np.repeat(np.arange(n, dtype=np.int64), np.diff(off))
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # alias -> (result row, table row), by result row
    parts = []
    for alias, (values, valid), index, src, base, src_base in links:
        if src in found:
            res, rows = found[src]
        else:
            local = ids - src_base
            mine = (local >= 0) & (local < len(values))
            res, rows = owner[mine], local[mine]
        if valid is not None and not valid[rows].all():
            return None
        hit = _look_up(index, values[rows])
        if (hit < 0).any():
            return None
        found[alias] = (res, hit)
        part_off = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(res, minlength=n), out=part_off[1:])
        parts.append((part_off, hit + base))
    return parts
