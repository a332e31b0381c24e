"""An ``EXISTS`` over a query that aggregates without GROUP BY (``sql.one_row_exists``).

``EXISTS (SELECT count(*) FROM l WHERE l.ok = o.ok)`` returns one row whether or not any ``l`` row
matches: it holds for every outer row (``NOT EXISTS`` for none), so the rows of ``l`` decide nothing and
a result row's lineage is its ``o`` rows alone. Oracle: pandas brute force over the source frames (which
``o`` rows pass the other conditions, per row and per group), checked as sets of (source, row); answers
equal plain DuckDB's on the same data, in eager and lazy capture. Shapes that can drop the one row
(LIMIT 0, OFFSET, QUALIFY, a window) stay refused; HAVING is a plain EXISTS (its rows are witnesses).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _sql_oracle import eager_lazy_plain, lineage_sets, rows_of

from traceprop_frames.errors import UnsupportedSQLError


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(7)
    ok = rng.integers(0, 14, 50).astype(float)
    ok[::9] = np.nan  # NULL outer keys: no l row matches them
    o = pd.DataFrame(
        {
            "i": np.arange(50),
            "ok": pd.array(ok, dtype="Int64"),
            "g": rng.choice(["a", "b", "c", None], 50),
            "x": rng.integers(0, 100, 50),
        }
    )
    lk = rng.integers(0, 11, 120).astype(float)  # keys 11..13: outer rows without a match
    lk[::13] = np.nan
    l_ = pd.DataFrame(
        {"ok": pd.array(lk, dtype="Int64"), "f": rng.random(120) < 0.5, "q": rng.integers(0, 10, 120)}
    )
    eager, lazy, plain = eager_lazy_plain(tmp_path_factory.mktemp("exists_one_row"), {"o": o, "l": l_})
    yield eager, lazy, plain, o, l_
    for c in (eager, lazy, plain):
        c.close()


def _answer(eager, lazy, plain, q):
    """The traced answer of ``q`` (equal to plain DuckDB's) and its lineage (equal in both modes)."""
    df = eager.sql(q)
    pd.testing.assert_frame_equal(df.reset_index(drop=True), plain.sql(q).df())
    got = lineage_sets(df)
    lz = lazy.sql(q)
    pd.testing.assert_frame_equal(lz.reset_index(drop=True), plain.sql(q).df())
    assert lineage_sets(lz) == got
    return df.reset_index(drop=True), got


def _matches(o, l_, i, only_f: bool = False) -> np.ndarray:
    """Rows of ``l`` whose ok equals o's row i (NULL matches nothing), with ``l.f`` where ``only_f``."""
    k = o["ok"][i]
    if pd.isna(k):
        return np.zeros(0, dtype=np.int64)
    hit = (l_["ok"] == k).fillna(False).to_numpy() & (l_["f"].to_numpy() | (not only_f))
    return np.flatnonzero(hit)


ALWAYS = [
    "EXISTS (SELECT count(*) FROM l WHERE l.ok = o.ok AND l.f)",
    "EXISTS (SELECT max(l.q) FROM l WHERE l.ok = o.ok LIMIT 1)",
    "EXISTS (SELECT sum(q) + 1 FROM l)",  # uncorrelated
    "EXISTS (SELECT count(*))",  # no FROM
    "EXISTS (SELECT histogram(q) FROM l WHERE l.ok = o.ok)",  # an aggregate sqlglot does not know
    "NOT (NOT EXISTS (SELECT count(*) FROM l WHERE l.ok = o.ok))",
]


@pytest.mark.parametrize("cond", ALWAYS)
def test_always_true_per_row(data, cond):
    """Every outer row passing ``x > 30`` comes back; its lineage is that one ``o`` row."""
    eager, lazy, plain, o, l_ = data
    df, got = _answer(eager, lazy, plain, f"SELECT i, x FROM o WHERE x > 30 AND {cond} ORDER BY i")
    want = o.index[o["x"] > 30]
    assert df["i"].tolist() == o["i"][want].tolist()
    assert got == [rows_of("o", [i]) for i in want]


@pytest.mark.parametrize("cond", ALWAYS)
def test_always_true_grouped(data, cond):
    """Per group of g (NULL its own group): every ``o`` row of the group, no ``l`` row."""
    eager, lazy, plain, o, l_ = data
    q = f"SELECT g, count(*) AS n FROM o WHERE {cond} GROUP BY g ORDER BY g NULLS LAST"
    df, got = _answer(eager, lazy, plain, q)
    for r, g in enumerate(df["g"]):
        members = o.index[o["g"].isna()] if pd.isna(g) else o.index[o["g"] == g]
        assert df["n"][r] == len(members)
        assert got[r] == rows_of("o", members)


def test_in_the_select_list(data):
    eager, lazy, plain, o, l_ = data
    q = "SELECT i, EXISTS (SELECT count(*) FROM l WHERE l.ok = o.ok) AS e FROM o ORDER BY i"
    df, got = _answer(eager, lazy, plain, q)
    assert df["e"].all() and got == [rows_of("o", [i]) for i in range(len(o))]


@pytest.mark.parametrize("grouped", [True, False])
def test_not_exists_is_always_false(data, grouped):
    eager, lazy, plain, o, l_ = data
    cond = "x > 60 OR NOT EXISTS (SELECT count(*) FROM l WHERE l.ok = o.ok)"
    if grouped:
        q = f"SELECT g, count(*) AS n FROM o WHERE {cond} GROUP BY g ORDER BY g NULLS LAST"
        df, got = _answer(eager, lazy, plain, q)
        for r, g in enumerate(df["g"]):
            members = o.index[(o["g"].isna() if pd.isna(g) else o["g"] == g) & (o["x"] > 60)]
            assert got[r] == rows_of("o", members)
    else:
        df, got = _answer(eager, lazy, plain, f"SELECT i FROM o WHERE {cond} ORDER BY i")
        assert got == [rows_of("o", [i]) for i in o.index[o["x"] > 60]]


@pytest.mark.parametrize("grouped", [True, False])
def test_beside_a_plain_exists_over_the_same_rows(data, grouped):
    """Control: the plain EXISTS still names its witnesses (and still filters); the always-true one
    over the same FROM / WHERE adds none and is not merged with it."""
    eager, lazy, plain, o, l_ = data
    cond = (
        "EXISTS (SELECT count(*) FROM l WHERE l.ok = o.ok) AND "
        "(x > 80 OR EXISTS (SELECT * FROM l WHERE l.ok = o.ok AND l.f))"
    )
    keep = [i for i in o.index if o["x"][i] > 80 or len(_matches(o, l_, i, only_f=True))]
    if grouped:
        q = f"SELECT g, count(*) AS n FROM o WHERE {cond} GROUP BY g ORDER BY g NULLS LAST"
        df, got = _answer(eager, lazy, plain, q)
        for r, g in enumerate(df["g"]):
            members = [i for i in keep if (pd.isna(o["g"][i]) if pd.isna(g) else o["g"][i] == g)]
            want = rows_of("o", members)
            for i in members:
                want |= rows_of("l", _matches(o, l_, i, only_f=True))
            assert got[r] == want
    else:
        df, got = _answer(eager, lazy, plain, f"SELECT i FROM o WHERE {cond} ORDER BY i")
        assert df["i"].tolist() == keep
        assert got == [rows_of("o", [i]) | rows_of("l", _matches(o, l_, i, only_f=True)) for i in keep]


def test_having_is_a_plain_exists(data):
    """HAVING can drop the one row: the EXISTS filters, and its rows are the witnesses."""
    eager, lazy, plain, o, l_ = data
    q = "SELECT i FROM o WHERE EXISTS (SELECT count(*) FROM l WHERE l.ok = o.ok HAVING count(*) > 9) ORDER BY i"
    df, got = _answer(eager, lazy, plain, q)
    keep = [i for i in o.index if len(_matches(o, l_, i)) > 9]
    assert keep and len(keep) < len(o) and df["i"].tolist() == keep
    assert got == [rows_of("o", [i]) | rows_of("l", _matches(o, l_, i)) for i in keep]


@pytest.mark.parametrize(
    "body",
    [
        "count(*) FROM l WHERE l.ok = o.ok LIMIT 0",
        "count(*) FROM l WHERE l.ok = o.ok OFFSET 1",
        "count(*) FROM l WHERE l.ok = o.ok LIMIT 1 OFFSET 0",
        "count(*), row_number() OVER () AS r FROM l WHERE l.ok = o.ok",
        "count(*) FROM l WHERE l.ok = o.ok QUALIFY count(*) > 3",
    ],
)
def test_shapes_that_can_drop_the_row_stay_refused(data, body):
    eager, lazy, plain, o, l_ = data
    q = f"SELECT i FROM o WHERE EXISTS (SELECT {body}) ORDER BY i"
    for c in (eager, lazy):
        with pytest.raises(UnsupportedSQLError, match="aggregates without GROUP BY.*write TRUE"):
            c.sql(q)
    w = "SELECT i FROM o WHERE EXISTS (SELECT count(*) OVER () FROM l WHERE l.ok = o.ok) ORDER BY i"
    df, got = _answer(eager, lazy, plain, w)  # a window alone does not aggregate: a plain EXISTS
    keep = [i for i in o.index if len(_matches(o, l_, i))]
    assert df["i"].tolist() == keep


def test_an_aggregate_macro(tmp_path):
    """An aggregate macro is an aggregate (the connection knows its macros): always true, as ``sum``."""
    o = pd.DataFrame({"i": np.arange(6), "ok": pd.array([1, 2, 3, None, 5, 6], dtype="Int64")})
    l_ = pd.DataFrame({"ok": pd.array([1, 1, 3], dtype="Int64"), "q": [1, 2, 3]})
    eager, lazy, plain = eager_lazy_plain(tmp_path, {"o": o, "l": l_})
    for c in (eager, lazy):
        c.sql("CREATE MACRO mysum(x) AS sum(x)")
    plain.execute("CREATE MACRO mysum(x) AS sum(x)")
    q = "SELECT i FROM o WHERE EXISTS (SELECT mysum(q) FROM l WHERE l.ok = o.ok) ORDER BY i"
    df, got = _answer(eager, lazy, plain, q)
    assert df["i"].tolist() == list(range(6)) and got == [rows_of("o", [i]) for i in range(6)]
    for c in (eager, lazy, plain):
        c.close()
