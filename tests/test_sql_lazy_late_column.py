"""A lazy ``CREATE TABLE ... AS`` in memory makes its table without the NULL lineage column; the column is
added when the lineage is filled, ``con.raw`` is handed out, BEGIN runs or a capture names it
(``sql.late_column``). Before and after, lineage equals the brute-force oracle, a query over the table
sees plain DuckDB's columns, and a table replaced outside the traced connection is reported (never read
as untraced, never given a column that is not ours).

Oracle: brute force with pandas (``tests._ctas_frames``): a row of ``a`` came from the ``t`` rows of its
key ``k``; row ``i`` of ``JOINED`` from ``t`` row ``i`` and every ``t`` / ``u`` row with its key.
"""

from __future__ import annotations

import pytest
from _ctas_frames import (
    CTAS_A,
    CTAS_B,
    JOINED,
    connect,
    group_oracle,
    joined_oracle,
    plain_connection,
    write_frames,
)
from _sql_oracle import lineage_sets

from traceprop_frames.errors import SourceChangedError


@pytest.fixture
def frames(tmp_path):
    return write_frames(tmp_path, 5)


def _columns(c, table: str) -> list[str]:
    """The table's columns as DuckDB lists them (``c``: a DuckDB connection or cursor)."""
    rows = c.execute(
        "SELECT column_name FROM duckdb_columns() WHERE table_name = ? ORDER BY column_index", [table]
    ).fetchall()
    return [r[0] for r in rows]


def test_a_run_makes_no_lineage_column_and_the_lineage_is_the_oracle(frames):
    t, u, tmp = frames
    con = connect(tmp)
    for _ in range(3):
        con.execute(CTAS_A)
        con.execute(CTAS_B)
        df = con.sql(JOINED)
    assert _columns(con._con, "a") == ["k", "n"] and _columns(con._con, "b") == ["k", "s"]
    assert lineage_sets(df) == joined_oracle(t, u)
    assert _columns(con._con, "a") == ["k", "n", "__tp_lin"]  # added when filled
    a = con.sql("SELECT k, n FROM a")
    assert lineage_sets(a) == group_oracle(t, "t", a.k)


def test_a_query_over_the_table_before_its_lineage_is_filled(frames):
    t, _, tmp = frames
    con = connect(tmp)
    con.execute(CTAS_A)
    few = con.sql("SELECT k, n FROM a WHERE n > 1 ORDER BY k")
    assert _columns(con._con, "a") == ["k", "n"]  # a query that names no lineage column adds none
    plain = plain_connection(tmp, CTAS_A)
    star = con.sql("SELECT * FROM a ORDER BY k")
    expected = plain.sql("SELECT * FROM a ORDER BY k").df()
    assert list(star.columns) == list(expected.columns) == ["k", "n"]
    assert star.reset_index(drop=True).equals(expected)
    assert lineage_sets(few) == group_oracle(t, "t", few.k)
    assert lineage_sets(star) == group_oracle(t, "t", star.k)


def test_a_catalog_read_again_keeps_the_table_traced(frames):
    t, _, tmp = frames
    con = connect(tmp)
    con.execute(CTAS_A)
    con._cat = None  # as after DDL: the catalog is read from DuckDB, where ``a`` has no lineage column
    con.capture = "eager"
    a = con.sql("SELECT k, n FROM a")
    assert lineage_sets(a) == group_oracle(t, "t", a.k)


def test_raw_sees_the_lineage_column_as_before(frames):
    t, u, tmp = frames
    con = connect(tmp)
    con.execute(CTAS_A)
    con.execute(CTAS_B)
    df = con.sql(JOINED)
    raw = con.raw
    assert _columns(raw, "a") == ["k", "n", "__tp_lin"] and _columns(raw, "b") == ["k", "s", "__tp_lin"]
    assert raw.execute("SELECT count(__tp_lin) FROM a").fetchall() == [(0,)]  # not filled yet
    assert lineage_sets(df) == joined_oracle(t, u)


def test_a_statement_outside_the_connection_on_another_table(frames):
    t, _, tmp = frames
    con = connect(tmp)
    cur = con.raw.cursor()  # made before the CTAS
    con.execute(CTAS_A)
    cur.execute("CREATE TABLE z (x INTEGER)")  # moves DuckDB's catalog count: a's rows are checked
    a = con.sql("SELECT k, n FROM a")
    assert lineage_sets(a) == group_oracle(t, "t", a.k)
    assert _columns(cur, "a") == ["k", "n", "__tp_lin"]  # given its column once its rows held
    con.execute(CTAS_A)
    cur.execute("CREATE TABLE z2 (x INTEGER)")
    cur.execute("UPDATE a SET n = n + 1 WHERE k = 0")  # a's rows no longer its query's
    a = con.sql("SELECT k, n FROM a")
    with pytest.raises(SourceChangedError, match="no longer holds"):
        lineage_sets(a)
    con.execute(CTAS_A)  # made anew: the oracle
    a = con.sql("SELECT k, n FROM a")
    assert lineage_sets(a) == group_oracle(t, "t", a.k)


def test_a_table_replaced_through_a_cursor_is_never_given_the_column(frames):
    t, _, tmp = frames
    con = connect(tmp)
    cur = con.raw.cursor()
    con.execute(CTAS_A)
    df = con.sql("SELECT k, n FROM a")
    cur.execute("CREATE OR REPLACE TABLE a AS SELECT k, 0 AS n FROM t GROUP BY k")  # the user's table
    assert _columns(con.raw, "a") == ["k", "n"]  # handing out raw adds no column to it
    with pytest.raises(SourceChangedError):
        lineage_sets(df)
    assert _columns(cur, "a") == ["k", "n"]


def test_a_database_file_keeps_the_column_and_resolves_after_reopening(frames, tmp_path):
    t, _, tmp = frames
    path = str(tmp_path / "ctas.duckdb")
    con = connect(tmp, database=path)
    con.execute(CTAS_A)
    assert _columns(con._con, "a") == ["k", "n", "__tp_lin"]  # its record and column: one transaction
    con.close()
    con = connect(tmp, database=path)
    a = con.sql("SELECT k, n FROM a")
    assert lineage_sets(a) == group_oracle(t, "t", a.k)


def test_the_same_table_made_again_eagerly(frames):
    t, u, tmp = frames
    con = connect(tmp)
    con.execute(CTAS_A)
    con.capture = "eager"
    con.execute(CTAS_A)  # an eager grouping CTAS: the table with its column, the late record forgotten
    assert not con._late.tables and "__tp_lin" in _columns(con._con, "a")
    con.capture = "lazy"
    con.execute(CTAS_B)
    df = con.sql(JOINED)
    assert lineage_sets(df) == joined_oracle(t, u)
