"""INTERSECT ALL / EXCEPT ALL and WITH RECURSIVE ... UNION: answers equal plain DuckDB's, lineage sufficient.

Oracles (independent of the rewriter):
- answers: plain DuckDB runs the same query on the same data;
- sufficiency: plain DuckDB re-runs the query on only an output row's lineage rows (every other row of
  every table removed) and must produce that row again;
- exactness, where the lineage is defined row by row: INTERSECT ALL pairs copy i of a value with one
  equal row of each side; EXCEPT ALL keeps every equal row of both sides; a recursive UNION's rows
  keep the anchor's rows and every row of the tables its recursive part reads.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from test_sql_window import _rows  # one normalisation of result rows for the SQL oracle tests

import traceprop_frames as tpf
from traceprop_frames.errors import MissingLineageWarning

CASES = [(0, "lazy"), (1, "lazy"), (2, "lazy"), (0, "eager")]  # (seed, capture)
NAMES = ("t", "u", "g")


def _tables(seed: int) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    t = pd.DataFrame({"k": rng.integers(0, 3, 9), "o": rng.integers(0, 3, 9), "x": rng.permutation(9) + 1})
    u = pd.DataFrame({"k": rng.integers(0, 4, 7), "o": rng.integers(0, 3, 7)})
    g = pd.DataFrame({"a": rng.integers(0, 6, 8), "b": rng.integers(0, 6, 8)})  # a small graph, cycles likely
    t.loc[rng.integers(0, 9), "o"] = None  # a NULL: equal to NULL in set operations
    u.loc[rng.integers(0, 7), "o"] = None
    return {"t": t.astype("Int64"), "u": u.astype("Int64"), "g": g.astype("int64")}


@pytest.fixture(params=CASES, ids=[f"{s}-{c}" for s, c in CASES])
def env(request, tmp_path):
    seed, capture = request.param
    frames = _tables(seed)
    con = tpf.connect(capture=capture)
    for name, df in frames.items():
        df.to_parquet(tmp_path / f"{name}.parquet")
        con.read_parquet(tmp_path / f"{name}.parquet", name=name)
    yield con, frames
    con.close()


QUERIES = [
    "SELECT k FROM t INTERSECT ALL SELECT k FROM u",
    "SELECT k, o FROM t INTERSECT ALL SELECT k, o FROM u",
    "SELECT k FROM t EXCEPT ALL SELECT k FROM u",
    "SELECT k, o FROM t EXCEPT ALL SELECT k, o FROM u ORDER BY k, o NULLS FIRST",
    "SELECT k FROM t EXCEPT ALL SELECT k FROM t WHERE x > 5",  # the same table on both sides
    "SELECT k FROM t WHERE x > 2 INTERSECT ALL SELECT k FROM t WHERE x < 8",
    "SELECT o FROM t INTERSECT ALL SELECT o FROM u EXCEPT ALL SELECT o FROM u WHERE k = 0",
    "SELECT k FROM t UNION ALL SELECT k FROM u INTERSECT ALL SELECT k FROM t",
    "SELECT k, count(*) AS c FROM (SELECT k FROM t EXCEPT ALL SELECT k FROM u) GROUP BY k",
    "SELECT * FROM (SELECT k FROM t INTERSECT ALL SELECT k FROM u) s JOIN u USING (k)",
    "SELECT k FROM t INTERSECT ALL SELECT 1 UNION ALL SELECT 2",
    "WITH RECURSIVE r(n) AS (SELECT k FROM t WHERE o = 0 UNION SELECT g.b FROM r JOIN g ON g.a = r.n) "
    "SELECT n FROM r",
    "WITH RECURSIVE r AS (SELECT a, b FROM g WHERE a = 1 UNION SELECT r.a, g.b FROM r, g WHERE g.a = r.b) "
    "SELECT a, b FROM r",
    "WITH RECURSIVE r(n, d) AS (SELECT 0, 0 UNION SELECT g.b, r.d + 1 FROM r JOIN g ON g.a = r.n "
    "WHERE r.d < 3) SELECT n, min(d) AS d FROM r GROUP BY n",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION SELECT n + 1 FROM r WHERE n < 4) SELECT t.x, r.n FROM t JOIN r "
    "ON t.k = r.n",
    "WITH RECURSIVE c AS (SELECT k FROM t WHERE x > 3), r(n) AS (SELECT k FROM c UNION "
    "SELECT g.b FROM r JOIN g ON g.a = r.n WHERE g.b IN (SELECT k FROM u)) SELECT n FROM r",
    "WITH RECURSIVE c AS (SELECT k FROM t UNION SELECT k FROM u) SELECT k FROM c",  # not recursive
    # USING KEY: the recursion keeps one row per key (a plain UNION would keep every step's row)
    "WITH RECURSIVE r(k, v) USING KEY (k) AS (SELECT DISTINCT k, 0 FROM t UNION SELECT k, v + 1 FROM r "
    "WHERE v < 2) SELECT k, v FROM r",
    "WITH RECURSIVE r(n, d) USING KEY (n) AS (SELECT DISTINCT a, 0 FROM g WHERE a < 2 UNION "
    "SELECT g.b, 1 FROM r JOIN g ON g.a = r.n WHERE r.d = 0) SELECT count(*) AS c FROM r",
    "WITH RECURSIVE r(k, v) USING KEY (k, max(v)) AS (SELECT k, x FROM t UNION ALL SELECT k, v - 1 FROM r "
    "WHERE v > 5) SELECT k, v FROM r",
    "WITH RECURSIVE r(k, v) USING KEY (k, sum(v)) AS (SELECT k, x FROM t UNION SELECT k, o FROM u) "
    "SELECT k, v FROM r",
    # UNION ALL recursion with a column list over a VALUES / SELECT * anchor (its width from the catalog)
    "WITH RECURSIVE r(n, d) AS (VALUES (0, 0) UNION ALL SELECT g.b, r.d + 1 FROM r JOIN g ON g.a = r.n "
    "WHERE r.d < 2) SELECT n, d FROM r",
    "WITH RECURSIVE r(p) AS (SELECT * FROM g UNION ALL SELECT r.p + 10, r.b FROM r WHERE r.p < 20) "
    "SELECT p, b FROM r",
    "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 3), d(n) AS (SELECT * FROM c "
    "UNION ALL SELECT d.n + t.x FROM d, t WHERE d.n < 6) SELECT n FROM d",
    # a WITH inside a set operation's branch
    "WITH RECURSIVE c(b) AS ((WITH h(c) AS (SELECT k FROM t) SELECT * FROM h UNION SELECT 7)) SELECT b FROM c",
]


def _lineage_rows(df, i) -> dict[str, np.ndarray]:
    return {Path(p).stem: rows for p, rows in df.tp.sources(i).items()}


def _plain(frames: dict[str, pd.DataFrame], rows: dict[str, np.ndarray] | None = None):
    con = duckdb.connect()
    for name, df in frames.items():
        keep = df if rows is None else df.iloc[np.sort(rows.get(name, np.zeros(0, dtype=np.int64)))]
        con.register(f"{name}_v", keep)
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM {name}_v")
    return con


@pytest.mark.parametrize("query", QUERIES, ids=[q[:70] for q in QUERIES])
def test_same_answer_and_sufficient(env, query):
    con, frames = env
    got = con.sql(query)
    want = _plain(frames).sql(query).df()
    assert list(got.columns) == list(want.columns)
    assert Counter(_rows(got)) == Counter(_rows(want))
    values = _rows(got)
    for i in range(len(got)):
        rows = _lineage_rows(got, i)
        again = _rows(_plain(frames, rows).sql(query).df())
        assert values[i] in again, f"row {i} {values[i]} not reproduced from its lineage {rows}"


def _equal_rows(df: pd.DataFrame, cols: list[str], values: tuple) -> set[int]:
    sub = df[cols].astype(object).where(df[cols].notna(), None)
    return {i for i, row in enumerate(sub.itertuples(index=False, name=None)) if _rows_eq(row, values)}


def _rows_eq(row, values) -> bool:
    return all(
        (a is None and b is None) or (a is not None and b is not None and a == b) for a, b in zip(row, values)
    )


def test_intersect_all_pairs_one_row_of_each_side(env):
    con, frames = env
    got = con.sql("SELECT k, o FROM t INTERSECT ALL SELECT k, o FROM u")
    used: dict[str, set[int]] = {"t": set(), "u": set()}
    for i, values in enumerate(
        got.astype(object).where(got.notna(), None).itertuples(index=False, name=None)
    ):
        rows = _lineage_rows(got, i)
        assert sorted(rows) == ["t", "u"] and all(len(r) == 1 for r in rows.values())
        for name, r in rows.items():
            assert int(r[0]) in _equal_rows(frames[name], ["k", "o"], values)
            assert int(r[0]) not in used[name], "two copies share one input row"
            used[name].add(int(r[0]))


def test_except_all_keeps_every_equal_row(env):
    con, frames = env
    got = con.sql("SELECT k, o FROM t EXCEPT ALL SELECT k, o FROM u")
    for i, values in enumerate(
        got.astype(object).where(got.notna(), None).itertuples(index=False, name=None)
    ):
        rows = _lineage_rows(got, i)
        for name in ("t", "u"):
            have = set(rows.get(name, np.zeros(0)).tolist())
            assert have == _equal_rows(frames[name], ["k", "o"], values)


def test_recursive_union_reads_anchor_rows_and_whole_tables(env):
    con, frames = env
    got = con.sql(
        "WITH RECURSIVE r(n) AS (SELECT k FROM t WHERE o = 0 UNION SELECT g.b FROM r JOIN g ON g.a = r.n) "
        "SELECT n FROM r"
    )
    t = frames["t"]
    anchor = set(np.flatnonzero((t["o"] == 0).fillna(False).to_numpy()).tolist())
    for i in range(len(got)):
        rows = _lineage_rows(got, i)
        assert set(rows.get("t", np.zeros(0)).tolist()) == anchor
        assert set(rows["g"].tolist()) == set(range(len(frames["g"])))


def test_recursive_union_in_create_table_as(env):
    """Without the shared-set callback (CREATE TABLE AS), the set is a list per row: the same rows."""
    con, frames = env
    q = "WITH RECURSIVE r(n) AS (SELECT 0 UNION SELECT g.b FROM r JOIN g ON g.a = r.n) SELECT n FROM r"
    con.sql(f"CREATE TABLE reach AS {q}")
    got = con.sql("SELECT n FROM reach")
    assert Counter(_rows(got)) == Counter(_rows(_plain(frames).sql(q).df()))
    for i in range(len(got)):
        assert set(_lineage_rows(got, i)["g"].tolist()) == set(range(len(frames["g"])))


def test_recursive_union_names_a_table_without_lineage(env):
    con, _ = env
    con.raw.execute("CREATE TABLE plain_e AS SELECT * FROM (VALUES (0, 1), (1, 2)) v(a, b)")
    df = con.sql(
        "WITH RECURSIVE r(n) AS (SELECT k FROM t WHERE o = 0 UNION "
        "SELECT plain_e.b FROM r JOIN plain_e ON plain_e.a = r.n) SELECT n FROM r"
    )
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        df.tp.sources()
    assert any(issubclass(w.category, MissingLineageWarning) and "plain_e" in str(w.message) for w in rec)
