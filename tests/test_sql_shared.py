"""Rows many result rows share (uncorrelated subqueries, IN lists over CTEs) are stored once.

Oracles: plain DuckDB's result; re-running the original query on only a row's lineage rows reproduces
the row; the known structure of the queries (each q23 row reads one sales row and one date row itself;
everything else it depends on is a shared set, one per distinct item / customer / scalar subquery).
"""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

import traceprop_frames as tpf
from traceprop_frames.lineage import decode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import tpcds_like  # noqa: E402


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    paths = tpcds_like.make_tables(tmp_path_factory.mktemp("tpcds"), store_sales=400, seed=0)
    con = tpf.connect()
    plain = duckdb.connect()
    for name, path in paths.items():
        con.read_parquet(path, name=name)
        plain.execute(f"CREATE TABLE {name} AS SELECT * FROM read_parquet('{path}')")
    frames = {name: pd.read_parquet(path) for name, path in paths.items()}
    yield con, plain, frames
    con.close()
    plain.close()


def _rows(df) -> list[tuple]:
    return [tuple(round(float(v), 4) for v in r) for r in df.astype(float).itertuples(index=False, name=None)]


def _reproduces(df, i, frames, query) -> bool:
    src = {Path(p).stem: rows for p, rows in df.tp.sources(i).items()}
    sub = duckdb.connect()
    for name, frame in frames.items():
        sub.register(name, frame.iloc[np.sort(src.get(name, np.zeros(0, dtype=np.int64)))])
    again = _rows(sub.sql(query).df())
    sub.close()
    return _rows(df)[i] in again


def test_q23_pattern_is_sufficient_and_stored_once(ds):
    con, plain, frames = ds
    query = tpcds_like.Q23_ROWS
    df = con.sql(query)
    assert sorted(_rows(df)) == sorted(_rows(plain.sql(query).df()))
    assert len(df) > 3
    lin = df.tp.lineage()
    rng = np.random.default_rng(0)
    for i in sorted(set(rng.choice(len(df), size=min(3, len(df)), replace=False).tolist())):
        assert _reproduces(df, i, frames, query), i
    # direct part: the sales row and the date row; the rest are references to shared sets
    assert lin.n_ids == 2 * len(df)
    n_items, n_cust = df["item"].nunique(), df["cust"].nunique()
    assert lin.context.n_sets <= n_items + n_cust + 1  # + the scalar subquery's set
    flat = lin.flattened()
    assert flat.n_ids > 10 * (lin.n_ids + sum(len(b.pool) for b in lin.context.blocks.values()))


def test_q23_sum_row_reads_whole_witness_groups(ds):
    con, plain, frames = ds
    df = con.sql(tpcds_like.Q23_SUM)
    assert _rows(df) == _rows(plain.sql(tpcds_like.Q23_SUM).df())
    rows = df.tp.lineage().row_ids(0)
    assert _reproduces(df, 0, frames, tpcds_like.Q23_SUM)
    assert len(rows) < sum(len(f) for f in frames.values())  # not simply everything


def test_scalar_subquery_is_one_shared_set(ds):
    con, plain, frames = ds
    q = "SELECT ss_quantity FROM store_sales WHERE ss_quantity > (SELECT avg(ss_quantity) FROM store_sales)"
    df = con.sql(q)
    lin = df.tp.lineage()
    assert len(df) == len(plain.sql(q).df()) and len(df) > 10
    assert lin.context.n_sets == 1 and len(lin.context.refs) == len(df)
    assert lin.n_ids == len(df)
    everything = set(range(len(frames["store_sales"])))
    for i in (0, len(df) - 1):
        assert set(df.tp.sources(i)[next(iter(df.tp.sources(i)))].tolist()) == everything


@pytest.mark.parametrize(
    "query",
    [
        "WITH tot AS (SELECT sum(ss_quantity) AS s FROM store_sales) "
        "SELECT ss_quantity / s AS share FROM store_sales, tot",
        "SELECT ss_quantity / s AS share FROM store_sales "
        "CROSS JOIN (SELECT sum(ss_quantity) AS s FROM store_sales WHERE ss_item_sk < 3)",
    ],
)
def test_one_row_aggregate_joined_to_every_row_is_one_shared_set(ds, query):
    con, plain, frames = ds
    df = con.sql(query)
    assert sorted(_rows(df)) == sorted(_rows(plain.sql(query).df()))
    lin = df.tp.lineage()
    assert lin.n_ids == len(df) and lin.context.n_sets == 1  # each row: its own sale + one reference
    ss = frames["store_sales"]
    read = set(range(len(ss))) if "WHERE" not in query else set(np.flatnonzero(ss["ss_item_sk"] < 3).tolist())
    for i in (0, len(df) - 1):
        own = decode(lin.row_ids(i, direct=True))[1].tolist()
        assert len(own) == 1
        assert set(decode(lin.row_ids(i))[1].tolist()) == read | set(own)
        assert _reproduces(df, i, frames, query)
