"""Eager capture: ``count(DISTINCT x)`` of an integer beside the lineage lists as ``list_unique(list(x))``
(``sql.distinct_count``, TPC-H q16).

Oracle: the counts and the lineage by pandas (a group's lineage is its member rows), the results equal
plain DuckDB's (values, dtypes, column names), lazy capture's lineage equals eager's. Each test asserts
which path the query took.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _sql_oracle import eager_lazy_plain, lineage_sets


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(41)
    root = tmp_path_factory.mktemp("distinct_count")
    n = 200
    x = rng.integers(0, 9, n).astype(float)
    x[::7] = np.nan  # NULLs: counted by no count(DISTINCT)
    o = pd.DataFrame(
        {
            "id": np.arange(n),
            "g": rng.choice(["a", "b", "c", "d"], n),
            "x": pd.array(x, dtype="Int64"),
            "f": rng.integers(0, 4, n) / 2,
            "s": rng.choice(["p", "P", "q", "Q", "r"], n),
            "ok": rng.integers(0, 6, n),
        }
    )
    l_ = pd.DataFrame({"ok": rng.integers(0, 6, 30), "q": rng.integers(0, 9, 30)})
    eager, lazy, plain = eager_lazy_plain(root, {"o": o, "l": l_})
    yield eager, lazy, plain, o, l_
    eager.close()
    lazy.close()
    plain.close()


def _run(data, q, applied: bool):
    eager, lazy, plain, *_ = data
    df = eager.sql(q)
    pd.testing.assert_frame_equal(df.reset_index(drop=True), plain.sql(q).df())
    sql, _, rw = eager._eager_plans[q][1]
    ran = rw.split_sql or sql
    assert ("LIST_UNIQUE(" in ran.upper()) == applied
    assert lineage_sets(df) == lineage_sets(lazy.sql(q))
    return df


def test_count_distinct_integer_with_nulls(data):
    *_, o, _l = data
    q = "SELECT g, count(DISTINCT x) AS n, count(*) AS m FROM o GROUP BY g ORDER BY n DESC, g"
    df = _run(data, q, applied=True)
    want = o.groupby("g")["x"].nunique()  # (pandas' nunique counts no NULL either)
    assert dict(zip(df["g"], df["n"])) == want.to_dict()
    for g, got in zip(df["g"], lineage_sets(df)):
        assert got == {("o", int(i)) for i in np.flatnonzero(o["g"].to_numpy() == g)}


def test_in_having_and_order_by(data):
    *_, o, _l = data
    q = (
        "SELECT g, ok, count(DISTINCT x) AS n FROM o GROUP BY g, ok "
        "HAVING count(DISTINCT x) > 2 ORDER BY count(DISTINCT x), g, ok"
    )
    df = _run(data, q, applied=True)
    want = o.groupby(["g", "ok"])["x"].nunique()
    assert sorted(zip(df["g"], df["ok"])) == sorted(k for k, v in want.items() if v > 2)


def test_with_a_lateral_split(data):
    """Beside a correlated scalar subquery merged into a LATERAL (the split query runs)."""
    *_, o, l_ = data
    q = (
        "SELECT g, count(DISTINCT x) AS n FROM o "
        "WHERE x > (SELECT avg(q) FROM l WHERE l.ok = o.ok) GROUP BY g ORDER BY g"
    )
    df = _run(data, q, applied=True)
    assert "AS __tp_sv0" in data[0]._eager_plans[q][1][2].split_sql  # the split query ran
    avg = l_.groupby("ok")["q"].mean()
    keep = o["x"].astype(float) > o["ok"].map(avg)
    assert dict(zip(df["g"], df["n"])) == o[keep.fillna(False)].groupby("g")["x"].nunique().to_dict()


def test_no_group_by_over_no_rows(data):
    """Without GROUP BY over no rows: 0, as count(DISTINCT) gives (list() gives NULL there)."""
    for q in (
        "SELECT count(DISTINCT x) AS n, count(*) AS m FROM o WHERE id < 0",
        "SELECT count(DISTINCT x) AS n FROM o WHERE id < 150",
    ):
        df = _run(data, q, applied=True)
        assert df["n"].tolist() == [0 if "< 0" in q else data[3]["x"][:150].nunique()]


@pytest.mark.parametrize(
    "q",
    [
        # a string: its collation decides what is distinct (see test_collation_left_alone)
        "SELECT g, count(DISTINCT s) AS n FROM o GROUP BY g ORDER BY g",
        # a double
        "SELECT g, count(DISTINCT f) AS n FROM o GROUP BY g ORDER BY g",
        # no alias: the column keeps DuckDB's own name
        "SELECT g, count(DISTINCT x) FROM o GROUP BY g ORDER BY g",
        # with FILTER
        "SELECT g, count(DISTINCT x) FILTER (WHERE id > 50) AS n FROM o GROUP BY g ORDER BY g",
    ],
)
def test_left_alone(data, q):
    _run(data, q, applied=False)


def test_collation_left_alone(data):
    """Under a NOCASE default collation 'p' and 'P' are one value to count(DISTINCT) (list_unique would
    count two): the string count is left to DuckDB and the answer is plain DuckDB's."""
    eager, lazy, plain, o, _l = data
    q = "SELECT g, count(DISTINCT s) AS n FROM o GROUP BY g ORDER BY g"
    for c in (eager.raw, lazy.raw, plain):
        c.execute("SET default_collation = 'nocase'")
    try:
        df = _run(data, q, applied=False)
        assert (
            dict(zip(df["g"], df["n"]))
            == o.assign(s=o["s"].str.lower()).groupby("g")["s"].nunique().to_dict()
        )
    finally:
        for c in (eager.raw, lazy.raw, plain):
            c.execute("RESET default_collation")
