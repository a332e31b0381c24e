"""Eager capture: a grouped query's one ``EXISTS`` conjunct by a join grouped per outer row
(``sql.exists_join``, TPC-H q04's shape).

Oracle: pandas brute force over the source frames (SQL equality: a NULL key matches nothing), per result
row as sets of (source, row); results equal plain DuckDB's on the same data; lazy capture gives the same
lineage. Each test asserts which path the query took, so it cannot pass on the LATERAL it replaces.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest
from _sql_oracle import lineage_sets, rows_of

import traceprop_frames as tpf
from traceprop_frames.errors import UnsupportedSQLError


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(21)
    root = tmp_path_factory.mktemp("exists_join")
    ok = rng.integers(0, 14, 60).astype(float)
    ok[::9] = np.nan  # NULL outer keys: no EXISTS holds
    o = pd.DataFrame(
        {
            "ok": pd.array(ok, dtype="Int64"),
            "g": rng.choice(["a", "b", "c", None], 60),
            "x": rng.integers(0, 100, 60),
            "q": rng.integers(0, 10, 60),  # also a column of l: qualified as it resolves
        }
    )
    o = pd.concat([o, o.iloc[[3, 3, 7]]], ignore_index=True)  # rows held twice (and thrice)
    lk = rng.integers(0, 12, 200).astype(float)  # keys 12, 13: orders without witnesses
    lk[::11] = np.nan
    l_ = pd.DataFrame(
        {
            "ok": pd.array(lk, dtype="Int64"),
            "f": rng.random(200) < 0.5,
            "q": rng.integers(0, 10, 200),
        }
    )
    # a user column called rowid (DuckDB's pseudo column is then hidden): the path must not group by it
    r = pd.DataFrame({"rowid": np.zeros(len(o), dtype=np.int64), "ok": o["ok"], "g": o["g"]})
    con, lazy, plain = tpf.connect(capture="eager"), tpf.connect(capture="lazy"), duckdb.connect()
    for name, df in (("o", o), ("l", l_), ("r", r)):
        df.to_parquet(root / f"{name}.parquet", index=False)
        con.read_parquet(root / f"{name}.parquet", name=name)
        lazy.read_parquet(root / f"{name}.parquet", name=name)
        plain.register(name, df)
    yield con, lazy, plain, o, l_
    for c in (con, lazy, plain):
        c.close()


def _split(con, q) -> str:
    return con._eager_plans[q][1][2].split_sql or ""


def _joined(con, q) -> bool:
    s = _split(con, q)
    return " INNER JOIN " in s and "LATERAL" not in s and ".rowid" in s


def _run(con, lazy, plain, q):
    df = con.sql(q)
    want = plain.sql(q).df()
    pd.testing.assert_frame_equal(df.reset_index(drop=True), want)
    got = lineage_sets(df)
    assert lineage_sets(lazy.sql(q)) == got  # lazy capture: the same answer
    return df, got


def _witnesses(o, l_, i, inner) -> np.ndarray:
    """Rows of l whose ok equals o's row i (NULL matches nothing) and that pass ``inner``."""
    k = o["ok"][i]
    if pd.isna(k):
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.asarray((l_["ok"] == k).fillna(False), dtype=bool) & inner)


def _want(o, l_, members, inner) -> set:
    out = set()
    for i in members:
        w = _witnesses(o, l_, i, inner)
        if w.size:
            out |= rows_of("o", [i]) | rows_of("l", w)
    return out


def _groups(o, keep) -> dict:
    """Outer rows passing ``keep`` by their g value (None for NULL)."""
    out: dict = {}
    for i in np.flatnonzero(keep):
        out.setdefault(None if pd.isna(o["g"][i]) else o["g"][i], []).append(i)
    return out


def test_grouped_exists_with_inner_filter(data):
    """q04's shape: outer filter, inner filter, NULL keys on both sides, outer keys with no witness,
    several witnesses per row, rows held twice (each counted), a NULL group."""
    con, lazy, plain, o, l_ = data
    q = (
        "SELECT g, count(*) AS n, sum(x) AS sx FROM o WHERE x > 10 AND EXISTS "
        "(SELECT * FROM l WHERE l.ok = o.ok AND l.f) GROUP BY g ORDER BY g NULLS LAST"
    )
    df, got = _run(con, lazy, plain, q)
    assert _joined(con, q)
    f = l_["f"].to_numpy()
    groups = _groups(o, o["x"].to_numpy() > 10)
    want = {g: _want(o, l_, m, f) for g, m in groups.items()}
    want = {g: s for g, s in want.items() if s}
    assert len(df) == len(want) >= 3
    for g, s in zip(df["g"], got):
        assert s == want[None if pd.isna(g) else g], g
    dup = o.iloc[3]  # a row held three times: all three counted and in the lineage
    if dup["x"] > 10 and _witnesses(o, l_, 3, f).size:
        row = [s for g, s in zip(df["g"], got) if g == dup["g"]][0]
        assert {("o", 3), ("o", 60), ("o", 61)} <= row


def test_same_column_name_both_sides_alias_and_having(data):
    """``q`` is a column of both tables: unqualified, it is l's inside the subquery and o's outside."""
    con, lazy, plain, o, l_ = data
    q = (
        "SELECT oo.g, count(*) AS n, max(q) AS mq FROM o AS oo WHERE q < 8 AND EXISTS "
        "(SELECT * FROM l WHERE ok = oo.ok AND q > 4) GROUP BY oo.g HAVING count(*) > 1 ORDER BY 1 NULLS LAST"
    )
    df, got = _run(con, lazy, plain, q)
    assert _joined(con, q)
    inner = l_["q"].to_numpy() > 4
    for g, s in zip(df["g"], got):
        members = _groups(o, o["q"].to_numpy() < 8)[None if pd.isna(g) else g]
        assert s == _want(o, l_, members, inner), g


def test_ungrouped_aggregate(data):
    con, lazy, plain, o, l_ = data
    q = "SELECT count(*) AS n, sum(x) AS sx FROM o WHERE EXISTS (SELECT * FROM l WHERE l.ok = o.ok AND l.q = 3)"
    df, got = _run(con, lazy, plain, q)
    assert _joined(con, q)
    assert got == [_want(o, l_, range(len(o)), l_["q"].to_numpy() == 3)]


def test_not_exists_keeps_its_path(data):
    """NOT EXISTS: nothing merged, no witnesses (the negation adds no rows)."""
    con, lazy, plain, o, l_ = data
    q = (
        "SELECT g, count(*) AS n FROM o WHERE NOT EXISTS (SELECT * FROM l WHERE l.ok = o.ok AND l.f) "
        "GROUP BY g ORDER BY g NULLS LAST"
    )
    df, got = _run(con, lazy, plain, q)
    assert not _joined(con, q)
    f = l_["f"].to_numpy()
    groups = _groups(o, np.array([_witnesses(o, l_, i, f).size == 0 for i in range(len(o))]))
    for g, s in zip(df["g"], got):
        assert s == rows_of("o", groups[None if pd.isna(g) else g]), g


def test_control_another_subquery(data):
    """Control: an ``IN (subquery)`` beside the EXISTS, whose unqualified ``q`` is l's. Another subquery in
    the WHERE keeps the LATERAL; without that guard the IN would move into the join and its ``q`` be read
    as ``o.q`` (this test then fails: the counts differ from plain DuckDB's)."""
    con, lazy, plain, o, l_ = data
    q = (
        "SELECT g, count(*) AS n FROM o WHERE EXISTS (SELECT * FROM l WHERE l.ok = o.ok) "
        "AND x IN (SELECT q * 10 FROM l) GROUP BY g ORDER BY g NULLS LAST"
    )
    df, got = _run(con, lazy, plain, q)
    assert not _joined(con, q) and "LATERAL" in _split(con, q)
    lq = l_["q"].to_numpy() * 10
    x = o["x"].to_numpy()
    groups = _groups(o, np.isin(x, lq))
    assert len(df) >= 2
    for g, s in zip(df["g"], got):
        want = set()
        for i in groups[None if pd.isna(g) else g]:
            w = _witnesses(o, l_, i, True)
            if w.size:
                want |= rows_of("o", [i]) | rows_of("l", w) | rows_of("l", np.flatnonzero(lq == x[i]))
        assert s == want, g


def test_control_user_column_named_rowid(data):
    """``r`` has a column of its own called ``rowid`` (all 0), which hides DuckDB's row number: the path
    refuses such a table (it groups by ``rowid`` to keep rows held twice apart). Here the row id grouped
    beside it would still keep the rows apart, so this checks the refusal, not a different answer."""
    con, lazy, plain, o, l_ = data
    q = "SELECT g, count(*) AS n FROM r WHERE EXISTS (SELECT * FROM l WHERE l.ok = r.ok) GROUP BY g ORDER BY g NULLS LAST"
    df, got = _run(con, lazy, plain, q)
    assert not _joined(con, q) and "LATERAL" in _split(con, q)
    assert df["n"].sum() > len(df)


def test_per_row_query_keeps_the_lateral(data):
    """No aggregate: each outer row is its own result row; the LATERAL stays (sql.exists_lateral)."""
    con, lazy, plain, o, l_ = data
    q = "SELECT ok, x FROM o WHERE EXISTS (SELECT * FROM l WHERE l.ok = o.ok AND l.f) ORDER BY x, ok"
    _run(con, lazy, plain, q)
    assert not _joined(con, q) and "LATERAL" in _split(con, q)


def test_uncorrelated_scalar_beside(data):
    """An uncorrelated scalar aggregate in the WHERE is computed before the query (sql.scalar_temp), so the
    query holds no other subquery and takes the join; the scalar's rows (all of l) join every group."""
    con, lazy, plain, o, l_ = data
    q = (
        "SELECT g, count(*) AS n FROM o WHERE EXISTS (SELECT * FROM l WHERE l.ok = o.ok AND l.f) "
        "AND x > (SELECT 10 * avg(q) FROM l) GROUP BY g ORDER BY g NULLS LAST"
    )
    df, got = _run(con, lazy, plain, q)
    assert _joined(con, q)
    groups = _groups(o, o["x"].to_numpy() > 10 * l_["q"].mean())
    every_l = rows_of("l", range(len(l_)))
    assert len(df) >= 2
    for g, s in zip(df["g"], got):
        assert s == _want(o, l_, groups[None if pd.isna(g) else g], l_["f"].to_numpy()) | every_l, g


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_key_correlation_random(tmp_path, seed):
    """Correlated on two keys (both must be equal and not NULL), random tables with NULLs in keys, in the
    group key and in an aggregated column; checked against the brute force and plain DuckDB."""
    rng = np.random.default_rng(seed)
    n, m = 50, 120

    def keys(size, hi):
        k = rng.integers(0, hi, size).astype(float)
        k[rng.random(size) < 0.1] = np.nan
        return pd.array(k, dtype="Int64")

    o = pd.DataFrame({"a": keys(n, 4), "b": keys(n, 3), "g": keys(n, 3), "x": keys(n, 50)})
    l_ = pd.DataFrame({"a": keys(m, 4), "b": keys(m, 3), "y": rng.integers(0, 10, m)})
    con, lazy, plain = tpf.connect(capture="eager"), tpf.connect(capture="lazy"), duckdb.connect()
    for name, df in (("o", o), ("l", l_)):
        df.to_parquet(tmp_path / f"{name}.parquet", index=False)
        con.read_parquet(tmp_path / f"{name}.parquet", name=name)
        lazy.read_parquet(tmp_path / f"{name}.parquet", name=name)
        plain.register(name, df)
    q = (
        "SELECT g, count(*) AS n, sum(x) AS sx FROM o WHERE coalesce(x, 0) < 40 AND EXISTS "
        "(SELECT * FROM l WHERE l.a = o.a AND b = o.b AND y < 7) GROUP BY g ORDER BY g NULLS LAST"
    )
    df, got = _run(con, lazy, plain, q)
    assert _joined(con, q)
    y_ok = l_["y"].to_numpy() < 7
    eq = lambda col, i: np.asarray((l_[col] == o[col][i]).fillna(False), dtype=bool)  # noqa: E731
    want: dict = {}
    for i in range(n):
        x = o["x"][i]
        w = np.flatnonzero(eq("a", i) & eq("b", i) & y_ok) if (pd.isna(x) or x < 40) else []
        if len(w):
            g = None if pd.isna(o["g"][i]) else int(o["g"][i])
            want.setdefault(g, set()).update(rows_of("o", [i]) | rows_of("l", w))
    assert len(df) == len(want)
    for g, s in zip(df["g"], got):
        assert s == want[None if pd.isna(g) else int(g)], g
    for c in (con, lazy, plain):
        c.close()


@pytest.mark.parametrize(
    "where",
    [
        "EXISTS (SELECT count(*) FROM l WHERE l.ok = o.ok AND l.f LIMIT 0)",
        "NOT EXISTS (SELECT max(l.q) FROM l WHERE l.ok = o.ok OFFSET 1)",
        "x > 5 AND EXISTS (SELECT sum(q) + 1, rank() OVER () FROM l)",
    ],
)
@pytest.mark.parametrize("grouped", [True, False])
def test_exists_over_an_aggregate_is_refused(data, where, grouped):
    """An EXISTS over a query that aggregates without GROUP BY where that one row can still be dropped
    (LIMIT 0, OFFSET, a window): both modes refuse it, and the connection stays usable (the always-true
    shapes are traced: tests/test_sql_exists_one_row.py)."""
    con, lazy, plain, o, l_ = data
    q = (
        f"SELECT g, count(*) AS n FROM o WHERE {where} GROUP BY g ORDER BY g NULLS LAST"
        if grouped
        else f"SELECT x, ok FROM o WHERE {where} ORDER BY x, ok NULLS LAST"
    )
    for c in (con, lazy):
        with pytest.raises(UnsupportedSQLError, match="aggregates without GROUP BY.*write TRUE"):
            c.sql(q)
    ok = "SELECT g, count(*) AS n FROM o WHERE EXISTS (SELECT l.ok FROM l WHERE l.ok = o.ok GROUP BY l.ok)"
    _run(con, lazy, plain, ok + " GROUP BY g ORDER BY g NULLS LAST")  # grouped inside: traced as before
