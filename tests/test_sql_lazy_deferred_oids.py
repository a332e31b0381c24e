"""A run of lazy ``CREATE TABLE ... AS`` reads the table oids once, after its last statement
(``sql.deferred_oids``); whatever runs in between is told apart or counted as a change.

Oracle: brute force with pandas. Table ``a`` groups ``t`` by ``k``, table ``b`` groups ``u`` by ``k``;
row ``i`` of ``SELECT t.*, a.n, b.s FROM t LEFT JOIN a USING (k) LEFT JOIN b USING (k)`` (the credit ETL's
shape) came from ``t`` row ``i``, every ``t`` row and every ``u`` row with its ``k``.
"""

from __future__ import annotations

import duckdb
import pandas as pd
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
from _sql_oracle import lineage_sets, rows_of

import traceprop_frames as tpf
from traceprop_frames.errors import SourceChangedError
from traceprop_frames.sql.deferred_oids import UNREAD


@pytest.fixture
def frames(tmp_path):
    return write_frames(tmp_path, 7)


def test_a_run_of_ctas_reads_the_oids_once(frames):
    t, u, tmp = frames
    con = connect(tmp)
    for s in [CTAS_A, CTAS_B, JOINED] * 2:  # planned on the catalog that has a and b (a statement
        con.execute(s)  # planned anew reads the oids before it)
    for _ in range(2):
        reads = count_reads(con)
        con.execute(CTAS_A)
        con.execute(CTAS_B)
        assert reads[0] == 0 and len(con._deferred.records) == 2
        df = con.sql(JOINED)  # the query's oids wait with the records' (test_sql_lazy_query_oids)
        assert reads[0] == 0 and len(con._deferred.records) == 3
        query = con._deferred.records[-1]
        raw = con.raw  # handing it out reads them, once
        assert reads[0] == 1 and not con._deferred.records
        oids = dict(raw.execute("SELECT table_name, table_oid FROM duckdb_tables()").fetchall())
        for fp in (con._pending["a"].fingerprint, con._pending["b"].fingerprint, query.fingerprint):
            assert {tb: v[0] for tb, v in fp.items()} == {tb: oids[tb] for tb in fp}  # the tables' oids
        assert lineage_sets(df) == joined_oracle(t, u)
        del con._read_oids
    a = con.sql("SELECT k FROM a")
    assert lineage_sets(a) == group_oracle(t, "t", a.k)
    for _ in range(5):  # a loop of CTAS without a read between: one waiting record per table
        con.execute(CTAS_A)
        con.execute(CTAS_B)
    assert sorted(r.name for r in con._deferred.records) == ["a", "b"]
    assert con._deferred.records[0] is con._pending["a"]


def test_input_replaced_through_raw_after_the_ctas_raises(frames):
    _, _, tmp = frames
    con = connect(tmp)
    con.execute(CTAS_A)
    assert con._deferred.records
    raw = con.raw  # handing out the connection records the oids first
    assert not con._deferred.records and UNREAD not in {v[0] for v in con._pending["a"].fingerprint.values()}
    raw.execute("CREATE OR REPLACE TABLE t AS SELECT * FROM t WHERE v > 0")
    with pytest.raises(SourceChangedError, match="changed since"):
        con.sql("SELECT * FROM a").tp.sources(rows=[0])


def test_table_replaced_through_raw_keeping_its_null_lineage_raises(frames):
    _, _, tmp = frames
    con = connect(tmp)
    con.execute(CTAS_A)
    con.raw.execute("CREATE OR REPLACE TABLE a AS SELECT * FROM a WHERE k > 2")  # __tp_lin still all NULL
    with pytest.raises(SourceChangedError, match="changed since"):
        con.sql("SELECT * FROM a").tp.sources(rows=[0])


@pytest.mark.parametrize(
    ("statement", "raises"),
    [
        ("CREATE OR REPLACE TABLE t AS SELECT * FROM t WHERE v > 0", r"\['t'\] changed"),  # an input replaced
        ("CREATE OR REPLACE TABLE a AS SELECT * FROM a WHERE k > 2", "no longer holds"),  # a itself
        ("CREATE TABLE other AS SELECT 1 AS x", None),  # unrelated: told apart (sql.deferred_oids)
    ],
)
def test_statement_through_a_cursor_right_after(frames, statement, raises):
    t, u, tmp = frames
    con = connect(tmp)
    cursor = con.raw.cursor()  # a second connection to the same database, made before the CTAS
    con.execute(CTAS_A)
    cursor.execute(statement)
    con.execute(CTAS_B)  # a run broken by a statement not run here: a's oid read now, its rows checked
    assert UNREAD not in {v[0] for v in con._pending["a"].fingerprint.values()}
    assert con._pending["a"].verify
    if raises:
        with pytest.raises(SourceChangedError, match=raises):
            con.sql("SELECT * FROM a").tp.sources(rows=[0])
    else:
        a = con.sql("SELECT k FROM a")
        assert lineage_sets(a) == group_oracle(t, "t", a.k)
    b = con.sql("SELECT k FROM b")  # made after it: answers
    assert lineage_sets(b) == group_oracle(u, "u", b.k)


def test_failed_ctas_keeps_the_run(frames):
    t, u, tmp = frames
    con = connect(tmp)
    pd.DataFrame({"k": [1, 2], "s": ["1", "2"]}).to_parquet(tmp / "s1.parquet", index=False)
    pd.DataFrame({"k": [1, 2], "s": ["1", "x"]}).to_parquet(tmp / "s2.parquet", index=False)
    con.read_parquet(tmp / "s1.parquet", name="strs")
    bad = "CREATE OR REPLACE TABLE c AS SELECT k, max(CAST(s AS INTEGER)) AS m FROM strs GROUP BY k"
    for s in [CTAS_A, bad] * 2:  # planned on the catalog that has a and c, run while every value converts
        con.execute(s)
    con.read_parquet(tmp / "s2.parquet", name="strs")  # the same columns: the plans stay
    con.execute(CTAS_A)
    assert len(con._deferred.records) == 1 and con._ctas_plans[bad][1] is not None
    with pytest.raises(duckdb.ConversionException):
        con.execute(bad)  # the lazy CTAS (its plan kept) fails at run time; the eager path reports it
    assert UNREAD not in {v[0] for v in con._pending["a"].fingerprint.values()}
    df = con.sql(JOINED.replace(" LEFT JOIN b USING (k)", "").replace(", b.s", ""))
    want = [w - rows_of("u", range(len(u))) for w in joined_oracle(t, u)]
    assert lineage_sets(df) == want


def test_inside_a_user_transaction(frames):
    t, u, tmp = frames
    con = connect(tmp)
    con.execute("BEGIN")
    con.execute(CTAS_A)
    con.execute(CTAS_B)
    assert lineage_sets(con.sql(JOINED)) == joined_oracle(t, u)
    con.execute("COMMIT")
    con.execute(CTAS_A)
    con.execute("BEGIN")
    con.execute(CTAS_A.replace("count(*)", "count(v)"))
    con.execute("ROLLBACK")  # a is the table made before BEGIN again: its lineage, or an error
    a = con.sql("SELECT k, n FROM a")
    try:
        got = lineage_sets(a)
    except SourceChangedError:
        return
    assert got == group_oracle(t, "t", a.k)


def test_persisted_result(frames):
    t, u, tmp = frames
    con = connect(tmp)
    con.execute(CTAS_A)
    con.execute(CTAS_B)
    con.sql(JOINED).tp.to_parquet(tmp / "out.parquet")
    assert lineage_sets(tpf.read_traced(tmp / "out.parquet")) == joined_oracle(t, u)


def test_without_the_catalog_counter_reads_after_each_ctas(frames):
    t, u, tmp = frames
    con = connect(tmp)
    con._deferred._count = None  # a DuckDB build without _catalog_version()
    reads = count_reads(con)
    con.execute(CTAS_A)
    con.execute(CTAS_B)
    assert reads[0] == 2 and not con._deferred.records
    assert lineage_sets(con.sql(JOINED)) == joined_oracle(t, u)
