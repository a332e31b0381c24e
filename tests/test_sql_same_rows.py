"""Eager capture: a query and its scalar subquery over the same rows, those rows written once to a
temporary table that both read (``sql.same_rows``, TPC-H q11's shape).

Oracle: the lineage written out by hand with pandas (every row of the join that passes the WHERE: the
subquery aggregates all of them, so each result row refers to all of them; its own group's rows are
among them), per result row as sets; results equal plain DuckDB's (values, dtypes, column names); lazy
capture's lineage equals eager's; nothing is left in the database. Each test asserts which path ran.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest
from _sql_oracle import eager_lazy_plain, lineage_sets, rows_of

from traceprop_frames.errors import UnsupportedSQLError
from traceprop_frames.sql import same_rows


@pytest.fixture(autouse=True)
def _any_size(monkeypatch, request):
    """The rewrite's tests run on small tables: the size guard (tested on its own below) let through."""
    if "few_rows" not in request.node.name:
        monkeypatch.setattr(same_rows, "few_rows", lambda raw, sql: True)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(11)
    root = tmp_path_factory.mktemp("same_rows")
    p = pd.DataFrame(
        {
            "pk": rng.integers(0, 30, 300),
            "sk": rng.integers(0, 25, 300),  # 20..24: no supplier
            "cost": rng.uniform(1, 100, 300).round(2),
            "qty": rng.integers(1, 50, 300),
        }
    )
    s = pd.DataFrame({"sk": np.arange(20), "nk": rng.integers(0, 5, 20)})
    n = pd.DataFrame({"nk": np.arange(5), "name": ["DE", "FR", "DE", "IT", "ES"]})
    eager, lazy, plain = eager_lazy_plain(root, {"p": p, "s": s, "n": n})
    yield eager, lazy, plain, p, s, n
    for c in (eager, lazy, plain):
        c.close()


def _run(data, q: str, once: bool):
    eager, lazy, plain, *_ = data
    df = eager.sql(q)
    pd.testing.assert_frame_equal(df.reset_index(drop=True), plain.sql(q).df())
    rw = eager._eager_plans[q][1][2]
    assert any(name.startswith("__tp_sr_") for name, _ in rw.temps) == once
    assert not once or "__tp_sc_" not in rw.sql  # (sql.scalar_temp leaves this shape)
    assert lineage_sets(df) == lineage_sets(lazy.sql(q))
    assert eager.raw.sql("SELECT count(*) FROM duckdb_tables() WHERE temporary").fetchall() == [(0,)]
    return df


def _join(p, s, n, how: str = "inner"):
    j = p.assign(pi=np.arange(len(p))).merge(s.assign(si=np.arange(len(s))), on="sk", how=how)
    return j.merge(n.assign(ni=np.arange(len(n))), on="nk", how=how)


def _witnesses(j) -> set:
    out = rows_of("p", j["pi"].dropna())
    return out | rows_of("s", j["si"].dropna()) | rows_of("n", j["ni"].dropna())


def _groups_over(j, share: float) -> list:
    v = (j["cost"] * j["qty"]).groupby(j["pk"]).sum()
    return list(v[v > v.sum() * share].sort_values(ascending=False, kind="stable").index)


def test_q11_shape(data):
    """Comma joins, the threshold a share of the same join's total (TPC-H q11)."""
    *_, p, s, n = data
    where = "p.sk = s.sk AND s.nk = n.nk AND n.name = 'DE'"
    q = (
        f"SELECT pk, sum(cost * qty) AS value FROM p, s, n WHERE {where} GROUP BY pk "
        f"HAVING sum(cost * qty) > (SELECT sum(cost * qty) * 0.04 FROM p, s, n WHERE {where}) "
        "ORDER BY value DESC, pk"
    )
    df = _run(data, q, once=True)
    j = _join(p, s, n)
    j = j[j["name"] == "DE"]
    want = _groups_over(j, 0.04)
    assert len(want) > 3 and sorted(df["pk"]) == sorted(want)
    w = _witnesses(j)
    assert lineage_sets(df) == [w] * len(df)


def test_explicit_joins_qualified_columns(data):
    """JOIN ... ON, qualified column names (the output keeps the bare column's name), count(*)."""
    *_, p, s, n = data
    frm = "FROM p JOIN s ON p.sk = s.sk JOIN n ON s.nk = n.nk WHERE n.name <> 'IT'"
    q = (
        f"SELECT p.pk, sum(p.cost * p.qty) AS v, count(*) AS c {frm} GROUP BY p.pk "
        f"HAVING sum(p.cost * p.qty) > (SELECT sum(p.cost * p.qty) * 0.03 {frm}) ORDER BY v DESC, p.pk"
    )
    df = _run(data, q, once=True)
    assert list(df.columns) == ["pk", "v", "c"]
    j = _join(p, s, n)
    j = j[j["name"] != "IT"]
    assert sorted(df["pk"]) == sorted(_groups_over(j, 0.03)) and len(df) > 3
    assert lineage_sets(df) == [_witnesses(j)] * len(df)


def test_left_join_rows_without_a_match(data):
    """Rows of ``p`` with no supplier are rows of the join (NULL ``s`` side) and witnesses too."""
    *_, p, s, _n = data
    frm = "FROM p LEFT JOIN s ON p.sk = s.sk AND s.nk < 3"
    q = (
        f"SELECT pk, sum(cost * qty) AS value {frm} GROUP BY pk "
        f"HAVING sum(cost * qty) > (SELECT sum(cost * qty) * 0.04 {frm}) ORDER BY value DESC, pk"
    )
    df = _run(data, q, once=True)
    j = p.assign(pi=np.arange(len(p))).merge(
        s[s["nk"] < 3].assign(si=np.flatnonzero(s["nk"] < 3)), on="sk", how="left"
    )
    assert sorted(df["pk"]) == sorted(_groups_over(j, 0.04)) and len(df) > 3
    w = rows_of("p", range(len(p))) | rows_of("s", j["si"].dropna())
    assert lineage_sets(df) == [w] * len(df)


_W = "p.sk = s.sk AND n.nk = s.nk AND n.name = 'DE'"


@pytest.mark.parametrize(
    "q",
    [
        # an alias named in HAVING (it could mean the alias or a column)
        f"SELECT pk, sum(qty) AS sq FROM p, s, n WHERE {_W} GROUP BY pk "
        f"HAVING sq > (SELECT sum(qty) * 0.05 FROM p, s, n WHERE {_W}) ORDER BY pk",
        # the subquery reads fewer filters than the query
        f"SELECT pk, sum(qty) AS sq FROM p, s, n WHERE {_W} AND qty > 3 GROUP BY pk "
        f"HAVING sum(qty) > (SELECT sum(qty) * 0.05 FROM p, s, n WHERE {_W}) ORDER BY pk",
        # a window over the groups
        f"SELECT pk, sum(qty) AS sq, rank() OVER (ORDER BY sum(qty)) AS r FROM p, s, n WHERE {_W} GROUP BY pk "
        f"HAVING sum(qty) > (SELECT sum(qty) * 0.05 FROM p, s, n WHERE {_W}) ORDER BY pk",
        # a volatile function (computed once for both it would change the answer)
        f"SELECT pk, sum(qty) AS sq FROM p, s, n WHERE {_W} AND random() < 2 GROUP BY pk "
        f"HAVING sum(qty) > (SELECT sum(qty) * 0.05 FROM p, s, n WHERE {_W} AND random() < 2) ORDER BY pk",
        # a lambda (its parameter is a column to sqlglot)
        f"SELECT pk, list_transform([sum(qty)], lambda x: x + 1) AS l FROM p, s, n WHERE {_W} GROUP BY pk "
        f"HAVING sum(qty) > (SELECT sum(qty) * 0.05 FROM p, s, n WHERE {_W}) ORDER BY pk",
        # an unaliased expression (its name is its text)
        f"SELECT pk, sum(qty) FROM p, s, n WHERE {_W} GROUP BY pk "
        f"HAVING sum(qty) > (SELECT sum(qty) * 0.05 FROM p, s, n WHERE {_W}) ORDER BY pk",
    ],
)
def test_left_to_the_side_query(data, q):
    *_, p, s, n = data
    df = _run(data, q, once=False)
    j = _join(p, s, n)
    j = j[j["name"] == "DE"]
    w = _witnesses(j)
    assert len(df) > 3 and all(got <= w for got in lineage_sets(df))


def test_failed_query_leaves_nothing(data):
    """A query that fails after the table is made still drops it."""
    eager, *_ = data
    q = (
        f"SELECT pk, sum(qty) AS sq FROM p, s, n WHERE {_W} GROUP BY pk "
        f"HAVING sum(qty) > (SELECT sum(qty) * 0.05 FROM p, s, n WHERE {_W}) AND CAST(max(name) AS INTEGER) > 0"
    )
    with pytest.raises((duckdb.Error, UnsupportedSQLError)):  # (DuckDB's conversion error, at run)
        eager.sql(q)
    assert "temp.__tp_sr_0" in eager._eager_plans[q][1][0]  # (the path was taken)
    assert eager.raw.sql("SELECT count(*) FROM duckdb_tables() WHERE temporary").fetchall() == [(0,)]


def test_few_rows_guard(tmp_path):
    """Written only where DuckDB estimates the rows at most a tenth of what their plan reads: a selective
    join yes; a whole table, or a query that does not bind, no (the side query runs as before)."""
    raw = duckdb.connect()
    raw.execute("CREATE TABLE big AS SELECT range AS k, range % 7 AS v FROM range(200000)")
    raw.execute("CREATE TABLE few AS SELECT range AS k FROM range(100)")
    assert same_rows.few_rows(raw, "SELECT big.k, v FROM big, few WHERE big.k = few.k")
    assert not same_rows.few_rows(raw, "SELECT k, v FROM big")
    assert not same_rows.few_rows(raw, "SELECT nope FROM big")
    raw.close()
