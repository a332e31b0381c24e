"""A kept lazy query runs its capture statement directly (one bind) where nothing ran since it last bound
(:mod:`traceprop_frames.sql.bound_capture`).

Oracles: plain DuckDB's ``.df()`` of the query (values, dtypes, names), eager capture's lineage (itself
checked against brute force in test_sql_tpch / test_sql_property) and brute force in pandas on small
tables with repeated keys, NaN beside NULL, and tables changed between runs.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _sql_oracle import join_brute_force, tpch_connections

import traceprop_frames as tpf
from traceprop_frames.sql.lazy import LazyRowLineage

TPCH = Path(__file__).resolve().parents[2] / "shared" / "tpch"
# fast-path shapes (every key and data type converted exactly by .df()): their second run binds once
DIRECT = {1, 2, 4, 5, 6, 7, 8, 9, 11, 13, 14, 15, 16, 17, 19, 20, 21, 22}


def _value(v):
    if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA or v is pd.NaT:
        return None
    return round(v, 6) if isinstance(v, float) else str(v)


def _rows(df: pd.DataFrame) -> Counter:
    lin = df.tp.lineage()
    values = [tuple(_value(v) for v in r) for r in df.itertuples(index=False, name=None)]
    return Counter((v, tuple(lin.row_ids(i).tolist())) for i, v in enumerate(values))


def _spy(monkeypatch, con) -> list:
    """Records, per lazy run, whether its capture statement ran directly (kept types) or bound first."""
    seen: list = []
    real = con._bound.types

    def types(text, sql):
        out = real(text, sql)
        seen.append(out is not None)
        return out

    monkeypatch.setattr(con._bound, "types", types)
    return seen


def _plain_equal(got: pd.DataFrame, con, query: str) -> None:
    want = con._raw.sql(query).df()
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want, check_exact=True)


@pytest.fixture(scope="module")
def tpch():
    yield from tpch_connections(TPCH)


@pytest.mark.parametrize("n", range(1, 23))
def test_tpch_kept_run_equals_plain_and_eager(tpch, monkeypatch, n):
    eager, lazy = tpch
    query = (TPCH / f"q{n:02d}.sql").read_text()
    seen = _spy(monkeypatch, lazy)
    first, second = lazy.sql(query), lazy.sql(query)
    assert seen == [False, n in DIRECT]
    assert isinstance(second.tp.lineage(), LazyRowLineage)
    for got in (first, second):
        _plain_equal(got, lazy, query)
    want = _rows(eager.sql(query))
    assert _rows(second) == want
    assert _rows(first) == want


@pytest.fixture()
def small(tmp_path):
    rng = np.random.default_rng(11)
    t = pd.DataFrame({"k": rng.integers(0, 5, 40), "v": rng.normal(size=40).round(3)})
    u = pd.DataFrame({"k": rng.integers(0, 6, 25), "w": rng.integers(0, 100, 25)})
    t.to_csv(tmp_path / "t.csv", index=False)
    u.to_csv(tmp_path / "u.csv", index=False)
    con = tpf.connect(capture="lazy")
    con.read_csv(tmp_path / "t.csv", name="t")
    con.read_csv(tmp_path / "u.csv", name="u")
    yield con, t, u, tmp_path
    con.close()


def _join_brute_force(got, t, u, tmp) -> None:
    join_brute_force(got, t, u, tmp / "t.csv", tmp / "u.csv")


JOIN = "SELECT t.v, u.w FROM t JOIN u ON t.k = u.k WHERE u.w > 30 ORDER BY u.w LIMIT 1000"


def test_direct_run_brute_force_repeated_keys(small, monkeypatch):
    con, t, u, tmp = small
    seen = _spy(monkeypatch, con)
    results = [con.sql(JOIN) for _ in range(3)]
    assert seen == [False, True, True]
    for got in results:
        _plain_equal(got, con, JOIN)
        _join_brute_force(got, t, u, tmp)


@pytest.mark.parametrize(
    "change",
    [
        "UPDATE u SET w = w + 1 WHERE k = 1",  # DML through the traced connection
        "raw:CREATE TABLE other AS SELECT 1 AS x",  # DDL through a cursor: nothing this query reads
        "raw:DELETE FROM u WHERE w < 50",
    ],
)
def test_statement_between_runs_binds_again(small, monkeypatch, change):
    con, t, u, tmp = small
    seen = _spy(monkeypatch, con)
    con.sql(JOIN), con.sql(JOIN)
    if change.startswith("raw:"):
        cur = con._con.cursor()  # another connection to the same database: the library sees nothing
        cur.execute(change[4:])
        cur.close()
    else:
        con.execute(change)
    got = con.sql(JOIN)
    assert seen == [False, True, False]  # the catalog count moved: through a relation again
    assert con.sql(JOIN) is not None and seen[-1]  # and bound there: direct again
    _plain_equal(got, con, JOIN)
    if "other" in change:  # u and t as loaded: the sources by brute force too
        _join_brute_force(got, t, u, tmp)


def test_type_changed_through_a_cursor(small, monkeypatch):
    """``k`` becomes VARCHAR behind the library's back: the next run binds anew (the count moved) and
    gives plain DuckDB's frame, its ``str`` keys included."""
    con, *_ = small
    query = "SELECT k, count(*) AS n FROM t GROUP BY k ORDER BY k"
    seen = _spy(monkeypatch, con)
    con.sql(query), con.sql(query)
    cur = con._con.cursor()
    cur.execute("CREATE OR REPLACE TABLE t AS SELECT CAST(k AS VARCHAR) AS k, v, __tp_rid FROM t")
    cur.close()
    got = con.sql(query)
    assert seen[:3] == [False, True, False]
    _plain_equal(got, con, query)


def test_direct_run_checks_its_types(small, monkeypatch, tmp_path):
    """A DuckDB whose count missed a change (simulated: the counter frozen): the direct run's own column
    types differ from the kept ones, so it is drained and the statement binds through a relation. The
    new key column is DOUBLE with a NaN group beside a NULL group: read through pandas (the kept INTEGER
    types' path) the two groups' keys would be the same NULL and the NaN group would get the NULL
    group's rows; through Arrow each group gets its own (brute force)."""
    con, *_ = small
    frozen = con._bound.count()
    monkeypatch.setattr(con._bound, "_count", lambda: frozen)
    query = "SELECT k, count(*) AS n FROM t GROUP BY k ORDER BY k NULLS LAST"
    seen = _spy(monkeypatch, con)
    con.sql(query), con.sql(query)
    assert seen == [False, True]
    cur = con._con.cursor()
    cur.execute(
        "CREATE OR REPLACE TABLE t AS SELECT CASE WHEN k = 0 THEN 'nan'::DOUBLE WHEN k = 1 THEN NULL "
        "ELSE k::DOUBLE END AS k, v, __tp_rid FROM t"
    )
    ks = cur.execute("SELECT k FROM t ORDER BY __tp_rid").df()["k"]
    codes = [
        None if pd.isna(c) else c
        for c in cur.execute("SELECT k::VARCHAR AS c FROM t ORDER BY __tp_rid").df()["c"]
    ]
    cur.close()
    got = con.sql(query)
    assert seen[2] is True  # the frozen count let the direct run go ahead ...
    _plain_equal(got, con, query)  # ... and its types were checked: the frame as plain DuckDB's
    assert ks.isna().sum() > 0
    for i in range(len(got)):
        row = got.tp.sources(rows=[i])
        (rows,) = row.values()
        want = [j for j, c in enumerate(codes) if c == _code(got["k"].iloc[i], got, i)]
        assert rows.tolist() == want


def _code(value, got, i) -> str | None:
    """The VARCHAR DuckDB gives the result row's key: NaN and NULL told apart by the result's order
    (NULLS LAST puts the NULL group last; DuckDB orders NaN above every other number)."""
    if i == len(got) - 1:
        return None
    return "nan" if np.isnan(value) else str(float(value))


class _InterruptedResult:
    """The real connection's ``execute`` ran (its result unfinished); reading it is interrupted."""

    def __init__(self, real):
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)

    def df(self):
        raise KeyboardInterrupt


class _Interrupting:
    def __init__(self, real):
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)

    def execute(self, *args, **kwargs):
        return _InterruptedResult(self._real.execute(*args, **kwargs))


def test_interrupted_direct_run_leaves_the_connection_usable(small, monkeypatch):
    """Ctrl-C while the direct run's frame is read: DuckDB refuses every later statement on a connection
    with an unfinished ``execute`` result, so the run aborts it; the next query answers as plain DuckDB."""
    con, t, u, tmp = small
    seen = _spy(monkeypatch, con)
    con.sql(JOIN)
    real = con._con
    monkeypatch.setattr(con, "_con", _Interrupting(real))
    with pytest.raises(KeyboardInterrupt):
        con.sql(JOIN)
    assert seen == [False, True]  # the direct path was the one interrupted
    monkeypatch.setattr(con, "_con", real)
    assert con.raw.sql("SELECT 42 AS x").fetchall() == [(42,)]  # plain DuckDB work goes on
    got = con.sql(JOIN)
    _plain_equal(got, con, JOIN)
    _join_brute_force(got, t, u, tmp)


@pytest.fixture
def numbered(tmp_path):
    """``t`` of 5000 rows where ``v`` is the row number (so row ``i``'s source is ``t`` row ``v``)."""
    n = 5000
    pd.DataFrame({"k": np.arange(n) % 7, "v": np.arange(n, dtype=float)}).to_csv(
        tmp_path / "t.csv", index=False
    )
    con = tpf.connect(capture="lazy")
    con.read_csv(tmp_path / "t.csv", name="t")
    yield con, tmp_path / "t.csv"
    con.close()


def test_a_result_past_one_vector_keeps_the_relation_path(numbered, monkeypatch):
    """``execute`` streams its result and ``.df()`` then converts it chunk by chunk (slower than a
    relation's once there are many chunks): a result of more than 2048 rows binds through a relation on
    every run; a small one runs directly from its second run. Sources checked against the row numbers."""
    con, path = numbered
    seen = _spy(monkeypatch, con)
    big, small = "SELECT k, v FROM t WHERE v >= 100", "SELECT k, v FROM t WHERE v < 100"
    runs = [con.sql(big) for _ in range(3)]
    assert seen == [False, False, False] and all(len(got) == 4900 for got in runs)
    runs += [con.sql(small) for _ in range(2)]
    assert seen[3:] == [False, True]
    for got in runs:
        _plain_equal(got, con, big if len(got) == 4900 else small)
        for i in (0, len(got) // 2, len(got) - 1):
            assert got.tp.sources(rows=[i])[str(path)].tolist() == [int(got["v"].iloc[i])]


def test_a_direct_run_that_grew_past_one_vector_goes_back_to_the_relation_path(numbered, monkeypatch):
    """With the catalog count frozen (a DuckDB whose count missed the INSERT), a direct run that returns
    more than 2048 rows sends the next run through a relation."""
    con, _ = numbered
    frozen = con._bound.count()
    monkeypatch.setattr(con._bound, "_count", lambda: frozen)
    seen = _spy(monkeypatch, con)
    query = "SELECT k, v FROM t WHERE v < 100 OR v >= 10000"
    assert [len(con.sql(query)) for _ in range(2)] == [100, 100]
    cur = con._con.cursor()
    cur.execute("INSERT INTO t SELECT i % 7, i::DOUBLE, i FROM range(10000, 13000) r(i)")
    cur.close()
    assert len(con.sql(query)) == 3100  # direct (the frozen count), and past one vector ...
    con.sql(query)
    assert seen == [False, True, True, False]  # ... so the next run binds through a relation
