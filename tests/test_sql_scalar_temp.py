"""Eager capture: an uncorrelated scalar aggregate's value and witnesses computed once (``sql.scalar_temp``,
TPC-H q22).

Oracle: the lineage written out by hand with numpy / pandas (a row's own rows plus every row the
subquery aggregated), per result row as sets; results equal plain DuckDB's (values and dtypes, DECIMAL
included); lazy capture's lineage equals eager's; nothing is left behind in the database (no temporary
table, no variable). Each test asserts which path the query took.
"""

from __future__ import annotations

from decimal import Decimal

import duckdb
import numpy as np
import pandas as pd
import pytest
from _sql_oracle import eager_lazy_plain, lineage_sets, rows_of

from traceprop_frames.errors import UnsupportedSQLError


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(31)
    root = tmp_path_factory.mktemp("scalar_temp")
    n = 80
    o = pd.DataFrame(
        {
            "id": np.arange(n),
            "g": rng.choice(["a", "b", "c"], n),
            "x": rng.integers(0, 100, n),
            "d": [Decimal(f"{v:.2f}") for v in rng.uniform(-50, 50, n)],
        }
    )
    l_ = pd.DataFrame({"q": rng.integers(0, 100, 120), "s": rng.choice(["p", "q", "r"], 120)})
    eager, lazy, plain = eager_lazy_plain(root, {"o": o, "l": l_})
    yield eager, lazy, plain, o, l_
    eager.close()
    lazy.close()
    plain.close()


def _run(data, q, once: bool):
    eager, lazy, plain, *_ = data
    df = eager.sql(q)
    pd.testing.assert_frame_equal(df.reset_index(drop=True), plain.sql(q).df())
    rw = eager._eager_plans[q][1][2]
    assert ("getvariable('__tp_sc_" in rw.sql.lower()) == once
    assert bool(rw.temps) == once
    assert lineage_sets(df) == lineage_sets(lazy.sql(q))
    raw = eager.raw
    assert raw.sql("SELECT count(*) FROM duckdb_variables() WHERE name LIKE '__tp_%'").fetchall() == [(0,)]
    assert raw.sql("SELECT count(*) FROM duckdb_tables() WHERE temporary").fetchall() == [(0,)]
    return df


def test_q22_shape(data):
    """An average over l's rows of one kind, compared in a derived table's WHERE; groups above it."""
    *_, o, l_ = data
    q = (
        "SELECT g, count(*) AS n, sum(x) AS sx FROM (SELECT g, x FROM o "
        "WHERE x > (SELECT avg(q) FROM l WHERE s <> 'r') AND id % 3 <> 0) AS t GROUP BY g ORDER BY g"
    )
    df = _run(data, q, once=True)
    w = np.flatnonzero(l_["s"].to_numpy() != "r")
    avg = l_["q"].to_numpy()[w].mean()
    want: dict[str, set] = {}
    for i in range(len(o)):
        if o["x"][i] > avg and i % 3 != 0:
            want.setdefault(o["g"][i], set()).update(rows_of("o", [i]) | rows_of("l", w))
    assert list(df["g"]) == sorted(want)
    for g, got in zip(df["g"], lineage_sets(df)):
        assert got == want[g], g


def test_decimal_value_in_select_and_where(data):
    """The value keeps its type (DECIMAL) where the query shows it and where it filters."""
    *_, o, l_ = data
    q = (
        "SELECT id, d, (SELECT sum(d) FROM o AS o2 WHERE o2.x < 20) AS s FROM o "
        "WHERE d * 10 > (SELECT sum(d) FROM o AS o2 WHERE o2.x < 20) ORDER BY id"
    )
    df = _run(data, q, once=True)
    w = np.flatnonzero(o["x"].to_numpy() < 20)
    total = sum(o["d"][j] for j in w)
    want = [i for i in range(len(o)) if o["d"][i] * 10 > total]
    assert list(df["id"]) == want and len(want) > 3
    assert lineage_sets(df) == [rows_of("o", [i]) | rows_of("o", w) for i in want]


def test_over_no_rows_and_in_the_same_subquery(data):
    """``count(*)`` over no rows is 0 (every row passes, with no witness rows from it); the same
    subquery text inside IN reads the table."""
    *_, o, l_ = data
    q = (
        "SELECT id FROM o WHERE (SELECT count(*) FROM l WHERE q > 1000) = 0 "
        "AND x % 7 IN (SELECT count(*) FROM l WHERE q > 1000) ORDER BY id"
    )
    df = _run(data, q, once=True)
    want = [i for i in range(len(o)) if o["x"][i] % 7 == 0]
    assert list(df["id"]) == want and len(want) > 3
    assert lineage_sets(df) == [rows_of("o", [i]) for i in want]


@pytest.mark.parametrize(
    "q",
    [
        # reads a CTE: the query computes it once for both
        "WITH c AS (SELECT q FROM l WHERE s = 'p') SELECT id FROM o WHERE x > (SELECT avg(q) FROM c) ORDER BY id",
        # the query around it reads the same rows (TPC-H q11's shape; here naming an alias in HAVING,
        # so sql.same_rows leaves it too: tests/test_sql_same_rows.py)
        "SELECT g, sum(x) AS sx FROM o GROUP BY g HAVING sx > (SELECT sum(x) * 0.3 FROM o) ORDER BY g",
        # not one row by construction (no aggregate)
        "SELECT id FROM o WHERE x > (SELECT q FROM l ORDER BY q LIMIT 1) ORDER BY id",
    ],
)
def test_not_computed_once(data, q):
    _run(data, q, once=False)


def test_failed_query_leaves_nothing(data):
    """A query that fails after the table is made still drops it and its variable."""
    eager, *_ = data
    q = "SELECT id FROM o WHERE x > (SELECT avg(q) FROM l) AND CAST(g AS INTEGER) > 0"
    with pytest.raises((duckdb.Error, UnsupportedSQLError)):  # (DuckDB's conversion error, at run)
        eager.sql(q)
    assert "getvariable('__tp_sc_0')" in eager._eager_plans[q][1][0].lower()  # (the path was taken)
    raw = eager.raw
    assert raw.sql("SELECT count(*) FROM duckdb_variables() WHERE name LIKE '__tp_%'").fetchall() == [(0,)]
    assert raw.sql("SELECT count(*) FROM duckdb_tables() WHERE temporary").fetchall() == [(0,)]
