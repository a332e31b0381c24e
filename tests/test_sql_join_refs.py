"""Eager queries that join tables with stored lineage read it by ``rowid`` (``sql.join_refs``).

Oracles: brute force (pandas: the source rows of ``t`` and ``u`` whose values make each result row) for
the lineage; the plain query on ``con.raw`` and the same connection with the path switched off for the
frame. Every test also asserts which path ran.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import traceprop_frames as tpf
from traceprop_frames.errors import SourceChangedError
from traceprop_frames.lineage import events
from traceprop_frames.sql import connection as sql_connection


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(5)
    t = pd.DataFrame({"id": np.arange(60), "k": rng.integers(0, 12, 60), "v": rng.normal(size=60).round(3)})
    u = pd.DataFrame({"k": rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 8, None], 90), "w": rng.integers(0, 100, 90)})
    t.to_csv(tmp_path / "t.csv", index=False)
    u.to_parquet(tmp_path / "u.parquet")
    return t, u, tmp_path


def _connect(tmp, capture="eager", database=":memory:"):
    con = tpf.connect(database, capture=capture)
    con.read_csv(tmp / "t.csv", name="t")
    con.read_parquet(tmp / "u.parquet", name="u")
    return con


def _expected(df: pd.DataFrame, t: pd.DataFrame, u: pd.DataFrame, tmp, sides: list[str]) -> list[dict]:
    """Per result row: {file: sorted rows}: t's row with the result's ``id``, and for each side column
    (a key the result joined an aggregate of u on; NULL: nothing joined) u's rows with that key."""
    out = []
    for _, r in df.iterrows():
        exp = {str(tmp / "t.csv"): [int(r["id"])]}
        rows: list[int] = []
        for side in sides:
            key = r[side]
            if not pd.isna(key):
                rows += np.flatnonzero(u["k"].to_numpy(dtype=float) == float(key)).tolist()
        if rows:
            exp[str(tmp / "u.parquet")] = sorted(rows)
        out.append(exp)
    return out


def _got(df: pd.DataFrame) -> list[dict]:
    lin = df.tp.lineage()
    out = []
    for i in range(len(df)):
        src = df.tp.sources(rows=[i])
        out.append({k: sorted(int(x) for x in v) for k, v in src.items() if len(v)})
        assert len(lin.row_ids(i)) == sum(len(v) for v in out[-1].values())  # no id twice
    return out


def _taken(con, query: str) -> bool:
    hit = con._join_refs.get(query)
    return hit is not None and hit[2] is not None and "rowid" in hit[2].sql


AGG = "CREATE OR REPLACE TABLE agg AS SELECT k, sum(w) AS sw, count(*) AS n FROM u GROUP BY k"
QUERIES = [
    ("SELECT t.id, t.v, a.sw, a.k AS ak FROM t LEFT JOIN agg a USING (k)", ["ak"]),
    ("SELECT t.id, a.n, a.k AS ak FROM t JOIN agg a ON t.k = a.k WHERE t.v > 0 ORDER BY t.id LIMIT 7", ["ak"]),
    ("SELECT t.*, a.sw, b.k AS bk, a.k AS ak FROM t LEFT JOIN agg a ON a.k = t.k "
     "LEFT JOIN agg b ON b.k = t.k - 1", ["ak", "bk"]),  # the same table twice
    ("SELECT agg.k AS ak, t.id FROM agg, t WHERE agg.k = t.k AND t.id % 3 = 0", ["ak"]),
]  # fmt: skip


@pytest.mark.parametrize("query,sides", QUERIES)
def test_joined_lineage_by_rowid_matches_brute_force(data, query, sides):
    t, u, tmp = data
    con = _connect(tmp)
    con.execute(AGG)
    df = con.sql(query)
    assert _taken(con, query)
    assert _got(df) == _expected(df, t, u, tmp, sides)
    plain = con.raw.sql(query.replace("t.*", "t.* EXCLUDE (__tp_rid)")).df()
    pd.testing.assert_frame_equal(df.reset_index(drop=True), plain)


SAME = [
    QUERIES[2][0],
    "SELECT t.k, a.k, a.sw FROM t LEFT JOIN agg a ON t.k = a.k ORDER BY t.v",  # a repeated name
    "SELECT t.k, a.k AS K, a.sw FROM t LEFT JOIN agg a ON t.k = a.k ORDER BY t.v",
    "SELECT * FROM t LEFT JOIN agg a USING (k) ORDER BY t.v",  # stars
    "SELECT * FROM t LEFT JOIN agg a ON t.k = a.k ORDER BY t.v",
    "SELECT t.v::DECIMAL(8, 2) AS d, DATE '2020-01-01' + t.k::INT AS dt, a.sw FROM t JOIN agg a USING (k)",
]


@pytest.mark.parametrize("query", SAME)
def test_same_frame_and_lineage_as_the_list_path(data, monkeypatch, query):
    t, u, tmp = data
    out = []
    for on in (True, False):
        if not on:
            monkeypatch.setattr(sql_connection, "plan_join_refs", lambda *a: None)
        con = _connect(tmp)
        con.execute(AGG)
        df = con.sql(query)
        assert _taken(con, query) == on
        out.append((df.reset_index(drop=True), [df.tp.lineage().row_ids(i).tolist() for i in range(len(df))]))
    pd.testing.assert_frame_equal(out[0][0], out[1][0])
    assert out[0][1] == out[1][1]


def test_table_filled_later_by_update(data):
    """A lazy CREATE TABLE AS filled by UPDATE (DuckDB moves the rows: new rowids) read eagerly."""
    t, u, tmp = data
    con = _connect(tmp, capture="lazy")
    con.execute(AGG)
    con.capture = "eager"
    query = QUERIES[0][0]
    df = con.sql(query)
    assert _taken(con, query)
    assert con.raw.execute("SELECT min(rowid) FROM agg").fetchall()[0][0] > 0  # the rows moved
    assert _got(df) == _expected(df, t, u, tmp, ["ak"])


def test_a_column_named_rowid_keeps_the_list_path(data):
    t, u, tmp = data
    con = _connect(tmp)
    con.execute("CREATE TABLE agg AS SELECT k, sum(w) AS rowid FROM u GROUP BY k")
    query = "SELECT t.id, a.rowid AS r, a.k AS ak FROM t LEFT JOIN agg a USING (k)"
    df = con.sql(query)
    assert not _taken(con, query)
    assert _got(df) == _expected(df, t, u, tmp, ["ak"])


def test_inside_a_transaction_and_after_rollback(data):
    t, u, tmp = data
    con = _connect(tmp)
    con.execute(AGG)
    query = QUERIES[0][0]
    con.execute("BEGIN")
    con.execute("DELETE FROM agg WHERE k = 3")
    df = con.sql(query)
    assert _taken(con, query)
    got = _got(df)
    assert got == _expected(df, t, u, tmp, ["ak"])
    assert all(df["ak"].dropna() != 3)
    con.execute("ROLLBACK")
    df = con.sql(query)
    assert (df["ak"] == 3).any()
    assert _got(df) == _expected(df, t, u, tmp, ["ak"])


def test_types_that_leave_through_arrow(data):
    """A BLOB column: the frame goes through Arrow as before (one .df() would give bytes)."""
    t, u, tmp = data
    con = _connect(tmp)
    con.execute(AGG)
    query = "SELECT t.id, encode(CAST(t.v AS VARCHAR)) AS b, a.k AS ak FROM t LEFT JOIN agg a USING (k)"
    df = con.sql(query)
    assert _taken(con, query)
    assert isinstance(df["b"].iloc[0], bytearray)
    assert _got(df) == _expected(df, t, u, tmp, ["ak"])


def test_file_database_read_by_a_later_process(data):
    t, u, tmp = data
    db = str(tmp / "x.duckdb")
    con = _connect(tmp, database=db)
    con.execute(AGG)
    con.close()
    query = QUERIES[0][0]
    script = (
        "import json, traceprop_frames as tpf\n"
        f"con = tpf.connect({db!r}, capture='eager')\n"
        f"df = con.sql({query!r})\n"
        f"hit = con._join_refs[{query!r}][2]\n"
        "rows = [{k: sorted(int(x) for x in v) for k, v in df.tp.sources(rows=[i]).items() if len(v)}\n"
        "        for i in range(len(df))]\n"
        "print(json.dumps({'taken': hit is not None, 'id': df['id'].tolist(), "
        "'ak': [None if a != a else a for a in df['ak'].astype(float)], 'rows': rows}))\n"
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    out = json.loads(res.stdout)
    assert out["taken"]
    df = pd.DataFrame({"id": out["id"], "ak": out["ak"]})
    assert out["rows"] == _expected(df, t, u, tmp, ["ak"])


def test_eager_ctas_again_parses_nothing_and_keeps_the_catalog(data, monkeypatch):
    """The same CREATE OR REPLACE TABLE AS again: planned once, catalog patched (not re-read); the
    table's lineage is that of the rows it has now (brute force), also after its source changed."""
    t, u, tmp = data
    monkeypatch.setattr(events, "_listeners", [])  # a lineage listener turns the planned fast paths off
    con = _connect(tmp)
    query = QUERIES[0][0]
    for _ in range(2):  # the first plan was made before agg existed: the second is the one kept
        con.execute(AGG)
        con.sql(query)
    cat = con._cat
    parsed = []
    real = con._parse
    monkeypatch.setattr(con, "_parse", lambda q: parsed.append(q) or real(q))
    for _ in range(2):
        con.execute(AGG)
        df = con.sql(query)
    assert parsed == [] and con._cat is cat and con._member_plans[AGG][1] is not None  # (sql.member_lists)
    assert _got(df) == _expected(df, t, u, tmp, ["ak"])
    con.execute("DELETE FROM agg WHERE k = 2")  # not a CTAS: the catalog is read again
    assert con._cat is None
    con.execute(AGG)  # back, through the cached plan
    df = con.sql(query)
    assert (df["ak"] == 2).any()
    assert _got(df) == _expected(df, t, u, tmp, ["ak"])


def test_eager_ctas_that_changes_the_table_kind(data):
    """agg made again as a row-preserving table (row ids, not lists): the catalog follows."""
    t, u, tmp = data
    con = _connect(tmp)
    query = "SELECT t.id, a.w, a.k AS ak FROM t JOIN agg a USING (k)"
    con.execute(AGG)
    con.sql("SELECT t.id, a.sw, a.k AS ak FROM t JOIN agg a USING (k)")
    con.execute("CREATE OR REPLACE TABLE agg AS SELECT k, w FROM u WHERE w > 50")
    df = con.sql(query)
    assert not _taken(con, query)  # only row ids: nothing to gather
    plain = con.raw.sql("SELECT t.id, a.w, a.k AS ak, a.__tp_rid AS r FROM t JOIN agg a USING (k)").df()
    u_rows = plain["r"].to_numpy() & ((1 << 40) - 1)
    exp = [
        {str(tmp / "t.csv"): [int(i)], str(tmp / "u.parquet"): [int(r)]} for i, r in zip(plain["id"], u_rows)
    ]
    assert sorted(map(str, _got(df))) == sorted(map(str, exp))
    con.execute(AGG)
    df = con.sql(QUERIES[0][0])
    assert _taken(con, QUERIES[0][0])
    assert _got(df) == _expected(df, t, u, tmp, ["ak"])


def test_inside_a_transaction_opened_through_raw(data):
    """The path's own BEGIN is not tried inside the user's transaction (a failed BEGIN would abort it)."""
    t, u, tmp = data
    con = _connect(tmp)
    con.execute(AGG)
    query = QUERIES[0][0]
    con.raw.begin()
    con.raw.execute("DELETE FROM agg WHERE k = 4")
    df = con.sql(query)
    assert _taken(con, query)
    assert not (df["ak"] == 4).any()
    assert _got(df) == _expected(df, t, u, tmp, ["ak"])
    con.raw.commit()  # the user's transaction is still open and commits
    assert con.raw.execute("SELECT count(*) FROM agg WHERE k = 4").fetchall()[0][0] == 0


@pytest.mark.parametrize("spread", [1, 10_000])  # dense rowids (a position table) and sparse (a search)
def test_rows_of_and_compose_against_brute_force(spread):
    import pyarrow as pa

    from traceprop_frames.sql.connection import lineage_from_arrow
    from traceprop_frames.sql.join_refs import compose, id_part, rows_of

    rng = np.random.default_rng(spread)
    lists = [rng.integers(0, 100, rng.integers(0, 4)).tolist() for _ in range(30)]
    lists[5] = None  # a NULL list: no ids
    rowids = rng.permutation(30) * spread + 7
    table = pa.table({"rowid": pa.array(rowids, pa.int64()), "l": pa.array(lists, pa.list_(pa.int64()))})
    asked = np.concatenate([rng.choice(rowids, 50), [-1, -1]])
    first = np.arange(len(asked), dtype=np.int64) * 1000 - 1  # -1 for row 0: no id there
    off, ids = compose([id_part(first), rows_of(table, asked, lineage_from_arrow)])
    by_rowid = dict(zip(rowids.tolist(), lists))
    for r, rid in enumerate(asked.tolist()):
        want = ([int(first[r])] if first[r] >= 0 else []) + (by_rowid[rid] or [] if rid >= 0 else [])
        assert ids[off[r] : off[r + 1]].tolist() == want
    with pytest.raises(SourceChangedError, match="rowid is not in its table"):
        rows_of(table, np.array([rowids.max() + 1]), lineage_from_arrow)


def test_table_counts_kept_in_a_declared_field_of_the_rewrite(tmp_path, monkeypatch):
    """``_table_count`` keeps its per-table counts in ``RewriteResult.table_counts`` (a declared field,
    kept with the expression it counted), not in an attribute added to the object's ``__dict__``; the count is the
    number of times the eager rewrite names the table (the member table once: not filled)."""
    import dataclasses

    pd.DataFrame({"k": np.arange(50) % 7, "v": np.arange(50)}).to_csv(tmp_path / "t.csv", index=False)
    seen = []
    count = sql_connection._table_count

    def spy(rw, table):
        seen.append((rw, table, count(rw, table)))
        return seen[-1][2]

    monkeypatch.setattr(sql_connection, "_table_count", spy)
    con = tpf.connect(capture="eager")
    con.read_csv(tmp_path / "t.csv", name="t")
    con.execute("CREATE TABLE g AS SELECT k, count(*) AS n FROM t GROUP BY k")
    for _ in range(2):
        df = con.sql("SELECT t.v, g.n FROM t JOIN g USING (k)")
        assert len(df.tp.sources()[str(tmp_path / "t.csv")]) == 50
    assert seen and all(n == 1 and t == "g" for _, t, n in seen)
    for rw, _, _ in seen:
        assert "table_counts" in {f.name for f in dataclasses.fields(rw)}
        assert rw.table_counts[0] is rw.expression and rw.table_counts[1] == {"g": 1}
        assert not any(k.startswith("_tp_") for k in vars(rw))
