"""A lazy query run from its kept plan after a run of lazy ``CREATE TABLE ... AS`` reads no table oids: its
fingerprint waits with the CTAS records' (``sql.deferred_oids``) and is read when lineage is asked for or
another statement runs; whatever ran in between is told apart or counted as a change, never read as the
state the query saw.

Oracle: brute force with pandas (``tests._ctas_frames``): row ``i`` of ``JOINED`` came from ``t`` row
``i`` and every ``t`` and ``u`` row with its key ``k``.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest
from _ctas_frames import CTAS_A, CTAS_B, JOINED, connect, count_reads, joined_oracle, write_frames
from _sql_oracle import lineage_sets, rows_of

from traceprop_frames.errors import SourceChangedError
from traceprop_frames.sql.deferred_oids import UNREAD


@pytest.fixture
def frames(tmp_path):
    return write_frames(tmp_path, 11)


def _run(con):
    con.execute(CTAS_A)
    con.execute(CTAS_B)
    return con.sql(JOINED)


def _oracle_now(con, u) -> list[set]:
    """``JOINED``'s lineage over ``t`` as it is now (rows kept by a replacement keep their source rows)."""
    now = con.raw.sql("SELECT k, __tp_rid & ((1::BIGINT << 40) - 1) AS row FROM t").df()
    return [
        rows_of("t", [r]) | rows_of("t", now.row[now.k == k]) | rows_of("u", np.flatnonzero(u.k == k))
        for k, r in zip(now.k, now.row)
    ]


def _planned(tmp, database: str = ":memory:"):
    con = connect(tmp, database=database)
    for _ in range(2):  # planned on the catalog that has a and b
        _run(con)
    return con


def test_a_run_reads_no_oids_and_the_lineage_is_the_oracle(frames):
    t, u, tmp = frames
    con = _planned(tmp)
    reads = count_reads(con)
    for _ in range(3):
        df = _run(con)
    assert reads[0] == 0
    assert all(v[0] is UNREAD for v in con._deferred.records[-1].fingerprint.values())
    assert lineage_sets(df) == joined_oracle(t, u)  # the request reads them
    assert reads[0] >= 1 and not con._deferred.records


def test_a_result_of_an_earlier_run_raises_once_a_later_run_replaced_its_tables(frames):
    t, u, tmp = frames
    con = _planned(tmp)
    reads = count_reads(con)
    first = _run(con)
    second = _run(con)  # its CTAS replaced a and b after ``first`` ran: their oids were never read for it
    assert reads[0] == 0
    with pytest.raises(SourceChangedError, match=r"\['a', 'b'\] changed"):
        first.tp.sources(rows=[0])
    assert lineage_sets(second) == joined_oracle(t, u)


def test_two_results_of_the_same_query_both_answer(frames):
    t, u, tmp = frames
    con = _planned(tmp)
    _run(con)
    again = con.sql(JOINED)  # nothing between: both wait, neither replaces the other
    once = con.sql(JOINED)
    assert lineage_sets(once) == joined_oracle(t, u)
    assert lineage_sets(again) == joined_oracle(t, u)


def test_dropped_results_are_not_kept(frames):
    _, _, tmp = frames
    con = _planned(tmp)
    for _ in range(20):
        _run(con)  # each result dropped at once
    gc.collect()
    assert len(con._deferred.records) <= 3  # a, b and at most the last result's (dead) entry
    assert sum(getattr(r, "alive", False) for r in con._deferred.records) == 0


@pytest.mark.parametrize(
    ("statement", "raises"),
    [
        ("CREATE OR REPLACE TABLE t AS SELECT * FROM t WHERE v > 0", True),  # an input of the query replaced
        ("CREATE OR REPLACE TABLE a AS SELECT * FROM a WHERE k > 2", True),  # a table it read replaced
        ("CREATE TABLE other AS SELECT 1 AS x", False),  # unrelated: told apart (sql.deferred_oids)
    ],
)
def test_statement_through_a_cursor_after_the_query(frames, statement, raises):
    t, u, tmp = frames
    con = _planned(tmp)
    cursor = con.raw.cursor()  # a second connection to the same database, made before the run
    df = _run(con)
    cursor.execute(statement)
    if raises:
        with pytest.raises(SourceChangedError):
            df.tp.sources(rows=[0])
        with pytest.raises(SourceChangedError):  # a and b: made from the replaced t, or a replaced
            con.sql(JOINED).tp.sources(rows=[0])
    else:
        assert lineage_sets(df) == joined_oracle(t, u)
    again = _run(con)  # made anew: answers, from the tables as they are now
    assert lineage_sets(again) == _oracle_now(con, u)


def test_statement_through_a_cursor_between_ctas_and_query_is_not_absorbed(frames):
    """Control for the ``unchanged()`` check: the query must not make the CTAS records valid again at the
    count after a statement it did not run (``a`` would then be read from the replaced ``t``)."""
    _, u, tmp = frames
    con = _planned(tmp)
    cursor = con.raw.cursor()
    con.execute(CTAS_A)
    con.execute(CTAS_B)
    cursor.execute("CREATE OR REPLACE TABLE t AS SELECT * REPLACE (v + 1 AS v) FROM t WHERE k > 1")
    df = con.sql(JOINED)  # the plan is kept (t has the same columns), the oids read now
    assert not con._deferred.records and "t" in con._captures[JOINED][5]
    with pytest.raises(SourceChangedError):
        con.sql("SELECT * FROM a").tp.sources(rows=[0])
    with pytest.raises(SourceChangedError):
        df.tp.sources(rows=[0])  # it read a, whose source t changed after a was made
    again = _run(con)  # made anew: answers, from t as it is now
    assert lineage_sets(again) == _oracle_now(con, u)


def test_a_database_file_reads_as_before(frames, tmp_path):
    t, u, tmp = frames
    con = _planned(tmp, str(tmp_path / "db.duckdb"))
    reads = count_reads(con)
    df = _run(con)
    assert reads[0] >= 1 and not con._deferred.records
    assert lineage_sets(df) == joined_oracle(t, u)
    con.close()
