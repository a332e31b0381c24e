"""Two small sources and the grouping CREATE TABLE ... AS run that the deferred-oid tests share: ``t``
(key ``k``, value ``v``) and ``u`` (key ``k``, count ``w``), written as Parquet; ``a`` and ``b`` group
them by ``k`` and ``JOINED`` reads all three, as the credit ETL's final query does."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
from _sql_oracle import rows_of

import traceprop_frames as tpf

CTAS_A = "CREATE OR REPLACE TABLE a AS SELECT k, count(*) AS n FROM t GROUP BY k"
CTAS_B = "CREATE OR REPLACE TABLE b AS SELECT k, sum(w) AS s FROM u GROUP BY k"
JOINED = "SELECT t.*, a.n, b.s FROM t LEFT JOIN a USING (k) LEFT JOIN b USING (k)"


def write_frames(tmp_path, seed: int):
    """(t, u, tmp_path): the two frames drawn with ``seed``, written to ``tmp_path/{t,u}.parquet``."""
    rng = np.random.default_rng(seed)
    t = pd.DataFrame({"k": rng.integers(0, 6, 30), "v": rng.normal(size=30).round(3)})
    u = pd.DataFrame({"k": rng.integers(2, 9, 20), "w": rng.integers(0, 50, 20)})
    t.to_parquet(tmp_path / "t.parquet", index=False)
    u.to_parquet(tmp_path / "u.parquet", index=False)
    return t, u, tmp_path


def joined_oracle(t: pd.DataFrame, u: pd.DataFrame) -> list[set]:
    """``JOINED``'s lineage by the pipeline's structure: row ``i`` of ``t``, every ``t`` and ``u`` row of
    its key (the groups ``a`` and ``b`` were made of)."""
    return [
        rows_of("t", [i]) | rows_of("t", np.flatnonzero(t.k == k)) | rows_of("u", np.flatnonzero(u.k == k))
        for i, k in enumerate(t.k)
    ]


def group_oracle(df: pd.DataFrame, name: str, keys) -> list[set]:
    """A grouping CTAS's lineage: per key, the rows of source ``name`` with that key."""
    return [rows_of(name, np.flatnonzero(df.k == k)) for k in keys]


def connect(tmp, capture: str = "lazy", database: str = ":memory:"):
    """A traced connection with ``t`` and ``u`` loaded from ``tmp``."""
    con = tpf.connect(database, capture=capture)
    con.read_parquet(tmp / "t.parquet", name="t")
    con.read_parquet(tmp / "u.parquet", name="u")
    return con


def count_reads(con) -> list[int]:
    """Count the connection's oid reads (``duckdb_tables()``) from now on: ``n[0]``."""
    n = [0]
    read = con._read_oids

    def counted():
        n[0] += 1
        return read()

    con._read_oids = counted
    return n


def plain_connection(tmp, *statements):
    """Plain DuckDB over the same Parquet files as :func:`connect`'s tables, ``statements`` run on it."""
    con = duckdb.connect()
    for name in ("t", "u"):
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM read_parquet('{tmp / (name + '.parquet')}')")
    for s in statements:
        con.execute(s)
    return con
