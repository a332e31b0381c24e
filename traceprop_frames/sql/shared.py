"""Rows many result rows share (uncorrelated subqueries) as shared lineage sets, not per-row copies.

An uncorrelated subquery's witnesses are the same for every row that uses them: a scalar subquery's
rows (``WHERE x > (SELECT avg(y) FROM t)``), or for ``x IN (SELECT v FROM q)`` the rows of ``q`` whose
value equals ``x`` (one set per distinct value). Inside DuckDB such a witness is one *marker id* per
row - source :data:`MARKER_SID`, row ``k << 32 | h`` for witness query ``k`` and key ``h`` (0 for a
scalar subquery; the 32-bit hash of the value for IN) - carried through joins, aggregates and CTEs
like any id. After the query, witness query ``k`` runs once as a side query returning
``(key, lineage)`` rows; its rows grouped by key become the sets of one
:class:`~traceprop_frames.lineage.context.SetBlock`, and each marker becomes a reference to its set.
Memory is O(rows + witness rows), never O(rows x witness size).

A hash collision can only add the rows of another value to a set (more rows, never fewer), so the
lineage stays sufficient.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from sqlglot import exp

from traceprop_frames.lineage import OpNode, RowLineage
from traceprop_frames.lineage.context import Context
from traceprop_frames.lineage.sources import ROW_BITS, ROW_MASK
from traceprop_frames.sql.dialect import DIALECT
from traceprop_frames.sql.sources import MARKER_SID

KEY_BITS = 32
MAX_WITNESSES = 1 << (ROW_BITS - KEY_BITS)
_KEY_MASK = np.int64((1 << KEY_BITS) - 1)
_EMPTY = np.zeros(0, dtype=np.int64)


def marker_base(k: int) -> int:
    """The marker id of witness query ``k`` with key 0."""
    return (MARKER_SID << ROW_BITS) | (k << KEY_BITS)


def side_query(wq: exp.Expression, kind: str, with_: str, keyed: bool) -> tuple[str, str]:
    """(SQL returning ``(key, lineage)`` per witness row, SQL to bind it with: its first column is the
    IN value, so binding it checks the witness runs on its own and gives the value's type)."""
    sub = f"({wq.sql(dialect=DIALECT)}) AS __tp_w(__tp_v)"
    # the hash's high bits: a filter on a range of hash(v) reaches the witness's scan (lazy lineage asks
    # for the witnesses of a few keys), where one on hash(v) % n is not pushed below an aggregate
    key = f"CAST(hash(__tp_w.__tp_v) >> {KEY_BITS} AS BIGINT)" if keyed else "CAST(0 AS BIGINT)"
    prefix = with_
    return (
        f"{prefix}SELECT {key} AS __tp_key, __tp_w.{kind} FROM {sub}",
        f"{prefix}SELECT __tp_w.__tp_v, __tp_w.{kind} FROM {sub}",
    )


def marker_expression(k: int, value: exp.Expression | None, value_type: str | None) -> exp.Expression:
    """The per-row marker id: a constant, or for IN the hash of the row's value in the list's type."""
    base = exp.cast(exp.Literal.number(marker_base(k)), "BIGINT")
    if value is None:
        return base
    cast = exp.TryCast(this=value.copy(), to=exp.DataType.build(value_type, dialect="duckdb"))
    h = exp.BitwiseRightShift(
        this=exp.Anonymous(this="hash", expressions=[cast]), expression=exp.Literal.number(KEY_BITS)
    )
    return exp.Add(this=exp.cast(exp.Paren(this=h), "BIGINT"), expression=base)


def resolve_markers(off, ids, blocks, to_process, node: OpNode | None = None) -> RowLineage:
    """Rows ``(off, ids)`` with marker ids replaced by references to the witness sets in ``blocks``.

    ``blocks[k]`` is ``(SetBlock, sorted keys)`` for witness query ``k``; a marker whose key has no
    set (the value matched no witness row) refers to nothing. ``to_process`` maps database ids to this
    process's ids (applied to the non-marker ids only).

    Examples
    --------
    >>> from traceprop_frames.lineage import RowLineage
    >>> w = RowLineage(np.arange(3), np.array([100, 101])).shared_sets([0, 1], [0], [2], "scalar")
    >>> m = marker_base(0)
    >>> lin = resolve_markers(np.array([0, 2, 3]), np.array([10, m, 11]), [(w, np.array([0]))], lambda x: x)
    >>> lin.row_ids(0).tolist(), lin.row_ids(1).tolist(), lin.n_ids
    ([10, 100, 101], [11], 2)
    """
    off = np.asarray(off, dtype=np.int64)
    ids = np.asarray(ids, dtype=np.int64)
    is_m = (ids >> np.int64(ROW_BITS)) == MARKER_SID
    if not is_m.any():
        return RowLineage(off, to_process(ids), node)
    n = len(off) - 1
    row_of = np.repeat(np.arange(n, dtype=np.int64), np.diff(off))
    direct_off = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(row_of[~is_m], minlength=n), out=direct_off[1:])
    low = ids[is_m] & np.int64(ROW_MASK)
    which, keys, owners = low >> np.int64(KEY_BITS), low & _KEY_MASK, row_of[is_m]
    ref_rows, ref_sets, used = [], [], []
    for k in np.unique(which).tolist():
        block, uk = blocks[k]
        sel = which == k
        pos = np.searchsorted(uk, keys[sel])
        hit = pos < len(uk)
        hit[hit] = uk[pos[hit]] == keys[sel][hit]
        ref_rows.append(owners[sel][hit])
        ref_sets.append(block.base + pos[hit])
        used.append(block)
    pairs = np.unique(np.stack([np.concatenate(ref_rows), np.concatenate(ref_sets)], axis=1), axis=0)
    roff = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(pairs[:, 0], minlength=n), out=roff[1:])
    ctx = Context(roff, pairs[:, 1], used)
    return RowLineage(direct_off, to_process(ids[~is_m]), node, ctx)


def witness_blocks(tables: list[tuple[pa.Table, str]], lineage_from_arrow, to_process) -> list:
    """One ``(SetBlock, sorted keys)`` per side query result, in order (a later one may refer to an
    earlier one's markers: a witness built on a CTE that itself read a scalar subquery)."""
    blocks: list = []
    for table, label in tables:
        keys = np.asarray(table.column(0).to_numpy(zero_copy_only=False), dtype=np.int64)
        lin = resolve_markers(*lineage_from_arrow(table.column(1)), blocks, to_process)
        order = np.argsort(keys, kind="stable")
        uk, starts = np.unique(keys[order], return_index=True)
        ends = np.append(starts[1:], len(keys)).astype(np.int64) if len(uk) else starts
        blocks.append((lin.shared_sets(order, starts, ends, label), uk))
    return blocks


def with_frames(lin: RowLineage, bounds: list, sides: list, lineage_from_arrow, blocks, to_process):
    """Each window frame as shared sets: row i of ``lin`` also refers to its frame's rows.

    ``bounds[j]`` holds the result's (partition id, frame start, frame end) columns for frame ``j``;
    ``sides[j]`` is ``(table, label)``: the window's input rows as (partition id, position in the
    partition's order, lineage). Sorted by (partition, position), a frame is one segment of that
    order, so every frame of a partition shares one pool (running sums cost O(rows), not O(rows^2)).

    Examples
    --------
    >>> side = pa.table({"p": [1, 1, 1], "pos": [0, 1, 2], "lin": pa.array([7, 8, 9], pa.int64())})
    >>> from traceprop_frames.sql.connection import lineage_from_arrow
    >>> lin = RowLineage(np.arange(4), np.array([7, 8, 9]))
    >>> cols = [pa.array([1, 1, 1]), pa.array([0, 0, 0]), pa.array([1, 2, 3])]  # running frames
    >>> out = with_frames(lin, [cols], [(side, "running sum")], lineage_from_arrow, [], lambda x: x)
    >>> [out.row_ids(i).tolist() for i in range(3)]
    [[7], [7, 8], [7, 8, 9]]
    """
    for (pid, start, end), (table, label) in zip(bounds, sides):
        col = [np.asarray(c.to_numpy(zero_copy_only=False), dtype=np.int64) for c in (pid, start, end)]
        spid, spos = (
            np.asarray(table.column(i).to_numpy(zero_copy_only=False), dtype=np.int64) for i in (0, 1)
        )
        side = resolve_markers(*lineage_from_arrow(table.column(2)), blocks, to_process)
        order = np.lexsort((spos, spid))
        first = np.searchsorted(spid[order], col[0], "left")
        block = side.shared_sets(order, first + col[1], first + col[2], label)
        lin = lin.with_context(np.arange(len(lin), dtype=np.int64), block)
    return lin
