"""Eager capture leaves out the ids of FROM items whose rows a scalar subquery's shared set already holds
(``sql.covered``): q11's HAVING threshold over the same join, q15's max over the grouping CTE it joins.

Oracle: each result row's lineage written out by hand in pandas from the query's known structure (its own
source rows plus every row the scalar subquery read), compared as sets; lazy capture must give the same
sets. Each positive case also checks the rewrite took the new path (no id of the covered items in the
main query), and the negative cases that it did not, so no case can pass on the path it does not test.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _sql_oracle import lineage_sets, rows_of

import traceprop_frames as tpf


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(11)
    root = tmp_path_factory.mktemp("covered")
    a = pd.DataFrame(
        {"k": rng.integers(0, 8, 60), "bk": rng.integers(0, 6, 60), "v": rng.integers(1, 50, 60)}
    )
    b = pd.DataFrame({"bk": np.arange(6), "f": [True, False, True, True, False, True]})
    paths = {"a": root / "a.parquet", "b": root / "b.parquet"}
    a.to_parquet(paths["a"], index=False)
    b.to_parquet(paths["b"], index=False)
    cons = {}
    for mode in ("eager", "lazy"):
        cons[mode] = tpf.connect(capture=mode)
        for name, path in paths.items():
            cons[mode].read_parquet(path, name=name)
    yield cons, a, b
    for con in cons.values():
        con.close()


def _main_sql(con, query) -> str:
    return con._eager_plans[query][1][0]


def _check(cons, query, want: list[set]) -> pd.DataFrame:
    df = cons["eager"].sql(query)
    assert lineage_sets(df) == want
    assert lineage_sets(cons["lazy"].sql(query)) == want
    return df


def test_having_threshold_over_the_same_join(data):
    """q11's shape: every member of every group passed the subquery's joins and filters."""
    cons, a, b = data
    q = (
        "SELECT k, sum(v) AS s FROM a, b WHERE a.bk = b.bk AND f GROUP BY k "
        "HAVING sum(v) > (SELECT sum(v) * 0.1 FROM a, b WHERE a.bk = b.bk AND f) ORDER BY k"
    )
    j = a.reset_index().merge(b.reset_index(), on="bk", suffixes=("_a", "_b"))
    j = j[j["f"]]
    sums = j.groupby("k")["v"].sum()
    keep = sorted(sums[sums > j["v"].sum() * 0.1].index)
    every = rows_of("a", j["index_a"]) | rows_of("b", j["index_b"])
    df = _check(cons, q, [every] * len(keep))
    assert df["k"].tolist() == keep and len(keep) > 0
    assert "__tp_rid" not in _main_sql(cons["eager"], q).split("HAVING")[0], "the ids were listed per group"


def test_max_over_the_grouping_cte_it_joins(data):
    """q15's shape: the subquery reads every row of the CTE, so the CTE's lineage is in its set."""
    cons, a, b = data
    q = (
        "WITH t AS (SELECT bk, sum(v) AS s FROM a WHERE v > 5 GROUP BY bk) "
        "SELECT b.bk, s FROM b, t WHERE b.bk = t.bk AND s = (SELECT max(s) FROM t) ORDER BY b.bk"
    )
    big = a["v"].to_numpy() > 5
    sums = a[big].groupby("bk")["v"].sum()
    top = sorted(sums[sums == sums.max()].index)
    every = rows_of("a", np.flatnonzero(big))
    df = _check(cons, q, [rows_of("b", [k]) | every for k in top])
    assert df["bk"].tolist() == top
    main = _main_sql(cons["eager"], q)
    assert "t.__tp_lin" not in main and "b.__tp_rid" in main


def test_max_over_the_same_table_with_a_filter(data):
    """The subquery reads the whole table; the query's own filter only keeps fewer rows."""
    cons, a, _ = data
    q = "SELECT k, v FROM a WHERE k > 2 AND v = (SELECT max(v) FROM a) ORDER BY k"
    mx = a["v"].max()
    want_rows = a[(a["k"] > 2) & (a["v"] == mx)]
    df = _check(cons, q, [rows_of("a", range(len(a)))] * len(want_rows))
    assert df["k"].tolist() == sorted(want_rows["k"])
    assert "a.__tp_rid" not in _main_sql(cons["eager"], q)


def test_subquery_that_reads_fewer_rows_covers_nothing(data):
    """A subquery with a filter the query does not have: rows it did not read keep their own ids."""
    cons, a, b = data
    q = "SELECT k, v, a.rowid AS i FROM a WHERE v > (SELECT avg(v) FROM a WHERE k < 3) ORDER BY i"
    small = a["k"].to_numpy() < 3
    keep = np.flatnonzero(a["v"].to_numpy() > a["v"][small].mean())
    w = rows_of("a", np.flatnonzero(small))
    df = _check(cons, q, [rows_of("a", [i]) | w for i in keep])
    assert df["i"].tolist() == keep.tolist()
    assert any(not small[i] for i in keep), "no row outside the subquery's rows: the case tests nothing"
    assert "a.__tp_rid" in _main_sql(cons["eager"], q)


def test_having_threshold_over_one_of_the_joined_tables(data):
    """The subquery reads all of one joined table: that table's ids are left out, the other keeps its."""
    cons, a, b = data
    q = (
        "SELECT k, sum(v) AS s FROM a, b WHERE a.bk = b.bk AND f GROUP BY k "
        "HAVING sum(v) > (SELECT sum(v) * 0.1 FROM a) ORDER BY k"
    )
    j = a.reset_index().merge(b.reset_index(), on="bk", suffixes=("_a", "_b"))
    j = j[j["f"]]
    sums = j.groupby("k")["v"].sum()
    keep = sorted(sums[sums > a["v"].sum() * 0.1].index)
    every = rows_of("a", range(len(a)))
    want = [every | rows_of("b", j.loc[j["k"] == k, "index_b"]) for k in keep]
    df = _check(cons, q, want)
    assert df["k"].tolist() == keep and len(keep) > 0
    main = _main_sql(cons["eager"], q).split("HAVING")[0]
    assert "a.__tp_rid" not in main and "b.__tp_rid" in main


def test_threshold_over_another_join_covers_nothing(data):
    """The subquery's filter is one of the query's, but it reads only ``a``: ``b``'s rows are not in its
    set, so they stay in each group's lineage."""
    cons, a, b = data
    q = (
        "SELECT k, sum(v) AS s FROM a, b WHERE a.bk = b.bk AND f AND v > 3 GROUP BY k "
        "HAVING sum(v) > (SELECT sum(v) * 0.1 FROM a WHERE v > 3) ORDER BY k"
    )
    j = a.reset_index().merge(b.reset_index(), on="bk", suffixes=("_a", "_b"))
    j = j[j["f"] & (j["v"] > 3)]
    sums = j.groupby("k")["v"].sum()
    keep = sorted(sums[sums > a["v"][a["v"] > 3].sum() * 0.1].index)
    every = rows_of("a", np.flatnonzero(a["v"].to_numpy() > 3))
    m = [j["k"] == k for k in keep]
    want = [every | rows_of("a", j.loc[s, "index_a"]) | rows_of("b", j.loc[s, "index_b"]) for s in m]
    df = _check(cons, q, want)
    assert df["k"].tolist() == keep and len(keep) > 0
    assert "b.__tp_rid" in _main_sql(cons["eager"], q)
