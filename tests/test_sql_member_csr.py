"""``sql.member_csr``: a grouping derived table's member rows matched to a result of few rows (TPC-H q13).

Oracle: brute force over the source rows (every customer row, every order it joins, grouped by key as
SQL groups them, NULL keys together), per result row as sets; the results equal plain DuckDB's. The
query tests assert that the path ran (the general matcher is made to fail), the unit tests compare
with a per-member loop.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from _sql_oracle import left_join_groups, lineage_sets

import traceprop_frames as tpf
from traceprop_frames.sql import correlated, member_csr

Q13 = (
    "SELECT n, count(*) AS k FROM (SELECT ck, count(oid) FROM c LEFT JOIN o ON ck = ock AND NOT bad "
    "GROUP BY ck) AS t(ck, n) GROUP BY n ORDER BY n"
)
PER_ROW = "SELECT ck, n FROM (SELECT ck, count(oid) AS n FROM c LEFT JOIN o ON ck = ock AND NOT bad GROUP BY ck) AS t"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(5)
    root = tmp_path_factory.mktemp("member_csr")
    ck = rng.integers(0, 30, 60).astype(float)
    ck[::11] = np.nan  # NULL customer keys: one group, joins nothing
    c = pd.DataFrame({"ck": pd.array(ck, dtype="Int64"), "name": rng.choice(["a", "b"], 60)})
    ock = rng.integers(0, 40, 200).astype(float)  # keys 30..39: orders of no customer
    ock[::17] = np.nan
    oid = rng.integers(0, 10**6, 200).astype(float)
    oid[::9] = np.nan  # an order whose counted column is NULL: a member that count() skips
    o = pd.DataFrame(
        {
            "ock": pd.array(ock, dtype="Int64"),
            "oid": pd.array(oid, dtype="Int64"),
            "bad": rng.random(200) < 0.3,
        }
    )
    con = tpf.connect(capture="eager")
    plain = duckdb.connect()
    for name, df in (("c", c), ("o", o)):
        df.to_parquet(root / f"{name}.parquet", index=False)
        con.read_parquet(root / f"{name}.parquet", name=name)
        plain.register(name, df)
    yield con, plain, c, o
    con.close()
    plain.close()


def _groups(c, o) -> dict:
    """The brute-force groups of the q13 shape (orders not ``bad``)."""
    return left_join_groups(c, o, lambda r: not r["bad"])


@pytest.fixture
def only_new(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("the general matcher ran")

    monkeypatch.setattr(correlated, "member_rows", fail)


def test_q13_shape(data, only_new):
    con, plain, c, o = data
    df = con.sql(Q13)
    pd.testing.assert_frame_equal(df.reset_index(drop=True), plain.sql(Q13).df())
    groups = _groups(c, o)
    assert None in groups and any(not g[1] for g in groups.values()), (
        "no NULL key / no customer without orders"
    )
    for n, got in zip(df["n"], lineage_sets(df)):
        want = set().union(*(g[0] | g[1] for g in groups.values() if g[2][0] == n))
        assert got == want, n


def test_one_group_per_row(data, only_new):
    con, plain, c, o = data
    df = con.sql(PER_ROW)
    pd.testing.assert_frame_equal(
        df.sort_values("ck").reset_index(drop=True),
        plain.sql(PER_ROW).df().sort_values("ck").reset_index(drop=True),
    )
    groups = _groups(c, o)
    for k, got in zip(df["ck"], lineage_sets(df)):
        g = groups[None if pd.isna(k) else int(k)]
        assert got == g[0] | g[1], k


def test_many_rows_take_the_general_path(data, monkeypatch):
    """Above MAX_ROWS result rows: member_rows / member_parts, the same lineage."""
    con, plain, c, o = data
    monkeypatch.setattr(member_csr, "MAX_ROWS", 0)
    calls = []
    real = correlated.member_rows
    monkeypatch.setattr(correlated, "member_rows", lambda *a: calls.append(1) or real(*a))
    con._eager_plans.clear()
    df = con.sql(Q13)
    assert calls
    groups = _groups(c, o)
    for n, got in zip(df["n"], lineage_sets(df)):
        assert got == set().union(*(g[0] | g[1] for g in groups.values() if g[2][0] == n)), n


@pytest.mark.parametrize("n,seed", [(0, 0), (1, 1), (7, 2), (254, 3), (255, 4), (300, 5)])
@pytest.mark.parametrize("shift", [0, 100, 10**9])  # keys around 0, from 50, far from 0
def test_owners_and_csr_against_a_loop(n, seed, shift):
    """Random keys (NULLs, keys of no result row, one NULL-key row), two id columns with NULLs."""
    rng = np.random.default_rng(seed)
    n_keys = int(rng.integers(n, 3 * n + 2)) if n else 0  # (every result row has a key)
    keys = rng.permutation(np.arange(-50, 4 * n + 60))[:n_keys] + shift
    pos = np.sort(rng.integers(0, max(n, 1), n_keys)) if n else np.zeros(0, dtype=np.int64)
    kv = keys.astype(object)
    if n:
        kv[rng.integers(0, n_keys)] = None  # the NULL group, in one result row
    m = 2000
    mk = rng.choice(np.concatenate([keys, [10**6, -(10**6)]]), m).astype(object)
    mk[rng.random(m) < 0.05] = None
    x0 = rng.integers(0, 2**41, m)
    x1 = rng.integers(0, 2**41, m).astype(object)
    x1[rng.random(m) < 0.2] = None
    members = pa.table(
        {"__tp_k0": pa.array(mk, pa.int64()), "__tp_x0": x0, "__tp_x1": pa.array(x1, pa.int64())}
    )
    values = pa.StructArray.from_arrays([pa.array(kv, pa.int64())], names=["__tp_c0"])
    owner = member_csr.member_owners(members, pos.astype(np.int64), values, n)
    row_of = {k: int(p) for k, p in zip(kv, pos)}
    want = [[] for _ in range(n)]
    for j in range(m):
        r = row_of.get(mk[j])
        assert owner[j] == (n if r is None else r)
        if r is not None:
            want[r] += [int(x0[j])] + ([] if x1[j] is None else [int(x1[j])])
    ((off, ids),) = member_csr.member_csr(members, owner, n, 2)
    assert len(off) == n + 1
    for r in range(n):
        assert sorted(ids[off[r] : off[r + 1]].tolist()) == sorted(want[r]), r


def test_owners_not_applied():
    members = pa.table({"__tp_k0": pa.array([1, 2]), "__tp_x0": pa.array([10, 11])})
    one = pa.StructArray.from_arrays([pa.array([1, 2])], names=["__tp_c0"])
    pos = np.array([0, 1])
    assert member_csr.member_owners(members, pos, one, member_csr.MAX_ROWS + 1) is None  # many rows
    sparse = pa.StructArray.from_arrays([pa.array([1, 10**12])], names=["__tp_c0"])
    assert member_csr.member_owners(members, pos, sparse, 2) is None  # keys far apart
    twice = pa.StructArray.from_arrays([pa.array([1, 1])], names=["__tp_c0"])
    assert member_csr.member_owners(members, pos, twice, 2) is None  # a key in two rows
    text = pa.StructArray.from_arrays([pa.array(["a", "b"])], names=["__tp_c0"])
    assert member_csr.member_owners(members, pos, text, 2) is None


def test_ids_of_a_sliced_column_with_nulls():
    col = pa.array([7, None, 2**41 + 3, None, 5], pa.int64()).slice(1)
    ids = member_csr._ids(col)
    assert len(ids) == 4 and ids[1] == 2**41 + 3 and ids[3] == 5
