"""Spark: an uncorrelated scalar subquery's rows stored once (one marker id per row), answered in full.

Oracle: brute force in pandas over the same small Parquet file — a result row's lineage is its group's
member rows (those passing the outer WHERE) plus every row the ``avg()`` subquery read (``k <> 'a'``).
Each test also asserts the shared-set path was taken (the lineage column holds a marker, not the ids).
"""

from __future__ import annotations

import numpy as np
import pytest
from _spark_small import DATA, SCALAR_QUERY, rows, scalar_oracle
from pyspark.sql import functions as F

import traceprop_frames as tpf
from traceprop_frames.errors import LineageFormatError
from traceprop_frames.spark.shared import SPARK_K, expand, is_marker
from traceprop_frames.sql.shared import marker_base


@pytest.mark.parametrize("capture", ["eager", "lazy"])
def test_scalar_subquery_rows_stored_once(spark, small_table, tmp_path, capture):
    con = tpf.spark.connect(spark, capture=capture).read_parquet(small_table, "t")
    want = scalar_oracle()
    assert len(want) == 2 and all(len(v) > 1 for v in want.values())
    res = con.sql(SCALAR_QUERY)
    # the path: the (eager or backward) lineage column holds one marker per row, not the subquery's ids
    col = res._backward() if capture == "lazy" else res.frame
    got = np.asarray(col.select(F.explode(res._ids()).alias("i")).toArrow().column("i").to_numpy())
    assert is_marker(got).sum() >= 1 and (~is_marker(got)).sum() == sum(DATA.v > DATA.v[DATA.k != "a"].mean())
    keys = [r["k"] for r in res.pinned().orderBy("__tp_pos").select("k").collect()]
    for i, k in enumerate(keys):
        assert rows(res.sources(rows=[i]), small_table) == want[k]
    # a row only the subquery read (k <> 'a', not above the average) is behind every result row
    only_read = [
        r for r in range(len(DATA)) if DATA.k[r] != "a" and DATA.v[r] <= DATA.v[DATA.k != "a"].mean()
    ]
    assert only_read and res.rows_from_source(str(small_table), only_read[:1]).tolist() == list(
        range(len(keys))
    )
    member = next(r for r in want[keys[0]] if r not in want[keys[1]])
    assert res.rows_from_source(str(small_table), [member]).tolist() == [0]
    df = res.to_pandas()
    lin = df.tp.lineage()
    assert lin.has_context  # the set is stored once and referenced
    for i, k in enumerate(df["k"]):
        assert sorted((lin.row_ids(i) & ((1 << 40) - 1)).tolist()) == want[k]
    con.register("r", res)  # a later query over the result: its rows keep the shared set
    again = con.sql("SELECT k FROM r WHERE n > 2")
    assert [rows(again.sources(rows=[i]), small_table) for i in range(len(again))] == [want["a"]]
    res.write_parquet(tmp_path / "out")
    back = tpf.read_traced(tmp_path / "out")
    for i, k in enumerate(back["k"]):
        assert rows(back.tp.sources(rows=[i]), small_table) == want[k]


def test_unknown_marker_raises():
    foreign = marker_base(SPARK_K) | ((1 << 32) - 1)
    assert expand(np.array([3, 5])).tolist() == [3, 5]
    with pytest.raises(LineageFormatError, match="did not make"):
        expand(np.array([3, foreign]))
