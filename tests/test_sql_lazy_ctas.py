"""Lazy ``CREATE TABLE ... AS`` (``sql.lazy_tables``): a grouping table's lineage column is filled when first
needed, with the same sets eager capture stores when the table is made.

Oracles: eager capture (checked against brute force in test_sql_tpch / test_sql_property) on the same
statements; brute force (pandas group membership) for a grouping table; the table's lineage column read
straight from DuckDB before (all NULL: nothing was captured) and after it is needed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import duckdb
import numpy as np
import pandas as pd
import pytest

import traceprop_frames as tpf
from traceprop_frames.errors import SourceChangedError
from traceprop_frames.sql.lazy import LazyRowLineage


def _value(v):
    if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA or v is pd.NaT:
        return None
    return round(v, 6) if isinstance(v, float) else str(v)


def _rows(df: pd.DataFrame, each: bool = False) -> Counter:
    """Multiset of (row values, sorted source-row ids); ``each``: every row's lineage asked alone."""
    lin = df.tp.lineage() if not each else None
    out = Counter()
    for i, r in enumerate(df.itertuples(index=False, name=None)):
        ids = df.tp.lineage().take([i]).row_ids(0) if each else lin.row_ids(i)
        out[(tuple(_value(v) for v in r), tuple(sorted(ids.tolist())))] += 1
    return out


def _filled(con, table: str) -> int:
    return con.raw.execute(f"SELECT count(__tp_lin) FROM {table}").fetchall()[0][0]


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(11)
    n = 80
    t = pd.DataFrame({
        "k": rng.integers(0, 9, n), "g": rng.integers(0, 3, n), "v": rng.normal(size=n).round(3),
        "s": rng.choice(["x", "y", None], n),
    })  # fmt: skip
    u = pd.DataFrame({"k": rng.integers(0, 12, 40), "w": rng.integers(0, 100, 40)})
    t.to_csv(tmp_path / "t.csv", index=False)
    u.to_parquet(tmp_path / "u.parquet")
    return t, u, tmp_path


def _connect(tmp, capture: str, database: str = ":memory:"):
    con = tpf.connect(database, capture=capture)
    con.read_csv(tmp / "t.csv", name="t")
    con.read_parquet(tmp / "u.parquet", name="u")
    return con


CTAS = [
    "SELECT k, sum(w) AS sw, count(*) AS n FROM u GROUP BY k",
    "SELECT s, g, max(v) AS mv FROM t GROUP BY s, g",  # NULL keys, two keys
    "SELECT k, count(*) AS n FROM t GROUP BY k HAVING count(*) > 8",
    "SELECT g, sum(v) AS sv FROM t GROUP BY g ORDER BY sv DESC LIMIT 2",
    "SELECT count(*) AS n, sum(w) AS sw FROM u",  # one row
    "SELECT t.g, count(*) AS n FROM t JOIN u USING (k) WHERE u.w > 20 GROUP BY t.g",
    "SELECT k, count(*) AS n FROM t WHERE v > (SELECT avg(v) FROM t) GROUP BY k",
]
QUERIES = [
    "SELECT * FROM agg",
    "SELECT t.v, agg.* FROM t JOIN agg USING ({key})",  # rows of a pending table, named by key values
    "SELECT count(*) AS c FROM agg",
]


@pytest.mark.parametrize("ctas", CTAS)
def test_lazy_ctas_equals_eager(data, ctas):
    _, _, tmp = data
    eager, lazy = _connect(tmp, "eager"), _connect(tmp, "lazy")
    for con in (eager, lazy):
        con.execute(f"CREATE TABLE agg AS {ctas}")
    assert _filled(lazy, "agg") == 0 and "agg" in lazy._pending  # nothing captured yet
    key = "g" if "t.g" in ctas else ("k" if ctas.startswith("SELECT k") else None)
    for q in QUERIES:
        if "{key}" in q and key is None:
            continue
        q = q.format(key=key)
        want = _rows(eager.sql(q))
        got = lazy.sql(q)
        assert isinstance(got.tp.lineage(), LazyRowLineage)
        assert _rows(got, each=True) == want, q  # each row alone (a pinned backward query)
        assert _rows(got) == want, q
    # the table's own lineage column, filled on demand, equals eager's stored one
    sql = "SELECT * EXCLUDE (__tp_lin), list_sort(__tp_lin) AS l FROM agg"
    assert Counter(map(str, lazy.raw.sql(sql).fetchall())) == Counter(map(str, eager.raw.sql(sql).fetchall()))
    assert "agg" not in lazy._pending


def test_group_members_brute_force(data):
    t, _, tmp = data
    lazy = _connect(tmp, "lazy")
    lazy.execute("CREATE TABLE agg AS SELECT g, count(*) AS n FROM t GROUP BY g")
    df = lazy.sql("SELECT g, n FROM agg ORDER BY g")
    for i, g in enumerate(df["g"]):
        assert df.tp.sources(rows=[i])[str(tmp / "t.csv")].tolist() == np.flatnonzero(t["g"] == g).tolist()


def test_chain_of_pending_tables(data):
    _, _, tmp = data
    cons = _connect(tmp, "eager"), _connect(tmp, "lazy")
    for con in cons:
        con.execute("CREATE TABLE a1 AS SELECT k, g, count(*) AS n FROM t GROUP BY k, g")
        con.execute("CREATE TABLE a2 AS SELECT g, sum(n) AS n FROM a1 GROUP BY g")
    assert set(cons[1]._pending) == {"a1", "a2"}
    assert _rows(cons[1].sql("SELECT * FROM a2")) == _rows(cons[0].sql("SELECT * FROM a2"))
    assert not cons[1]._pending  # a2 read a1's lineage: both filled


def test_results_before_and_after_filling(data):
    """A lazy result over a pending table names its rows by key values: still right once the table's
    lineage is filled (DuckDB's UPDATE of a list column moves the rows' rowids)."""
    _, _, tmp = data
    eager, lazy = _connect(tmp, "eager"), _connect(tmp, "lazy")
    q = "SELECT t.v, agg.sw FROM t JOIN agg USING (k) WHERE t.v > 0"
    for con in (eager, lazy):
        con.execute("CREATE TABLE agg AS SELECT k, sum(w) AS sw FROM u GROUP BY k")
    before = lazy.sql(q)
    _ = lazy.sql("SELECT * FROM agg").tp.lineage().offsets  # fills agg
    assert "agg" not in lazy._pending
    want = _rows(eager.sql(q))
    assert _rows(before, each=True) == want
    assert _rows(lazy.sql(q)) == want


def test_write_to_an_input_fills_first(data):
    _, _, tmp = data
    eager, lazy = _connect(tmp, "eager"), _connect(tmp, "lazy")
    for con in (eager, lazy):
        con.execute("CREATE TABLE agg AS SELECT k, count(*) AS n FROM u GROUP BY k")
    want = _rows(eager.sql("SELECT * FROM agg"))
    lazy.execute("DELETE FROM u WHERE w > 50")  # agg's lineage is computed before u changes
    assert _filled(lazy, "agg") > 0
    assert _rows(lazy.sql("SELECT * FROM agg")) == want
    lazy.execute("INSERT INTO agg SELECT 99, 1")  # writing the table itself: already filled, kept
    assert _rows(lazy.sql("SELECT * FROM agg WHERE k < 99")) == want


def test_input_replaced_through_raw_raises(data):
    _, _, tmp = data
    lazy = _connect(tmp, "lazy")
    lazy.execute("CREATE TABLE agg AS SELECT k, count(*) AS n FROM u GROUP BY k")
    lazy.raw.execute("CREATE OR REPLACE TABLE u AS SELECT * FROM u WHERE w > 50")
    with pytest.raises(SourceChangedError, match="changed since"):
        lazy.sql("SELECT * FROM agg").tp.sources(rows=[0])
    with pytest.raises(SourceChangedError):  # and again: never an empty or wrong answer
        lazy.sql("SELECT * FROM agg").tp.sources(rows=[0])


def test_replaced_and_dropped(data):
    _, _, tmp = data
    eager, lazy = _connect(tmp, "eager"), _connect(tmp, "lazy")
    for con in (eager, lazy):
        con.execute("CREATE TABLE agg AS SELECT k, count(*) AS n FROM u GROUP BY k")
        con.execute("CREATE OR REPLACE TABLE agg AS SELECT g AS k, count(*) AS n FROM t GROUP BY g")
    assert _rows(lazy.sql("SELECT * FROM agg")) == _rows(eager.sql("SELECT * FROM agg"))
    lazy.execute("CREATE TABLE agg2 AS SELECT k, count(*) AS n FROM u GROUP BY k")
    lazy.execute("DROP TABLE agg2")
    assert "agg2" not in lazy._pending


def test_not_lazy_shapes_stay_eager(data):
    _, _, tmp = data
    lazy = _connect(tmp, "lazy")
    for q in [
        "SELECT k, v FROM t WHERE v > 0",  # no aggregate: eager (a row id per row is cheap)
        "SELECT k + 1 AS k1, count(*) AS n FROM t GROUP BY k",  # key not an output column as it is
        "SELECT DISTINCT k FROM t",
    ]:
        lazy.execute(f"CREATE OR REPLACE TABLE x AS {q}")
        hidden = lazy._catalog(fresh=True).hidden["x"]  # __tp_rid for a row per row, else __tp_lin
        assert "x" not in lazy._pending
        assert lazy.raw.execute(f"SELECT count({hidden}) FROM x").fetchall()[0][0] > 0


def test_persisted_result_over_pending_table(data):
    _, _, tmp = data
    eager, lazy = _connect(tmp, "eager"), _connect(tmp, "lazy")
    q = "SELECT t.g, agg.n FROM t JOIN agg USING (k)"
    for con in (eager, lazy):
        con.execute("CREATE TABLE agg AS SELECT k, count(*) AS n FROM u GROUP BY k")
    lazy.sql(q).tp.to_parquet(tmp / "out.parquet")
    assert _rows(tpf.read_traced(tmp / "out.parquet")) == _rows(eager.sql(q))


READER = """
import json, sys
import traceprop_frames as tpf
from traceprop_frames.lineage import REGISTRY
for i in range(3):  # shift this process's source ids so they differ from the writer's
    REGISTRY.register(f"dummy{i}", sha256="x", format="memory", n_rows=1)
con = tpf.connect(sys.argv[1])
df = con.sql("SELECT k, n FROM agg ORDER BY k")
try:
    print(json.dumps([{p: r.tolist() for p, r in df.tp.sources(rows=[i]).items()} for i in range(len(df))]))
except tpf.errors.SourceChangedError as e:
    print(json.dumps("changed: " + str(e)))
"""


def _reader(db: str):
    out = subprocess.run([sys.executable, "-c", READER, db], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _lazy_table_in_file(tmp) -> str:
    """A database file holding t (loaded from t.csv) and agg, a lazily made grouping table over it."""
    db = str(tmp / "etl.duckdb")
    con = tpf.connect(db, capture="lazy")
    con.read_csv(tmp / "t.csv", name="t")
    con.execute("CREATE TABLE agg AS SELECT k, count(*) AS n FROM t GROUP BY k")
    con.close()
    return db


def test_file_database_resolved_by_a_later_process(data):
    t, _, tmp = data
    db = _lazy_table_in_file(tmp)
    raw = duckdb.connect(db)
    assert raw.execute("SELECT count(*) FROM __tp_lazy_tables").fetchall() == [(1,)]
    assert raw.execute("SELECT count(__tp_lin) FROM agg").fetchall() == [(0,)]
    raw.close()
    want = [{str(tmp / "t.csv"): np.flatnonzero(t["k"] == k).tolist()} for k in sorted(t["k"].unique())]
    assert _reader(db) == want
    raw = duckdb.connect(db)  # the reader filled the column and dropped the record, in one transaction
    assert raw.execute("SELECT count(*) FROM __tp_lazy_tables").fetchall() == [(0,)]
    assert raw.execute("SELECT count(__tp_lin) FROM agg").fetchall()[0][0] == len(want)
    raw.close()
    assert _reader(db) == want


def test_file_database_input_changed_by_another_program(data):
    _, _, tmp = data
    db = _lazy_table_in_file(tmp)
    raw = duckdb.connect(db)
    raw.execute("DELETE FROM t WHERE k = 3")
    raw.close()
    assert _reader(db).startswith("changed: ")


def test_drop_inside_a_rolled_back_transaction(data):
    _, _, tmp = data
    eager, lazy = _connect(tmp, "eager"), _connect(tmp, "lazy")
    for con in (eager, lazy):
        con.execute("CREATE TABLE agg AS SELECT k, count(*) AS n FROM u GROUP BY k")
    lazy.execute("BEGIN")
    lazy.execute("DROP TABLE agg")
    lazy.execute("ROLLBACK")  # the table is back: its lineage was filled before the drop
    assert _rows(lazy.sql("SELECT * FROM agg")) == _rows(eager.sql("SELECT * FROM agg"))


def test_filled_inside_a_rolled_back_transaction(data):
    _, _, tmp = data
    eager, lazy = _connect(tmp, "eager"), _connect(tmp, "lazy")
    for con in (eager, lazy):
        con.execute("CREATE TABLE agg AS SELECT k, count(*) AS n FROM u GROUP BY k")
    want = _rows(eager.sql("SELECT * FROM agg"))
    lazy.execute("BEGIN")
    assert _rows(lazy.sql("SELECT * FROM agg")) == want  # filled inside the transaction
    lazy.execute("ROLLBACK")  # ... and emptied again by the rollback: pending again
    assert _filled(lazy, "agg") == 0 and "agg" in lazy._pending
    assert _rows(lazy.sql("SELECT * FROM agg")) == want
