"""Eager capture that reads a table once for both the query and its lineage.

- ``sql.exists_lateral``: a WHERE conjunct ``EXISTS (q)`` correlated by equalities and its witnesses
  come from one LATERAL subquery (TPC-H q04);
- ``sql.group_members``: a grouping derived table's member rows are read once, the groups computed
  from them and the members matched to the result's groups by key (TPC-H q13).

Oracle: the lineage written out by hand with numpy / pandas from each query's known structure, per
result row as sets; the results equal plain DuckDB's. Each test asserts which path the query took, so
it cannot pass on the path it replaces.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest
from _sql_oracle import lineage_sets, rows_of

import traceprop_frames as tpf


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(11)
    root = tmp_path_factory.mktemp("eager_once")
    o = pd.DataFrame(
        {
            "ok": rng.integers(0, 12, 40),
            "g": rng.choice(["a", "b", "c", "d"], 40),
            "x": rng.integers(0, 100, 40),
        }
    )
    lk = rng.integers(0, 15, 150).astype(float)
    lk[::13] = np.nan  # NULL keys: match no EXISTS, form one GROUP BY group
    l_ = pd.DataFrame(
        {
            "ok": pd.array(lk, dtype="Int64"),
            "sk": rng.integers(0, 4, 150),
            "f": rng.random(150) < 0.5,
            "q": rng.integers(0, 10, 150),
            "s": rng.choice(["p", "q", "r"], 150),
        }
    )
    u = pd.DataFrame({"u": np.arange(6)})
    con = tpf.connect(capture="eager")
    plain = duckdb.connect()
    for name, df in (("o", o), ("l", l_), ("u", u)):
        df.to_parquet(root / f"{name}.parquet", index=False)
        con.read_parquet(root / f"{name}.parquet", name=name)
        plain.register(name, df)
    yield con, plain, o, l_
    con.close()
    plain.close()


def _rw(con, q):
    return con._eager_plans[q][1][2]


def _run(con, plain, q):
    df = con.sql(q)
    pd.testing.assert_frame_equal(df.reset_index(drop=True), plain.sql(q).df())
    return df


def _match(l_, k) -> np.ndarray:
    """l's rows whose ok equals k (SQL equality: NULL equals nothing)."""
    return np.asarray((l_["ok"] == k).fillna(False), dtype=bool)


# ------------------------------------------------------------------ EXISTS and its witnesses at once


def test_exists_per_row(data):
    con, plain, o, l_ = data
    q = "SELECT ok, x FROM o WHERE x > 10 AND EXISTS (SELECT * FROM l WHERE l.ok = o.ok AND l.f) ORDER BY x, ok"
    df = _run(con, plain, q)
    assert _rw(con, q).split_sql.count("LATERAL (SELECT") == 1 and not _rw(con, q).correlated
    f = l_["f"].to_numpy()
    want: dict[tuple, set] = {}
    for i in range(len(o)):
        w = np.flatnonzero(_match(l_, o["ok"][i]) & f)
        if o["x"][i] > 10 and w.size:
            want.setdefault((o["ok"][i], o["x"][i]), set()).update(rows_of("o", [i]) | rows_of("l", w))
    assert len(df) > 3
    for key, got in zip(df[["ok", "x"]].itertuples(index=False), lineage_sets(df)):
        assert got == want[tuple(key)]  # (rows equal in (ok, x) share their witnesses)


def test_two_exists_and_a_join_inside(data):
    """Two EXISTS conjuncts (one lateral each); the second subquery joins two tables (both witness)."""
    con, plain, o, l_ = data
    q = (
        "SELECT g, count(*) AS n, sum(x) AS sx FROM o WHERE EXISTS (SELECT * FROM l WHERE l.ok = o.ok AND l.q > 4) "
        "AND EXISTS (SELECT * FROM l AS l2, u WHERE l2.ok = o.ok AND u.u = l2.sk) GROUP BY g ORDER BY g"
    )
    df = _run(con, plain, q)
    assert _rw(con, q).split_sql.count("LATERAL (SELECT") == 2 and not _rw(con, q).correlated
    big, sk = l_["q"].to_numpy() > 4, l_["sk"].to_numpy()
    for g, got in zip(df["g"], lineage_sets(df)):
        want = set()
        for i in np.flatnonzero(o["g"].to_numpy() == g):
            w1 = np.flatnonzero(_match(l_, o["ok"][i]) & big)
            w2 = np.flatnonzero(_match(l_, o["ok"][i]) & (sk < 6))  # u holds 0..5: every sk joins
            if w1.size and w2.size:
                want |= rows_of("o", [i]) | rows_of("l", w1) | rows_of("l", w2) | rows_of("u", sk[w2])
        assert got == want, g


@pytest.mark.parametrize(
    "q",
    [
        # a star would show the lateral's columns
        "SELECT * FROM o WHERE EXISTS (SELECT * FROM l WHERE l.ok = o.ok AND l.q > 8) ORDER BY ok, x, g",
        # under NOT: no witnesses, nothing to merge
        "SELECT ok, x, g FROM o WHERE NOT EXISTS (SELECT * FROM l WHERE l.ok = o.ok AND l.q > 8) ORDER BY ok, x, g",
    ],
)
def test_exists_not_merged(data, q):
    con, plain, o, l_ = data
    df = _run(con, plain, q)
    rw = _rw(con, q)
    assert rw.split_sql is None or "LATERAL" not in rw.split_sql
    f, neg = l_["q"].to_numpy() > 8, "NOT EXISTS" in q
    want = {}
    for i in range(len(o)):
        w = np.flatnonzero(_match(l_, o["ok"][i]) & f)
        if bool(w.size) != neg:
            want.setdefault((o["ok"][i], o["x"][i], o["g"][i]), set()).update(
                rows_of("o", [i]) | (set() if neg else rows_of("l", w))
            )
    assert len(df) > 3
    for key, got in zip(df[["ok", "x", "g"]].itertuples(index=False), lineage_sets(df)):
        assert got == want[tuple(key)]


# ------------------------------------------------------------------ grouping derived table, members once


def _groups(l_, keys: list[str], mask=None) -> dict:
    """l's rows (under ``mask``) by the values of ``keys`` as GROUP BY groups them (NULLs together)."""
    mask = np.ones(len(l_), dtype=bool) if mask is None else mask
    frame = l_[keys].astype(object).where(l_[keys].notna(), None)
    out: dict = {}
    for j in np.flatnonzero(mask):
        out.setdefault(tuple(frame.iloc[j]), []).append(j)
    return out


def _members_path(con, q, once: bool) -> None:
    sides = [s for s in _rw(con, q).correlated if "IS NOT DISTINCT FROM __tp_cv.__tp_c0" in s.sql]
    assert sides, "the derived table's groups were not left to a side query"
    assert (sides[0].members is not None) == once


@pytest.mark.parametrize(
    "q,keys,mask,size",
    [
        # one integer key with NULLs: the numpy lookup
        (
            "SELECT n, count(*) AS c FROM (SELECT ok, count(*) AS n FROM l GROUP BY ok) AS t GROUP BY n ORDER BY n",
            ["ok"],
            None,
            None,
        ),
        # integer key values far apart: the sorted lookup
        (
            "SELECT n, count(*) AS c FROM (SELECT ok * 1000000000 AS k, count(*) AS n FROM l "
            "GROUP BY ok * 1000000000) AS t GROUP BY n ORDER BY n",
            ["ok"],
            None,
            None,
        ),
        # a string key: the SQL join on the member rows
        (
            "SELECT n, count(*) AS c FROM (SELECT s, count(*) AS n FROM l GROUP BY s) AS t GROUP BY n ORDER BY n",
            ["s"],
            None,
            None,
        ),
        # two keys, a WHERE and a HAVING inside, a column list
        (
            "SELECT n, count(*) AS c FROM (SELECT l.ok, sk, sum(q) FROM l WHERE f GROUP BY l.ok, sk "
            "HAVING count(*) >= 1) AS t(ok, sk, n) GROUP BY n ORDER BY n",
            ["ok", "sk"],
            "f",
            "q",
        ),
    ],
)
def test_grouping_members_read_once(data, q, keys, mask, size):
    con, plain, o, l_ = data
    df = _run(con, plain, q)
    _members_path(con, q, once=True)
    m = l_[mask].to_numpy(dtype=bool) if mask else None
    groups = _groups(l_, keys, m)
    assert "ok" not in keys or any(None in k for k in groups), "no NULL key group"
    value = (lambda rows: int(l_[size].to_numpy()[rows].sum())) if size else len
    for n, got in zip(df["n"], lineage_sets(df)):
        want = set().union(*(rows_of("l", r) for r in groups.values() if value(r) == n))
        assert got == want, n


def test_grouping_members_per_row(data):
    """No outer aggregate: each row is one group."""
    con, plain, o, l_ = data
    q = "SELECT sk, n FROM (SELECT sk, count(*) AS n FROM l WHERE q > 2 GROUP BY sk) AS t ORDER BY sk"
    df = _run(con, plain, q)
    _members_path(con, q, once=True)
    groups = _groups(l_, ["sk"], l_["q"].to_numpy() > 2)
    for sk, got in zip(df["sk"], lineage_sets(df)):
        assert got == rows_of("l", groups[(sk,)]), sk


@pytest.mark.parametrize(
    "q",
    [
        # a WHERE outside: not every group reaches the result (the side query reads only kept groups)
        "SELECT n, count(*) AS c FROM (SELECT ok, count(*) AS n FROM l GROUP BY ok) AS t WHERE n > 8 "
        "GROUP BY n ORDER BY n",
        # an unaliased expression without a column list: its name would change
        "SELECT n FROM (SELECT ok + 0, count(*) AS n FROM l GROUP BY ok) AS t ORDER BY n",
    ],
)
def test_grouping_members_not_read_once(data, q):
    con, plain, o, l_ = data
    df = _run(con, plain, q)
    _members_path(con, q, once=False)
    groups = _groups(l_, ["ok"])
    keep = [r for r in groups.values() if "n > 8" not in q or len(r) > 8]
    for n, got in zip(df["n"], lineage_sets(df)):
        if "count(*) AS c" in q:
            assert got == set().union(*(rows_of("l", r) for r in keep if len(r) == n)), n
        else:  # one group per row; groups of equal size cannot be told apart by n
            assert got in [rows_of("l", r) for r in keep if len(r) == n], n
