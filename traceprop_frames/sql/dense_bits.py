"""Eager capture: a few dense groups of one table as bitstrings of row ids, not lists.

TPC-H q01 groups 5.9M lineitem rows into 4 groups. The eager rewrite adds ``LIST(lineitem.__tp_rid)``
to the aggregate: DuckDB appends every member id to a list (~25 ns a row) and the ORDER BY then copies
the 5.9M ids of the four lists through its sort (serially). ``BITSTRING_AGG(lineitem.__tp_rid, lo, hi)``
sets one bit per member instead, and the sort moves four bitstrings of ``(hi - lo + 1) / 8`` bytes.
DuckDB alone, CPU, load 4.9: plain 305 ms, lists 476 ms, bitstrings 412 ms. The bitstrings are read at
capture and turned into each group's ids when the lineage is first read (numpy ``unpackbits`` +
``flatnonzero``, ~1.3 ns a bit: 32 ms for q01's four, about what the bitstrings save in DuckDB).

A bitstring costs ``(hi - lo + 1) / 8`` bytes per group and per thread whatever the group holds, so it
pays only for few groups that hold a large part of the id range, and it would be ruinous for many
groups. The choice is made before running, in two steps:

- **A hard bound** (memory; never an estimate): DuckDB's min/max statistics of the table's columns are
  conservative (they only widen: inserts, updates and this transaction's own rows included), so the
  number of groups is at most the product, over the GROUP BY columns, of the values their min/max
  allow (integers, dates, booleans, strings of at most one ASCII byte; one more where NULL occurs).
  That bound times the bitstring's size times DuckDB's threads must stay under :data:`CAP` bytes.
- **An estimate** (time only): the rows the query groups, from its WHERE run over a system sample of
  about :data:`SAMPLE_ROWS` rows of the table (:func:`_members`; ~2 ms on TPC-H SF 1's lineitem), taken
  again only when the id range changes. Bitstrings are used where the members are estimated to fill at
  least one bit in :data:`BITS_PER_MEMBER` of the groups' bitstrings. (DuckDB's ``EXPLAIN`` estimate was
  measured and not used: it puts every filter at 20 % of the table.)

A wrong estimate costs time, never lineage: both forms give each group exactly its member ids (the
bitstring as a set: sorted, a repeated id once). A value outside ``lo .. hi`` (which the statistics
rule out) would make DuckDB raise; the list query then runs as before.

Applies to a top-level SELECT over one table (no join, CTE or subquery source) grouped by plain columns
of it (or not grouped), whose only lineage part is ``LIST(t.__tp_rid)``; anything else runs as before.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pyarrow as pa
from sqlglot import exp

from traceprop_frames.sql.dialect import DIALECT
from traceprop_frames.sql.rewrite import LIN, RID

CAP = 512 << 20  # bytes: the bitstrings of every group the statistics allow, on every thread
MIN_RANGE = 1 << 16  # ids: below this a list costs next to nothing
SAMPLE_ROWS = 1 << 16  # rows the estimate's sample reads (about; all of a smaller table)
MAX_GROUPS = 256  # groups the statistics allow (numpy decodes the bitstrings one group at a time)
BITS_PER_MEMBER = 16  # at most this many bits of the groups' bitstrings per (estimated) member row


@dataclass
class DensePlan:
    """What :func:`run` needs: the query with a ``{bits}`` slot for the lineage column, the SQL of the
    table and of its GROUP BY columns (for ``stats()``), and DuckDB's estimate once made."""

    template: str
    table: str
    alias: str
    where: str
    rid: str
    keys: list[str]
    rows: int = 0
    refused: bool = False
    estimate: tuple[int, int, int] | None = None  # (lo, hi, estimated member rows)
    sqls: dict = field(default_factory=dict)


def plan(rw, sql: str, base_tables) -> DensePlan | None:
    """A :class:`DensePlan` for eager rewrite ``rw`` (after ``correlated.prepare``) whose SQL is ``sql``,
    or None where the query does not have the shape this module handles. ``base_tables()``: the names of
    DuckDB base tables (lower case; a view could compute anything when sampled)."""
    if rw.n_hidden != 1 or rw.constants or rw.frames or rw.correlated or rw.split_sql is not None:
        return None
    if getattr(rw, "temps", None):
        return None
    sel = rw.expression
    if not isinstance(sel, exp.Select) or not sel.expressions or sel.args.get("distinct"):
        return None
    if sel.args.get("joins") or sel.args.get("with_") or sel.args.get("laterals"):
        return None
    src = sel.args.get("from_")
    if src is None or not isinstance(src.this, exp.Table) or not isinstance(src.this.this, exp.Identifier):
        return None
    if src.this.args.get("db") or src.this.args.get("sample") or src.this.name.lower() not in base_tables():
        return None
    where = sel.args.get("where")
    if where is not None and (where.find(exp.Anonymous, exp.Query, exp.Subquery) is not None):
        return None  # (a function sqlglot does not know may have effects: the estimate runs the WHERE)
    name = src.this.alias_or_name
    last = sel.expressions[-1]
    if not (isinstance(last, exp.Alias) and last.alias == LIN and _is_list_of_rid(last.this, name)):
        return None
    keys = _group_columns(sel, name)
    if keys is None:
        return None
    lineage = last.this.sql(dialect=DIALECT)
    if sql.count(lineage) != 1:
        return None
    table = src.this.copy()
    table.set("alias", None)
    rid = exp.column(RID, table=name).sql(dialect=DIALECT)
    template = sql.replace("{", "{{").replace("}", "}}").replace(lineage, "{bits}")
    alias = exp.to_identifier(name).sql(dialect=DIALECT)
    cond = "" if where is None else where.sql(dialect=DIALECT)
    return DensePlan(template, table.sql(dialect=DIALECT), alias, cond, rid, keys)


def _is_list_of_rid(e: exp.Expression, name: str) -> bool:
    if not (isinstance(e, exp.Anonymous) and e.name.lower() == "list" and len(e.expressions) == 1):
        return False
    c = e.expressions[0]
    return isinstance(c, exp.Column) and c.name == RID and c.table in (name, "")


def _group_columns(sel: exp.Select, name: str) -> list[str] | None:
    """The GROUP BY columns' SQL (``[]`` without GROUP BY), or None unless each is a plain column of
    the one table (no expression, GROUPING SETS / ROLLUP / CUBE, ALL or position)."""
    group = sel.args.get("group")
    if group is None:
        return []
    if any(group.args.get(k) for k in ("grouping_sets", "rollup", "cube", "all", "totals")):
        return None
    cols = group.expressions
    if not cols or not all(isinstance(c, exp.Column) and c.table in (name, "") for c in cols):
        return None
    return [exp.column(c.name, table=name).sql(dialect=DIALECT) for c in cols]


def _values(s: dict) -> int | None:
    """How many values the statistics ``s`` of one column allow (NULL counted), or None if unbounded."""
    null = 1 if s.get("has_null", True) else 0
    if "min" not in s or "max" not in s:
        return null  # no value but NULL
    lo, hi = s["min"], s["max"]
    if isinstance(lo, bool) and isinstance(hi, bool):
        n = int(hi) - int(lo) + 1
    elif type(lo) is int and type(hi) is int:
        n = hi - lo + 1
    elif type(lo) is datetime.date and type(hi) is datetime.date:
        n = (hi - lo).days + 1
    elif isinstance(lo, str) and isinstance(hi, str):
        if s.get("has_unicode", True) or s.get("max_string_length", 2) > 1 or len(hi) > 1:
            return None
        n = ord(hi) - (ord(lo) if lo else 0) + 1 + (0 if lo else 1)  # '' sorts first: a value of its own
    else:
        return None
    return n + null


def _bounds(raw, p: DensePlan) -> tuple[int, int, int, int] | None:
    """(lo, hi, most groups, estimated groups) from DuckDB's statistics of the table, or None where a
    bitstring could take more than :data:`CAP` bytes or the ids span fewer than :data:`MIN_RANGE`."""
    cols = ", ".join(f"stats({c})" for c in [p.rid, *p.keys])
    rows = raw.sql(
        f"SELECT current_setting('threads'), {cols} FROM {p.table} AS {p.alias} LIMIT 1"
    ).fetchall()
    if not rows:
        return None  # an empty table: nothing to gain
    threads, rid, *keys = rows[0]
    if not isinstance(rid, dict) or type(rid.get("min")) is not int or type(rid.get("max")) is not int:
        return None
    if rid.get("has_null"):  # a row without an id (inserted outside the connection): BITSTRING_AGG would
        return None  # skip it silently; the list() path reports it (sql.null_rids)
    lo, hi = rid["min"], rid["max"]
    most = guess = 1
    for s in keys:
        n = _values(s) if isinstance(s, dict) else None
        if n is None:
            return None
        most *= n
        guess *= int(s.get("approx_unique") or 1) + int(bool(s.get("has_null", True)))
    size = most * ((hi - lo) // 8 + 2) * max(int(threads), 1)
    if most > MAX_GROUPS or size > CAP or hi - lo + 1 < MIN_RANGE:
        return None
    return lo, hi, most, min(guess, most)


def _members(raw, p: DensePlan) -> int:
    """An estimate of the rows the query groups: its WHERE over a sample of about :data:`SAMPLE_ROWS`
    rows of the table (DuckDB's system sample: whole vectors; 1% of TPC-H SF 1's lineitem, ~2 ms)."""
    pct = 100.0 * min(1.0, SAMPLE_ROWS / max(p.rows, 1))
    got = raw.sql(
        f"SELECT count(*) FROM (SELECT * FROM {p.table} USING SAMPLE {pct:.6f}% (system)) AS {p.alias} "
        f"{p.where}"
    ).fetchall()[0][0]
    return int(got * 100.0 / pct)


def run(raw, rw, sql: str) -> tuple[pa.Table, int] | None:
    """The result of eager query ``sql`` (rewrite ``rw``) with a bitstring of ids as its lineage column
    (the layout of ``sql``'s result; :func:`decode` with ``lo`` gives the ids), and ``lo``; None where
    this does not apply or is not expected to pay (the caller then runs ``sql``). A refusal is kept with
    the plan (later runs skip the statistics: a missed bitstring only costs time)."""
    p = getattr(rw, "dense", None)
    if p is None or p.refused:
        return None
    try:
        b = _bounds(raw, p)
        if b is not None:
            lo, hi, _, groups = b
            if p.estimate is None or p.estimate[:2] != (lo, hi):  # (an estimate: it only costs time)
                p.rows = hi - lo + 1
                p.estimate = (lo, hi, _members(raw, p))
        if b is None or p.estimate[2] * BITS_PER_MEMBER < groups * (hi - lo + 1):
            p.refused = True
            return None
        q = p.sqls.get((lo, hi))
        if q is None:
            p.sqls.clear()
            q = p.sqls[(lo, hi)] = p.template.format(bits=f"BITSTRING_AGG({p.rid}, {lo}, {hi})")
        return raw.sql(q).to_arrow_table(), lo
    except duckdb.Error:
        return None


_POPCOUNT = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(axis=1).astype(np.int64)


def decode(col: pa.ChunkedArray, lo: int) -> pa.LargeListArray:
    """The ids of each bitstring of ``col`` (DuckDB's BIT through Arrow: a padding count byte, then the
    bits, first bit first, after that many padding bits); bit ``k`` is id ``lo + k``. NULL: no id.
    A loop over the groups (few: see :data:`MAX_GROUPS`), each vectorised over its bytes and bits."""
    spans = []  # per group: (packed bytes, padding bits) or None
    for chunk in col.chunks:
        valid = chunk.is_valid().to_numpy(zero_copy_only=False)
        offs = np.frombuffer(chunk.buffers()[1], dtype=np.int32)[chunk.offset : chunk.offset + len(chunk) + 1]
        data = np.frombuffer(chunk.buffers()[2], dtype=np.uint8)
        for r in range(len(chunk)):
            a, b = int(offs[r]), int(offs[r + 1])
            spans.append((data[a + 1 : b], int(data[a])) if valid[r] else None)
    counts = np.zeros(len(spans), dtype=np.int64)
    for r, s in enumerate(spans):
        if s is not None and len(s[0]):
            packed, pad = s  # (the padding bits lead the first byte)
            counts[r] = _POPCOUNT[packed].sum() - _POPCOUNT[int(packed[0]) >> (8 - pad)] * (pad > 0)
    offsets = np.zeros(len(spans) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    ids = np.empty(int(offsets[-1]), dtype=np.int64)
    for r, s in enumerate(spans):
        if counts[r]:
            got = np.flatnonzero(np.unpackbits(s[0]).view(bool)[s[1] :])
            np.add(got, lo, out=ids[offsets[r] : offsets[r + 1]])
    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(ids))
