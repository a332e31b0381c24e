"""SparkTraced: a Spark query result and its lineage column, answered by Spark jobs.

``frame`` is the Spark DataFrame with the hidden lineage column last (``__tp_rid`` BIGINT or
``__tp_lin`` ARRAY<BIGINT>); ``df`` is the user's columns only. Backward and forward questions run as
Spark jobs that return only the answer (a few ids or positions). Row *positions* (``rows=``, ``trace(i)``,
``rows_from_source``) refer to the result pinned once with ``localCheckpoint``: a shuffle's output order
can change between runs, so the first positional question fixes the rows, and ``to_pandas()`` and
``write_parquet()`` use the same pinned rows in the same order.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from traceprop_frames.errors import UnknownRowError
from traceprop_frames.frames import attach
from traceprop_frames.frames.persist import FOLDER_MANIFEST, LINEAGE_COL
from traceprop_frames.lineage import REGISTRY, LineageDAG, OpNode, RowLineage
from traceprop_frames.lineage.manifest import build
from traceprop_frames.lineage.rowsets import sorted_unique
from traceprop_frames.lineage.sources import ROW_BITS
from traceprop_frames.spark.shared import SPARK_K, SharedSets, expand, is_marker, marker_ids
from traceprop_frames.sql.connection import lineage_from_arrow
from traceprop_frames.sql.rewrite import LIN, RID
from traceprop_frames.sql.shared import resolve_markers
from traceprop_frames.sql.sources import MARKER_SID

POS = "__tp_pos"
_PART = (1 << 33) - 1  # monotonically_increasing_id(): partition index << 33 | row within partition


class SparkTraced:
    """The result of ``con.sql(...)`` on Spark: data stays in Spark, lineage questions run as jobs."""

    def __init__(
        self, frame: DataFrame, kind: str | None, node: OpNode, owner: SharedSets | None = None
    ) -> None:
        self.frame = frame
        self.kind = kind
        self.node = node
        self._owner = owner  # the shared sets whose markers this result's rows may carry (kept alive)
        self._pinned: DataFrame | None = None
        self._sids: np.ndarray | None = None
        self._markers: np.ndarray | None = None  # the shared-set marker ids in the lineage column
        self._n = 0

    @property
    def tp(self) -> SparkTraced:
        """The lineage questions under the name a traced pandas frame uses: ``res.tp.sources()``,
        ``res.tp.trace(i)``, ``res.tp.rows_from_source(path, rows)``, ``res.tp.ops()`` are ``res.sources()``
        and so on (the same object), so code reads the same on Spark and pandas results."""
        return self

    @property
    def df(self) -> DataFrame:
        """The user-visible columns (the original query's result)."""
        return self.frame.drop(self.kind) if self.kind else self.frame

    def _ids(self) -> Column:
        """The row's lineage as ARRAY<BIGINT> without NULLs (the missing side of an outer join)."""
        if self.kind is None:
            return F.array().cast("array<bigint>")
        col = F.col(self.kind)
        arr = F.array(col) if self.kind == RID else F.coalesce(col, F.array().cast("array<bigint>"))
        return F.filter(arr, lambda x: x.isNotNull())

    def pinned(self) -> DataFrame:
        """The result materialised once (``localCheckpoint``) with a 0-based position column ``__tp_pos``."""
        if self._pinned is None:
            fixed = self.frame.localCheckpoint(eager=True)
            sizes = dict(fixed.groupBy(F.spark_partition_id().alias("p")).count().collect())
            n_parts = max(sizes, default=-1) + 1
            starts = np.concatenate([[0], np.cumsum([sizes.get(p, 0) for p in range(n_parts)])])
            self._n = int(starts[-1])
            start = F.element_at(F.array(*[F.lit(int(s)) for s in starts]), F.spark_partition_id() + 1)
            pos = (start + F.monotonically_increasing_id().bitwiseAND(F.lit(_PART))).alias(POS)
            self._pinned = fixed.select("*", pos)
        return self._pinned

    def __len__(self) -> int:
        self.pinned()
        return self._n

    def _check_rows(self, rows) -> np.ndarray:
        rows = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        n = len(self)
        if rows.size and (rows.min() < -n or rows.max() >= n):
            raise UnknownRowError(f"positions {rows.tolist()} outside a result of {n} rows")
        return rows % max(n, 1)

    def _collect_ids(self, rows=None) -> np.ndarray:
        """Sorted unique ids behind all rows or the given positions (one Spark job)."""
        if rows is None:  # every row: deduplicated in Spark, only distinct ids come back
            base = self.frame if self._pinned is None else self._pinned
            got = base.select(F.explode(self._ids()).alias("id")).distinct().toArrow()
        else:  # a few rows: no shuffle, their ids come back and are deduplicated here
            picked = self.pinned().where(F.col(POS).isin(self._check_rows(rows).tolist()))
            got = picked.select(F.explode(self._ids()).alias("id")).toArrow()
        return expand(sorted_unique(np.asarray(got.column("id").to_numpy(), dtype=np.int64)))

    def sources(self, rows=None) -> dict[str, np.ndarray]:
        """``{path: sorted row numbers}`` behind all rows (or the given positions), as ``df.tp.sources``."""
        ids = self._collect_ids(rows)
        return RowLineage(np.array([0, ids.size], dtype=np.int64), ids, self.node).sources()

    def trace(self, i: int, strict: bool = True):
        """The source rows behind row ``i`` (``SourceRow`` objects, sha256 checked as ``df.tp.trace``)."""
        ids = self._collect_ids([i])
        return RowLineage(np.array([0, ids.size], dtype=np.int64), ids, self.node).trace(0, strict=strict)

    def rows_from_source(self, path, rows) -> np.ndarray:
        """Sorted positions of the result rows that depend on any of ``rows`` of source ``path``."""
        self._collect_sids()  # which sources these rows come from, to name the right one for ``path``
        got = self.pinned().where(self._hits(path, rows)).select(POS).toArrow()
        return np.sort(np.asarray(got.column(POS).to_numpy(), dtype=np.int64))

    def _hits(self, path, rows, candidates: bool = True) -> Column:
        """Whether a row's lineage holds any of ``rows`` of ``path`` (directly or in a shared set)."""
        ids = REGISTRY.ids_for_rows(path, rows, candidates=self._sids if candidates else None)
        ids = np.asarray(ids, dtype=np.int64)
        sets = [m for m in self._markers.tolist() if np.isin(marker_ids(m), ids).any()]
        want = ids.tolist() + sets
        return F.arrays_overlap(self._ids(), F.array(*[F.lit(int(x)) for x in want]).cast("array<bigint>"))

    def _collect_sids(self) -> np.ndarray:
        if self._sids is None:
            self._sids, self._markers = split_sids(self.frame, self._ids())
        return self._sids

    def _expanded(self, ids: Column) -> Column:
        """``ids`` with each marker replaced by its set, in Spark (for ``write_parquet``): the sets come
        as one broadcast row's array columns, joined by :meth:`_with_sets`."""
        markers = self._markers.tolist()
        if not markers:
            return ids

        def one(x):
            e = F.array(x)
            for i, m in enumerate(markers):
                e = F.when(x == F.lit(m), F.col(f"__tp_set{i}")).otherwise(e)
            return e

        return F.flatten(F.transform(ids, one))

    def _with_sets(self, frame: DataFrame) -> DataFrame:
        """``frame`` with one column ``__tp_set{i}`` per marker of :attr:`_markers` (its set)."""
        markers = self._markers.tolist()
        if not markers:
            return frame
        import pyarrow as pa

        sets = pa.table(
            {f"__tp_set{i}": pa.array([marker_ids(m)], pa.list_(pa.int64())) for i, m in enumerate(markers)}
        )
        return frame.crossJoin(F.broadcast(frame.sparkSession.createDataFrame(sets)))

    def to_pandas(self) -> pd.DataFrame:
        """The pinned result as a traced pandas frame (Arrow from Spark; lineage straight into CSR)."""
        cols = [F.col(f"`{c}`") for c in self.df.columns]
        table = self.pinned().select(*cols, self._ids().alias(LIN)).toArrow()  # partitions in order
        off, ids = lineage_from_arrow(table.column(LIN))
        data = table.drop_columns([LIN]).to_pandas()
        return attach(data, with_shared_sets(off, ids, self.node))

    toPandas = to_pandas

    def write_parquet(self, path, mode: str = "error") -> None:
        """Write data and lineage (a ``tp_lineage`` column) as a Parquet folder with a manifest beside it.

        ``tpf.read_traced(path)`` reads it back as a traced pandas frame (rows in position order).
        """
        cols = [F.col(f"`{c}`") for c in self.df.columns]
        sids = self._collect_sids()  # (and the shared sets' markers, each written into its rows)
        pinned = self._with_sets(self.pinned())
        out = pinned.select(*cols, self._expanded(self._ids()).alias(LINEAGE_COL))
        out.write.mode(mode).parquet(os.fspath(path))  # part files in position order
        meta = build(sids, self.node, len(self))
        target = os.path.join(os.fspath(path), FOLDER_MANIFEST)
        with open(target + ".tmp", "w") as fh:  # Spark and pyarrow skip names starting with "_"
            json.dump(meta, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(target + ".tmp", target)

    def ops(self) -> list[str]:
        """The op names from the sources to this result (as ``df.tp.ops()``)."""
        return LineageDAG(self.node).ops()

    def ancestors(self) -> LineageDAG:
        """The op DAG behind this result (as ``df.tp.ancestors()``)."""
        return LineageDAG(self.node)

    def __repr__(self) -> str:
        return f"<SparkTraced {self.df.columns} lineage={self.kind} ops={self.node.topo()[-1].op if self.node else None}>"


def split_sids(frame: DataFrame, ids: Column) -> tuple[np.ndarray, np.ndarray]:
    """(source ids, shared-set marker ids) of the lineage column ``ids`` of ``frame`` (one Spark job);
    the source ids include those of the rows inside the shared sets."""
    marker = F.lit(MARKER_SID)
    key = F.transform(
        ids, lambda x: F.when(F.shiftright(x, ROW_BITS) == marker, x).otherwise(F.shiftright(x, ROW_BITS))
    )
    got = frame.select(F.explode(F.array_distinct(key)).alias("s")).distinct().toArrow()
    vals = np.sort(np.asarray(got.column("s").to_numpy(), dtype=np.int64))
    m = is_marker(vals)
    sids = [vals[~m]] + [np.unique(marker_ids(x) >> np.int64(ROW_BITS)) for x in vals[m].tolist()]
    return np.unique(np.concatenate(sids)), vals[m]


def with_shared_sets(off: np.ndarray, ids: np.ndarray, node) -> RowLineage:
    """RowLineage of rows ``(off, ids)``; each shared-set marker becomes a reference to its set, stored
    once (see :mod:`traceprop_frames.spark.shared`)."""
    ids = np.asarray(ids, dtype=np.int64)
    m = is_marker(ids)
    if not m.any():
        return RowLineage(off, ids, node)
    present = np.unique(ids[m])
    sets = [marker_ids(x) for x in present.tolist()]  # (raises for a marker this process did not make)
    sizes = np.array([len(x) for x in sets], dtype=np.int64)
    side = RowLineage(np.concatenate([[0], np.cumsum(sizes)]), np.concatenate(sets))
    n = len(present)
    block = side.shared_sets(np.arange(n), np.arange(n), np.arange(1, n + 1), "scalar subquery (Spark)")
    return resolve_markers(off, ids, {SPARK_K: (block, present & np.int64((1 << 32) - 1))}, lambda x: x, node)
