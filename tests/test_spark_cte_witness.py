"""Spark: a scalar subquery over the query's CTEs stores its rows once (one marker), not in every row.

TPC-H q15's ``total_revenue = (SELECT max(total_revenue) FROM revenue)`` used to copy every row of
``revenue``'s lineage into each result row. Oracle: brute force in pandas over a small Parquet file —
a result row's lineage is its group's rows plus every row the subquery's groups were made of.
A correlated subquery over a CTE (it does not run on its own) keeps the copied rows, still exact.
"""

from __future__ import annotations

import numpy as np
import pytest
from _spark_small import DATA, answers

import traceprop_frames as tpf
from traceprop_frames.spark.shared import is_marker

CTE = "WITH g AS (SELECT k, sum(v) AS s FROM t GROUP BY k) "
UNCORRELATED = CTE + "SELECT k, s FROM g WHERE s >= (SELECT min(s) FROM g WHERE k = 'b') ORDER BY k"
CORRELATED = CTE + "SELECT k, s FROM g AS o WHERE s <= (SELECT max(s) FROM g WHERE g.k < o.k) ORDER BY k"


def _members(keys) -> set[int]:
    return set(DATA.index[DATA.k.isin(list(keys))])


def _oracle_uncorrelated() -> dict[str, list[int]]:
    sums = DATA.groupby("k").v.sum()
    return {k: sorted(_members([k]) | _members(["b"])) for k in sums.index[sums >= sums["b"]]}


def _oracle_correlated() -> dict[str, list[int]]:
    sums = DATA.groupby("k").v.sum()
    out = {}
    for k, s in sums.items():
        before = sums[sums.index < k]
        if len(before) and s <= before.max():
            out[k] = sorted(_members([k]) | _members(before.index))
    return out


@pytest.mark.parametrize("capture", ["eager", "lazy"])
def test_subquery_over_a_cte_is_one_shared_set(spark, small_table, capture):
    con = tpf.spark.connect(spark, capture=capture).read_parquet(small_table, "t")
    want = _oracle_uncorrelated()
    assert len(want) == 2 and len(set(map(tuple, want.values()))) == 2  # the oracle tells rows apart
    sql = con.rewrite(UNCORRELATED)
    assert "CAST(9223372" in sql and "FLATTEN(COLLECT_LIST(g.__tp_lin))" not in sql  # a marker, no copy
    res = con.sql(UNCORRELATED)
    col = res._backward() if capture == "lazy" else res.frame
    got = np.asarray(col.selectExpr(f"explode({res.kind}) AS i").toArrow().column("i").to_numpy())
    assert is_marker(got).sum() == len(want)  # one marker per row in place of the subquery's rows
    assert answers(res, small_table) == want
    df = res.to_pandas()
    assert df.tp.lineage().has_context  # stored once, referenced by both rows


@pytest.mark.parametrize("capture", ["eager", "lazy"])
def test_correlated_subquery_over_a_cte_keeps_copied_rows(spark, small_table, capture):
    con = tpf.spark.connect(spark, capture=capture).read_parquet(small_table, "t")
    want = _oracle_correlated()
    assert len(want) == 2 and len(set(map(tuple, want.values()))) == 2
    assert "CAST(9223372" not in con.rewrite(CORRELATED)  # it does not run alone: no shared set
    assert answers(con.sql(CORRELATED), small_table) == want
