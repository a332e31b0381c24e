"""Eager queries read loaded sources' row ids from DuckDB's ``rowid`` only while that is sound
(``sql.rowid_scan``). Every lineage here is checked against a hand-computed oracle: the file row numbers
of the rows each result row came from, after the same change done in pandas.

Each fallback case also runs a control: the fast path forced back on for the changed table, which gives a
WRONG lineage (rowids are positions: DELETE + CHECKPOINT compacts them, UPDATE moves a row, INSERT appends
rows of another source). So each of those tests fails if its guard is removed.
"""

from __future__ import annotations

import contextlib

import duckdb
import numpy as np
import pandas as pd
import pytest
from _sql_oracle import lineage_sets, rows_of

import traceprop_frames as tpf
from traceprop_frames.errors import UnsupportedOperationError, UnsupportedSQLError

GROUPS = "SELECT k, sum(v) AS s FROM t GROUP BY k ORDER BY k"
JOIN = "SELECT t.k, u.name, count(*) AS n FROM t JOIN u ON t.k = u.k GROUP BY t.k, u.name ORDER BY t.k"


@pytest.fixture(autouse=True)
def _no_bitstrings(monkeypatch):
    """GROUPS is a few-dense-groups query, which ``sql.dense_bits`` answers from the stored column with
    bitstrings; these tests are about the list path's row ids, so that path is taken here."""
    from traceprop_frames.sql import dense_bits

    monkeypatch.setattr(dense_bits, "run", lambda raw, rw, sql: None)


BIG = 250_000  # over two DuckDB row groups: a CHECKPOINT after deleting half of them merges them


def _t(n: int = 12) -> pd.DataFrame:
    return pd.DataFrame({"k": np.arange(n) % 3, "v": np.arange(n)})


def _u() -> pd.DataFrame:
    return pd.DataFrame({"k": [2, 0, 1], "name": ["two", "zero", "one"]})


def _con(tmp_path, database=":memory:", fmt="csv", t=None):
    t, u = _t() if t is None else t, _u()
    con = tpf.connect(database, capture="eager")
    if fmt == "csv":
        t.to_csv(tmp_path / "t.csv", index=False)
        con.read_csv(tmp_path / "t.csv", name="t")
    else:
        t.to_parquet(tmp_path / "t.parquet", index=False)
        con.read_parquet(tmp_path / "t.parquet", name="t")
    u.to_parquet(tmp_path / "u.parquet", index=False)
    con.read_parquet(tmp_path / "u.parquet", name="u")
    return con


def _groups_oracle(t: pd.DataFrame) -> list[set]:
    """Per group k (ascending): the file rows of t in it (t's index = file row number)."""
    return [rows_of("t", t.index[t.k == k]) for k in sorted(t.k.unique())]


def _reads_rowid(con, query: str) -> bool:
    return "rowid" in con._rowid.apply(con.rewrite(query))


def _forced(con, query: str, base: int) -> list[set]:
    """The lineage with the fast path forced on for t (what a missing guard would give)."""
    con._rowid.tables["t"] = base
    try:
        return lineage_sets(con.sql(query + " "))  # (its own plan)
    finally:
        con._rowid.tables.pop("t", None)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_fast_path_lineage_is_the_file_rows(tmp_path, fmt):
    con = _con(tmp_path, fmt=fmt)
    assert set(con._rowid.tables) == {"t", "u"}
    assert _reads_rowid(con, GROUPS) and _reads_rowid(con, JOIN)
    t = _t()
    df = con.sql(GROUPS)
    assert df.s.tolist() == [t.v[t.k == k].sum() for k in range(3)]
    assert lineage_sets(df) == _groups_oracle(t)
    u = _u()
    want = [rows_of("t", t.index[t.k == k]) | rows_of("u", u.index[u.k == k]) for k in range(3)]
    assert lineage_sets(con.sql(JOIN)) == want
    # the same on a connection whose fast path is off (the stored column): identical
    slow = _con(tmp_path, fmt=fmt)
    _ = slow.raw
    assert not slow._rowid.tables and lineage_sets(slow.sql(GROUPS)) == lineage_sets(df)


def test_delete_then_checkpoint_falls_back(tmp_path):
    con = _con(tmp_path, fmt="parquet", t=_t(BIG))
    base = con._rowid.tables["t"]
    con.execute("DELETE FROM t WHERE v % 2 = 0")
    con.execute("CHECKPOINT")
    assert "t" not in con._rowid.tables and not _reads_rowid(con, GROUPS)
    t = _t(BIG)[lambda d: d.v % 2 == 1]
    assert lineage_sets(con.sql(GROUPS)) == _groups_oracle(t)
    assert _forced(con, GROUPS, base) != _groups_oracle(t)  # control: rowids were compacted


def test_update_falls_back(tmp_path):
    t = _t().assign(tags=[[i] for i in range(12)])
    con = _con(tmp_path, fmt="parquet", t=t)
    base = con._rowid.tables["t"]
    con.execute("UPDATE t SET k = 0, tags = [99] WHERE v = 1")  # (a list column: the row moves)
    assert "t" not in con._rowid.tables
    t.loc[1, "k"] = 0
    assert lineage_sets(con.sql(GROUPS)) == _groups_oracle(t)
    assert _forced(con, GROUPS, base) != _groups_oracle(t)  # control: the updated row has a new rowid


def test_table_replaced_with_appended_rows_of_another_source_falls_back(tmp_path):
    con = _con(tmp_path)
    base = con._rowid.tables["t"]
    pd.DataFrame({"k": [1, 1], "v": [100, 101]}).to_csv(tmp_path / "more.csv", index=False)
    con.read_csv(tmp_path / "more.csv", name="more")
    with pytest.raises(UnsupportedSQLError):  # a loaded source takes no INSERT through con.execute
        con.execute("INSERT INTO t SELECT * FROM more")
    con.execute("CREATE OR REPLACE TABLE t AS SELECT * FROM more UNION ALL SELECT * FROM t")
    assert "t" not in con._rowid.tables and "more" in con._rowid.tables
    want = _groups_oracle(_t())
    want[1] = want[1] | rows_of("more", [0, 1])
    assert lineage_sets(con.sql(GROUPS)) == want
    assert _forced(con, GROUPS, base) != want  # control: t's rows are no longer t's file rows


def test_statements_in_one_text_fall_back_before_the_query_runs(tmp_path):
    con = _con(tmp_path)
    df = con.execute("DELETE FROM t WHERE v < 3; CHECKPOINT; " + GROUPS)
    assert lineage_sets(df) == _groups_oracle(_t().drop(index=[0, 1, 2]))


def test_raw_connection_turns_it_off_for_good(tmp_path):
    con = _con(tmp_path, fmt="parquet", t=_t(BIG))
    base = con._rowid.tables["t"]
    raw = con.raw  # user code now holds the DuckDB connection
    assert not con._rowid.tables and not con._rowid.on
    raw.execute("DELETE FROM t WHERE v % 2 = 0")
    raw.execute("CHECKPOINT")
    t = _t(BIG)[lambda d: d.v % 2 == 1]
    assert lineage_sets(con.sql(GROUPS)) == _groups_oracle(t)
    con.read_parquet(tmp_path / "u.parquet", name="t2")  # a later load does not turn it back on
    assert not con._rowid.tables
    con._rowid.on = True
    assert _forced(con, GROUPS, base) != _groups_oracle(t)  # control


def test_file_database_never_uses_it(tmp_path):
    path = str(tmp_path / "db.duckdb")
    t = _t().assign(tags=[[i] for i in range(12)])
    con = _con(tmp_path, database=path, fmt="parquet", t=t)
    assert not con._rowid.on and not con._rowid.tables
    other = duckdb.connect(path)  # the same database, another connection (the same process)
    other.execute("UPDATE t SET k = 0, tags = [99] WHERE v = 1")  # (the row moves)
    t.loc[1, "k"] = 0
    assert lineage_sets(con.sql(GROUPS)) == _groups_oracle(t)
    con._rowid.on = True
    base = int(con._raw.execute("SELECT min(__tp_rid) FROM t").fetchall()[0][0])  # (row 0's id)
    assert _forced(con, GROUPS, base) != _groups_oracle(t)  # control
    other.close()


def test_named_memory_database_never_uses_it(tmp_path):
    con = _con(tmp_path, database=":memory:shared_rowid_test")
    assert not con._rowid.on and not con._rowid.tables


@pytest.mark.parametrize(
    "statement",
    [
        "CHECKPOINT",
        "ALTER TABLE u RENAME TO u2",
        "CREATE SCHEMA s2",
        "SET threads = 2",
        "BEGIN TRANSACTION; COMMIT",
        "CREATE TEMP TABLE x AS SELECT 1 AS a; ALTER TABLE x RENAME TO t",  # (temp.t hides main.t)
        "not SQL at all",
    ],
)
def test_other_statements_take_every_table_out(tmp_path, statement):
    con = _con(tmp_path)
    with contextlib.suppress(Exception):
        con.execute(statement)
    assert not con._rowid.tables


@pytest.mark.parametrize(
    "statement, gone",
    [
        ("CREATE TABLE other AS SELECT * FROM t", set()),
        ("CREATE OR REPLACE TEMP VIEW t AS SELECT * FROM u", {"t"}),
        ("DROP TABLE u", {"u"}),
        ("SELECT count(*) FROM t", set()),
    ],
)
def test_named_statements_take_their_tables_out(tmp_path, statement, gone):
    con = _con(tmp_path)
    con.execute(statement)
    assert set(con._rowid.tables) == {"t", "u"} - gone


def test_temp_view_of_the_same_name_is_read_as_itself(tmp_path):
    con = _con(tmp_path)
    con.execute("CREATE TEMP VIEW t AS SELECT k, k * 10 AS v FROM u")
    assert "t" not in con._rowid.tables
    df = con.sql(GROUPS)
    assert df.s.tolist() == [0, 10, 20]
    assert lineage_sets(df) == [rows_of("u", [1]), rows_of("u", [2]), rows_of("u", [0])]


def test_registered_frame_of_the_same_name_takes_the_table_out(tmp_path):
    con = _con(tmp_path)
    con.register("t", pd.DataFrame({"k": [5], "v": [1]}))
    assert "t" not in con._rowid.tables


def test_a_column_named_rowid_keeps_the_stored_ids(tmp_path):
    t = pd.DataFrame({"rowid": [7, 7, 3], "k": [0, 1, 0]})
    t.to_parquet(tmp_path / "r.parquet", index=False)
    con = tpf.connect(capture="eager")
    con.read_parquet(tmp_path / "r.parquet", name="r")
    assert "r" not in con._rowid.tables
    df = con.sql("SELECT k, sum(rowid) AS s FROM r GROUP BY k ORDER BY k")
    assert df.s.tolist() == [10, 7]
    assert lineage_sets(df) == [rows_of("r", [0, 2]), rows_of("r", [1])]


def test_csv_with_a_column_named_rowid_is_refused(tmp_path):
    """DuckDB's rowid is hidden by such a column, so the loader could not number the rows (it used to
    number them by the column's values: a silently wrong lineage)."""
    pd.DataFrame({"rowid": [7, 7, 3], "k": [0, 1, 0]}).to_csv(tmp_path / "r.csv", index=False)
    con = tpf.connect(capture="eager")
    with pytest.raises(UnsupportedOperationError, match="rowid"):
        con.read_csv(tmp_path / "r.csv", name="r")
    assert con._raw.execute("SELECT count(*) FROM duckdb_tables()").fetchall()[0][0] == 0


def test_load_check_refuses_ids_that_are_not_rowid_plus_base(tmp_path):
    con = _con(tmp_path)
    base = con._rowid.tables["t"]
    con._rowid.loaded(con._raw, "t", base + 1, in_txn=False)  # as if the ids were shifted by one
    assert "t" not in con._rowid.tables
    con._rowid.loaded(con._raw, "t", base, in_txn=True)  # inside the user's transaction: never
    assert "t" not in con._rowid.tables
    con._rowid.loaded(con._raw, "t", base, in_txn=False)
    assert con._rowid.tables["t"] == base


def test_cte_and_alias_shadowing(tmp_path):
    con = _con(tmp_path)
    q = (
        "WITH u AS (SELECT k, v FROM t WHERE v < 6) "
        "SELECT x.k, count(*) AS n FROM u AS x JOIN t AS u2 ON x.k = u2.k GROUP BY x.k ORDER BY x.k"
    )
    assert _reads_rowid(con, q)
    t = _t()
    want = [rows_of("t", t.index[t.k == k]) for k in range(3)]  # every t row of k (both sides)
    assert lineage_sets(con.sql(q)) == want


def test_a_construct_without_rowid_runs_on_the_stored_ids(tmp_path):
    """A NEAREST join's right side has no rowid in DuckDB: the rowid version fails to bind, the query runs
    on the stored ids (no error), and that SQL is not tried by rowid again."""
    pd.DataFrame({"id": [0, 1, 2], "x": [1.0, 5.0, 9.0]}).to_parquet(tmp_path / "q.parquet", index=False)
    pd.DataFrame({"y": [0.0, 4.0, 6.0, 10.0]}).to_parquet(tmp_path / "r.parquet", index=False)
    con = tpf.connect(capture="eager")
    con.read_parquet(tmp_path / "q.parquet", name="lq")
    con.read_parquet(tmp_path / "r.parquet", name="rr")
    query = "SELECT q.id, t.y FROM lq q INNER JOIN rr t NEAREST 1 BY DISTANCE abs(q.x - t.y) ORDER BY q.id"
    assert _reads_rowid(con, query)
    df = con.sql(query)
    assert df.y.tolist() == [0.0, 4.0, 10.0]  # (ties to the first: DuckDB's answer, checked below)
    assert df.y.tolist() == con._raw.sql(query).df().y.tolist()
    y = [0.0, 4.0, 6.0, 10.0]
    assert lineage_sets(df) == [rows_of("q", [i]) | rows_of("r", [y.index(v)]) for i, v in enumerate(df.y)]
    assert not _reads_rowid(con, query)  # remembered


def test_loaded_in_lazy_mode_then_eager_reads_rowid(tmp_path):
    """A connection that loads while lazy and switches to eager (``con.capture = "eager"``) has the
    tables checked at load, so its eager queries take the fast path, with the file rows as lineage."""
    t = _t()
    t.to_csv(tmp_path / "t.csv", index=False)
    con = tpf.connect()
    con.read_csv(tmp_path / "t.csv", name="t")
    con.capture = "eager"
    assert _reads_rowid(con, GROUPS)
    assert lineage_sets(con.sql(GROUPS)) == _groups_oracle(t)
