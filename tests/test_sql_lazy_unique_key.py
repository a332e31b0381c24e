"""Lazy results named by an output column's unique value instead of the row id (``sql.lazy_unique``).

Oracle: brute force with pandas from the tables' current contents (row ``r`` of the result came from
``a``'s row with position column ``i`` and every ``u`` row whose ``k`` equals that row's ``k``), the
eager connection's lineage for the same statements, and plain pandas for the frame's values. Each test
asserts which path ran (a run by value, a fallback, or no speculation at all).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from _sql_oracle import lineage_sets

import traceprop_frames as tpf
from traceprop_frames.errors import SourceChangedError

CTAS = "CREATE OR REPLACE TABLE ua AS SELECT k, sum(w) AS sw, count(*) AS n FROM u GROUP BY k"
Q = "SELECT a.*, ua.sw FROM a LEFT JOIN ua USING (k) WHERE a.x > -0.5"
_N = iter(range(10**6))


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(3)
    n = 40
    a = pd.DataFrame(
        {
            "id": 1000 + rng.permutation(n) * 7,  # unique, not in order, not dense
            "g": rng.integers(0, 5, n),  # duplicates
            "k": rng.integers(0, 12, n),
            "x": rng.normal(size=n),
            "i": np.arange(n),
        }
    )
    a.loc[[0, 1, 2, 10], "x"] = 0.0  # rows 0-2 and 10 pass the filter
    a.loc[[3, 4], "x"] = -3.0  # rows 3, 4 do not
    u = pd.DataFrame({"k": rng.integers(0, 9, 60), "w": rng.integers(0, 100, 60)})
    a.to_csv(tmp_path / "a.csv", index=False)
    u.to_parquet(tmp_path / "u.parquet")
    return u, tmp_path


def _connect(tmp, capture: str = "lazy", database: str | None = None):
    con = tpf.connect(database or f":memory:lazy_unique_{next(_N)}", capture=capture)
    con.read_csv(tmp / "a.csv", name="a")
    con.read_parquet(tmp / "u.parquet", name="u")
    return con


def _id_of(con, i: int) -> int:
    return int(con.raw.execute(f"SELECT id FROM a WHERE i = {i}").fetchone()[0])


def _spy(con) -> list:
    """Records each run by value: True (taken), False (the check failed: run again with the row id)."""
    runs: list = []
    inner = con._capture_by_value

    def spy(*args):
        got = inner(*args)
        runs.append(got is not None)
        return got

    con._capture_by_value = spy
    return runs


def _by_value(tmp, q: str = Q):
    """A connection whose second run of ``q`` was captured by value: (connection, runs spied, that frame)."""
    con = _connect(tmp)
    runs = _spy(con)
    con.execute(CTAS)
    con.sql(q)
    df = con.sql(q)
    assert runs == [True]
    return con, runs, df


def _oracle(con, u, df) -> list[set]:
    """Per result row: its ``a`` row (by ``i``) and the ``u`` rows of its ``k`` (brute force)."""
    return [
        {("a", int(i))} | {("u", int(j)) for j in np.flatnonzero(u["k"].to_numpy() == k)}
        for i, k in zip(df["i"], df["k"])
    ]


def _union(df, rows) -> set:
    """The sources of ``rows`` asked in one request."""
    return {(Path(p).stem, int(r)) for p, ids in df.tp.sources(rows=rows).items() for r in ids}


def _by_i(df) -> dict:
    return dict(zip(df["i"].tolist(), lineage_sets(df)))


def _check(con, u, df, eager=None) -> None:
    assert lineage_sets(df) == _oracle(con, u, df)
    if eager is not None:
        assert _by_i(df) == _by_i(eager.sql(Q))
    current = con.raw.sql("SELECT id, g, k, x, i FROM a").df()  # the values: plain pandas
    sw = u.groupby("k")["w"].sum()
    want = current[current["x"] > -0.5].assign(sw=lambda f: f["k"].map(sw).astype("float64"))
    got = df.reset_index(drop=True).sort_values("i").reset_index(drop=True)
    want = want.sort_values("i").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


def test_etl_loop_by_value_matches_oracle_and_eager(data):
    u, tmp = data
    con, eager = _connect(tmp), _connect(tmp, "eager")
    runs = _spy(con)
    results = []
    for r in range(4):
        con.execute(CTAS)
        eager.execute(CTAS)
        results.append(con.sql(Q))
        assert runs == [True] * r  # the first run carries the row id; the next ones the value
        _check(con, u, results[-1], eager)
    assert con._unique[Q].by_value.items[0][1] == "id"
    con.close()
    eager.close()


def test_results_by_row_id_and_by_value_alive_together(data):
    """The backward plans of the two kinds (same text, same tables) are kept apart."""
    u, tmp = data
    con = _connect(tmp)
    runs = _spy(con)
    con.execute(CTAS)
    by_rid, by_value = con.sql(Q), con.sql(Q)
    assert runs == [True]
    for df in (by_value, by_rid, by_value):
        want = _oracle(con, u, df)
        assert lineage_sets(df.iloc[[3]]) == [want[3]]
        assert lineage_sets(df.iloc[[3, 0]]) == [want[3], want[0]]


def test_several_rows_and_one_row_of_a_by_value_result(data):
    u, tmp = data
    con, runs, df = _by_value(tmp)
    want = _oracle(con, u, df)
    assert [lineage_sets(df.iloc[[j]])[0] for j in (0, len(df) - 1)] == [want[0], want[-1]]
    assert lineage_sets(df.iloc[list(range(0, len(df), 3))]) == want[::3]
    assert _union(df, [0, 2, 4]) == want[0] | want[2] | want[4]
    assert _union(df, list(range(len(df)))) == set().union(*want)


def test_duplicates_from_the_first_run_never_speculate(data):
    u, tmp = data
    con = _connect(tmp)
    runs = _spy(con)
    q = "SELECT a.g, a.i, a.k FROM a"  # g repeats; i is unique: chosen
    q2 = "SELECT a.g, a.k, a.i FROM a WHERE a.i < 0"  # (empty: nothing to check, any column is unique)
    q3 = "SELECT a.g, a.k FROM a"  # nothing unique
    for _ in range(3):
        df, df3 = con.sql(q), con.sql(q3)
        con.sql(q2)
        assert lineage_sets(df) == [{("a", int(i))} for i in df["i"]]
        assert lineage_sets(df3) == [{("a", r)} for r in range(len(df3))]  # a plain scan keeps the order
    assert con._unique[q].by_value.items[0][1] == "i"
    assert not con._unique[q3].on
    assert runs == [True, True, True, True]  # q and q2 twice each, q3 never


@pytest.mark.parametrize("how", ["execute", "raw", "cursor", "connection"])
def test_duplicates_appearing_between_runs_rerun_with_the_row_id(data, how):
    u, tmp = data
    con = _connect(tmp)
    runs = _spy(con)
    con.execute(CTAS)
    con.sql(Q)
    _check(con, u, con.sql(Q))
    assert runs == [True]
    dup = f"UPDATE a SET id = {_id_of(con, 0)} WHERE i = 1"
    if how == "execute":
        con.execute(dup)
    elif how == "raw":
        con.raw.execute(dup)
    elif how == "cursor":
        con.raw.cursor().execute(dup)
    else:
        other = duckdb.connect(con.database)
        other.execute(dup)
        other.close()
    df = con.sql(Q)
    assert runs == [True, False]  # the check failed: run again with the row id
    assert (df["id"] == df.loc[df["i"] == 0, "id"].iloc[0]).sum() == 2
    _check(con, u, df)
    con.sql(Q)
    assert runs == [True, False]  # not tried again for this text


def test_nulls_in_the_column(data):
    u, tmp = data
    con = _connect(tmp)
    runs = _spy(con)
    con.execute(CTAS)
    con.sql(Q)
    con.sql(Q)
    assert runs == [True]
    con.raw.execute("UPDATE a SET id = NULL WHERE i = 2")  # NULL appears: not a name
    df = con.sql(Q)
    assert runs == [True, False]
    assert df["id"].isna().sum() == 1
    _check(con, u, df)
    # NULL from the first run: the column is not taken (i is)
    con2 = _connect(tmp)
    con2.raw.execute("UPDATE a SET id = NULL WHERE i = 2")
    con2.execute(CTAS)
    con2.sql(Q)
    assert con2._unique[Q].by_value.items[0][1] == "i"
    _check(con2, u, con2.sql(Q))


def test_a_filter_that_removes_the_duplicate(data):
    """Row 3 (dropped by the WHERE, read first by a scan) gets row 10's id: the table repeats it, the
    result does not. The pinned query (no WHERE) finds both: the general query answers."""
    u, tmp = data
    con = _connect(tmp)
    con.raw.execute(f"UPDATE a SET id = {_id_of(con, 10)} WHERE i = 3")
    runs = _spy(con)
    con.execute(CTAS)
    con.sql(Q)
    df = con.sql(Q)
    assert runs == [True] and con._unique[Q].by_value.items[0][1] == "id"
    _check(con, u, df)
    want = _oracle(con, u, df)
    row = int(np.flatnonzero(df["i"].to_numpy() == 10)[0])
    other = (row + 1) % len(df)
    assert lineage_sets(df.iloc[[row]]) == [want[row]]  # row 10's, not row 3's
    assert _union(df, [other, row]) == want[other] | want[row]  # (one request for both rows)


@pytest.mark.parametrize(
    "q",
    [
        "SELECT a.id, a.x FROM a LIMIT 10",
        "SELECT a.id, a.x FROM a ORDER BY a.id LIMIT 10 OFFSET 2",
        "SELECT a.id, random() AS r FROM a",
        "SELECT a.id FROM a WHERE random() < 2",
        "SELECT a.id, now() AS t FROM a",
        "SELECT a.id FROM a USING SAMPLE 50%",
        "SELECT a.id FROM a WHERE a.k IN (SELECT k FROM u LIMIT 3)",
        "SELECT a.* EXCLUDE (x) FROM a",
        "SELECT * FROM a",
    ],
)
def test_statements_that_never_speculate(data, q):
    _, tmp = data
    con = _connect(tmp)
    runs = _spy(con)
    for _ in range(3):
        df = con.sql(q)
        if "SAMPLE" not in q:  # (a sample's rows are not found again: SourceChangedError, as before)
            assert len(lineage_sets(df)) == len(df)
    assert q not in con._unique
    assert runs == []


def test_persisted_results(data):
    u, tmp = data
    con, runs, df = _by_value(tmp)
    want = _oracle(con, u, df)
    df.tp.to_parquet(tmp / "out.parquet")
    assert lineage_sets(tpf.read_traced(tmp / "out.parquet")) == want
    assert lineage_sets(pickle.loads(pickle.dumps(con.sql(Q)))) == _oracle(con, u, con.sql(Q))
    con.execute(f"CREATE TABLE keep AS {Q}")
    kept = con.sql("SELECT * FROM keep")
    assert lineage_sets(kept) == _oracle(con, u, kept)
    assert runs == [True, True, True]


def test_source_changed_before_asking_raises(data):
    _, tmp = data
    con = _connect(tmp)
    con.execute(CTAS)
    con.sql(Q)
    df = con.sql(Q)
    con.execute("UPDATE a SET x = x + 1 WHERE i = 5")
    with pytest.raises(SourceChangedError):
        df.tp.sources(rows=[0])


def test_a_duplicate_made_unseen_raises_not_a_wrong_row(data):
    """A change through ``con.raw`` that keeps the table (not seen by the fingerprint): two rows now hold
    the value of the row asked; the backward query finds both and raises."""
    _, tmp = data
    con, runs, df = _by_value(tmp)
    row = int(np.flatnonzero(df["i"].to_numpy() == 0)[0])
    con.raw.execute(f"UPDATE a SET id = {_id_of(con, 0)} WHERE i = 1")
    with pytest.raises(SourceChangedError, match="several rows"):
        df.tp.sources(rows=[row])


def test_a_stale_catalog_is_not_followed(data):
    """A column dropped through ``con.raw`` after the catalog was read: ``a.*`` is laid out otherwise than
    the catalog says, so no column is taken by the name it would have (``x`` would be ``i``'s values)."""
    _, tmp = data
    con = _connect(tmp)
    con.sql("SELECT a.g FROM a")
    con.raw.execute("ALTER TABLE a DROP COLUMN id")
    q = "SELECT a.* FROM a"
    for _ in range(3):
        df = con.sql(q)
        assert df.columns.tolist() == ["g", "k", "x", "i"]
        assert lineage_sets(df) == [{("a", int(i))} for i in df["i"]]
    assert not con._unique[q].on


def test_a_view_is_not_named_by_value(data):
    _, tmp = data
    con = _connect(tmp)
    con.execute("CREATE VIEW va AS SELECT * FROM a LIMIT 30")
    q = "SELECT va.id, va.i FROM va"
    for _ in range(3):
        df = con.sql(q)
        assert lineage_sets(df) == [{("a", int(i))} for i in df["i"]]
    assert q not in con._unique


def test_plans_kept_no_longer_than_their_captures(data):
    _, tmp = data
    con = _connect(tmp)
    for n in range(260):
        con.sql(f"SELECT a.id, a.i + {n} AS z FROM a")
    assert len(con._unique) == len(con._captures) <= 256
    assert set(con._unique) <= set(con._captures)


def test_writes_into_a_by_value_frame_leave_its_lineage(data):
    """The frame is the user's: cells of its key column changed in place (ids swapped between rows, one
    set to another row's id, one to an id no row has) change neither its lineage nor the next run's. (A
    query whose columns all convert as plain DuckDB's ``.df()``: the key is read from the frame itself.)"""
    u, tmp = data
    q = "SELECT a.*, ua.n FROM a LEFT JOIN ua USING (k) WHERE a.x > -0.5"  # (count(*): BIGINT, not HUGEINT)
    con, runs, df = _by_value(tmp, q)
    before = df.copy()
    want = _oracle(con, u, df)
    pos = list(df.columns).index("id")
    first, second = df.iloc[0, pos], df.iloc[1, pos]
    df.iloc[0, pos], df.iloc[1, pos] = second, first
    df.iloc[2, pos] = second
    df.iloc[3, pos] = -5  # no row has it
    assert (df["id"] == second).sum() == 2  # (the writes happened)
    assert lineage_sets(df.iloc[[0]]) == [want[0]] and lineage_sets(df.iloc[[3]]) == [want[3]]
    assert lineage_sets(df.iloc[[1, 2]]) == [want[1], want[2]]
    assert lineage_sets(df) == want
    again = con.sql(q)
    assert runs == [True, True]
    assert lineage_sets(again) == _oracle(con, u, again)
    pd.testing.assert_frame_equal(
        again.sort_values("i").reset_index(drop=True), before.sort_values("i").reset_index(drop=True)
    )


def _distinct_cases():
    rng = np.random.default_rng(11)
    cases = [np.array([], dtype=np.int64), np.array([5]), np.array([5, 5]), np.array([2, 1])]
    for n in (2, 3, 17, 1000, 20000):
        base = rng.permutation(n).astype(np.int64) + 100_001
        cases += [base, np.sort(base), np.sort(base)[::-1].copy(), base * 7 - 3_000_000]  # dense, sparse
        dup = base.copy()
        dup[rng.integers(0, n)] = dup[rng.integers(0, n)]  # (may pick the same place: then distinct)
        cases += [dup, np.sort(dup), dup * 1000]
        cases += [rng.integers(-n, n, n), rng.integers(0, 2**62, n)]
    top = np.iinfo(np.int64).max
    cases += [np.array([top, top - 1, top - 5]), np.array([top, -top, 0]), np.array([top, top - 1, top])]
    cases += [np.array([3, 1, 2, 1], dtype=np.int8), np.array([2**64 - 1, 0, 2**63], dtype=np.uint64)]
    cases += [np.array([2**64 - 1, 2**64 - 3, 2**64 - 1], dtype=np.uint64)]
    return cases


def test_the_distinct_check_against_a_set():
    """``lazy_unique.distinct`` (increasing / marks over a dense range / sort) equals a Python set's answer."""
    from traceprop_frames.sql.lazy_unique import checked_keys, distinct

    cases = _distinct_cases()
    answers = [distinct(v) for v in cases]
    assert answers == [len(set(v.tolist())) == len(v) for v in cases]
    assert True in answers and False in answers
    for v in cases:  # the later runs' check: no NULLs, integers, distinct; the keys themselves kept
        keys = pa.table([pa.array(v)], names=["k"])
        got = checked_keys(keys)
        assert (got is keys) if len(set(v.tolist())) == len(v) else got is None
    assert checked_keys(pa.table([pa.array([1, None, 2])], names=["k"])) is None
    assert checked_keys(pa.table([pa.array(["a", "b"])], names=["k"])) is None
