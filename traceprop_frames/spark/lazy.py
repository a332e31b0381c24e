"""Lazy capture on Spark (``tpf.spark.connect(spark, capture="lazy")``), as in :mod:`traceprop_frames.sql.lazy`.

A query runs as written plus one cheap key per row (its group-key values, or its tables' row ids);
a lineage question runs the eager rewrite of the same query as a backward Spark job, joined null-safely
on the keys of just the rows asked, so the answers equal eager capture's. Positions refer to the
result pinned once (``localCheckpoint``), as for eager results. Before each backward job, what the
query read is checked (:mod:`traceprop_frames.spark.changes`): a view replaced or a source file changed
since raises :class:`~traceprop_frames.errors.SourceChangedError` instead of answering for other rows.
"""

from __future__ import annotations

from functools import reduce

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from traceprop_frames.frames import attach
from traceprop_frames.lineage import OpNode
from traceprop_frames.spark.changes import ReadState
from traceprop_frames.spark.result import POS, SparkTraced, split_sids, with_shared_sets
from traceprop_frames.spark.shared import SharedSets, expand
from traceprop_frames.sql.connection import lineage_from_arrow
from traceprop_frames.sql.rewrite import LIN, RID


class LazySparkTraced(SparkTraced):
    """A lazily captured Spark result: ``frame`` holds the key columns; lineage comes from ``backward``.

    ``backward()`` returns the eager rewrite of the query (without ORDER BY / LIMIT) with the same key
    columns, as a Spark DataFrame whose lineage column is ``kind``.
    """

    def __init__(
        self,
        frame: DataFrame,
        keys: list[str],
        backward,
        kind: str,
        node: OpNode,
        owner: SharedSets | None = None,
        state: ReadState | None = None,
    ) -> None:
        super().__init__(frame, kind, node, owner)
        self.keys = keys
        self._plan_backward = backward
        self._bw: DataFrame | None = None
        self._state = state  # the views and files the query read, checked before each backward job

    def _backward(self) -> DataFrame:
        """The backward query, planned now; its lineage column names :attr:`kind` from then on (the query
        was planned without the eager rewrite's shared sets, which may turn a row id into a list)."""
        bw = self._plan_backward()
        self.kind = RID if RID in bw.columns else LIN
        return bw

    def pinned(self) -> DataFrame:
        if self._pinned is None and self._state is not None:
            self._state.pin(self.frame)  # (the files its rows come from, as they are now)
        return super().pinned()

    @property
    def df(self) -> DataFrame:
        return self.frame.drop(*self.keys) if self.keys else self.frame

    def _with_lineage(self, picked: DataFrame) -> DataFrame:
        """``picked`` (pinned rows with their keys) with the backward query's lineage column joined."""
        if self._state is not None:
            self._state.check(self.node)
        if self._bw is None:
            self._bw = self._backward()
        bw = self._bw.select(*[F.col(k).alias(f"__tp_b{k}") for k in self.keys], F.col(self.kind))
        if not self.keys:
            return picked.crossJoin(bw)
        cond = reduce(lambda a, b: a & b, [picked[k].eqNullSafe(bw[f"__tp_b{k}"]) for k in self.keys])
        return picked.join(bw, cond, "left")

    def _collect_ids(self, rows=None) -> np.ndarray:
        picked = self.pinned()
        if rows is not None:
            picked = picked.where(F.col(POS).isin(self._check_rows(rows).tolist()))
        got = self._with_lineage(F.broadcast(picked.select(POS, *self.keys)) if rows is not None else picked)
        got = got.select(F.explode(self._ids()).alias("id")).distinct().toArrow()
        return expand(np.sort(np.asarray(got.column("id").to_numpy(), dtype=np.int64)))

    def rows_from_source(self, path, rows) -> np.ndarray:
        self._collect_sids()  # (the shared sets' markers)
        hit = self._hits(path, rows, candidates=False)
        got = self._with_lineage(self.pinned().select(POS, *self.keys)).where(hit).select(POS).distinct()
        return np.sort(np.asarray(got.toArrow().column(POS).to_numpy(), dtype=np.int64))

    def to_pandas(self) -> pd.DataFrame:
        cols = [F.col(f"`{c}`") for c in self.df.columns]
        joined = self._with_lineage(self.pinned())
        table = joined.select(POS, *cols, self._ids().alias(LIN)).orderBy(POS).toArrow()
        off, ids = lineage_from_arrow(table.column(LIN))
        data = table.drop_columns([LIN, POS]).to_pandas()
        return attach(data, with_shared_sets(off, ids, self.node))

    toPandas = to_pandas

    def write_parquet(self, path, mode: str = "error") -> None:
        """Resolve every row's lineage, then write as an eager result does."""
        cols = [F.col(f"`{c}`") for c in self.df.columns]
        joined = self._with_lineage(self.pinned()).select(*cols, self._ids().alias(self.kind), POS)
        eager = SparkTraced(joined.drop(POS), self.kind, self.node, self._owner)
        eager._pinned, eager._n = joined.orderBy(POS), len(self)
        eager._sids, eager._markers = self._collect_sids(), self._markers
        eager.write_parquet(path, mode)

    def _collect_sids(self) -> np.ndarray:
        if self._sids is None:
            joined = self._with_lineage(self.pinned().select(POS, *self.keys))
            self._sids, self._markers = split_sids(joined, self._ids())
        return self._sids
