"""Eager capture: a correlated scalar aggregate compared in WHERE and its witnesses from one LATERAL
subquery (``sql.scalar_lateral``, TPC-H q17 / q02).

Oracle: the lineage written out by hand with numpy / pandas from each query's structure (the outer row
and every row the subquery aggregated for it), per result row as sets; the results equal plain DuckDB's,
and lazy capture's lineage equals eager's. Each test asserts which path the query took, so it cannot pass
on the path it replaces.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _sql_oracle import eager_lazy_plain, lineage_sets, rows_of


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(23)
    root = tmp_path_factory.mktemp("scalar_lateral")
    n = 60
    ok = rng.integers(0, 18, n).astype(float)
    ok[::11] = np.nan  # NULL outer keys: the subquery reads no row for them
    o = pd.DataFrame(
        {
            "id": np.arange(n),
            "ok": pd.array(ok, dtype="Int64"),
            "g": rng.choice(["a", "b", "c", "d"], n),
            "x": rng.integers(0, 100, n),
        }
    )
    lk = rng.integers(0, 15, 150).astype(float)
    lk[::13] = np.nan  # NULL inner keys match nothing
    l_ = pd.DataFrame(
        {
            "ok": pd.array(lk, dtype="Int64"),
            "sk": rng.integers(0, 8, 150),
            "f": rng.random(150) < 0.5,
            "q": rng.integers(0, 10, 150),
            "s": rng.choice(["p", "q", "r"], 150),
        }
    )
    u = pd.DataFrame({"u": np.arange(6)})
    eager, lazy, plain = eager_lazy_plain(root, {"o": o, "l": l_, "u": u}, plain_reads_parquet=False)
    yield eager, lazy, plain, o, l_
    eager.close()
    lazy.close()
    plain.close()


def _run(data, q, merged: int):
    """The eager result (equal to plain DuckDB's, its lineage equal to lazy capture's), after checking
    that ``merged`` scalar subqueries took the LATERAL path."""
    eager, lazy, plain, *_ = data
    df = eager.sql(q)
    pd.testing.assert_frame_equal(df.reset_index(drop=True), plain.sql(q).df())
    rw = eager._eager_plans[q][1][2]
    assert (rw.split_sql or "").count("AS __tp_sv") == merged
    if merged:
        assert not rw.correlated  # no side query left
    assert lineage_sets(df) == lineage_sets(lazy.sql(q))
    return df


def _match(l_, k) -> np.ndarray:
    """l's rows whose ok equals k (SQL equality: NULL equals nothing)."""
    if pd.isna(k):
        return np.zeros(len(l_), dtype=bool)
    return np.asarray((l_["ok"] == k).fillna(False), dtype=bool)


def test_scalar_in_an_aggregate(data):
    """TPC-H q17's shape: the rows of a group whose x beats an average over their matching l rows."""
    *_, o, l_ = data
    q = (
        "SELECT g, count(*) AS n, sum(x) AS sx FROM o "
        "WHERE x > (SELECT 10 * avg(l.q) FROM l WHERE l.ok = o.ok AND l.s <> 'r') GROUP BY g ORDER BY g"
    )
    df = _run(data, q, merged=1)
    lq, keep = l_["q"].to_numpy(), l_["s"].to_numpy() != "r"
    want: dict[str, set] = {}
    for i in range(len(o)):
        w = np.flatnonzero(_match(l_, o["ok"][i]) & keep)
        if w.size and o["x"][i] > 10 * lq[w].mean():  # avg over no rows: NULL, the row fails
            want.setdefault(o["g"][i], set()).update(rows_of("o", [i]) | rows_of("l", w))
    assert len(df) >= 2 and list(df["g"]) == sorted(want)
    for g, got in zip(df["g"], lineage_sets(df)):
        assert got == want[g], g


def test_scalar_per_row_on_the_left(data):
    """TPC-H q02's shape (no aggregate): each row's witnesses are the rows its minimum was taken over."""
    *_, o, l_ = data
    q = "SELECT id, x FROM o WHERE (SELECT min(l.q) FROM l WHERE l.ok = o.ok AND l.f) <= x % 10 ORDER BY id"
    df = _run(data, q, merged=1)
    lq, f = l_["q"].to_numpy(), l_["f"].to_numpy()
    want = {}
    for i in range(len(o)):
        w = np.flatnonzero(_match(l_, o["ok"][i]) & f)
        if w.size and lq[w].min() <= o["x"][i] % 10:
            want[i] = rows_of("o", [i]) | rows_of("l", w)
    assert len(df) > 5 and list(df["id"]) == sorted(want)
    for i, got in zip(df["id"], lineage_sets(df)):
        assert got == want[i], i


def test_two_scalars_count_of_no_rows_and_a_join_inside(data):
    """``count(*)`` over no rows is 0 (the row stays, with no witnesses from it); the second subquery
    joins two tables, both witnesses."""
    *_, o, l_ = data
    q = (
        "SELECT id, x FROM o WHERE (SELECT count(*) FROM l WHERE l.ok = o.ok AND l.q > 7) < 3 "
        "AND x >= (SELECT 10 * max(u.u) FROM l AS l2, u WHERE l2.ok = o.ok AND u.u = l2.sk) ORDER BY id"
    )
    df = _run(data, q, merged=2)
    lq, sk = l_["q"].to_numpy(), l_["sk"].to_numpy()
    want = {}
    for i in range(len(o)):
        m = _match(l_, o["ok"][i])
        w1 = np.flatnonzero(m & (lq > 7))
        w2 = np.flatnonzero(m & (sk < 6))  # u holds 0..5
        if w1.size < 3 and w2.size and o["x"][i] >= 10 * sk[w2].max():
            want[i] = rows_of("o", [i]) | rows_of("l", w1) | rows_of("l", w2) | rows_of("u", sk[w2])
    assert len(df) > 5 and list(df["id"]) == sorted(want)
    for i, got in zip(df["id"], lineage_sets(df)):
        assert got == want[i], i


def test_count_over_no_rows_keeps_the_row(data):
    """Rows whose subquery reads nothing (a NULL key, a key l lacks) pass ``count(*) = 0``: kept, with
    only their own row as lineage."""
    *_, o, l_ = data
    q = "SELECT id FROM o WHERE (SELECT count(*) FROM l WHERE l.ok = o.ok AND l.q = 9) = 0 ORDER BY id"
    df = _run(data, q, merged=1)
    lq = l_["q"].to_numpy()
    want = [i for i in range(len(o)) if not (_match(l_, o["ok"][i]) & (lq == 9)).any()]
    assert any(pd.isna(o["ok"][i]) for i in want) and list(df["id"]) == want
    assert lineage_sets(df) == [rows_of("o", [i]) for i in want]


@pytest.mark.parametrize(
    "q",
    [
        # correlated by an inequality: the side query stays
        "SELECT id, x FROM o WHERE x > (SELECT 10 * avg(l.q) FROM l WHERE l.ok < o.ok) ORDER BY id",
        # not a conjunct of the top-level WHERE
        "SELECT id, x FROM o WHERE x > (SELECT 10 * avg(l.q) FROM l WHERE l.ok = o.ok) OR x < 5 ORDER BY id",
        # a star would show the lateral's columns
        "SELECT * FROM o WHERE x > (SELECT 10 * avg(l.q) FROM l WHERE l.ok = o.ok) ORDER BY id",
        # not an aggregate: zero or many rows per outer row
        "SELECT id, x FROM o WHERE x > (SELECT l.q FROM l WHERE l.ok = o.ok ORDER BY l.q LIMIT 1) ORDER BY id",
    ],
)
def test_not_merged(data, q):
    _run(data, q, merged=0)


def test_inequality_correlation_lineage(data):
    """The path kept for a correlation by an inequality still lists every row the average read."""
    *_, o, l_ = data
    q = "SELECT id, x FROM o WHERE x > (SELECT 10 * avg(l.q) FROM l WHERE l.ok < o.ok) ORDER BY id"
    df = _run(data, q, merged=0)
    lq, lk = l_["q"].to_numpy(), l_["ok"]
    want = {}
    for i in range(len(o)):
        if pd.isna(o["ok"][i]):
            continue
        w = np.flatnonzero(np.asarray((lk < o["ok"][i]).fillna(False), dtype=bool))
        if w.size and o["x"][i] > 10 * lq[w].mean():
            want[i] = rows_of("o", [i]) | rows_of("l", w)
    assert list(df["id"]) == sorted(want)
    for i, got in zip(df["id"], lineage_sets(df)):
        assert got == want[i], i
