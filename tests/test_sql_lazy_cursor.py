"""Statements through a DuckDB cursor, a ``con.raw`` handle kept from before, or another connection to the
same database, run right after lazy ``CREATE TABLE ... AS`` statements (before their tables' oids are
read: ``sql.deferred_oids``). One on another table, or a ``SET``, no longer makes the run's tables count
as changed; a replaced or changed table still raises ``SourceChangedError``.

Oracle: brute force with pandas (``tests._ctas_frames``: table ``a`` groups ``t`` by ``k``, ``b`` groups
``u`` by ``k``; ``JOINED``'s row ``i`` came from ``t`` row ``i`` and every ``t`` and ``u`` row of its key),
and the eager connection's lineage for the same pipeline.
"""

from __future__ import annotations

import duckdb
import pytest
from _ctas_frames import (
    CTAS_A,
    CTAS_B,
    JOINED,
    connect,
    count_reads,
    group_oracle,
    joined_oracle,
    write_frames,
)
from _sql_oracle import lineage_sets

from traceprop_frames.errors import SourceChangedError
from traceprop_frames.sql import connection

_N = iter(range(10**6))


def _memory() -> str:
    """A new named in-memory database: ``duckdb.connect`` of its name is a second connection to it."""
    return f":memory:lazy_cursor_{next(_N)}"


UNRELATED = [
    "SET threads = 2",
    "CREATE TABLE other AS SELECT 1 AS x",
    "INSERT INTO side VALUES (2)",
    "BEGIN; UPDATE side SET x = x + 1; COMMIT",
    "DROP TABLE side",
]


@pytest.fixture
def frames(tmp_path):
    return write_frames(tmp_path, 13)


def _outside(con, how: str):
    """A way to run SQL on ``con``'s database outside the traced connection, made before the run."""
    if how == "cursor":
        return con.raw.cursor()
    if how == "raw":
        return con.raw  # a handle kept from before the CTAS
    return duckdb.connect(con.database)  # another connection to the same database


def _pipeline(con, planned: bool, between=None):
    """The run: two CTAS, ``between`` (a statement run outside the traced connection) and the joined
    query; ``planned``: planned by two runs first, so its oids wait too and ``between`` runs after it."""
    if planned:
        for _ in range(2):
            for s in (CTAS_A, CTAS_B, JOINED):
                con.execute(s)
    con.execute(CTAS_A)
    con.execute(CTAS_B)
    if between is not None and not planned:
        assert con._deferred.records  # oids not read yet (a CTAS planned anew reads those before it)
        between()
    df = con.sql(JOINED)
    if between is not None and planned:
        assert len(con._deferred.records) == 3  # the query's too
        between()
    return df


@pytest.mark.parametrize("planned", [False, True])
@pytest.mark.parametrize("how", ["cursor", "raw", "connection"])
@pytest.mark.parametrize("statement", UNRELATED)
def test_an_unrelated_statement_outside_answers_as_eager(frames, statement, how, planned):
    t, u, tmp = frames
    con = connect(tmp, database=_memory())
    other = _outside(con, how)
    other.execute("CREATE TABLE side (x INTEGER)")
    df = _pipeline(con, planned, lambda: other.execute(statement))
    assert lineage_sets(df) == joined_oracle(t, u)
    a, b = con.sql("SELECT k FROM a"), con.sql("SELECT k FROM b")
    assert lineage_sets(a) == group_oracle(t, "t", a.k)
    assert lineage_sets(b) == group_oracle(u, "u", b.k)
    eager = connect(tmp, capture="eager")
    assert lineage_sets(df) == lineage_sets(_pipeline(eager, planned))
    eager.close()
    con.close()


REPLACED_INPUT = [
    "CREATE OR REPLACE TABLE t AS SELECT * FROM t",  # the same rows (and row ids): another table
    "CREATE TABLE t2 AS SELECT * FROM t; DROP TABLE t; ALTER TABLE t2 RENAME TO t",  # dropped, made again
]


@pytest.mark.parametrize("planned", [False, True])
@pytest.mark.parametrize("how", ["cursor", "raw", "connection"])
@pytest.mark.parametrize("statement", REPLACED_INPUT)
def test_a_replaced_input_raises(frames, statement, how, planned):
    _, _, tmp = frames
    con = connect(tmp, database=_memory())
    other = _outside(con, how)
    df = _pipeline(con, planned, lambda: other.execute(statement))
    with pytest.raises(SourceChangedError, match=r"\['t'\] changed"):
        df.tp.sources(rows=[0])
    with pytest.raises(SourceChangedError, match=r"\['t'\] changed"):
        con.sql("SELECT k FROM a").tp.sources(rows=[0])
    b = con.sql("SELECT k FROM b")  # made from u only: answers
    assert len(lineage_sets(b)) == len(b)
    con.close()


@pytest.mark.parametrize("how", ["cursor", "raw", "connection"])
@pytest.mark.parametrize(
    "statement",
    [
        "DROP TABLE a; CREATE TABLE a AS SELECT k, count(*) + 1 AS n FROM t GROUP BY k",  # same name, columns
        "CREATE OR REPLACE TABLE a AS SELECT k, count(*) AS n FROM t WHERE v > 0 GROUP BY k",
        "UPDATE a SET n = n + 1 WHERE k = (SELECT min(k) FROM a)",  # changed in place: the same oid
        "DELETE FROM a WHERE k = (SELECT min(k) FROM a)",
        "INSERT INTO a (k, n) VALUES (100, 1)",
        "CREATE OR REPLACE TABLE a AS SELECT k, count(*)::INTEGER AS n FROM t GROUP BY k",  # another type
        "CREATE OR REPLACE TABLE a AS SELECT k, count(*) AS m FROM t GROUP BY k",  # another name
    ],
)
def test_a_made_table_replaced_or_changed_raises(frames, statement, how):
    _, _, tmp = frames
    con = connect(tmp, database=_memory())
    other = _outside(con, how)
    df = _pipeline(con, True, lambda: other.execute(statement))
    with pytest.raises(SourceChangedError, match="no longer holds"):
        df.tp.sources(rows=[0])
    with pytest.raises(SourceChangedError):
        lineage_sets(con.sql("SELECT k FROM a"))
    con.close()


def test_a_made_table_made_again_with_the_same_rows_answers(frames):
    """Another table under that name holding exactly the rows the query gives: its lineage is the query's."""
    t, u, tmp = frames
    con = connect(tmp, database=_memory())
    cur = con.raw.cursor()
    again = "DROP TABLE a; CREATE TABLE a AS SELECT k, count(*) AS n FROM t GROUP BY k ORDER BY k DESC"
    df = _pipeline(con, True, lambda: cur.execute(again))
    assert lineage_sets(df) == joined_oracle(t, u)
    a = con.sql("SELECT k, n FROM a")
    assert lineage_sets(a) == group_oracle(t, "t", a.k)


def test_a_database_file_through_a_second_connection(frames, tmp_path):
    """A database file reads the oids after each statement (``sql.deferred_oids``): replaced inputs raise,
    other statements are told apart, as before."""
    t, u, tmp = frames
    path = str(tmp_path / "db.duckdb")
    con = connect(tmp, database=path)
    df = _pipeline(con, planned=True)
    other = duckdb.connect(path)
    other.execute("CREATE TABLE other AS SELECT 1 AS x")
    assert lineage_sets(df) == joined_oracle(t, u)
    df = _pipeline(con, planned=True)
    other.execute("CREATE OR REPLACE TABLE t AS SELECT * FROM t")
    with pytest.raises(SourceChangedError):
        df.tp.sources(rows=[0])
    other.close()
    con.close()


def test_a_run_reads_the_oids_at_its_start_once(frames):
    """A run that starts where no oid read is kept reads them once before its first CTAS (what it knows
    at its start); the statements within a run (a pipeline in a loop, its plans kept) read none."""
    t, u, tmp = frames
    con = connect(tmp)
    reads = count_reads(con)
    con.execute(CTAS_A)
    assert reads[0] == 1 and con._deferred.known is not None
    _pipeline(con, planned=True)
    n = reads[0]
    for _ in range(3):
        df = _pipeline(con, planned=False)
    assert reads[0] == n and con._deferred.known is not None
    assert lineage_sets(df) == joined_oracle(t, u)


def test_a_run_without_a_known_start_counts_as_changed(frames):
    """Control: where the run's start is not known, the oids stay unread (``UNREAD``) and the tables
    count as changed, as before (an eager grouping CTAS of an eager connection starts such a run)."""
    _, _, tmp = frames
    con = connect(tmp)
    cur = con.raw.cursor()
    con.execute(CTAS_A)
    con._deferred.known = None  # (as where no read was kept at its start)
    cur.execute("SET threads = 2")
    with pytest.raises(SourceChangedError, match="outside the traced connection"):
        con.sql("SELECT k FROM a").tp.sources(rows=[0])


def test_a_handle_kept_from_before_sees_plain_duckdbs_table_until_the_column_is_added(frames):
    """What code on a ``con.raw`` handle or a cursor taken before a lazy in-memory CTAS observes: plain
    DuckDB's table (columns, rows, a positional INSERT) until the lineage column is added — by reading
    ``con.raw`` again, a lineage question, ``BEGIN`` — then the table with ``__tp_lin`` (NULL until filled),
    as eager capture makes it, on every handle (the column is in the database, not in the handle)."""
    t, _, tmp = frames
    con = connect(tmp)
    raw = con.raw
    cur = raw.cursor()
    con.execute(CTAS_A)
    plain = duckdb.connect()
    plain.execute(f"CREATE TABLE t AS SELECT * FROM read_parquet('{tmp / 't.parquet'}')")
    plain.execute(CTAS_A)
    want = plain.execute("DESCRIBE a").fetchall()
    rows = sorted(plain.execute("SELECT * FROM a").fetchall())
    for c in (raw, cur):
        assert c.execute("DESCRIBE a").fetchall() == want
        assert sorted(c.execute("SELECT * FROM a").fetchall()) == rows
        with pytest.raises(duckdb.BinderException):
            c.execute("SELECT __tp_lin FROM a")
    assert con.raw is raw  # reading it again adds the column (the same handle)
    for c in (raw, cur):
        assert [d[0] for d in c.execute("SELECT * FROM a").description] == ["k", "n", "__tp_lin"]
        assert c.execute("SELECT count(__tp_lin) FROM a").fetchall() == [(0,)]
        with pytest.raises(duckdb.BinderException):  # a positional INSERT now needs the column too
            c.execute("INSERT INTO a VALUES (100, 1)")
    a = con.sql("SELECT k FROM a")
    assert lineage_sets(a) == group_oracle(t, "t", a.k)


def test_a_made_table_that_differs_is_checked_once(frames, monkeypatch):
    """A table whose rows differ from its query's is not compared again on every ``con.raw`` read."""
    _, _, tmp = frames
    con = connect(tmp)
    cur = con.raw.cursor()
    df = _pipeline(con, True, lambda: cur.execute("UPDATE a SET n = n + 1"))
    calls = []
    check = connection.holds_query_rows
    monkeypatch.setattr(connection, "holds_query_rows", lambda *a: calls.append(a) or check(*a))
    for _ in range(3):
        assert con.raw is not None
    with pytest.raises(SourceChangedError, match="no longer holds"):
        df.tp.sources(rows=[0])
    assert sorted(c[1] for c in calls) == ['"a"', '"b"']  # each once (b holds its rows)
