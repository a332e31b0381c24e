"""``sql.member_join``: a grouping derived table's LEFT JOIN members built from each table read alone.

Oracle: brute force over the source rows (every customer row, every order it joins under the ON
condition, grouped by key as SQL groups them, NULL keys together), per result row as sets; results
equal plain DuckDB's. The query tests assert which path ran (``member_join.members`` answered or
refused); ``match`` is compared with a pandas merge.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from _sql_oracle import left_join_groups, lineage_sets

import traceprop_frames as tpf
from traceprop_frames.sql import member_join

Q13 = (
    "SELECT n, count(*) AS k FROM (SELECT ck, count(oid) FROM c LEFT JOIN o ON ck = ock AND NOT bad "
    "GROUP BY ck) AS t(ck, n) GROUP BY n ORDER BY n"
)
PER_ROW = (
    "SELECT ck, n, m, s FROM (SELECT ck, count(oid) AS n, count(*) AS m, max(name) AS s FROM c "
    "LEFT JOIN o ON ck = ock AND NOT bad GROUP BY ck) AS t"
)
ALIASED = (
    "SELECT n, count(*) AS k FROM (SELECT x.ck, count(y.oid) FROM c AS x LEFT OUTER JOIN o AS y "
    "ON y.ock = x.ck AND (y.oid > 10 OR y.oid IS NULL) GROUP BY x.ck) AS t(ck, n) GROUP BY n ORDER BY n"
)


def _tables(seed: int, base: int, unique: bool = True, n_o: int = 200):
    rng = np.random.default_rng(seed)
    keys = rng.permutation(40)[:30] if unique else rng.integers(0, 30, 30)
    ck = (keys + base).astype(float)
    ck[::7] = np.nan  # NULL customer keys: one group, joins nothing (several of them)
    c = pd.DataFrame({"ck": pd.array(ck, dtype="Int64"), "name": rng.choice(["a", "b", None], 30)})
    ock = (rng.integers(-5, 46, n_o) + base).astype(float)  # keys below / above / between the customers'
    ock[::17] = np.nan
    oid = rng.integers(0, 10**6, n_o).astype(float)
    oid[::9] = np.nan  # a member that count(oid) skips
    bad = pd.array(rng.random(n_o) < 0.3, dtype="boolean")
    bad[::13] = pd.NA  # NOT NULL: the ON condition is not true, no match
    o = pd.DataFrame({"ock": pd.array(ock, dtype="Int64"), "oid": pd.array(oid, dtype="Int64"), "bad": bad})
    return c, o


def _connect(tmp_path, c, o):
    con, plain = tpf.connect(capture="eager"), duckdb.connect()
    for name, df in (("c", c), ("o", o)):
        df.to_parquet(tmp_path / f"{name}.parquet", index=False)
        con.read_parquet(tmp_path / f"{name}.parquet", name=name)
        plain.register(name, df)
    return con, plain


def _not_bad(r) -> bool:
    return not pd.isna(r["bad"]) and not r["bad"]


def _oid_cond(r) -> bool:
    return pd.isna(r["oid"]) or r["oid"] > 10


@pytest.fixture
def spy(monkeypatch):
    calls = []
    real = member_join.members
    monkeypatch.setattr(member_join, "members", lambda raw, sql: calls.append(real(raw, sql)) or calls[-1])
    return calls


def _check_grouped(con, plain, c, o, sql, cond):
    df = con.sql(sql)
    pd.testing.assert_frame_equal(df.reset_index(drop=True), plain.sql(sql).df())
    groups = left_join_groups(c, o, cond)
    for n, got in zip(df["n"], lineage_sets(df)):
        assert got == set().union(*(g[0] | g[1] for g in groups.values() if g[2][0] == n)), n
    return groups


@pytest.mark.parametrize("base", [0, 1, -(10**6), 10**9])
@pytest.mark.parametrize("sql,cond", [(Q13, _not_bad), (ALIASED, _oid_cond)])
def test_grouped_shape(tmp_path, spy, base, sql, cond):
    c, o = _tables(3, base)
    con, plain = _connect(tmp_path, c, o)
    groups = _check_grouped(con, plain, c, o, sql, cond)
    assert spy and all(m is not None for m in spy), "member_join did not answer"
    assert None in groups and any(not g[1] for g in groups.values()), "no NULL key / no unmatched customer"


@pytest.mark.parametrize("base", [0, 10**9])
def test_one_group_per_row(tmp_path, spy, base):
    """count(*) counts an unmatched customer once; a left string column (with NULLs) is carried."""
    c, o = _tables(4, base)
    con, plain = _connect(tmp_path, c, o)
    df = con.sql(PER_ROW)
    key = ["ck"]
    pd.testing.assert_frame_equal(
        df.sort_values(key).reset_index(drop=True),
        plain.sql(PER_ROW).df().sort_values(key).reset_index(drop=True),
    )
    assert spy and spy[0] is not None
    groups = left_join_groups(c, o, _not_bad)
    for k, got in zip(df["ck"], lineage_sets(df)):
        g = groups[None if pd.isna(k) else int(k)]
        assert got == g[0] | g[1], k


def test_duplicate_left_keys_refused(tmp_path, spy):
    """A repeated customer key pairs each of its orders with every such customer: M's SQL runs."""
    c, o = _tables(5, 0, unique=False)
    assert c["ck"].dropna().duplicated().any()
    con, plain = _connect(tmp_path, c, o)
    _check_grouped(con, plain, c, o, Q13, _not_bad)
    assert spy == [None]


@pytest.mark.parametrize("n_o", [0, 1])
def test_few_or_no_orders(tmp_path, spy, n_o):
    c, o = _tables(6, 0, n_o=n_o)
    con, plain = _connect(tmp_path, c, o)
    _check_grouped(con, plain, c, o, Q13, _not_bad)
    assert spy and spy[0] is not None


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT ck AS __tp_k0, oid AS __tp_v1 FROM c JOIN o ON ck = ock",  # inner join
        "SELECT ck AS __tp_k0, oid AS __tp_v1 FROM c RIGHT JOIN o ON ck = ock",
        "SELECT ck AS __tp_k0, oid AS __tp_v1 FROM c LEFT JOIN o ON ck = ock WHERE oid > 1",
        "SELECT ck AS __tp_k0, oid AS __tp_v1 FROM c LEFT JOIN o ON ck = ock AND name = 'a'",  # left column
        "SELECT ck AS __tp_k0, oid AS __tp_v1 FROM c LEFT JOIN o ON ck = ock AND abs(oid) > 1",  # function
        "SELECT ck AS __tp_k0, oid AS __tp_v1 FROM c LEFT JOIN o ON ck = ock AND random() < 0.5",
        "SELECT ck AS __tp_k0, oid AS __tp_v1 FROM c LEFT JOIN o ON ck = ock AND oid IN (SELECT 1)",
        "SELECT ck AS __tp_k0, oid AS __tp_v1 FROM c LEFT JOIN o ON ck < ock",
        "SELECT ck AS __tp_k0, oid AS __tp_v1 FROM c LEFT JOIN o ON ck = ock OR oid = 1",
        "SELECT ck AS __tp_k0, oid + 1 AS __tp_v1 FROM c LEFT JOIN o ON ck = ock",  # not a column
        "SELECT ck AS __tp_k0, oid AS __tp_v1 FROM c LEFT JOIN o ON ck = ock LEFT JOIN c AS d ON d.ck = ock",
        "SELECT ck AS __tp_k0, oid AS __tp_v1 FROM c LEFT JOIN o ON ck + 0 = ock",
        "SELECT c.ck AS __tp_k0, c.ck AS __tp_k0 FROM c LEFT JOIN o ON c.ck = o.ock",  # one name twice
        "SELECT DISTINCT ck AS __tp_k0 FROM c LEFT JOIN o ON ck = ock",
        "SELECT ck AS __tp_k0, x.ock AS __tp_v1 FROM c LEFT JOIN o AS x ON ck = ock LEFT JOIN o ON 1 = 1",
    ],
)
def test_refused_shapes(tmp_path, sql):
    c, o = _tables(7, 0)
    con, _ = _connect(tmp_path, c, o)
    assert member_join.members(con._raw, sql) is None


def test_refused_key_types(tmp_path):
    """A key that is not an integer column (here a string on the right): M's SQL runs."""
    c, o = _tables(8, 0)
    o["ock"] = o["ock"].astype("string")
    con, plain = _connect(tmp_path, c, o)
    assert (
        member_join.members(con._raw, "SELECT ck AS __tp_k0, oid AS __tp_v1 FROM c LEFT JOIN o ON ck = ock")
        is None
    )


def _merge(lk, rk):
    """(left row per matched right row, right rows, unmatched left rows) by pandas merge."""
    left = pd.DataFrame({"k": pd.array(lk, dtype="Int64"), "li": range(len(lk))})
    right = pd.DataFrame({"k": pd.array(rk, dtype="Int64"), "ri": range(len(rk))})
    m = left.dropna().merge(right.dropna(), on="k")
    return sorted(zip(m["li"], m["ri"])), sorted(set(range(len(lk))) - set(m["li"]))


@pytest.mark.parametrize("seed", range(12))
def test_match_against_merge(seed):
    rng = np.random.default_rng(seed)
    base = int(rng.choice([0, 3, -50, 10**9, -(10**12)]))
    n_l, n_r = int(rng.integers(0, 40)), int(rng.integers(0, 120))
    lk = [None if rng.random() < 0.15 else int(k) + base for k in rng.permutation(60)[:n_l]]
    rk = [None if rng.random() < 0.1 else int(k) + base for k in rng.integers(-10, 70, n_r)]
    got = member_join.match(pa.array(lk, pa.int64()), pa.array(rk, pa.int32() if base == 0 else pa.int64()))
    li, ri, lone = got
    ri = np.arange(len(rk)) if ri is None else ri
    pairs, unmatched = _merge(lk, rk)
    assert sorted(zip(li.tolist(), ri.tolist())) == pairs
    assert lone.tolist() == unmatched


def test_match_refusals():
    assert member_join.match(pa.array([1, 2, 1]), pa.array([1])) is None  # a repeated left key
    assert member_join.match(pa.array([0, 10**9]), pa.array([1])) is None  # sparse
    assert member_join.match(pa.array([1.0]), pa.array([1])) is None  # not an integer
    assert member_join.match(pa.array([1], pa.uint64()), pa.array([1])) is None
    li, ri, lone = member_join.match(pa.array([None, None], pa.int64()), pa.array([1, None]))
    assert len(li) == 0 and lone.tolist() == [0, 1]  # NULL left keys repeat but match nothing


def test_inner_join_keeps_its_path(tmp_path, spy):
    """An inner join's members are only matched pairs (no unmatched customer): not this module's."""
    c, o = _tables(9, 0)
    con, plain = _connect(tmp_path, c, o)
    sql = Q13.replace("LEFT JOIN", "JOIN")
    df = con.sql(sql)
    pd.testing.assert_frame_equal(df.reset_index(drop=True), plain.sql(sql).df())
    groups = {k: g for k, g in left_join_groups(c, o, _not_bad).items() if g[1]}
    for n, got in zip(df["n"], lineage_sets(df)):
        assert got == set().union(*(g[0] | g[1] for g in groups.values() if g[2][0] == n)), n
    assert all(m is None for m in spy)


def test_left_column_in_the_condition_is_refused(tmp_path, spy):
    """``c.ck`` in the ON condition is the customer's key in the join; on the orders read alone it
    would bind to their struct column ``c`` (field ``ck``): the condition reads the left table, so M's
    SQL runs."""
    c, o = _tables(10, 0)
    o["c"] = [{"ck": -int(k) if not pd.isna(k) else None} for k in o["ock"]]
    con, plain = _connect(tmp_path, c, o)
    sql = Q13.replace("AND NOT bad", "AND c.ck > 3")
    _check_grouped(con, plain, c, o, sql, lambda r: not pd.isna(r["ock"]) and r["ock"] > 3)
    assert spy == [None]


@pytest.mark.parametrize("dtype", ["Int32", "Int16"])
def test_key_types_differ(tmp_path, spy, dtype):
    """An INTEGER / SMALLINT order key against the BIGINT customer key: compared by value; the group
    key keeps the customer's type (gathered, not taken from the orders' key)."""
    c, o = _tables(11, 0)
    o["ock"] = o["ock"].astype(dtype)
    con, plain = _connect(tmp_path, c, o)
    _check_grouped(con, plain, c, o, Q13, _not_bad)
    df = con.sql(PER_ROW)
    pd.testing.assert_frame_equal(
        df.sort_values("ck").reset_index(drop=True),
        plain.sql(PER_ROW).df().sort_values("ck").reset_index(drop=True),
    )
    assert spy and all(m is not None for m in spy)


def test_plans_kept_are_bounded_and_an_evicted_plan_is_parsed_again():
    sql = "SELECT a.x AS i, b.y AS j FROM a LEFT JOIN b ON a.k = b.k"
    member_join._plans.clear()
    first = member_join.parse(sql)
    assert first is not None and first.keys[0].name == "k"
    for n in range(member_join._PLANS + 40):  # distinct texts push the first one out
        member_join.parse(f"SELECT a.x AS i, b.y AS j FROM a LEFT JOIN b ON a.k = b.k AND b.y > {n}")
    assert len(member_join._plans) == member_join._PLANS
    assert sql not in member_join._plans
    assert member_join.parse(sql) == first  # parsed again, the same plan
