"""Constructs that once came back different from plain DuckDB (found by replaying DuckDB's own tests, see
``tests/sql_compat``): each query's traced answer must equal plain DuckDB's on the same data, or the query
must be refused with :class:`UnsupportedSQLError` naming what to write instead.
"""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

import traceprop_frames as tpf
from traceprop_frames.errors import UnsupportedSQLError

SETUP = [
    "CREATE TABLE t1 AS SELECT * FROM (VALUES (3, 3), (3, 3), (1, 1)) v(x, y)",
    "CREATE TABLE t2 AS SELECT * FROM (VALUES (2, 2), (4, 4)) v(y, z)",
    "CREATE TABLE n AS SELECT * FROM (VALUES (1, NULL, 'a'), (2, 20, NULL), (3, NULL, 'c'), (4, 10, 'd'),"
    " (5, 30, 'e')) v(i, j, s)",
    "CREATE TABLE k AS SELECT * FROM (VALUES (1, 'x'), (3, 'y'), (9, 'z')) v(i, w)",
]
MACROS = ["CREATE MACRO max_plus_one(x) AS max(x) + 1"]

SAME = [
    # UNION [ALL] BY NAME: columns match by name, the right side's new columns come last
    "SELECT x, y FROM t1 UNION ALL BY NAME SELECT y, z FROM t2",
    "SELECT x, y FROM t1 UNION ALL BY NAME SELECT y, z FROM t2 ORDER BY y",
    "SELECT x, y FROM t1 UNION ALL BY NAME SELECT y, z FROM t2 ORDER BY 3 NULLS FIRST, 1",
    "SELECT x, y FROM t1 UNION BY NAME SELECT y, z FROM t2",
    "SELECT 1 UNION ALL BY NAME SELECT x, y FROM t1 UNION ALL BY NAME SELECT y, z FROM t2",
    "SELECT 1, 2 FROM t1 UNION SELECT x, y FROM t1 UNION ALL BY NAME SELECT y, z FROM t2",
    "SELECT x AS a FROM t1 UNION ALL BY NAME SELECT x FROM t1",
    # NULLS FIRST / LAST written by the user, under a session default that differs
    "SELECT i, j FROM n ORDER BY j NULLS LAST, i LIMIT 2",
    "SELECT i, j FROM n ORDER BY j DESC NULLS LAST, i LIMIT 2",
    "SELECT i, row_number() OVER (ORDER BY j NULLS LAST, i) AS r FROM n",
    "SELECT i, (SELECT n2.i FROM n n2 WHERE n2.i <> n.i ORDER BY n2.j NULLS LAST, n2.i LIMIT 1) AS o FROM n",
    "SELECT list(j ORDER BY j NULLS LAST) AS l FROM n",
    # IGNORE NULLS on first / last window aggregates
    "SELECT i, last(j IGNORE NULLS) OVER (ORDER BY i) AS l FROM n",
    "SELECT i, first(j IGNORE NULLS) OVER (ORDER BY i ROWS BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING) AS f FROM n",
    "SELECT i, last_value(j IGNORE NULLS) OVER (ORDER BY i) AS l FROM n",
    # the hidden column: never in * LIKE, row structs, catalog functions
    "SELECT * LIKE '%' FROM n",
    "SELECT * SIMILAR TO '.*' FROM n",
    "SELECT * NOT LIKE 'j%' FROM n",
    "SELECT n FROM n",
    "SELECT (SELECT n) AS r FROM n",
    "SELECT k FROM n LEFT JOIN k USING (i)",
    # column alias lists shorter than the columns; VALUES
    "SELECT * FROM (SELECT 42, 41 AS x) v1(a)",
    "SELECT * FROM n v(a)",
    "SELECT v.a, v.j FROM n v(a) WHERE a > 1",
    "SELECT * FROM (SELECT i, j FROM n) v(a) ORDER BY a",
    "SELECT * FROM n v(a, b, c)",
    "WITH c(a) AS (SELECT i, j FROM n) SELECT * FROM c",
    "SELECT * FROM (VALUES (1, 2), (3, 4)), k",
    "SELECT * FROM (VALUES (1, 2), (3, 4)) v(a), k",
    # NATURAL JOIN, as USING (the columns both sides have)
    "SELECT * FROM n NATURAL JOIN k",
    "SELECT * FROM n NATURAL LEFT JOIN k",
    "SELECT * FROM k NATURAL FULL JOIN (SELECT i, j FROM n) s",
    "SELECT * FROM t1, n NATURAL JOIN k",
    "SELECT * FROM n NATURAL JOIN range(3) r(i)",
    "WITH c(a) AS (SELECT i, j FROM n) SELECT * FROM c NATURAL JOIN range(3) r(a)",
    "SELECT * FROM (n NATURAL JOIN k) NATURAL JOIN n AS n2",
    "WITH c AS (SELECT i, 'q' AS w FROM n) SELECT * FROM k NATURAL JOIN c",
    # an ANTI JOIN's right side: no columns under *, no witnesses from its condition
    "SELECT * FROM n ANTI JOIN k ON n.i = k.i",
    "SELECT * FROM n ANTI JOIN k ON EXISTS (SELECT 1 WHERE n.i = k.i AND k.w <> 'z')",
    # IN a list of NULL; a comment after the last statement
    "SELECT i IN (SELECT NULL) AS b FROM n",
    "SELECT i FROM n WHERE j > 10; -- a trailing comment",
    # tuples IN a subquery; subqueries in LIMIT; slices; reduce's argument order; names with hidden stars
    "SELECT (i, j) IN (SELECT i, j FROM n WHERE i > 2) AS b FROM n",
    "SELECT row(i, 1) IN (SELECT i, 1 FROM n WHERE i < 3) AS b FROM n",
    "SELECT i FROM n ORDER BY i LIMIT (SELECT count(*) - 2 FROM k)",
    "SELECT [i, i + 1, i + 2][:j // 10] AS l FROM n",
    "SELECT reduce([i, 2, 3], lambda x, y: x * y, 10) AS r FROM n",
    "SELECT 2 > ANY (SELECT * EXCLUDE (j, s) FROM n)",
    "SELECT i = ANY (SELECT * EXCLUDE (w) FROM k), i FROM n",
    # unnamed subqueries, aliased parenthesised joins, nested EXISTS in an outer join's condition
    "SELECT unnamed_subquery.a, unnamed_subquery2.i FROM (SELECT 42 a), (SELECT i FROM n)",
    "SELECT l.i, l.w FROM (n JOIN k USING (i)) l WHERE l.i > 1",
    "SELECT n.i, k.w FROM n LEFT JOIN k ON EXISTS (SELECT 1 FROM t1 WHERE EXISTS (SELECT 1 WHERE EXISTS ("
    "SELECT 1 FROM t2 WHERE t2.y = t1.x + 1 AND n.i = k.i AND t2.z > t1.y)))",
    # a named window ordered by a SELECT alias
    "SELECT i, i % 3 AS g, lead(i) OVER w AS a, sum(i) OVER w AS b FROM n WINDOW w AS (ORDER BY g, i) ORDER BY i",
    # LATERAL subqueries and table functions
    "SELECT * FROM n, LATERAL (SELECT n.i + k.i AS q, k.w FROM k WHERE k.i <= n.i) s(q2) ORDER BY ALL",
    "SELECT * FROM n LEFT JOIN LATERAL (SELECT k.w FROM k WHERE k.i > n.i) s ON true ORDER BY ALL",
    "SELECT n.i, x FROM n, LATERAL unnest([n.i, 5]) u(x) ORDER BY ALL",
    # windows whose offset is known only at run time
    "SELECT i, lag(i, i % 2) OVER (ORDER BY i) AS l, lead(i, -1) OVER (ORDER BY i) AS m FROM n",
    # aggregate states; names DuckDB derives from a subquery's SQL text
    "SELECT finalize(avg(i) EXPORT_STATE) AS a FROM n",
    "SELECT j // 10 AS g, finalize(combine(sum(i) EXPORT_STATE, sum(i) EXPORT_STATE)) AS s FROM n GROUP BY g",
    "SELECT * FROM (SELECT list(i ORDER BY i), i::VARCHAR FROM n GROUP BY i)",
    # FROM-first SQL, VALUES as a query, * LIKE ... AS, set operations ordered by a column of SELECT *
    "FROM n v(a), k u WHERE v.a = u.i",
    "FROM (SELECT 42) t(x), (SELECT x * 2 AS y QUALIFY row_number() OVER () < 10)",
    "VALUES (1, 3), (2, 4)",
    "(VALUES (1, 3), (2, 4))",
    "SELECT i, j FROM n UNION ALL VALUES (7, 8)",
    "SELECT * LIKE 'j%' AS val FROM n",
    "SELECT * FROM k UNION SELECT * FROM k ORDER BY w",
    # a correlated subquery as a GROUP BY key; a macro that aggregates
    "SELECT EXISTS (SELECT 1 FROM k WHERE k.i = n.i) AS g, count(*) AS c FROM n GROUP BY g ORDER BY g",
    "SELECT max_plus_one(i) AS m FROM n",
    "SELECT i FROM n ORDER BY i LIMIT (30 + 10) %",
    "SELECT * ILIKE 'J%' FROM n",
    "SELECT i // 2 AS p, i, string_agg(i, ',' ORDER BY i DESC) OVER (PARTITION BY p) AS c FROM n ORDER BY ALL",
    "SELECT 'q' IN (SELECT w FROM k WHERE w IS NOT NULL)",
    # parenthesised joins of VALUES
    "SELECT l.a FROM ((VALUES (1), (2)) l(a) FULL JOIN (VALUES (1), (3)) r(b) ON l.a = r.b) CROSS JOIN k",
    # an aliased parenthesised join whose first item is a subquery; a lateral subquery reading no table
    "SELECT * FROM ((SELECT i // 2 AS a FROM n) s JOIN k ON a = k.i) j, LATERAL (SELECT a) s2(b)",
    "SELECT * FROM n, t1, (SELECT DISTINCT t1.x AS a, n.j AS b FROM t1) AS s CROSS JOIN (SELECT n.i AS c)",
    # string_agg's exported state keeps its name (to_aggregate_state names it)
    "SELECT i % 2 AS g, finalize(combine(string_agg(s, '-') EXPORT_STATE, to_aggregate_state(string_agg(s, "
    "'-') EXPORT_STATE, 'string_agg', ['VARCHAR', 'VARCHAR'], [NULL, '-']))) AS c FROM n GROUP BY g",
    "SELECT group_concat(s ORDER BY i) AS a, listagg(s, ';') AS b FROM n",
    # a set operation's ORDER BY naming one branch's column: that column's position
    "SELECT x FROM t1 UNION SELECT y FROM t2 ORDER BY t2.y",
    "SELECT x FROM t1 UNION SELECT z FROM t2 ORDER BY z DESC",
    "SELECT x - 1 AS a FROM t1 UNION SELECT y - 1 AS b FROM t2 ORDER BY b",
    "SELECT x - 1 AS a FROM t1 UNION SELECT x - 2 FROM t1 ORDER BY x - 2",
    "SELECT x FROM t1 INTERSECT ALL SELECT y FROM t2 UNION ALL SELECT 4 ORDER BY t1.x",
    # COLUMNS(*) never shows the hidden column; COLUMNS('pattern') where no FROM item has one
    "SELECT min(COLUMNS(*)) FROM n",
    "SELECT COLUMNS(* EXCLUDE (s)) + 1 FROM n WHERE COLUMNS(* EXCLUDE (s)) > 1",
    "SELECT COLUMNS(n.*) FROM n",
    "SELECT COLUMNS(* REPLACE (i + 1 AS i)) FROM n",
    "SELECT COLUMNS('.*') FROM (SELECT 1 AS a, 2 AS b)",
    "SELECT DISTINCT COLUMNS('key') FROM (VALUES (1, 1, 2), (1, 1, 3)) AS t(key1, key2, v)",
    # a window over rows without lineage adds none (COLUMNS in it makes one window per column)
    "SELECT rank() OVER (ORDER BY COLUMNS('^(.*)_score$') DESC) AS '\\1_rank' FROM (SELECT range AS "
    "math_score, 100 - range AS reading_score FROM range(65, 100, 5))",
    # GROUP BY * is GROUP BY ALL
    "SELECT i % 2 AS p, sum(j) AS s FROM n GROUP BY * ORDER BY 1",
]

REFUSED = [
    # DuckDB binds a set operation's ORDER BY against any branch's columns; outside, that is not known
    ("SELECT * FROM t1 UNION SELECT * FROM t2 ORDER BY t2.z", "ORDER BY"),
    ("(SELECT x FROM t1 UNION ALL SELECT y FROM t1) UNION ALL BY NAME SELECT 5 ORDER BY y", "ORDER BY"),
    ("SELECT * FROM n NATURAL JOIN (SELECT * FROM k) s", "USING"),
    ("SELECT * FROM n NATURAL JOIN t1", "CROSS JOIN"),
    ("SELECT DISTINCT i % 2 FROM n ORDER BY i", "DISTINCT"),
    ("SELECT (SELECT max(j)) FROM n", "outer query"),
    ("SELECT (SELECT sum(n2.i) + sum(n.i) FROM n n2) FROM n", "outer query"),
    ("SELECT n.i, __mark_join_marker FROM n JOIN BY (TYPE mark) k ON (n.i = k.i)", "EXISTS"),
    ("SELECT COLUMNS('.*') FROM n", "COLUMNS"),
    ("SELECT i FROM n WHERE COLUMNS(lambda c: c LIKE '%') IS NOT NULL", "COLUMNS"),
    ("SELECT rank() OVER (ORDER BY COLUMNS(* EXCLUDE (s))) AS r FROM n", "COLUMNS"),
    ("DESCRIBE n", "con.raw"),
    ("SUMMARIZE n", "con.raw"),
]


@pytest.fixture(scope="module")
def cons(tmp_path_factory):
    d = tmp_path_factory.mktemp("compat")
    plain = duckdb.connect()
    traced = tpf.connect()
    for sql in SETUP:
        plain.execute(sql)
    for (name,) in plain.execute("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall():
        plain.execute(f"COPY {name} TO '{d / name}.parquet' (FORMAT parquet)")
        traced.read_parquet(d / f"{name}.parquet", name)
    for c in (plain, traced.raw):  # explicit NULLS LAST must survive a session default of NULLS FIRST
        c.execute("SET default_null_order = 'nulls_first'")
        for sql in MACROS:
            c.execute(sql)
    yield plain, traced
    traced.close()


def _rows(df: pd.DataFrame) -> list:
    return sorted(map(repr, df.astype(object).where(df.notna(), None).itertuples(index=False, name=None)))


@pytest.mark.parametrize("sql", SAME)
def test_same_answer_as_duckdb(cons, sql):
    plain, traced = cons
    want = plain.sql(sql).df()
    got = traced.sql(sql)
    assert list(got.columns) == list(want.columns)
    if "ORDER BY" in sql.rsplit(")", 1)[-1]:
        pd.testing.assert_frame_equal(got.reset_index(drop=True), want, check_dtype=False)
    else:
        assert _rows(got) == _rows(want)


@pytest.mark.parametrize(("sql", "advice"), REFUSED)
def test_refused_with_advice(cons, sql, advice):
    plain, traced = cons
    try:
        plain.sql(sql).fetchall()  # valid DuckDB (or DuckDB's own error for the last one)
    except duckdb.Error:
        pass
    with pytest.raises(UnsupportedSQLError, match=advice):
        traced.sql(sql)


def test_pragma_table_info_hides_lineage_columns(cons):
    plain, traced = cons
    for sql in (
        "SELECT * FROM pragma_table_info('n')",
        "SELECT name FROM pragma_table_info('k') ORDER BY cid",
    ):
        assert _rows(traced.sql(sql)) == _rows(plain.sql(sql).df())


def test_lateral_subquery_lineage(cons):
    """Row i reads n's row i - 1 and, through the LATERAL aggregate, every row with a smaller or equal i."""
    plain, traced = cons
    sql = "SELECT i, m FROM n, LATERAL (SELECT max(u.i) AS m FROM n u WHERE u.i <= n.i) ORDER BY i"
    got = traced.sql(sql)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), plain.sql(sql).df(), check_dtype=False)
    for r in range(len(got)):
        rows = {int(x) for rows in got.tp.sources(r).values() for x in rows}
        assert rows == set(range(int(got["i"].iloc[r])))
