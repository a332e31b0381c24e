"""Lazy capture (``tpf.connect(capture="lazy")``): the same answers as eager capture, by a backward query.

Oracles: eager capture (itself checked against brute force in test_sql_tpch / test_sql_property) on
TPC-H 22, the TPC-DS-like q23 pattern, windows, subqueries and set operations; brute force (pandas)
on small group-by and join queries. Rows are compared as a multiset of (values, source rows), so the
row order of queries without ORDER BY does not matter.
"""

from __future__ import annotations

import pickle
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _sql_oracle import join_brute_force, tpch_connections

import traceprop_frames as tpf
from traceprop_frames.errors import SourceChangedError
from traceprop_frames.sql.lazy import LazyRowLineage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import tpcds_like  # noqa: E402

TPCH = Path(__file__).resolve().parents[2] / "shared" / "tpch"


def _value(v):
    if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA or v is pd.NaT:
        return None
    return round(v, 6) if isinstance(v, float) else str(v)


def _rows(df: pd.DataFrame, lin=None) -> Counter:
    """Multiset of (row values, sorted source-row ids) of a traced result."""
    lin = df.tp.lineage() if lin is None else lin
    values = [tuple(_value(v) for v in r) for r in df.itertuples(index=False, name=None)]
    return Counter((v, tuple(lin.row_ids(i).tolist())) for i, v in enumerate(values))


def _same(eager_con, lazy_con, query: str, lazy_expected: bool = True) -> pd.DataFrame:
    want = eager_con.sql(query)
    got = lazy_con.sql(query)
    assert isinstance(got.tp.lineage(), LazyRowLineage) == lazy_expected
    assert _rows(got) == _rows(want)
    return got


# ---------------------------------------------------------------- TPC-H
@pytest.fixture(scope="module")
def tpch():
    yield from tpch_connections(TPCH)


@pytest.mark.parametrize("n", range(1, 23))
def test_tpch_lazy_equals_eager(tpch, n):
    query = (TPCH / f"q{n:02d}.sql").read_text()
    _same(*tpch, query)


@pytest.mark.parametrize("n", range(1, 23))
def test_tpch_rows_asked_alone_equal_eager(tpch, n):
    """One row asked on a fresh result (the key-filtered backward query), and two asked together."""
    eager, lazy = tpch
    query = (TPCH / f"q{n:02d}.sql").read_text()
    want = eager.sql(query).tp.lineage()
    rows = sorted({0, len(want) // 2, len(want) - 1}) if len(want) else []
    for i in rows:
        got = lazy.sql(query).tp.lineage().take([i])
        assert got.row_ids(0).tolist() == want.row_ids(i).tolist(), (n, i)
    if len(rows) > 1:
        got = lazy.sql(query).tp.lineage().take(rows[:2])
        assert [got.row_ids(j).tolist() for j in (0, 1)] == [want.row_ids(i).tolist() for i in rows[:2]]


def test_tpch_one_row_is_resolved_alone(tpch):
    eager, lazy = tpch
    query = (TPCH / "q01.sql").read_text()
    got, want = lazy.sql(query), eager.sql(query)
    lin = got.tp.lineage()
    assert [r.row for r in got.tp.trace(2)] == [r.row for r in want.tp.trace(2)]
    assert {k: v.tolist() for k, v in got.tp.sources(rows=[1, 3]).items()} == {
        k: v.tolist() for k, v in want.tp.sources(rows=[1, 3]).items()
    }
    assert lin._resolver._all is None and not lin.is_materialized  # only the rows asked were resolved
    path = str(TPCH / "lineitem.parquet")
    np.testing.assert_array_equal(
        got.tp.rows_from_source(path, [0, 5]), want.tp.rows_from_source(path, [0, 5])
    )


# ---------------------------------------------------------------- TPC-DS-like
@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    paths = tpcds_like.make_tables(tmp_path_factory.mktemp("tpcds"), store_sales=400, seed=0)
    cons = tpf.connect(capture="eager"), tpf.connect(capture="lazy")
    for name, path in paths.items():
        for con in cons:
            con.read_parquet(path, name=name)
    yield cons
    for con in cons:
        con.close()


@pytest.mark.parametrize(
    "query, lazy",
    [
        (tpcds_like.Q23_SUM, True),
        (tpcds_like.Q23_ROWS, False),  # UNION ALL at the top: captured eagerly
        ("SELECT d_year, d_moy, count(*) AS n, sum(ss_sales_price) AS s FROM store_sales JOIN date_dim "
         "ON ss_sold_date_sk = d_date_sk WHERE ss_item_sk IN (SELECT i_item_sk FROM item WHERE i_item_sk < 50) "
         "GROUP BY d_year, d_moy", True),
        ("SELECT ss_item_sk, ss_quantity FROM store_sales WHERE ss_quantity > (SELECT avg(ss_quantity) "
         "FROM store_sales) ORDER BY ss_item_sk, ss_quantity LIMIT 25", True),
    ],
)  # fmt: skip
def test_tpcds_like_lazy_equals_eager(ds, query, lazy):
    _same(*ds, query, lazy_expected=lazy)


# ---------------------------------------------------------------- windows, subqueries, set operations
@pytest.fixture()
def small(tmp_path):
    rng = np.random.default_rng(7)
    n = 60
    t = pd.DataFrame({
        "k": rng.integers(0, 12, n), "g": rng.integers(0, 4, n), "v": rng.normal(size=n).round(3),
        "s": rng.choice(["a", "b", None], n), "d": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 5, n), "D"),
    })  # fmt: skip
    u = pd.DataFrame({"k": rng.integers(0, 15, 30), "w": rng.integers(0, 100, 30)})
    t.to_csv(tmp_path / "t.csv", index=False)
    u.to_parquet(tmp_path / "u.parquet")
    cons = tpf.connect(capture="eager"), tpf.connect(capture="lazy")
    for con in cons:
        con.read_csv(tmp_path / "t.csv", name="t")
        con.read_parquet(tmp_path / "u.parquet", name="u")
        con.execute("CREATE TABLE agg AS SELECT k, sum(w) AS sw, count(*) AS n FROM u GROUP BY k")
    yield cons, t, u, tmp_path
    for con in cons:
        con.close()


CASES = [
    # (query, captured lazily?)
    ("SELECT g, sum(v) AS s, count(*) AS n FROM t GROUP BY g", True),
    ("SELECT s, count(*) FROM t GROUP BY s", True),  # NULL group key
    ("SELECT d, g, max(v) FROM t GROUP BY d, g ORDER BY d, g LIMIT 7", True),  # date key, LIMIT
    ("SELECT round(v, 1) AS rv, count(*) FROM t GROUP BY rv", True),  # float key, alias
    ("SELECT k + 1 AS k1, count(*) FROM t GROUP BY k + 1 HAVING count(*) > 2", True),
    ("SELECT count(*), sum(v) FROM t", True),
    ("SELECT sum(v) FROM t WHERE v > 100", True),
    ("SELECT g, count(*) FROM t GROUP BY g HAVING count(*) > 1000", True),  # no rows
    ("SELECT t.k, t.v, u.w FROM t JOIN u ON t.k = u.k ORDER BY t.v LIMIT 20", True),
    ("SELECT t.k, t.v, a.sw FROM t LEFT JOIN agg a USING (k)", True),  # a CTAS table: its rowid
    ("SELECT * FROM t WHERE v > 0", True),
    ("SELECT 1 + 1 AS two", True),
    # windows
    ("SELECT g, sum(r) AS sr FROM (SELECT g, row_number() OVER (PARTITION BY g ORDER BY v) AS r FROM t) "
     "GROUP BY g", True),
    ("SELECT k, v, sum(v) OVER (PARTITION BY g ORDER BY v) AS run FROM t", False),
    ("SELECT g, count(*) FROM (SELECT g, lag(v) OVER (PARTITION BY g ORDER BY k, v) AS p FROM t) "
     "WHERE p > 0 GROUP BY g", True),
    # subqueries
    ("SELECT k, v FROM t WHERE v > (SELECT avg(v) FROM t)", True),
    ("SELECT k, v FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.k = t.k AND u.w > 50)", True),
    ("SELECT k, v FROM t WHERE k IN (SELECT k FROM u WHERE w < 40)", True),
    ("SELECT k, v FROM t WHERE k NOT IN (SELECT k FROM u)", True),
    ("SELECT k, (SELECT max(w) FROM u WHERE u.k = t.k) AS mw FROM t", True),
    ("SELECT g, count(*) FROM t WHERE k IN (SELECT k FROM u) GROUP BY g HAVING sum(v) > "
     "(SELECT min(v) FROM t)", True),
    ("WITH c AS (SELECT k, count(*) AS n FROM u GROUP BY k) SELECT t.g, sum(c.n) FROM t JOIN c "
     "USING (k) GROUP BY t.g", True),
    ("WITH c AS (SELECT k, count(*) AS n FROM u GROUP BY k) SELECT t.k, c.n FROM t JOIN c USING (k)", True),
    ("SELECT t.k, d.m FROM t, (SELECT max(w) AS m FROM u) AS d WHERE t.v > 0", True),  # a one-row aggregate
    ("SELECT t.v, d.s FROM t JOIN (SELECT k AS kk, sum(w) AS s FROM u GROUP BY kk) AS d ON t.k = d.kk", True),
    ("SELECT t.v, d.k FROM t JOIN (SELECT k, w FROM u) AS d USING (k)", False),  # a derived table that does not group
    # set operations
    ("SELECT g, count(*) FROM (SELECT k, g FROM t UNION SELECT k, 9 FROM u) GROUP BY g", True),
    ("SELECT k FROM t INTERSECT SELECT k FROM u", False),
    ("SELECT k FROM t EXCEPT SELECT k FROM u", False),
    ("SELECT k, v FROM t UNION ALL SELECT k, w FROM u", False),
    ("SELECT DISTINCT g FROM t", False),
]  # fmt: skip


@pytest.mark.parametrize("query, lazy", CASES)
def test_lazy_equals_eager(small, query, lazy):
    cons, *_ = small
    _same(*cons, query, lazy_expected=lazy)


def test_lazy_group_by_brute_force(small):
    (_, lazy), t, _, tmp = small
    got = lazy.sql("SELECT g, count(*) AS n FROM t GROUP BY g")
    for i, g in enumerate(got["g"].tolist()):
        rows = got.tp.sources(rows=[i])[str(tmp / "t.csv")].tolist()
        assert rows == np.flatnonzero(t["g"].to_numpy() == g).tolist()


def test_lazy_join_brute_force(small):
    (_, lazy), t, u, tmp = small
    got = lazy.sql("SELECT t.v, u.w FROM t JOIN u ON t.k = u.k WHERE u.w > 30")
    join_brute_force(got, t, u, tmp / "t.csv", tmp / "u.parquet")


# ---------------------------------------------------------------- changes, closing, persistence
@pytest.mark.parametrize(
    "change", ["UPDATE t SET v = v + 1 WHERE k = 3", "DELETE FROM t WHERE k = 3", "TRUNCATE t"]
)
def test_changed_table_raises(small, change):
    (_, lazy), *_ = small
    df = lazy.sql("SELECT g, count(*) AS n FROM t GROUP BY g")
    other = lazy.sql("SELECT k, w FROM u")
    lazy.execute(change)
    with pytest.raises(SourceChangedError, match="changed since this query ran"):
        df.tp.sources(rows=[0])
    assert other.tp.sources(rows=[0])  # a query that did not read t is unaffected


def test_table_replaced_through_raw_raises(small):
    (_, lazy), *_ = small
    df = lazy.sql("SELECT t.k, a.sw FROM t JOIN agg a USING (k)")
    lazy.raw.execute("CREATE OR REPLACE TABLE agg AS SELECT * FROM agg")
    with pytest.raises(SourceChangedError):
        df.tp.trace(0)


def test_resolved_on_close(small):
    (eager, lazy), *_ = small
    query = "SELECT g, sum(v) FROM t GROUP BY g"
    want = _rows(eager.sql(query))
    got = lazy.sql(query)
    lazy.close()
    assert _rows(got) == want


def test_persisted_results(small):
    (eager, lazy), _, _, tmp = small
    query = "SELECT t.g, sum(u.w) AS sw FROM t JOIN u USING (k) GROUP BY t.g"
    want = _rows(eager.sql(query))
    lazy.sql(query).tp.to_parquet(tmp / "out.parquet")
    back = tpf.read_traced(tmp / "out.parquet")
    assert _rows(back) == want
    assert _rows(pickle.loads(pickle.dumps(lazy.sql(query))), None) == want
    lazy.execute(f"CREATE TABLE keep AS {query}")  # a table keeps its lineage, as with eager capture
    assert _rows(lazy.sql("SELECT * FROM keep")) == want


def test_file_database_lazy(tmp_path):
    csv = tmp_path / "a.csv"
    pd.DataFrame({"k": [1, 2, 1, 3], "v": [5, 6, 7, 8]}).to_csv(csv, index=False)
    db = str(tmp_path / "etl.duckdb")
    con = tpf.connect(db, capture="lazy")
    con.read_csv(csv, name="a")
    con.execute("CREATE TABLE agg AS SELECT k, count(*) AS n FROM a GROUP BY k")
    con.close()
    con = tpf.connect(db, capture="lazy")
    df = con.sql("SELECT k, n FROM agg ORDER BY k")
    assert isinstance(df.tp.lineage(), LazyRowLineage)
    assert [df.tp.sources(i)[str(csv)].tolist() for i in range(3)] == [[0, 2], [1], [3]]
    con.close()


def test_default_is_lazy():
    assert tpf.connect().capture == "lazy"


def test_bad_capture_value():
    with pytest.raises(tpf.errors.UnsupportedOperationError, match="capture='lazy'"):
        tpf.connect(capture="later")


def test_group_members_listed_flat(small):
    """A plain GROUP BY is answered from its member rows (no list() per group): the same sets."""
    (eager, lazy), *_ = small
    for query, flat in [
        ("SELECT g, count(*) FROM t JOIN u USING (k) GROUP BY g", True),
        ("SELECT count(*) FROM t LEFT JOIN u USING (k)", True),
        ("SELECT round(v, 1) AS rv, count(*) FROM t GROUP BY rv", False),  # the key names a SELECT alias
        ("SELECT g, count(*) FROM t WHERE v > (SELECT avg(v) FROM t) GROUP BY g", True),  # a marker
        ("SELECT g, count(*) FROM (SELECT g, v FROM t WHERE v > 0) AS d GROUP BY g", True),  # a list each
        ("SELECT g, count(*) FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.k = t.k) GROUP BY g", True),
        ("SELECT g, count(*) FROM t GROUP BY g HAVING count(*) > (SELECT count(*) FROM u) / 3", True),
    ]:
        got = lazy.sql(query)
        assert _rows(got) == _rows(eager.sql(query))
        assert (got.tp.lineage()._resolver._plan.flat is not None) == flat, query


@pytest.mark.parametrize(
    "query",
    [
        "SELECT g, count(*) FROM t WHERE g IN (SELECT k FROM u) GROUP BY g",  # the IN is decided by g
        "SELECT g, count(*) FROM t WHERE g IN (SELECT k FROM u WHERE u.w > t.v * 10) GROUP BY g",  # correlated
        "SELECT t.k, u.k, count(*) FROM t, u WHERE t.k = u.k AND t.v > 0 GROUP BY t.k, u.k",
        "SELECT s, count(*) FROM t WHERE s IS NULL OR s IN (SELECT 'a') GROUP BY s",  # a NULL key
        "SELECT t.v, u.w FROM t JOIN u ON t.k = u.k WHERE u.w > 50",
        "SELECT t.v, u.w FROM t LEFT JOIN u ON t.k = u.k AND u.w > 50",  # NULL row ids
        "SELECT t.v FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.k = t.k AND u.w > 20)",
        "WITH c AS (SELECT k, count(*) AS n FROM u GROUP BY k) SELECT t.k, c.n FROM t JOIN c USING (k) "
        "WHERE c.n > 1",
        "SELECT t.v, agg.sw FROM t JOIN agg USING (k) WHERE agg.n > 1",  # a CREATE TABLE AS table: rowid
        "SELECT a.v, b.v FROM t AS a JOIN t AS b ON a.k = b.k AND a.g < b.g",  # a self-join
    ],
)
def test_each_row_asked_alone_equals_eager(small, query):
    """One row asked alone runs the pinned backward query: every row of the result, one at a time."""
    (eager, lazy), *_ = small
    want = eager.sql(query)
    got = lazy.sql(query)
    assert isinstance(got.tp.lineage(), LazyRowLineage) and len(got) == len(want) > 0
    values = [tuple(_value(v) for v in r) for r in got.itertuples(index=False, name=None)]
    alone = Counter((v, tuple(got.tp.lineage().take([i]).row_ids(0).tolist())) for i, v in enumerate(values))
    assert alone == _rows(want)


@pytest.mark.parametrize("qualified", [True, False])
def test_exists_witness_joined_brute_force(small, qualified):
    """A group's EXISTS witnesses come from a join (no mark join, no list per member): each group's
    lineage is its member rows of t and the rows of u that made their EXISTS true (pandas oracle).
    Unqualified, ``k`` would be ambiguous in the join: the general backward query answers instead."""
    (_, lazy), t, u, tmp = small
    k = "u.k" if qualified else "k"
    query = f"SELECT g, count(*) AS n FROM t WHERE EXISTS (SELECT 1 FROM u WHERE {k} = t.k AND u.w > 20) GROUP BY g"
    hits = u[u["w"] > 20]
    got = lazy.sql(query)
    assert len(got) > 1
    for i, g in enumerate(got["g"].tolist()):
        lin = lazy.sql(query).tp.lineage()  # a fresh result: the one-row query
        member = (t["g"].to_numpy() == g) & t["k"].isin(hits["k"]).to_numpy()
        want_t = np.flatnonzero(member).tolist()
        want_u = np.flatnonzero(u["k"].isin(t["k"][member]).to_numpy() & (u["w"].to_numpy() > 20)).tolist()
        ids = lin.take([i]).row_ids(0)
        assert ids.tolist() == sorted(got.tp.lineage().take([i]).row_ids(0).tolist())
        have = got.tp.sources(rows=[i])
        assert have[str(tmp / "t.csv")].tolist() == want_t
        assert have[str(tmp / "u.parquet")].tolist() == want_u
        one = lin._resolver._plan.one
        if qualified:  # the join ran
            assert "EXISTS" not in one and "JOIN" not in one and ", u" in one, one
        else:  # the joined query did not bind: the general backward query answered
            assert one is None


def test_one_row_plan_then_table_changed(small):
    """The first request plans the one-row query only; the queries for several rows are planned later
    from the query text. A table changed in between: the old result raises, a new one is planned anew."""
    (eager, lazy), *_ = small
    query = "SELECT g, count(*) AS n FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.k = t.k) GROUP BY g"
    old = lazy.sql(query)
    assert old.tp.lineage().take([0]).row_ids(0).size
    plan = old.tp.lineage()._resolver._plan
    assert plan.sql is None and plan.one is not None  # only the one-row query was planned
    for con in (eager, lazy):
        con.execute("DELETE FROM u WHERE w < 50")
    with pytest.raises(SourceChangedError, match="changed since this query ran"):
        old.tp.sources(rows=[0, 1])  # would plan the general queries: the check comes first
    new = lazy.sql(query)
    assert _rows(new) == _rows(eager.sql(query))
    assert new.tp.lineage()._resolver._plan is not plan


@pytest.mark.parametrize("combos", [4096, 1])
def test_join_rows_asked_together_pinned_brute_force(small, monkeypatch, combos):
    """Several rows of a join asked together: their tables' rows pinned by row ids (``IN`` lists, no
    WHERE clause), not the whole backward query; with too many combinations, the general query. The
    answer is each row's pair of source rows either way (pandas oracle)."""
    from traceprop_frames.sql import lazy as lazy_mod

    (_, lazy), t, u, tmp = small
    query = "SELECT t.v, u.w FROM t JOIN u ON t.k = u.k WHERE u.w > 30"
    t2, u2 = t.assign(tr=range(len(t))), u.assign(ur=range(len(u)))
    want = Counter(
        (round(r.v, 6), r.w, r.tr, r.ur) for r in t2.merge(u2, on="k").query("w > 30").itertuples()
    )
    monkeypatch.setattr(lazy_mod, "_PIN_COMBOS", combos)
    general = []
    real = lazy_mod.Resolver._query
    monkeypatch.setattr(lazy_mod.Resolver, "_query", lambda self, *a: general.append(1) or real(self, *a))
    got = lazy.sql(query)
    rows = list(range(1, min(len(got), 13)))
    together = got.tp.lineage().take(rows)
    together.materialize()  # one request for all of them
    have = Counter()
    for j, i in enumerate(rows):
        src = together.take([j]).sources()
        have[(round(got["v"].iloc[i], 6), got["w"].iloc[i], *src[str(tmp / "t.csv")].tolist(),
              *src[str(tmp / "u.parquet")].tolist())] += 1  # fmt: skip
    assert len(rows) > 3 and sum(have.values()) == len(rows) and not have - want
    assert bool(general) == (combos == 1)


def test_groups_asked_together_use_the_one_row_query_brute_force(small, monkeypatch):
    """Several groups asked together run the one-row query (the conjunct the group key decides dropped)
    with their keys in it, not the general backward query; each group's lineage is its t rows and the
    u rows whose k equals it (the IN witnesses; pandas oracle)."""
    from traceprop_frames.sql import lazy as lazy_mod

    (_, lazy), t, u, tmp = small
    general = []
    real = lazy_mod.Resolver._query
    monkeypatch.setattr(lazy_mod.Resolver, "_query", lambda self, *a: general.append(1) or real(self, *a))
    got = lazy.sql("SELECT g, count(*) AS n FROM t WHERE g IN (SELECT k FROM u) GROUP BY g")
    rows = list(range(len(got)))
    assert len(rows) > 1
    together = got.tp.lineage().take(rows)
    together.materialize()
    for j, g in enumerate(got["g"].tolist()):
        src = together.take([j]).sources()
        assert src[str(tmp / "t.csv")].tolist() == np.flatnonzero(t["g"].to_numpy() == g).tolist()
        assert src[str(tmp / "u.parquet")].tolist() == np.flatnonzero(u["k"].to_numpy() == g).tolist()
    assert not general
    assert "IN (SELECT" not in got.tp.lineage()._resolver._plan.one
