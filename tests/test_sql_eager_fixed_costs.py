"""Fixed costs of eager statements cut for short pipelines (the credit ETL at 20,000 applicants):

- a run of eager grouping ``CREATE TABLE ... AS`` (kept as members, ``sql.member_lists``) reads the
  table oids once, after its last statement, as a lazy one does (``sql.deferred_oids``);
- the check "is a transaction open on the raw connection" (two ``txid_current()`` statements) is skipped
  where none can be (``sql.autocommit``).

Oracle: brute force with pandas (the credit ETL's shape, as in ``test_sql_lazy_deferred_oids``): row ``i``
of ``SELECT t.*, a.n, b.s FROM t LEFT JOIN a USING (k) LEFT JOIN b USING (k)`` came from ``t`` row ``i``,
every ``t`` row and every ``u`` row with its ``k``.
"""

from __future__ import annotations

import numpy as np
import pytest
from _ctas_frames import CTAS_A, CTAS_B, JOINED, group_oracle, joined_oracle, write_frames
from _sql_oracle import lineage_sets, rows_of

import traceprop_frames as tpf
from traceprop_frames.sql.autocommit import Autocommit
from traceprop_frames.sql.deferred_oids import UNREAD
from traceprop_frames.sql.member_lists import MemberTable


@pytest.fixture
def frames(tmp_path):
    return write_frames(tmp_path, 11)


def _connect(tmp):
    con = tpf.connect(capture="eager")
    con.read_parquet(tmp / "t.parquet", name="t")
    con.read_parquet(tmp / "u.parquet", name="u")
    for s in [CTAS_A, CTAS_B, JOINED] * 2:  # planned once, then run from the kept plans
        con.execute(s)
    return con


def _count(con, name: str) -> list[int]:
    """Count calls of the connection's method ``name`` from now on."""
    n, f = [0], getattr(con, name)

    def counted(*a, **kw):
        n[0] += 1
        return f(*a, **kw)

    setattr(con, name, counted)
    return n


def test_a_run_of_member_ctas_reads_no_oids_until_needed(frames):
    """CTAS, CTAS, the joined query (its own BEGIN / COMMIT, query and list reads): no oid read; the
    records wait, and the oids read when they are needed (here: con.raw handed out) are the tables'."""
    t, u, tmp = frames
    con = _connect(tmp)
    for _ in range(3):
        reads = _count(con, "_read_oids")
        con.execute(CTAS_A)
        con.execute(CTAS_B)
        assert isinstance(con._pending["a"], MemberTable) and isinstance(con._pending["b"], MemberTable)
        df = con.sql(JOINED)
        assert reads[0] == 0 and sorted(r.name for r in con._deferred.records) == ["a", "b"]
        assert lineage_sets(df) == joined_oracle(t, u)
        del con._read_oids
    raw = con.raw  # handing it out reads the oids left waiting
    assert not con._deferred.records
    oids = dict(raw.execute("SELECT table_name, table_oid FROM duckdb_tables()").fetchall())
    for name in ("a", "b"):  # the oids recorded are the tables' oids
        assert con._pending[name].fingerprint[name][0] == oids[name]
    a = con.sql("SELECT k FROM a")
    assert lineage_sets(a) == group_oracle(t, "t", a.k)


@pytest.mark.parametrize("where", ["before the query", "after the query"])
def test_statement_through_a_cursor_around_the_joined_query(frames, where):
    """Something run on another connection while the oids wait: they are unknown (never another
    table's); the member tables still answer by their keys, the joined query as its oracle."""
    t, u, tmp = frames
    con = _connect(tmp)
    cursor = con._con.cursor()
    con.execute(CTAS_A)
    con.execute(CTAS_B)
    if where == "before the query":
        cursor.execute("CREATE TABLE other AS SELECT 1 AS x")
    df = con.sql(JOINED)
    if where == "after the query":
        cursor.execute("CREATE TABLE other AS SELECT 1 AS x")
        con.execute(CTAS_A)  # a's record is replaced by a new one; b's oid is no longer known
    assert con.raw is not None  # handing it out settles the waiting records
    assert con._pending["b"].fingerprint["b"][0] is UNREAD
    assert lineage_sets(df) == joined_oracle(t, u)
    assert lineage_sets(con.sql(JOINED)) == joined_oracle(t, u)
    b = con.sql("SELECT k FROM b")
    assert lineage_sets(b) == group_oracle(u, "u", b.k)


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE OR REPLACE TABLE a AS SELECT * FROM a WHERE k > 2",  # the table itself replaced
        "CREATE TABLE other AS SELECT 1 AS x",  # unrelated
    ],
)
def test_statement_through_a_cursor_between_two_runs(frames, statement):
    """The run's oids are no longer known; the member table still answers by its keys (as when the oids
    were read right after each CTAS): the lineage of every row it has, never another table's."""
    t, u, tmp = frames
    con = _connect(tmp)
    cursor = con._con.cursor()  # a second connection to the same database (con.raw would read the oids)
    con.execute(CTAS_A)  # the same text as before, run from its kept plan
    cursor.execute(statement)
    con.execute(CTAS_B)  # the run goes on, but a's oid is no longer known
    assert con._pending["a"].fingerprint["a"][0] is UNREAD
    a = con.sql("SELECT k, n FROM a")
    assert statement.startswith("CREATE TABLE") or (a.k > 2).all()
    assert lineage_sets(a) == group_oracle(t, "t", a.k)
    b = con.sql("SELECT k FROM b")  # made after it
    assert lineage_sets(b) == group_oracle(u, "u", b.k)


def test_table_replaced_through_raw_between_two_runs(frames):
    t, u, tmp = frames
    con = _connect(tmp)
    con.execute(CTAS_A)
    raw = con.raw  # handing it out reads the oids left waiting
    assert not con._deferred.records and con._pending["a"].fingerprint["a"][0] is not UNREAD
    raw.execute("CREATE OR REPLACE TABLE a AS SELECT * FROM a WHERE k > 2")
    a = con.sql("SELECT k, n FROM a")
    assert (a.k > 2).all() and lineage_sets(a) == group_oracle(t, "t", a.k)
    con.execute(CTAS_A)  # made again
    assert lineage_sets(con.sql(JOINED)) == joined_oracle(t, u)


def test_no_transaction_check_where_none_can_be_open(frames):
    t, u, tmp = frames
    con = _connect(tmp)
    checks = [0]
    raw = con._con
    con._con = _Counting(raw, checks)
    for _ in range(2):
        con.execute(CTAS_A)
        con.execute(CTAS_B)
        assert lineage_sets(con.sql(JOINED)) == joined_oracle(t, u)
    assert checks[0] == 0  # the joined query's own transaction began without asking


def test_a_transaction_opened_through_raw_between_two_runs_is_respected(frames):
    """The same text as before, after a BEGIN through con.raw: its own BEGIN is not tried (a failed BEGIN
    would abort the user's transaction), the rows it reads are the user's transaction's."""
    t, u, tmp = frames
    con = _connect(tmp)
    assert con._autocommit.known()
    con.raw.begin()
    assert not con._autocommit.known()
    con.raw.execute("DELETE FROM t WHERE k = 4")
    df = con.sql(JOINED)
    kept = t[t.k != 4]
    assert not (df["k"] == 4).any() and len(df) == len(kept)
    want = [
        rows_of("t", [i]) | rows_of("t", np.flatnonzero(t.k == k)) | rows_of("u", np.flatnonzero(u.k == k))
        for i, k in zip(kept.index, kept.k)
    ]
    want = [w - rows_of("t", np.flatnonzero(t.k == 4)) for w in want]
    assert sorted(map(sorted, lineage_sets(df))) == sorted(map(sorted, want))
    con.raw.commit()  # the user's transaction is still open and commits
    assert con.raw.execute("SELECT count(*) FROM t WHERE k = 4").fetchall()[0][0] == 0


def test_autocommit_mark_follows_the_catalog_count():
    import duckdb

    raw = duckdb.connect()
    mark = Autocommit(raw)
    assert not mark.known()  # nothing known yet: ask
    mark.mark()
    assert mark.known()
    raw.execute("SELECT 1")  # a query opens nothing
    assert mark.known()
    raw.begin()
    assert not mark.known()
    raw.commit()
    assert not mark.known()  # (only the caller knows that the transaction ended)
    mark.mark()
    raw.cursor().execute("CREATE TABLE x AS SELECT 1 AS y")  # another connection: the count moves too
    assert not mark.known()
    mark._count = None  # a DuckDB without the counter: always ask
    mark.mark()
    assert not mark.known()


class _Counting:
    """A DuckDB connection that counts ``SELECT txid_current()`` statements."""

    def __init__(self, raw, n: list[int]) -> None:
        self._raw, self._n = raw, n

    def execute(self, sql, *a, **kw):
        if "txid_current" in str(sql):
            self._n[0] += 1
        return self._raw.execute(sql, *a, **kw)

    def __getattr__(self, name):
        return getattr(self._raw, name)


def test_statement_through_a_cursor_during_the_joined_query(frames):
    """The catalog count moved by more than the query's own BEGIN and COMMIT: the oids are unknown."""
    t, u, tmp = frames
    con = _connect(tmp)
    cursor = con._con.cursor()
    read = con._read_by_refs

    def with_a_statement_between(*args):
        out = read(*args)
        cursor.execute("CREATE OR REPLACE TABLE other AS SELECT 1 AS x")
        return out

    con._read_by_refs = with_a_statement_between
    con.execute(CTAS_A)
    con.execute(CTAS_B)
    df = con.sql(JOINED)
    del con._read_by_refs
    assert con.raw is not None  # the records settle: the count moved by something else, oids unknown
    assert con._pending["a"].fingerprint["a"][0] is UNREAD and con._pending["b"].fingerprint["b"][0] is UNREAD
    assert lineage_sets(df) == joined_oracle(t, u)
