"""SQL lineage on tiny hand-checked tables: every expected lineage below is written out by hand."""

from __future__ import annotations

import warnings

import duckdb
import pandas as pd
import pytest

import traceprop_frames as tpf
from traceprop_frames.errors import MissingLineageWarning, UnsupportedOperationError, UnsupportedSQLError

# a.csv rows: 0:(1,10) 1:(1,20) 2:(2,30) 3:(3,40) 4:(NULL,50)     b.parquet rows: 0:(1,1.5) 1:(2,2.5) 2:(2,3.5) 3:(4,4.5)
A = pd.DataFrame({"k": pd.array([1, 1, 2, 3, None], dtype="Int64"), "v": [10, 20, 30, 40, 50]})
B = pd.DataFrame({"k": [1, 2, 2, 4], "w": [1.5, 2.5, 3.5, 4.5]})


@pytest.fixture()
def con(tmp_path):
    A.to_csv(tmp_path / "a.csv", index=False)
    B.to_parquet(tmp_path / "b.parquet")
    c = tpf.connect()
    c.read_csv(tmp_path / "a.csv", name="a")
    c.read_parquet(tmp_path / "b.parquet", name="b")
    plain = duckdb.connect()
    plain.execute(f"CREATE TABLE a AS SELECT * FROM read_csv('{tmp_path / 'a.csv'}')")
    plain.execute(f"CREATE TABLE b AS SELECT * FROM read_parquet('{tmp_path / 'b.parquet'}')")
    c.plain = plain
    yield c
    c.close()


def lineage(df) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Per row: (a rows, b rows)."""
    out = []
    for i in range(len(df)):
        src = {p.rsplit("/", 1)[-1]: r.tolist() for p, r in df.tp.sources(i).items()}
        out.append((tuple(src.get("a.csv", [])), tuple(src.get("b.parquet", []))))
    return out


CASES = [
    # (query with a total ORDER BY, expected (a rows, b rows) per output row)
    ("SELECT * FROM a WHERE v > 20 ORDER BY v", [((2,), ()), ((3,), ()), ((4,), ())]),
    (
        "SELECT a.v, b.w FROM a JOIN b USING (k) ORDER BY v, w",
        [((0,), (0,)), ((1,), (0,)), ((2,), (1,)), ((2,), (2,))],
    ),
    ("SELECT a.v, b.w FROM a, b WHERE a.k = b.k AND w > 3 ORDER BY v", [((2,), (2,))]),
    (
        "SELECT a.v, b.w FROM a LEFT JOIN b ON a.k = b.k AND b.w < 3 ORDER BY v",
        [((0,), (0,)), ((1,), (0,)), ((2,), (1,)), ((3,), ()), ((4,), ())],
    ),
    (
        "SELECT a.v, b.w FROM a RIGHT JOIN b ON a.k = b.k WHERE b.k > 1 ORDER BY w",
        [((2,), (1,)), ((2,), (2,)), ((), (3,))],
    ),
    (
        "SELECT a.v, b.w FROM a FULL JOIN b ON a.k = b.k AND a.v < 15 ORDER BY v, w",
        [((0,), (0,)), ((1,), ()), ((2,), ()), ((3,), ()), ((4,), ()), ((), (1,)), ((), (2,)), ((), (3,))],
    ),
    ("SELECT count(*) AS n FROM a CROSS JOIN b WHERE a.v = 10", [((0,), (0, 1, 2, 3))]),
    (
        "SELECT k, sum(v) AS s FROM a GROUP BY k ORDER BY k",
        [((0, 1), ()), ((2,), ()), ((3,), ()), ((4,), ())],
    ),
    ("SELECT k, count(*) AS n FROM a GROUP BY k HAVING count(*) > 1", [((0, 1), ())]),
    ("SELECT max(w) AS m FROM b", [((), (0, 1, 2, 3))]),
    ("SELECT count(*) AS n FROM b WHERE w > 100", [((), ())]),
    ("SELECT DISTINCT k FROM b ORDER BY k", [((), (0,)), ((), (1, 2)), ((), (3,))]),
    (
        "SELECT k FROM a UNION SELECT k FROM b ORDER BY k",
        [((0, 1), (0,)), ((2,), (1, 2)), ((3,), ()), ((), (3,)), ((4,), ())],
    ),
    (
        "SELECT k FROM a WHERE v < 25 UNION ALL SELECT k FROM b WHERE w > 4 ORDER BY k",
        [((0,), ()), ((1,), ()), ((), (3,))],
    ),
    ("SELECT k FROM a INTERSECT SELECT k FROM b ORDER BY k", [((0, 1), (0,)), ((2,), (1, 2))]),
    ("SELECT k FROM b EXCEPT SELECT k FROM a ORDER BY k", [((), (3,))]),
    (
        "WITH g AS (SELECT k, sum(w) AS s FROM b GROUP BY k), h AS (SELECT * FROM g WHERE s > 2) "
        "SELECT a.v, h.s FROM a JOIN h USING (k) ORDER BY v",
        [((2,), (1, 2))],
    ),
    (
        "SELECT x.kk FROM (SELECT k, v FROM a WHERE v >= 40) AS x(kk, vv) ORDER BY vv",
        [((3,), ()), ((4,), ())],
    ),
    (
        # a row number reads every row ordered before the row (v DESC: the larger v) and its peers
        "SELECT v, row_number() OVER (ORDER BY v DESC) AS r FROM a ORDER BY v LIMIT 2",
        [((0, 1, 2, 3, 4), ()), ((1, 2, 3, 4), ())],
    ),
    ("SELECT * EXCLUDE (v) REPLACE (k * 2 AS k) FROM a WHERE v = 30", [((2,), ())]),
    ("SELECT v FROM a ANTI JOIN b ON a.k = b.k ORDER BY v", [((3,), ()), ((4,), ())]),
    ("SELECT DISTINCT count(*) AS n FROM a GROUP BY k ORDER BY n", [((2, 3, 4), ()), ((0, 1), ())]),
    (
        "WITH RECURSIVE r(n, v) AS (SELECT 1, v FROM a WHERE v = 10 UNION ALL SELECT n + 1, v FROM r WHERE n < 3) "
        "SELECT n FROM r ORDER BY n",
        [((0,), ()), ((0,), ()), ((0,), ())],
    ),
    (
        "SELECT v FROM a QUALIFY rank() OVER (PARTITION BY k ORDER BY v DESC) = 1 ORDER BY v",
        [((1,), ()), ((2,), ()), ((3,), ()), ((4,), ())],
    ),
    # subqueries: EXISTS / IN witnesses, NOT EXISTS / NOT IN nothing, scalar: every row read
    (
        "SELECT v FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.k = a.k) ORDER BY v",
        [((0,), (0,)), ((1,), (0,)), ((2,), (1, 2))],
    ),
    (
        "SELECT v FROM a WHERE NOT EXISTS (SELECT 1 FROM b WHERE b.k = a.k) ORDER BY v",
        [((3,), ()), ((4,), ())],
    ),
    ("SELECT v FROM a WHERE k IN (SELECT k FROM b WHERE w > 2) ORDER BY v", [((2,), (1, 2))]),
    ("SELECT v FROM a WHERE k NOT IN (SELECT k FROM b) ORDER BY v", [((3,), ())]),
    (
        "SELECT v FROM a WHERE v > (SELECT 10 * min(w) FROM b WHERE k = 2) ORDER BY v",
        [((2,), (1, 2)), ((3,), (1, 2)), ((4,), (1, 2))],
    ),
    (
        "SELECT w, (SELECT count(*) FROM a WHERE a.k = b.k) AS n FROM b ORDER BY w",
        [((0, 1), (0,)), ((2,), (1,)), ((2,), (2,)), ((), (3,))],
    ),
    (
        "SELECT k, count(*) AS n FROM b GROUP BY k HAVING count(*) >= (SELECT count(*) FROM a WHERE v = 30) + 1",
        [((2,), (1, 2))],
    ),
    ("SELECT sum(v) AS s FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.k = a.k AND b.w > 3)", [((2,), (2,))]),
    # SEMI JOIN = EXISTS: the witnessing b rows join; DISTINCT ON: the kept row's own rows
    ("SELECT v FROM a SEMI JOIN b ON a.k = b.k ORDER BY v", [((0,), (0,)), ((1,), (0,)), ((2,), (1, 2))]),
    (
        "SELECT DISTINCT ON (k) k, v FROM a ORDER BY k, v DESC",
        [((1,), ()), ((2,), ()), ((3,), ()), ((4,), ())],
    ),
]


@pytest.mark.parametrize(("query", "expected"), CASES, ids=[c[0][:60] for c in CASES])
def test_lineage_and_result(con, query, expected):
    df = con.sql(query)
    pd.testing.assert_frame_equal(df.reset_index(drop=True), con.plain.sql(query).df())
    assert lineage(df) == expected


def test_hidden_columns_never_show(con):
    for q in ["SELECT * FROM a", "SELECT a.*, b.* FROM a JOIN b USING (k)", "SELECT * FROM (SELECT * FROM a) t",
              "WITH c AS (SELECT * FROM b) SELECT * FROM c", "SELECT DISTINCT * FROM b"]:  # fmt: skip
        df = con.sql(q)
        assert not [c for c in df.columns if str(c).startswith("__tp")], q
        assert list(df.columns) == list(con.plain.sql(q).df().columns)


def test_ctas_view_insert_keep_lineage(con):
    con.execute("CREATE TABLE agg AS SELECT k, count(*) AS n, sum(w) AS s FROM b GROUP BY k")
    con.execute("CREATE VIEW big AS SELECT * FROM a WHERE v >= 30")
    df = con.sql("SELECT a.v, agg.n FROM big a LEFT JOIN agg USING (k) ORDER BY v")
    assert lineage(df) == [((2,), (1, 2)), ((3,), ()), ((4,), ())]
    con.execute("INSERT INTO agg SELECT k, 1, v FROM a WHERE v = 10")
    con.execute("INSERT INTO agg (k, n, s) VALUES (9, 0, 0)")
    df = con.sql("SELECT k, n FROM agg ORDER BY k, n, s")
    assert lineage(df) == [((), (0,)), ((0,), ()), ((), (1, 2)), ((), (3,)), ((), ())]
    assert "sql" in df.tp.ops()


def test_register_traced_frame(con, tmp_path):
    B.to_csv(tmp_path / "b2.csv", index=False)
    prev = tpf.read_csv(tmp_path / "b2.csv")
    grouped = prev.tp.groupby("k").agg(total=("w", "sum"))  # row k=2 depends on b2.csv rows 1 and 2
    con.register("prev", grouped)
    df = con.sql("SELECT a.v, p.total FROM a JOIN prev p USING (k) ORDER BY v")
    got = [sorted(df.tp.sources(i)[str(tmp_path / "b2.csv")].tolist()) for i in range(len(df))]
    assert got == [[0], [0], [1, 2]]
    assert df.tp.sources(2)[str(tmp_path / "a.csv")].tolist() == [2]


def test_table_without_lineage_warns_once(con):
    con.raw.execute("CREATE TABLE plain_t AS SELECT 1 AS k, 'x' AS tag")
    df = con.sql("SELECT a.v, p.tag FROM a JOIN plain_t p USING (k)")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        src = df.tp.sources()
    hits = [w for w in rec if issubclass(w.category, MissingLineageWarning)]
    assert len(hits) == 1 and "plain_t" in str(hits[0].message)
    assert [r.tolist() for r in src.values()] == [[0, 1]]


def test_errors(con):
    with pytest.raises(duckdb.ParserException, match="syntax error"):
        con.sql("SELEC v FROM a")
    with pytest.raises(duckdb.CatalogException):
        con.sql("SELECT * FROM no_such_table")
    for q, construct in [("SELECT v FROM a SEMI JOIN b USING (k)", "SEMI JOIN"),
                         ("SELECT COLUMNS('v') FROM a", "COLUMNS")]:  # fmt: skip
        with pytest.raises(UnsupportedSQLError, match=construct):
            con.sql(q)
    with pytest.raises(UnsupportedSQLError, match="loaded source table"):
        con.execute("INSERT INTO a SELECT * FROM a")
    # a table made from a source row for row keeps its row ids: refused too, the message says what to write
    con.execute("CREATE TABLE a_kept AS SELECT * FROM a WHERE k > 1")
    with pytest.raises(
        UnsupportedSQLError, match=r"one for one\); make the combined table instead.*UNION ALL"
    ):
        con.execute("INSERT INTO a_kept SELECT * FROM a WHERE k <= 1")
    with pytest.raises(UnsupportedOperationError, match="skip"):
        con.read_csv("whatever.csv", name="w", skip=2)


def test_rewrite_and_raw(con):
    sql = con.rewrite("SELECT k, count(*) FROM b GROUP BY k")
    assert "__tp_rid" in sql and "LIST(" in sql.upper()
    assert isinstance(con.raw, duckdb.DuckDBPyConnection)


def test_forward_and_trace(con, tmp_path):
    df = con.sql("SELECT k, sum(v) AS s FROM a GROUP BY k ORDER BY k")
    assert df.tp.rows_from_source(str(tmp_path / "a.csv"), [1]).tolist() == [0]
    rows = df.tp.trace(0)
    assert [r.row for r in rows] == [0, 1] and all(r.sha256_ok for r in rows)


def test_tables_changed_through_raw_are_seen(con, tmp_path):
    con.sql("SELECT 1")  # the catalog is cached now
    con.raw.execute("CREATE TABLE copy_a AS SELECT * FROM a WHERE v > 30")  # keeps the hidden id column
    df = con.sql("SELECT * FROM copy_a ORDER BY v")
    assert list(df.columns) == ["k", "v"]
    assert df.tp.sources()[str(tmp_path / "a.csv")].tolist() == [3, 4]
    con.raw.execute("DROP TABLE copy_a")
    con.raw.execute("CREATE TABLE copy_a AS SELECT 1 AS k")  # same name, no lineage now
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert con.sql("SELECT * FROM copy_a").tp.sources() == {}


def test_large_csv_row_numbers_are_file_rows(tmp_path):
    n = 300_000
    pd.DataFrame({"i": range(n), "g": [i % 7 for i in range(n)]}).to_csv(tmp_path / "big.csv", index=False)
    con = tpf.connect()
    con.read_csv(tmp_path / "big.csv", name="big")
    df = con.sql("SELECT i FROM big WHERE g = 3")
    lin = df.tp.lineage()
    assert (lin.ids & ((1 << 40) - 1)).tolist() == df["i"].tolist()


def test_parameters_reach_subquery_witnesses(con):
    q = "SELECT v FROM a WHERE v > ? AND k IN (SELECT k FROM b WHERE w > ?) ORDER BY v"
    df = con.sql(q, [5, 2.0])
    pd.testing.assert_frame_equal(df.reset_index(drop=True), con.plain.sql(q, params=[5, 2.0]).df())
    assert lineage(df) == [((2,), (1, 2))]
    df = con.sql("SELECT v FROM a WHERE v = $x", {"x": 30})
    assert lineage(df) == [((2,), ())]
