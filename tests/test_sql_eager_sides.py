"""Eager capture's side queries: correlated witnesses by the outer values they read, IN witnesses that
group listed one row per member and restricted to the values the result refers to.

Oracle: the lineage written out by hand in pandas for each query's known structure (a result row's own
source rows plus the rows that witnessed its subquery), compared per result row as sets. Each test also
checks the query took the side-query path, so it cannot pass on the in-query ``list()`` it replaces.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from _sql_oracle import rows_of

import traceprop_frames as tpf
from traceprop_frames.sql import same_rows
from traceprop_frames.sql.shared import PRESENT


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(7)
    root = tmp_path_factory.mktemp("eager_sides")
    o = pd.DataFrame(
        {
            "ok": rng.integers(0, 12, 40),
            "g": rng.choice(["a", "b", "c"], 40),
            "x": rng.integers(0, 100, 40),
        }
    )
    lk = rng.integers(0, 15, 120).astype(float)
    lk[::17] = np.nan  # NULL keys match nothing
    l_ = pd.DataFrame(
        {
            "ok": pd.array(lk, dtype="Int64"),
            "sk": rng.integers(0, 4, 120),
            "f": rng.random(120) < 0.5,
            "q": rng.integers(0, 10, 120),
        }
    )
    paths = {"o": root / "o.parquet", "l": root / "l.parquet"}
    o.to_parquet(paths["o"], index=False)
    l_.to_parquet(paths["l"], index=False)
    con = tpf.connect(capture="eager")
    for name, path in paths.items():
        con.read_parquet(path, name=name)
    yield con, o, l_
    con.close()


def _sets(df) -> list[set]:
    out = []
    for i in range(len(df)):
        out.append({(Path(p).stem, int(r)) for p, rows in df.tp.sources(i).items() for r in rows})
    return out


def _plan(con, query):
    return con._eager_plans[query][1][2]


def _eq(a, b) -> np.ndarray:
    """Element-wise SQL equality of two key columns (NULL equals nothing)."""
    a, b = pd.array(a, dtype="Int64"), pd.array(b, dtype="Int64")
    return np.asarray((a == b).fillna(False), dtype=bool)


def _exists_path(con, q, path: str) -> None:
    """Asserts how the EXISTS witness was computed: "lateral" (one LATERAL subquery for the test and
    the witnesses, see ``sql.exists_lateral``), "join" (a join grouped per outer row, see
    ``sql.exists_join``) or "side" (a side query on the outer values)."""
    rw = _plan(con, q)
    if path == "join":
        assert " INNER JOIN " in rw.split_sql and "LATERAL" not in rw.split_sql and not rw.correlated
    elif path == "lateral":
        assert "LATERAL (SELECT" in rw.split_sql and not rw.correlated, "the EXISTS was not merged"
    else:
        assert rw.correlated and "LATERAL" not in rw.split_sql, "the witness did not go to a side query"


# an EXISTS inside OR is not a conjunct of WHERE: it keeps the side query (x >= 0 in every row); a
# grouped query's one EXISTS conjunct becomes a join grouped per outer row (sql.exists_join)
EXISTS_FORMS = [("join", "{}"), ("side", "({} OR o.x < 0)")]


@pytest.mark.parametrize("path,form", EXISTS_FORMS)
def test_correlated_exists_in_an_aggregate(data, path, form):
    con, o, l_ = data
    cond = form.format("EXISTS (SELECT * FROM l WHERE l.ok = o.ok AND l.f)")
    q = f"SELECT g, count(*) AS n FROM o WHERE {cond} GROUP BY g ORDER BY g"
    df = con.sql(q)
    _exists_path(con, q, path)
    plain = duckdb.connect()
    plain.register("o", o)
    plain.register("l", l_)
    pd.testing.assert_frame_equal(df.reset_index(drop=True), plain.sql(q).df())
    for g, got in zip(df["g"], _sets(df)):
        want = set()
        for i in np.flatnonzero(o["g"].to_numpy() == g):
            w = np.flatnonzero(_eq(l_["ok"], np.full(len(l_), o["ok"][i])) & l_["f"].to_numpy())
            if w.size:
                want |= rows_of("o", [i]) | rows_of("l", w)
        assert got == want, g


@pytest.mark.parametrize("form", [f for _, f in EXISTS_FORMS])
def test_correlated_inequality_with_limit(data, form):
    """q21's shape: the correlation has an inequality (so even the WHERE conjunct keeps the side
    query: see ``exists_lateral.equi_correlated``), the result keeps 2 of its groups."""
    con, o, l_ = data
    cond = form.format("EXISTS (SELECT * FROM l AS l2 WHERE l2.ok = l1.ok AND l2.sk <> l1.sk)")
    q = f"SELECT g, count(*) AS n FROM o, l AS l1 WHERE o.ok = l1.ok AND {cond} GROUP BY g ORDER BY g LIMIT 2"
    df = con.sql(q)
    _exists_path(con, q, "side")
    assert len(df) == 2
    ok, sk = l_["ok"], l_["sk"].to_numpy()
    for g, got in zip(df["g"], _sets(df)):
        want = set()
        for i in np.flatnonzero(o["g"].to_numpy() == g):
            for j in np.flatnonzero(_eq(ok, np.full(len(l_), o["ok"][i]))):
                w = np.flatnonzero(_eq(ok, np.full(len(l_), ok[j])) & (sk != sk[j]))
                if w.size:
                    want |= rows_of("o", [i]) | rows_of("l", [j]) | rows_of("l", w)
        assert got == want, g


@pytest.mark.parametrize(
    "q, side",
    [
        # a WHERE conjunct: value and witnesses from one LATERAL (sql.scalar_lateral)
        ("SELECT ok, x FROM o WHERE x > (SELECT 5 * min(q) FROM l WHERE l.ok = o.ok) ORDER BY x, ok", False),
        # the same rows, not a comparison conjunct: the side query
        (
            "SELECT ok, x FROM o WHERE NOT (x <= (SELECT 5 * min(q) FROM l WHERE l.ok = o.ok)) ORDER BY x, ok",
            True,
        ),
    ],
)
def test_correlated_scalar_per_row(data, q, side):
    con, o, l_ = data
    df = con.sql(q)
    assert bool(_plan(con, q).correlated) == side
    assert side or "AS __tp_sv0" in _plan(con, q).split_sql
    assert len(df) > 3
    o_rn = {}
    for i, (k, x) in enumerate(zip(o["ok"], o["x"])):
        o_rn.setdefault((k, x), []).append(i)
    for (k, x), got in zip(df[["ok", "x"]].itertuples(index=False), _sets(df)):
        w = np.flatnonzero(_eq(l_["ok"], np.full(len(l_), k)))
        mine = {("o", i) for i in o_rn[(k, x)]}
        assert got - rows_of("l", w) <= mine and len(got - rows_of("l", w)) == 1
        assert got & rows_of("l", range(len(l_))) == rows_of("l", w)


def _in_oracle(o, l_, members_of) -> dict:
    return {i: rows_of("o", [i]) | rows_of("l", members_of(o["ok"][i])) for i in range(len(o))}


def test_in_witness_that_groups_is_listed_per_member(data):
    con, o, l_ = data
    sums = l_.dropna(subset=["ok"]).groupby("ok")["q"].sum()
    keep = set(sums[sums > 12].index.astype(int))
    for q, only_in in (
        (
            "SELECT ok, x, rowid AS i FROM o WHERE ok IN (SELECT ok FROM l GROUP BY ok HAVING sum(q) > 12)",
            True,
        ),
        (
            "SELECT ok, x, rowid AS i FROM o WHERE ok IN (SELECT ok FROM l GROUP BY ok HAVING sum(q) > 12) OR x > 60",
            False,
        ),
    ):
        df = con.sql(q)
        assert any(PRESENT in sql for sql, _ in _plan(con, q).constants)
        assert len(df) > 2
        members = lambda k: np.flatnonzero(_eq(l_["ok"], np.full(len(l_), k))) if k in keep else []  # noqa: E731
        want = _in_oracle(o, l_, members)
        for i, got in zip(df["i"], _sets(df)):
            assert got == want[int(i)]
        if only_in:
            assert set(df["ok"]) <= keep


def test_in_witnesses_nested_rows(data):
    """A witness whose rows refer to another witness (markers inside a side query's rows)."""
    con, o, l_ = data
    q = "SELECT ok, rowid AS i FROM o WHERE ok IN (SELECT ok FROM l WHERE sk IN (SELECT sk FROM l WHERE q > 7))"
    df = con.sql(q)
    assert sum(PRESENT in sql for sql, _ in _plan(con, q).constants) == 2
    assert len(df) > 2
    inner = np.flatnonzero(l_["q"].to_numpy() > 7)
    sks = set(l_["sk"].to_numpy()[inner])
    for i, got in zip(df["i"], _sets(df)):
        want = rows_of("o", [i])
        for j in np.flatnonzero(_eq(l_["ok"], np.full(len(l_), o["ok"][i]))):
            if l_["sk"][j] in sks:
                want |= rows_of("l", [j]) | rows_of("l", inner[l_["sk"].to_numpy()[inner] == l_["sk"][j]])
        assert got == want, i


def test_macro_whose_subquery_aggregates_its_own_rows(data, tmp_path):
    """DuckDB's test_issue_7079: a macro whose body is a subquery aggregating its own FROM is a scalar
    per caller row (it crashed eager capture: counted as an aggregate of the caller); a macro whose
    aggregate reads only the caller's columns still aggregates the caller's rows."""
    _, o, _ = data
    o.to_parquet(tmp_path / "o.parquet", index=False)
    con = tpf.connect(capture="eager")
    con.read_parquet(tmp_path / "o.parquet", name="o")
    con.raw.execute(
        "CREATE MACRO rv(arr) AS (SELECT coalesce(l, arr) FROM (SELECT array_agg(e ORDER BY g DESC) AS l "
        "FROM (SELECT generate_subscripts(arr, 1) AS g, arr[g] AS e)))"
    )
    con.raw.execute("CREATE MACRO top(v) AS (SELECT max(v))")
    con._cat = None
    assert "rv" not in con._catalog().aggregates and "top" in con._catalog().aggregates
    q = "SELECT rowid AS i, rv([ok, x]) AS r FROM o ORDER BY i"
    df = con.sql(q)
    assert [list(r) for r in df["r"]] == [[x, k] for k, x in zip(o["ok"], o["x"])]
    for i, got in zip(df["i"], _sets(df)):
        assert got == rows_of("o", [i])
    df = con.sql("SELECT top(x) AS m FROM o")
    assert df["m"].tolist() == [o["x"].max()]
    assert _sets(df) == [rows_of("o", range(len(o)))]
    con.close()


def test_scalar_witness_listed_per_member(data, monkeypatch):
    """A scalar subquery that aggregates every row it reads (q11's HAVING threshold, q15's max over a
    grouping CTE): its side query lists the members one row each - for the CTE, the CTE's own source
    rows - and the shared set is the same rows the in-query list() gave."""
    con, o, l_ = data
    q = "SELECT ok, x, rowid AS i FROM o WHERE x > (SELECT avg(q) * 5 FROM l WHERE f) ORDER BY i"
    df = con.sql(q)
    ((side, _),) = _plan(con, q).constants
    assert "FROM temp.__tp_sc_0" in side  # value and witnesses computed once (sql.scalar_temp)
    w = rows_of("l", np.flatnonzero(l_["f"].to_numpy()))
    assert set(df["i"]) == set(np.flatnonzero(o["x"].to_numpy() > l_["q"][l_["f"]].mean() * 5))
    for i, got in zip(df["i"], _sets(df)):
        assert got == rows_of("o", [i]) | w
    # the query reads the same rows (q11's shape): scalar_temp leaves it; the rows written once (sql.same_rows),
    # the side query lists them one a row (its size guard let through: the tables are small)
    monkeypatch.setattr(same_rows, "few_rows", lambda raw, sql: True)
    q = "SELECT sk, sum(q) AS s FROM l WHERE f GROUP BY sk HAVING sum(q) > (SELECT sum(q) * 0.2 FROM l WHERE f) ORDER BY sk"
    df = con.sql(q)
    ((side, _),) = _plan(con, q).constants
    assert "FROM temp.__tp_sr_0" in side and "LIST(" not in side.upper()
    f, sk = l_["f"].to_numpy(), l_["sk"].to_numpy()
    sums = l_[f].groupby("sk")["q"].sum()
    assert list(df["sk"]) == sorted(sums[sums > l_["q"][f].sum() * 0.2].index)
    for got in _sets(df):
        assert got == w  # each group's rows are among the subquery's
    q = (
        "WITH t AS (SELECT sk, sum(q) AS s FROM l WHERE q > 2 GROUP BY sk) "
        "SELECT sk, s FROM t WHERE s = (SELECT max(s) FROM t) ORDER BY sk"
    )
    df = con.sql(q)
    ((side, _),) = _plan(con, q).constants
    assert "FROM l" in side.split("__tp_key")[1], "the CTE's rows were not listed directly"
    big = l_["q"].to_numpy() > 2
    sums = l_[big].groupby("sk")["q"].sum()
    assert list(df["sk"]) == sorted(sums[sums == sums.max()].index)
    every = rows_of("l", np.flatnonzero(big))
    for sk, got in zip(df["sk"], _sets(df)):
        assert got == rows_of("l", np.flatnonzero(big & (l_["sk"].to_numpy() == sk))) | every


def test_plan_kept_until_the_table_changes(data, tmp_path):
    con, o, _ = data
    q = "SELECT g, count(*) AS n FROM o WHERE EXISTS (SELECT * FROM l WHERE l.ok = o.ok) GROUP BY g ORDER BY g"
    first = con.sql(q)
    assert con.sql(q).tp.sources(0) is not None and q in con._eager_plans
    o2 = o.iloc[::-1].reset_index(drop=True)  # the same rows, other row numbers
    path = tmp_path / "o2.parquet"
    o2.to_parquet(path, index=False)
    con.read_parquet(path, name="o")
    again = con.sql(q)
    pd.testing.assert_frame_equal(first.reset_index(drop=True), again.reset_index(drop=True))
    got = {int(r) for p, rows in again.tp.sources(0).items() if Path(p).stem == "o2" for r in rows}
    was = {int(r) for p, rows in first.tp.sources(0).items() if Path(p).stem == "o" for r in rows}
    assert got == {len(o) - 1 - r for r in was}


def _group_side(con, q) -> str:
    """The side query that lists a grouping derived table's members (asserts the path was taken)."""
    sides = [s.sql for s in _plan(con, q).correlated if "IS NOT DISTINCT FROM __tp_cv.__tp_c0" in s.sql]
    assert sides, "the derived table's groups were not left to a side query"
    return sides[0]


def _fresh(tmp_path, o, l_):
    """A connection of its own with o and l (another test of this module reloads o from another file)."""
    con = tpf.connect(capture="eager")
    for name, df in (("o", o), ("l", l_), ("u", pd.DataFrame({"u": np.arange(16)}))):
        df.to_parquet(tmp_path / f"{name}.parquet", index=False)
        con.read_parquet(tmp_path / f"{name}.parquet", name=name)
    return con


def _l_groups(l_, mask) -> dict:
    """l's rows under ``mask`` grouped by ok as GROUP BY groups them (NULL keys form one group)."""
    ok = l_["ok"].astype("float").to_numpy()
    keys = np.where(np.isnan(ok), -1, ok)
    return {k: np.flatnonzero(mask & (keys == k)) for k in np.unique(keys[mask])}


def test_aggregate_over_a_grouping_derived_table(data, tmp_path):
    """q13's shape, with a NULL group key (its members are found with IS NOT DISTINCT FROM)."""
    _, o, l_ = data
    con = _fresh(tmp_path, o, l_)
    q = "SELECT n, count(*) AS c FROM (SELECT l.ok, count(*) FROM l GROUP BY l.ok) AS t(ok, n) GROUP BY n ORDER BY n"
    df = con.sql(q)
    _group_side(con, q)
    groups = _l_groups(l_, np.ones(len(l_), dtype=bool))
    assert any(k == -1 for k in groups), "the data has no NULL key"
    for n, got in zip(df["n"], _sets(df)):
        want = set().union(*(rows_of("l", m) for m in groups.values() if len(m) == n))
        assert got == want, n


def test_aggregate_over_an_outer_join_derived_table(data, tmp_path):
    """q13 itself: a LEFT JOIN inside the groups (a group without a match has its own row only)."""
    _, o, l_ = data
    con = _fresh(tmp_path, o, l_)
    q = (
        "SELECT c, count(*) AS k FROM (SELECT o.ok, count(l.q) FROM o LEFT JOIN l ON o.ok = l.ok AND l.f "
        "GROUP BY o.ok) AS t(ok, c) GROUP BY c ORDER BY k DESC, c DESC"
    )
    df = con.sql(q)
    _group_side(con, q)
    plain = duckdb.connect()
    plain.register("o", o)
    plain.register("l", l_)
    pd.testing.assert_frame_equal(df.reset_index(drop=True), plain.sql(q).df())
    members = {}
    for k in np.unique(o["ok"]):
        w = np.flatnonzero(_eq(l_["ok"], np.full(len(l_), k)) & l_["f"].to_numpy())
        members[k] = (
            len(w) * np.sum(o["ok"].to_numpy() == k),
            rows_of("o", np.flatnonzero(o["ok"] == k)) | rows_of("l", w),
        )
    for c, got in zip(df["c"], _sets(df)):
        assert got == set().union(*(m for n, m in members.values() if n == c)), c


def test_rows_of_a_grouping_derived_table_with_having(data, tmp_path):
    """No outer aggregate: one group per row; a LEFT JOIN leaves some rows without a group (NULL)."""
    _, o, l_ = data
    con = _fresh(tmp_path, o, l_)
    q = (
        "SELECT u.u, t.n FROM u LEFT JOIN (SELECT ok, count(*) AS n FROM l WHERE f GROUP BY ok "
        "HAVING count(*) > 1) AS t ON u.u = t.ok ORDER BY u.u"
    )
    df = con.sql(q)
    _group_side(con, q)
    groups = _l_groups(l_, l_["f"].to_numpy())
    assert df["n"].isna().any() and df["n"].notna().any()
    for u, n, got in zip(df["u"], df["n"], _sets(df)):
        want = rows_of("u", [u])
        if not pd.isna(n):
            assert len(groups[u]) == n
            want |= rows_of("l", groups[u])
        assert got == want, u


def test_grouping_derived_table_by_an_alias_keeps_its_list(data, tmp_path):
    """GROUP BY a select alias: the members query could not name it, so the in-query list stays."""
    _, o, l_ = data
    con = _fresh(tmp_path, o, l_)
    q = "SELECT n, count(*) AS c FROM (SELECT ok + 1 AS k, count(*) AS n FROM l GROUP BY k) AS t GROUP BY n ORDER BY n"
    df = con.sql(q)
    assert not any("IS NOT DISTINCT FROM __tp_cv" in s.sql for s in _plan(con, q).correlated)
    groups = _l_groups(l_, np.ones(len(l_), dtype=bool))
    for n, got in zip(df["n"], _sets(df)):
        assert got == set().union(*(rows_of("l", m) for m in groups.values() if len(m) == n)), n


def test_outer_join_to_grouping_derived_table_in_an_aggregate(data, tmp_path):
    """A row the LEFT JOIN leaves without a group reads no group, not the NULL-key group's members."""
    _, o, l_ = data
    con = _fresh(tmp_path, o, l_)
    q = (
        "SELECT u.u % 2 AS par, count(t.n) AS c FROM u LEFT JOIN (SELECT ok, count(*) AS n FROM l GROUP BY ok) "
        "AS t ON u.u = t.ok GROUP BY par ORDER BY par"
    )
    df = con.sql(q)
    _group_side(con, q)
    groups = _l_groups(l_, np.ones(len(l_), dtype=bool))
    assert -1 in groups and not set(range(16)) <= set(groups), "needs a NULL key and unmatched rows"
    for par, got in zip(df["par"], _sets(df)):
        us = [u for u in range(16) if u % 2 == par]
        want = rows_of("u", us).union(*(rows_of("l", groups[u]) for u in us if u in groups))
        assert got == want, par


def test_in_witness_with_a_correlated_aggregate_scans_once(data, tmp_path):
    """q20's shape: the IN list's rows compare with a correlated sum, and their lineage lists the sum's
    rows; the side query computes both in one subquery (one struct) instead of two."""
    _, o, l_ = data
    con = _fresh(tmp_path, o, l_)
    q = (
        "SELECT u FROM u WHERE u IN (SELECT l.ok FROM l WHERE l.q * 20 > (SELECT sum(o.x) FROM o "
        "WHERE o.ok = l.ok AND o.g <> 'c')) ORDER BY u"
    )
    df = con.sql(q)
    plan = _plan(con, q)  # the merged rows are written once to a witness table (sql.temp_witness)
    sides = [
        sql for sql in [c[0] for c in plan.constants] + [t[1] for t in plan.temps] if "__tp_s.__tp_v" in sql
    ]
    assert len(sides) == 1 and sides[0].count("FROM o") == 1, "the two subqueries were not merged"
    ok, gx = o["ok"].to_numpy(), o["g"].to_numpy() != "c"
    want_rows = {}
    for j in range(len(l_)):
        if pd.isna(l_["ok"][j]):
            continue
        k = int(l_["ok"][j])
        read = np.flatnonzero((ok == k) & gx)
        if read.size and l_["q"][j] * 20 > o["x"].to_numpy()[read].sum():
            want_rows.setdefault(k, set()).update(rows_of("l", [j]) | rows_of("o", read))
    assert list(df["u"]) == sorted(want_rows)
    for u, got in zip(df["u"], _sets(df)):
        assert got == rows_of("u", [u]) | want_rows[u], u
