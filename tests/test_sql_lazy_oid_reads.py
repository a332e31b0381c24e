"""A lazy lineage request reads the table oids only where DuckDB's catalog count moved since the last read
(``sql.oid_reads``); a table replaced by any route in between is still reported as changed.

Oracle: brute force with pandas (``tests._ctas_frames``): row ``i`` of ``SELECT k, v FROM t WHERE v > 0``
came from the ``i``-th row of ``t`` with ``v > 0``.
"""

from __future__ import annotations

import numpy as np
import pytest
from _ctas_frames import connect, write_frames
from _sql_oracle import lineage_sets, rows_of

from traceprop_frames.errors import SourceChangedError
from traceprop_frames.sql.oid_reads import OidReads

QUERY = "SELECT k, v FROM t WHERE v > 0"


@pytest.fixture
def frames(tmp_path):
    return write_frames(tmp_path, 5)


def _oracle(t) -> list[set]:
    return [rows_of("t", [i]) for i in np.flatnonzero(t.v > 0)]


def _statements(con) -> list[int]:
    """Count the ``duckdb_tables()`` statements the connection runs from now on: ``n[0]``."""
    n, query = [0], con._query_oids

    def counted():
        n[0] += 1
        return query()

    con._query_oids = counted
    return n


def test_requests_read_no_oids_while_the_count_stands(frames):
    t, _, tmp = frames
    con = connect(tmp)
    con.sql(QUERY)  # the catalog and its oids are read once
    reads = _statements(con)
    for _ in range(3):
        df = con.sql(QUERY)
        assert lineage_sets(df) == _oracle(t)
    assert reads[0] == 0
    con.execute("CREATE TABLE other AS SELECT 1 AS x")  # the count moves: read again, once
    df = con.sql(QUERY)
    assert lineage_sets(df) == _oracle(t)
    assert reads[0] == 1


def _replace_raw(con, tmp):
    con.raw.execute("CREATE OR REPLACE TABLE t AS SELECT * FROM t")


def _replace_cursor(con, tmp):
    con.raw.cursor().execute("CREATE OR REPLACE TABLE t AS SELECT * FROM t")


def _drop_and_load(con, tmp):
    con.raw.execute("DROP TABLE t")
    con.read_parquet(tmp / "t.parquet", name="t")


@pytest.mark.parametrize("replace", [_replace_raw, _replace_cursor, _drop_and_load])
def test_a_table_replaced_after_a_kept_read_is_reported(frames, replace):
    t, _, tmp = frames
    con = connect(tmp)
    df = con.sql(QUERY)
    assert lineage_sets(df)[:1] == _oracle(t)[:1]  # a request: the oids are kept at this count
    later = con.sql(QUERY)
    replace(con, tmp)  # same rows, a new table (a new oid)
    with pytest.raises(SourceChangedError, match="changed since"):
        later.tp.sources(rows=[0])


@pytest.mark.parametrize("replace", [_replace_raw, _replace_cursor])
def test_a_query_run_after_a_replacement_answers(frames, replace):
    """A replacement that keeps the columns (``__tp_rid`` too) keeps the cached catalog; the result of the
    query run after it records the new table's oid and answers (oracle), the earlier result raises."""
    t, _, tmp = frames
    con = connect(tmp)
    before = con.sql(QUERY)
    replace(con, tmp)
    after = con.sql(QUERY)  # nothing ran through the traced connection in between
    assert lineage_sets(after) == _oracle(t)
    with pytest.raises(SourceChangedError, match="changed since"):
        before.tp.sources(rows=[0])


def test_control_cached_oids_past_a_replacement_raise_for_a_new_result(frames):
    """The test above fails where the oids cached with the catalog are trusted past a move of the count:
    the new result records the replaced table's oid and its first request raises."""
    t, _, tmp = frames
    con = connect(tmp)
    con.sql(QUERY)
    con._oid_reads.stale = lambda: False
    _replace_raw(con, tmp)
    after = con.sql(QUERY)
    with pytest.raises(SourceChangedError, match="changed since"):
        after.tp.sources(rows=[0])


def test_a_table_replaced_through_another_connection_is_reported(frames, tmp_path):
    t, _, tmp = frames
    con = connect(tmp, database=str(tmp_path / "db.duckdb"))
    df = con.sql(QUERY)
    assert lineage_sets(df)[:1] == _oracle(t)[:1]
    other = con.raw.cursor()  # a second connection to the same database
    later = con.sql(QUERY)
    other.execute("CREATE OR REPLACE TABLE t AS SELECT * FROM t")
    other.close()
    with pytest.raises(SourceChangedError, match="changed since"):
        later.tp.sources(rows=[0])


def test_control_a_read_kept_past_a_replacement_would_miss_it(frames):
    """The tests above fail for a memo that ignores the count: with the count frozen, the replaced
    table's new oid is not seen and the request answers from the new table unchecked."""
    t, _, tmp = frames
    con = connect(tmp)
    con.sql(QUERY).tp.sources(rows=[0])
    con._oid_reads._count = lambda: 0
    con._oid_reads.read(con._query_oids)  # kept at the frozen count
    later = con.sql(QUERY)
    _replace_raw(con, tmp)
    later.tp.sources(rows=[0])  # no SourceChangedError: the check compared against the stale oids


class _Raw:
    """A stand-in DuckDB connection whose catalog count the test moves."""

    def __init__(self) -> None:
        self.count = 0

    def _catalog_version(self) -> int:
        return self.count


def test_oid_reads_unit():
    raw, calls = _Raw(), [0]

    def query():
        calls[0] += 1
        return {"t": 10 + calls[0]}

    reads = OidReads(raw)
    first = reads.read(query)
    assert reads.read(query) == first == {"t": 11} and calls[0] == 1
    reads.read(query)["t"] = -1  # a caller's copy: the kept read is unchanged
    assert reads.read(query) == {"t": 11}
    raw.count += 1
    assert reads.read(query) == {"t": 12} and calls[0] == 2

    def moving():  # the count moves while the read runs: that read is not kept
        raw.count += 1
        return query()

    raw.count += 1
    assert reads.read(moving) == {"t": 13}
    assert reads.read(query) == {"t": 14} and calls[0] == 4
    reads.forget()
    assert reads.read(query) == {"t": 15}
    bare = OidReads(object())  # no counter: every call reads
    assert bare.read(query) == {"t": 16} and bare.read(query) == {"t": 17}
