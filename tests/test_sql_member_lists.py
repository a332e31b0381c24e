"""Eager grouping ``CREATE TABLE ... AS`` kept as its groups' members (``sql.member_lists``).

Oracles: brute force (pandas: the source rows with the group's key that pass the statement's filter,
as the file was when the table was made) for every reader of the table; the same statements with the
path switched off (DuckDB's ``list()``, as before) for frames and lineage. Every test asserts which path
ran.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import traceprop_frames as tpf
from traceprop_frames.errors import SourceChangedError
from traceprop_frames.sql import member_lists
from traceprop_frames.sql.member_lists import MemberTable


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(21)
    t = pd.DataFrame({"id": np.arange(50), "k": rng.integers(0, 10, 50), "v": rng.normal(size=50).round(3)})
    k = rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 40, 41, None], 120)  # a NULL group; keys sparse above 7
    u = pd.DataFrame({"k": k, "w": rng.integers(0, 100, 120), "s": rng.choice(["a", "b"], 120)})
    t.to_csv(tmp_path / "t.csv", index=False)
    u.to_parquet(tmp_path / "u.parquet")
    return t, u, tmp_path


def _connect(tmp, members: bool = True, capture: str = "eager"):
    con = tpf.connect(capture=capture)
    if not members:
        con._member_plan = lambda *a: None
    con.read_csv(tmp / "t.csv", name="t")
    con.read_parquet(tmp / "u.parquet", name="u")
    return con


def _members(con, table: str = "agg") -> bool:
    return isinstance(con._pending.get(table), MemberTable)


# (CTAS body, the u rows a group of key value ``key`` has: brute force in pandas)
AGGS = [
    ("SELECT k, sum(w) AS sw, count(*) AS n FROM u GROUP BY k", lambda u, key: _eq(u["k"], key)),
    ("SELECT k, count(*) AS n FROM u WHERE w > 30 GROUP BY k", lambda u, key: _eq(u["k"], key) & (u["w"] > 30)),
    ("SELECT k, max(w) AS mw FROM u WHERE s = 'a' GROUP BY k HAVING count(*) > 2",
     lambda u, key: _eq(u["k"], key) & (u["s"] == "a")),
    ("SELECT k % 3 AS k, count(*) AS n FROM u GROUP BY k % 3", lambda u, key: _eq(u["k"] % 3, key)),
]  # fmt: skip


def _eq(col: pd.Series, key) -> np.ndarray:
    col = col.astype("Float64")
    return (col.isna() if pd.isna(key) else (col == key).fillna(False)).to_numpy(dtype=bool)


def _sets(df: pd.DataFrame, path: str) -> list[list[int]]:
    lin = df.tp.lineage()
    out = []
    for i in range(len(df)):
        ids = df.tp.sources(rows=[i]).get(path, np.zeros(0, dtype=np.int64))
        assert len(lin.row_ids(i)) == sum(len(v) for v in df.tp.sources(rows=[i]).values())  # no id twice
        out.append(sorted(int(x) for x in ids))
    return out


@pytest.mark.parametrize("body,members_of", AGGS)
def test_every_reader_matches_brute_force(data, body, members_of):
    """The join by rowid (members grouped in numpy) and a reader that fills the table's lists (DuckDB)."""
    t, u, tmp = data
    up = str(tmp / "u.parquet")
    con = _connect(tmp)
    con.execute(f"CREATE TABLE agg AS {body}")
    assert _members(con)
    join = "SELECT t.id, a.k AS ak FROM t LEFT JOIN agg a ON t.k = a.k"
    df = con.sql(join)
    assert _members(con)  # read by rowid: not filled
    want = [np.flatnonzero(members_of(u, ak)).tolist() if not pd.isna(ak) else [] for ak in df["ak"]]
    assert _sets(df, up) == want
    df = con.sql("SELECT k, count(*) AS c FROM agg GROUP BY k")  # aggregates: fills the lists first
    assert (
        not _members(con)
        and con.raw.execute("SELECT count(*) FROM agg WHERE __tp_lin IS NULL").fetchall()[0][0] == 0
    )
    assert _sets(df, up) == [np.flatnonzero(members_of(u, k)).tolist() for k in df["k"]]


@pytest.mark.parametrize("body", [b for b, _ in AGGS])
def test_same_frames_and_lineage_as_list(data, body):
    t, u, tmp = data
    queries = [
        "SELECT t.*, a.* FROM t LEFT JOIN agg a USING (k) ORDER BY t.id",
        "SELECT t.id, a.k FROM t JOIN agg a USING (k) JOIN agg b ON b.k = t.k ORDER BY t.id",  # twice
        "SELECT * FROM agg ORDER BY k",
        "SELECT count(*) AS c, sum(k) AS s FROM agg",
    ]
    out = []
    for members in (True, False):
        con = _connect(tmp, members)
        con.execute(f"CREATE OR REPLACE TABLE agg AS {body}")
        assert _members(con) == members
        res = []
        for q in queries:
            df = con.sql(q)
            res.append(
                (df.reset_index(drop=True), [sorted(df.tp.lineage().row_ids(i)) for i in range(len(df))])
            )
        out.append(res)
    for (fa, la), (fb, lb) in zip(*out):
        pd.testing.assert_frame_equal(fa, fb)
        assert la == lb


def test_lineage_is_fixed_when_the_table_is_made(data, tmp_path):
    """The source reloaded with other rows after the CTAS (and after a result was captured): the table's
    lineage, and the captured result's, are those of the rows it was made from."""
    t, u, tmp = data
    up = str(tmp / "u.parquet")
    con = _connect(tmp)
    con.execute("CREATE TABLE agg AS SELECT k, count(*) AS n FROM u GROUP BY k")
    df = con.sql("SELECT t.id, a.k AS ak FROM t JOIN agg a USING (k)")
    con.raw.execute("DELETE FROM u WHERE w > 10")  # behind the connection's back: the snapshot holds
    con.execute("CREATE OR REPLACE TABLE agg AS SELECT k, count(*) AS n FROM u WHERE w < 0 GROUP BY k")
    assert _sets(df, up) == [np.flatnonzero(_eq(u["k"], ak)).tolist() for ak in df["ak"]]
    assert con.sql("SELECT * FROM agg").empty


def test_table_changed_through_raw_raises_when_read(data):
    """A row whose key no member has (changed through con.raw): both readers raise, none answers []."""
    t, u, tmp = data
    for query in ("SELECT k, n FROM agg", "SELECT k, count(*) AS c FROM agg GROUP BY k"):
        con = _connect(tmp)
        con.execute("CREATE TABLE agg AS SELECT k, count(*) AS n FROM u GROUP BY k")
        con.raw.execute("UPDATE agg SET k = 1000 WHERE k = 2")  # a key no member has
        with pytest.raises(SourceChangedError, match="changed outside this connection"):
            con.sql(query).tp.lineage().materialize()


def test_rows_deleted_through_raw_keep_the_others(data):
    t, u, tmp = data
    up = str(tmp / "u.parquet")
    con = _connect(tmp)
    con.execute("CREATE TABLE agg AS SELECT k, count(*) AS n FROM u GROUP BY k")
    con.raw.execute("DELETE FROM agg WHERE k = 3")
    df = con.sql("SELECT t.id, a.k AS ak FROM t JOIN agg a USING (k)")
    assert not (df["ak"] == 3).any() and len(df)
    assert _sets(df, up) == [np.flatnonzero(_eq(u["k"], ak)).tolist() for ak in df["ak"]]


def test_writes_fill_first_and_drop_forgets(data):
    t, u, tmp = data
    up = str(tmp / "u.parquet")
    con = _connect(tmp)
    con.execute("CREATE TABLE agg AS SELECT k, count(*) AS n FROM u GROUP BY k")
    con.execute("INSERT INTO agg SELECT 99, count(*) FROM u WHERE w > 90")
    assert not _members(con)
    df = con.sql("SELECT k, n FROM agg ORDER BY k NULLS FIRST")
    want = [np.flatnonzero(_eq(u["k"], k)).tolist() for k in df["k"][:-1]]
    want.append(np.flatnonzero(u["w"] > 90).tolist())
    assert df["k"].iloc[-1] == 99 and _sets(df, up) == want
    con.execute("CREATE OR REPLACE TABLE agg AS SELECT k, count(*) AS n FROM u GROUP BY k")
    assert _members(con)
    con.execute("DROP TABLE agg")
    assert "agg" not in con._pending


def test_transactions(data):
    """Inside BEGIN through the connection: lists (as before). A member table filled inside a transaction
    that rolls back is pending again, with its members."""
    t, u, tmp = data
    up = str(tmp / "u.parquet")
    con = _connect(tmp)
    con.execute("BEGIN")
    con.execute("CREATE TABLE agg AS SELECT k, count(*) AS n FROM u GROUP BY k")
    assert not _members(con)
    con.execute("COMMIT")
    con.execute("CREATE OR REPLACE TABLE agg AS SELECT k, count(*) AS n FROM u GROUP BY k")
    assert _members(con)
    con.execute("BEGIN")
    con.sql("SELECT k, count(*) AS c FROM agg GROUP BY k")  # fills the lists
    assert not _members(con)
    con.execute("ROLLBACK")
    assert _members(con)
    df = con.sql("SELECT k, n FROM agg")
    assert _sets(df, up) == [np.flatnonzero(_eq(u["k"], k)).tolist() for k in df["k"]]


def test_lazy_reads_an_eager_member_table(data):
    t, u, tmp = data
    up = str(tmp / "u.parquet")
    con = _connect(tmp)
    con.execute("CREATE TABLE agg AS SELECT k, count(*) AS n FROM u GROUP BY k")
    con.capture = "lazy"
    df = con.sql("SELECT t.id, a.k AS ak FROM t JOIN agg a USING (k)")
    assert _sets(df, up) == [np.flatnonzero(_eq(u["k"], ak)).tolist() for ak in df["ak"]]


@pytest.mark.parametrize(
    "body",
    [
        "SELECT s, count(*) AS n FROM u GROUP BY s",  # a VARCHAR key
        "SELECT k, s, count(*) AS n FROM u GROUP BY k, s",  # two keys
        "SELECT t.k, count(*) AS n FROM t JOIN u USING (k) GROUP BY t.k",  # a join
        "SELECT k, count(*) AS n FROM u WHERE w > (SELECT avg(w) FROM u) GROUP BY k",  # a subquery
        "SELECT count(*) AS n FROM u",  # no GROUP BY
        "SELECT k, sum(w) AS rowid FROM u GROUP BY k",  # a column that hides DuckDB's rowid
        "SELECT k, count(*) AS n FROM u USING SAMPLE 50 PERCENT (bernoulli) GROUP BY k",  # a sample
        "SELECT k, count(*) AS n FROM u WHERE random() < 0.5 GROUP BY k",  # volatile filters
        "SELECT k, count(*) AS n FROM u WHERE now() > TIMESTAMP '2000-01-01' GROUP BY k",
        "SELECT k, count(*) AS n FROM u WHERE gen_random_uuid() IS NOT NULL GROUP BY k",
    ],
)
def test_other_shapes_keep_lists(data, body):
    t, u, tmp = data
    con = _connect(tmp)
    con.execute(f"CREATE TABLE agg AS {body}")
    assert not _members(con) and "agg" not in con._pending
    assert con.raw.execute("SELECT count(*) FROM agg WHERE __tp_lin IS NULL").fetchall()[0][0] == 0


def test_group_members_order_and_null_group():
    """``group_members``: each row's members in their order, the NULL key's row gets the NULL members,
    keys absent from the table are dropped; dense and sparse keys alike."""
    import pyarrow as pa

    for keys in ([5, None, 7, 6], [5_000_000_000, None, 7, -3]):
        k = keys
        members = pa.table(
            {"k": pa.array([k[2], None, k[0], 12345, k[2], None, k[3]]), "r": pa.array([1, 2, 3, 4, 5, 6, 7])}
        )
        off, ids = member_lists.group_members(members, pa.chunked_array([pa.array(k)]))
        rows = [ids[off[i] : off[i + 1]].tolist() for i in range(len(k))]
        assert rows == [[3], [2, 6], [1, 5], [7]]
