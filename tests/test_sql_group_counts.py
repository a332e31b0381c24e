"""``sql.group_counts``: a grouping derived table of counts computed in numpy from its member rows (q13).

Oracle: brute force over the source rows (every customer row, every order it joins, grouped by key as
SQL groups them, NULL keys together; each count counted by hand), and plain DuckDB on the same tables
for the values. The query tests assert that the numpy path ran (or, for the shapes it must refuse, that
it did not); the unit tests compare :func:`group_counts.groups` with pandas' ``groupby(dropna=False)``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from _sql_oracle import eager_lazy_plain, lineage_sets

from traceprop_frames.sql import group_counts

_JOIN = "FROM c LEFT JOIN o ON ck = ock AND NOT bad"
Q13 = f"SELECT n, count(*) AS k FROM (SELECT ck, count(oid) {_JOIN} GROUP BY ck) AS t(ck, n) GROUP BY n ORDER BY n"
PER_ROW = f"SELECT ck, a, b, e FROM (SELECT ck, count(*) AS a, count(oid) AS b, count(ck) AS e {_JOIN} GROUP BY ck) AS t"
EMPTY = (
    f"SELECT n, count(*) AS k FROM (SELECT ck, count(oid) {_JOIN} WHERE name = 'z' GROUP BY ck) AS t(ck, n) "
    "GROUP BY n ORDER BY n"
)
# shapes the numpy path must refuse (it counts; these do not): a DISTINCT count, a sum, a HAVING
REFUSED = [
    f"SELECT n, count(*) AS k FROM (SELECT ck, count(DISTINCT oid) {_JOIN} GROUP BY ck) AS t(ck, n) GROUP BY n",
    f"SELECT n, count(*) AS k FROM (SELECT ck, sum(oid) {_JOIN} GROUP BY ck) AS t(ck, n) GROUP BY n",
    f"SELECT n, count(*) AS k FROM (SELECT ck, count(oid) {_JOIN} GROUP BY ck HAVING count(*) > 1) AS t(ck, n) "
    "GROUP BY n",
    f"SELECT n, count(*) AS k FROM (SELECT ck, count(oid) + 1 {_JOIN} GROUP BY ck) AS t(ck, n) GROUP BY n",
]


def _tables(seed: int, shift: int):
    rng = np.random.default_rng(seed)
    ck = (rng.integers(0, 30, 60) + shift).astype(float)  # duplicate customer keys: one group each
    ck[::11] = np.nan  # NULL customer keys: one group, joins nothing
    c = pd.DataFrame({"ck": pd.array(ck, dtype="Int64"), "name": rng.choice(["a", "b"], 60)})
    ock = (rng.integers(0, 40, 200) + shift).astype(float)  # keys 30..39: orders of no customer
    ock[::17] = np.nan
    oid = rng.integers(0, 5, 200).astype(float)  # few values: a DISTINCT count differs from a count
    oid[::9] = np.nan  # an order whose counted column is NULL: a member count(oid) skips
    o = pd.DataFrame(
        {
            "ock": pd.array(ock, dtype="Int64"),
            "oid": pd.array(oid, dtype="Int64"),
            "bad": rng.random(200) < 0.3,
        }
    )
    return c, o


@pytest.fixture(scope="module", params=[0, -(10**6), 10**9], ids=["near0", "negative", "far"])
def data(request, tmp_path_factory):
    c, o = _tables(7, request.param)
    eager, lazy, plain = eager_lazy_plain(tmp_path_factory.mktemp("group_counts"), {"c": c, "o": o})
    yield eager, lazy, plain, c, o
    for con in (eager, lazy, plain):
        con.close()


def _groups(c, o) -> dict:
    """Group key -> (source rows, count(*), count(oid)), by brute force over the LEFT JOIN."""
    out: dict = {}
    for i, k in enumerate(c["ck"]):
        key = None if pd.isna(k) else int(k)
        rows, n = out.setdefault(key, (set(), [0, 0]))
        rows.add(("c", i))
        hits = [
            j
            for j in range(len(o))
            if key is not None and not pd.isna(o["ock"][j]) and int(o["ock"][j]) == key and not o["bad"][j]
        ]
        n[0] += max(len(hits), 1)  # an unmatched customer is one row of the LEFT JOIN
        n[1] += sum(0 if pd.isna(o["oid"][j]) else 1 for j in hits)
        rows.update(("o", j) for j in hits)
    return out


@pytest.fixture
def ran(monkeypatch):
    """The results of group_counts.groups in this test (None: it did not apply)."""
    calls = []
    real = group_counts.groups
    monkeypatch.setattr(group_counts, "groups", lambda *a: calls.append(real(*a)) or calls[-1])
    return calls


def test_q13_shape(data, ran):
    eager, _, plain, c, o = data
    df = eager.sql(Q13)
    assert len(ran) == 1 and ran[0] is not None, "the numpy groups did not run"
    pd.testing.assert_frame_equal(df.reset_index(drop=True), plain.sql(Q13).df())
    groups = _groups(c, o)
    assert None in groups and any(g[1][1] == 0 for k, g in groups.items() if k is not None)
    assert any(n[0] > 1 for _, n in groups.values())  # a key of several customers or orders
    for n, got in zip(df["n"], lineage_sets(df)):
        assert got == set().union(*(g[0] for g in groups.values() if g[1][1] == n)), n


def test_counts_per_group(data, ran):
    """count(*), count(oid) and count(ck) of each group (the NULL key's: count(ck) 0), one per row."""
    eager, lazy, plain, c, o = data
    df = eager.sql(PER_ROW)
    assert ran and ran[0] is not None
    groups = _groups(c, o)
    want = pd.DataFrame(
        [(k, n[0], n[1], 0 if k is None else n[0]) for k, (_, n) in groups.items()],
        columns=["ck", "a", "b", "e"],
    )
    key = lambda f: f.assign(ck=f["ck"].astype("Float64")).sort_values("ck", na_position="last")  # noqa: E731
    got = key(df.reset_index(drop=True)).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, key(want).reset_index(drop=True), check_dtype=False)
    pd.testing.assert_frame_equal(got, key(plain.sql(PER_ROW).df()).reset_index(drop=True))
    for k, got_rows in zip(df["ck"], lineage_sets(df)):
        assert got_rows == groups[None if pd.isna(k) else int(k)][0], k
    lz = lazy.sql(PER_ROW)
    assert sorted(map(sorted, lineage_sets(lz))) == sorted(map(sorted, lineage_sets(df)))


def test_no_members(data, ran):
    eager, _, plain, *_ = data
    df = eager.sql(EMPTY)
    assert ran and ran[0] is not None and ran[0].num_rows == 0
    assert len(df) == 0 and len(plain.sql(EMPTY).df()) == 0


@pytest.mark.parametrize("sql", REFUSED)
def test_other_aggregates_keep_the_split_query(data, ran, sql):
    """The control: these give different values than a count of the group's rows (the data has
    repeated oids and groups of several members), so counting them in numpy would be caught here."""
    eager, _, plain, c, o = data
    df = eager.sql(sql)
    assert not ran, "the numpy groups ran for a shape they do not compute"
    key = lambda f: f.sort_values(["n", "k"]).reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(key(df), key(plain.sql(sql).df()), check_dtype=False)
    groups = _groups(c, o)
    assert sum(1 for k in groups if k is not None) == sum(1 for k in groups if k is not None and groups[k][0])


# counted columns whose NULLs are not (only) in an Arrow validity bitmap: NULL-typed, a union, an enum
ODD = [
    "NULL AS z",
    "CASE WHEN oid IS NULL THEN NULL ELSE union_value(a := 1) END AS z",
    "CAST(CASE WHEN oid IS NULL THEN NULL ELSE 'x' END AS ENUM('x', 'y')) AS z",
]


@pytest.mark.parametrize("z", ODD, ids=["null", "union", "enum"])
def test_counted_columns_without_a_bitmap(data, ran, z):
    """count(z) over a LEFT JOIN: a customer without orders has a NULL z whatever its type. Counted
    from a validity bitmap that a NULL-typed or union column does not have, these counts were wrong."""
    eager, _, plain, *_ = data
    sql = (
        f"SELECT n, count(*) AS k FROM (SELECT ck, count(z) FROM c LEFT JOIN (SELECT *, {z} FROM o) AS o2 "
        "ON ck = ock AND NOT bad GROUP BY ck) AS t(ck, n) GROUP BY n ORDER BY n"
    )
    df = eager.sql(sql)
    pd.testing.assert_frame_equal(df.reset_index(drop=True), plain.sql(sql).df())
    assert ran and all(g is None for g in ran)  # M was read, its groups left to DuckDB


def _members(rng, m: int, key_type, shift: int) -> pa.Table:
    k = (rng.integers(-20, 60, m) + shift).astype(object)
    k[rng.random(m) < 0.1] = None
    v = rng.integers(0, 9, m).astype(object)
    v[rng.random(m) < 0.3] = None
    return pa.table(
        {
            "__tp_k0": pa.array(k, key_type),
            "__tp_v1": pa.array(v, pa.int64()),
            "__tp_v2": pa.array(rng.choice(["x", None], m), pa.string()),
            "__tp_x0": pa.array(np.arange(m)),
        }
    )


@pytest.mark.parametrize("m", [0, 1, 50, 3000])
@pytest.mark.parametrize("key_type,shift", [(pa.int64(), 0), (pa.int32(), -(10**5)), (pa.int16(), 100)])
def test_groups_against_pandas(m, key_type, shift):
    rng = np.random.default_rng(m)
    members = _members(rng, m, key_type, shift)
    if m:  # in several chunks, as DuckDB returns them
        members = pa.concat_tables([members.slice(0, m // 3), members.slice(m // 3)])
    counted = (None, "__tp_v1", "__tp_k0", "__tp_v2")
    got = group_counts.groups(members, counted)
    assert got.schema.field("__tp_k0").type == key_type
    assert all(got.schema.field(f"__tp_n{j}").type == pa.int64() for j in range(4))
    df = members.to_pandas()
    want = df.groupby("__tp_k0", dropna=False).agg(
        __tp_n0=("__tp_x0", "size"),
        __tp_n1=("__tp_v1", "count"),
        __tp_n2=("__tp_k0", "count"),
        __tp_n3=("__tp_v2", "count"),
    )
    rows = lambda ks, ns: sorted(  # noqa: E731
        ((None if pd.isna(k) else int(k), *map(int, n)) for k, n in zip(ks, ns)), key=str
    )
    g = got.to_pandas()
    assert rows(g["__tp_k0"], g.drop(columns="__tp_k0").to_numpy()) == rows(want.index, want.to_numpy())


def test_groups_not_applied():
    m = pa.table({"__tp_k0": pa.array([1, 10**12]), "__tp_v1": pa.array([1, 2])})
    assert group_counts.groups(m, (None,)) is None  # sparse keys: DuckDB groups them
    t = pa.table({"__tp_k0": pa.array(["a", "b"])})
    assert group_counts.groups(t, (None,)) is None  # not an integer key
    u = pa.table({"__tp_k0": pa.array([1, 2], pa.uint64())})
    assert group_counts.groups(u, (None,)) is None
    assert group_counts.groups(m, ("__tp_v9",)) is None  # a column M does not have
