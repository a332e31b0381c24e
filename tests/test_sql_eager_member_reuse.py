"""Eager grouping CTAS members kept between runs while their source is unchanged (``sql.member_reuse``).

A credit-shaped ETL (two grouping CTAS over loaded tables ``u`` and ``v``, then ``a`` joined to both) runs
several times; between runs (and between its two CTAS, and *during* one) ``u`` or ``v`` is changed through
every route: the traced connection's ``UPDATE`` / ``DELETE``, ``con.raw`` (``UPDATE``, ``INSERT``,
``DELETE``, ``CREATE OR REPLACE``), a cursor, a second connection to a shared in-memory database, a second
connection to a database file. Oracle: pandas copies of ``u`` / ``v`` (with each row's file row number)
to which the test applies the same changes; a training row of applicant ``k`` has its ``a`` row, the
``u`` rows with key ``k`` and the ``v`` rows with key ``k`` as they were when the CTAS ran. Each test also
asserts whether the kept members were used, so the fast path is known to run where it may.
"""

from __future__ import annotations

import threading

import duckdb
import numpy as np
import pandas as pd
import pytest

import traceprop_frames as tpf
from traceprop_frames.sql.member_lists import MemberTable

ETL = [
    "CREATE OR REPLACE TABLE bagg AS SELECT k, count(w) AS n, sum(w) AS sw FROM u GROUP BY k",
    "CREATE OR REPLACE TABLE pagg AS SELECT k, count(x) AS m FROM v GROUP BY k",
]
TRAIN = "SELECT a.*, b.n, b.sw, p.m FROM a LEFT JOIN bagg b USING (k) LEFT JOIN pagg p USING (k)"


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(13)
    a = pd.DataFrame({"k": np.arange(40), "inc": rng.integers(1, 9, 40)})
    u = pd.DataFrame({"k": rng.integers(0, 30, 200), "w": rng.integers(0, 100, 200)})
    v = pd.DataFrame({"k": rng.integers(0, 45, 90), "x": rng.integers(0, 50, 90)})
    paths = {n: tmp_path / f"{n}.parquet" for n in "auv"}
    for n, df in zip("auv", (a, u, v)):
        df.to_parquet(paths[n])
    return paths, {"a": a, "u": u.assign(rid=np.arange(len(u))), "v": v.assign(rid=np.arange(len(v)))}


def _connect(paths, database: str = ":memory:"):
    con = tpf.connect(database, capture="eager")
    for n in "auv":
        con.read_parquet(paths[n], name=n)
    return con


def _run(con):
    for s in ETL:
        con.execute(s)
    return con.sql(TRAIN)


def _check(df, paths, state) -> None:
    """Every training row's lineage against the pandas copies (``state``: the rows at the CTAS)."""
    a, u, v = state["a"], state["u"], state["v"]
    keys = df["k"].to_numpy()
    assert sorted(keys.tolist()) == a["k"].tolist()
    for i in range(len(df)):
        k = int(keys[i])
        want = {str(paths["a"]): {int(np.flatnonzero(a["k"] == k)[0])}}
        for n, t in (("u", u), ("v", v)):
            rows = set(t.loc[t["k"] == k, "rid"].tolist())
            if rows:
                want[str(paths[n])] = rows
        got = {p: set(r.tolist()) for p, r in df.tp.sources(rows=[i]).items()}
        assert got == want, f"applicant {k}"
        n_want = (u["k"] == k).sum()
        assert (pd.isna(df["n"].iloc[i]) and n_want == 0) or df["n"].iloc[i] == n_want


def _members(con, table: str = "bagg"):
    p = con._pending.get(table)
    assert isinstance(p, MemberTable)
    return p.members


def _update(state, name: str, mask, **values) -> None:
    t = state[name].copy()
    for c, val in values.items():
        t.loc[mask(t), c] = val
    state[name] = t


def _delete(state, name: str, mask) -> None:
    t = state[name]
    state[name] = t[~mask(t)]


def _three_runs(con, paths, state):
    """Runs the ETL over unchanged sources until a run uses the members its previous run read (the
    query's first runs read row ids inside a transaction of their own, which moves DuckDB's count), then
    twice more: each uses them again."""
    reused = []
    for _ in range(6):
        prev = con._pending.get("bagg")
        df = _run(con)
        _check(df, paths, state)
        reused.append(prev is not None and _members(con) is prev.members)
    assert reused[-3:] == [True, True, True], reused
    return df


# (route, change applied in DuckDB, the same change in pandas)
ROUTES = {
    "traced update": (
        lambda con: con.execute("UPDATE u SET k = 31 WHERE w < 20"),
        lambda s: _update(s, "u", lambda t: t["w"] < 20, k=31),
    ),
    "traced delete": (
        lambda con: con.execute("DELETE FROM u WHERE w > 70"),
        lambda s: _delete(s, "u", lambda t: t["w"] > 70),
    ),
    "raw update": (
        lambda con: con.raw.execute("UPDATE u SET k = 5 WHERE k = 6"),
        lambda s: _update(s, "u", lambda t: t["k"] == 6, k=5),
    ),
    "raw insert": (
        lambda con: con.raw.execute("INSERT INTO u BY NAME SELECT 33 AS k, w, __tp_rid FROM u WHERE k = 2"),
        lambda s: s.update(u=pd.concat([s["u"], s["u"][s["u"]["k"] == 2].assign(k=33)])),
    ),
    "raw delete": (
        lambda con: con.raw.execute("DELETE FROM u WHERE k % 3 = 0"),
        lambda s: _delete(s, "u", lambda t: t["k"] % 3 == 0),
    ),
    "raw create or replace": (
        lambda con: con.raw.execute("CREATE OR REPLACE TABLE u AS SELECT * FROM u WHERE w >= 50"),
        lambda s: _delete(s, "u", lambda t: t["w"] < 50),
    ),
    "cursor": (
        lambda con: _on_cursor(con, "UPDATE u SET k = k + 1 WHERE w % 2 = 0"),
        lambda s: _update(s, "u", lambda t: t["w"] % 2 == 0, k=s["u"]["k"] + 1),
    ),
    "cursor in a thread": (
        lambda con: _in_thread(con, "DELETE FROM v WHERE x < 25"),
        lambda s: _delete(s, "v", lambda t: t["x"] < 25),
    ),
}


def _on_cursor(con, sql: str) -> None:
    cur = (con if isinstance(con, duckdb.DuckDBPyConnection) else con.raw).cursor()
    cur.execute(sql)
    cur.close()


def _in_thread(con, sql: str) -> None:
    t = threading.Thread(target=_on_cursor, args=(con, sql))
    t.start()
    t.join()


@pytest.mark.parametrize("route", list(ROUTES))
def test_a_change_between_runs_is_read_again(files, route):
    paths, state = files
    con = _connect(paths)
    _three_runs(con, paths, state)
    kept = _members(con, "pagg" if "thread" in route else "bagg")
    change, mirror = ROUTES[route]
    change(con)
    mirror(state)
    df = _run(con)
    _check(df, paths, state)
    assert _members(con, "pagg" if "thread" in route else "bagg") is not kept  # read again
    _three_runs(con, paths, state)  # and kept again from there


def test_a_change_between_our_own_statements(files):
    """``u`` changed after the first CTAS, ``v`` after the second, before the query: each read again."""
    paths, state = files
    con = _connect(paths)
    _three_runs(con, paths, state)
    kept_u, kept_v = _members(con), _members(con, "pagg")
    con.execute(ETL[0])
    assert _members(con) is kept_u
    con.raw.execute("UPDATE v SET k = 44 WHERE x > 40")  # after bagg's CTAS, before pagg's
    _update(state, "v", lambda t: t["x"] > 40, k=44)
    con.execute(ETL[1])
    assert _members(con, "pagg") is not kept_v
    _check(con.sql(TRAIN), paths, state)
    con.execute(ETL[0])
    _on_cursor(con, "DELETE FROM u WHERE k < 10")  # after bagg's CTAS: bagg keeps its rows, not pagg
    con.execute(ETL[1])
    _check(con.sql(TRAIN), paths, state)  # (bagg made before the delete: its lineage is the old rows)
    _delete(state, "u", lambda t: t["k"] < 10)
    kept_u = _members(con)
    df = _run(con)
    assert _members(con) is not kept_u
    _check(df, paths, state)
    _three_runs(con, paths, state)


class _Beside:
    """The connection's DuckDB connection, with a statement run on a cursor just before the CTAS named
    (as another thread's statement that starts while the CTAS is being sent)."""

    def __init__(self, con, target: str, sql: str) -> None:
        self._con, self._target, self._sql, self.done = con, target, sql, False

    def execute(self, sql, *args, **kw):
        if not self.done and sql.startswith(f"CREATE OR REPLACE TABLE {self._target} "):
            self.done = True
            _on_cursor(self._con, self._sql)
        return self._con.execute(sql, *args, **kw)

    def __getattr__(self, name):
        return getattr(self._con, name)


def test_a_change_during_a_statement_that_reused_members(files):
    paths, state = files
    con = _connect(paths)
    _three_runs(con, paths, state)
    kept = _members(con)
    real = con._con
    con._con = beside = _Beside(real, "bagg", "UPDATE u SET k = 2 WHERE k = 3")
    try:
        con.execute(ETL[0])
    finally:
        con._con = real
    assert beside.done
    _update(state, "u", lambda t: t["k"] == 3, k=2)
    assert _members(con) is not kept  # the count moved by two: read again, statement run again
    con.execute(ETL[1])
    _check(con.sql(TRAIN), paths, state)
    _three_runs(con, paths, state)


def test_a_second_connection_to_a_shared_memory_database(files):
    """While another connection to the database is open, no read is kept (a statement of it may have
    started before the count was read and commit after the members were); its changes are seen."""
    paths, state = files
    name = ":memory:tp_member_reuse"
    con = _connect(paths, name)
    _three_runs(con, paths, state)
    other = duckdb.connect(name)
    try:
        other.execute("UPDATE u SET k = 29 WHERE w BETWEEN 40 AND 60")
        _update(state, "u", lambda t: t["w"].between(40, 60), k=29)
        for _ in range(3):
            before = _members(con)
            _check(_run(con), paths, state)
            assert _members(con) is not before and not con._member_reads.kept
    finally:
        other.close()
    _three_runs(con, paths, state)  # alone again: kept again


def test_a_second_connection_to_a_database_file(files, tmp_path):
    paths, state = files
    db = str(tmp_path / "etl.duckdb")
    con = _connect(paths, db)
    for _ in range(2):
        _check(_run(con), paths, state)
    other = duckdb.connect(db)
    try:
        other.execute("DELETE FROM u WHERE w < 30")
        _delete(state, "u", lambda t: t["w"] < 30)
        for _ in range(2):
            _check(_run(con), paths, state)
    finally:
        other.close()
    con.close()


def test_a_reload_of_the_source(files, tmp_path):
    """``u`` loaded again from another file through the traced connection: its rows are the new file's."""
    paths, state = files
    con = _connect(paths)
    _three_runs(con, paths, state)
    new = state["u"].iloc[::2][["k", "w"]].reset_index(drop=True)
    p = tmp_path / "u2.parquet"
    new.to_parquet(p)
    con.read_parquet(p, name="u")
    paths = {**paths, "u": p}
    state["u"] = new.assign(rid=np.arange(len(new)))
    _check(_run(con), paths, state)
    _three_runs(con, paths, state)


def test_the_table_lineage_and_lazy_agree(files):
    """After kept runs, the grouped table's own rows (filled from the kept members) against the oracle,
    and eager's training lineage equal to lazy's."""
    paths, state = files
    con = _connect(paths)
    df = _three_runs(con, paths, state)
    lazy = tpf.connect(capture="lazy")
    for n in "auv":
        lazy.read_parquet(paths[n], name=n)
    for _ in range(3):
        ldf = _run(lazy)
    pd.testing.assert_frame_equal(df.reset_index(drop=True), ldf.reset_index(drop=True))
    for i in range(len(df)):
        assert sorted(df.tp.lineage().row_ids(i)) == sorted(ldf.tp.lineage().row_ids(i))
    agg = con.sql("SELECT k, n FROM bagg")  # fills bagg's lists from the kept members
    u = state["u"]
    for i, k in enumerate(agg["k"]):
        assert set(agg.tp.sources(rows=[i])[str(paths["u"])].tolist()) == set(u.loc[u["k"] == k, "rid"])
    _three_runs(con, paths, state)  # (the fill moved the count: read once, then kept again)


def test_nothing_accumulates(files):
    """One kept read per members query, at most 16; anything else run drops them at the next CTAS."""
    paths, state = files
    con = _connect(paths)
    for _ in range(30):
        _run(con)
    reads = con._member_reads
    assert len(reads.kept) == 2
    kept = _members(con)
    con.execute("CREATE TABLE other AS SELECT 1 AS one")  # anything else: the chain ends
    con.execute(ETL[0])
    assert _members(con) is not kept and list(reads.kept) == [con._member_plans[ETL[0]][1][1]]
    ctas = "CREATE OR REPLACE TABLE g{} AS SELECT k, count(*) AS c FROM u WHERE w > {} GROUP BY k"
    for i in range(20):  # 20 different members queries, each run once: none kept (no check paid)
        con.execute(ctas.format(i, i))
    assert len(reads.kept) == 1
    for i in range(20):  # a second time: kept, 16 at most
        con.execute(ctas.format(i, i))
    assert len(reads.kept) == 16
    con.execute("CREATE TABLE other2 AS SELECT 1 AS one")
    con.execute(ETL[1])
    assert len(reads.kept) == 1


def test_a_statement_that_does_not_replace_keeps_nothing(files):
    """Kept members are for ``CREATE OR REPLACE`` only (a statement that used them may have to run again,
    harmless only where it replaces): ``CREATE TABLE`` under new names reads its members every time, and
    ``create or replace table`` written in lower case keeps them."""
    paths, state = files
    con = _connect(paths)
    con.execute(ETL[1])
    made = []
    for i in range(6):
        con.execute(f"CREATE TABLE bagg{i} AS SELECT k, count(w) AS n, sum(w) AS sw FROM u GROUP BY k")
        made.append(_members(con, f"bagg{i}"))
    assert len({id(m) for m in made}) == len(made)
    for i in (0, 5):
        _check(con.sql(TRAIN.replace("bagg", f"bagg{i}")), paths, state)
    lower = "create or replace table tagg as select k, count(w) as n from u group by k"
    kept = []
    for _ in range(6):
        con.execute(lower)
        kept.append(_members(con, "tagg"))
    assert kept[-1] is kept[-2]
