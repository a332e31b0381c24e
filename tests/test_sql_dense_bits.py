"""Eager capture: few dense groups of one table as bitstrings (``sql.dense_bits``, TPC-H q01).

Oracle: a group's lineage is its member rows, found by pandas from the source frame (NULL keys one
group, the WHERE applied by hand); results equal plain DuckDB's; the same query with the bitstrings
switched off gives the same lineage sets, and lazy capture too. Each test asserts which path ran. The
tables are small, so the size threshold is lowered and the density estimate forced where a test needs
the bitstring path (a wrong estimate may only cost time: the lineage must not change).
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from _sql_oracle import eager_lazy_plain, lineage_sets, rows_of

from traceprop_frames.sql import dense_bits

N = 300


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(7)
    root = tmp_path_factory.mktemp("dense_bits")
    g = pd.array(rng.integers(0, 4, N), dtype="Int64")
    g[::11] = pd.NA  # NULL keys: one group of their own
    g[5] = 9  # a group with one member
    s = rng.choice(["a", "b", "", "z"], N).astype(object)
    s[::13] = None
    t = pd.DataFrame(
        {
            "g": g,
            "s": s,
            "d": pd.to_datetime("2020-01-01") + pd.to_timedelta(rng.integers(0, 3, N), unit="D"),
            "b": rng.integers(0, 2, N).astype(bool),
            "x": rng.integers(0, 100, N),
            "wide": rng.integers(0, 10**6, N),
            "name": rng.choice(["alpha", "beta"], N),
        }
    )
    t["d"] = t["d"].dt.date
    u = pd.DataFrame({"g": rng.integers(0, 4, 20), "y": rng.integers(0, 5, 20)})
    eager, lazy, plain = eager_lazy_plain(root, {"t": t, "u": u})
    yield eager, lazy, plain, t
    eager.close()
    lazy.close()
    plain.close()


def _spy(monkeypatch) -> list:
    """Counts the queries that took the bitstring path."""
    used = []
    real = dense_bits.run

    def run(*a):
        out = real(*a)
        if out is not None:
            used.append(1)
        return out

    monkeypatch.setattr(dense_bits, "run", run)
    return used


@pytest.fixture
def forced(monkeypatch):
    """Small tables qualify and the estimate always says "dense"."""
    monkeypatch.setattr(dense_bits, "MIN_RANGE", 1)
    monkeypatch.setattr(dense_bits, "_members", lambda raw, p: 10**12)
    return _spy(monkeypatch)


def _run(data, q, used, applied: bool):
    eager, lazy, plain, _ = data
    used.clear()
    df = eager.sql(q)
    assert bool(used) == applied
    pd.testing.assert_frame_equal(df.reset_index(drop=True), plain.sql(q).df())
    got = lineage_sets(df)
    rw = eager._eager_plans[q][1][2]
    keep, rw.dense = rw.dense, None  # the list path, same plan
    try:
        assert lineage_sets(eager.sql(q)) == got
    finally:
        rw.dense = keep
    assert lineage_sets(lazy.sql(q)) == got
    return df, got


def _members(t: pd.DataFrame, col: str, value, where=None) -> set:
    v = t[col]
    hit = v.isna() if value is None or value is pd.NA else (v == value).fillna(False)
    if where is not None:
        hit &= where
    return rows_of("t", np.flatnonzero(hit.to_numpy(dtype=bool)))


def _key(v):
    return None if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) else v


def test_few_groups_with_null_key_and_one_member_group(data, forced):
    t = data[3]
    q = "SELECT g, count(*) AS n, sum(x) AS sx FROM t WHERE x >= 10 GROUP BY g ORDER BY g"
    df, got = _run(data, q, forced, applied=True)
    where = t["x"] >= 10
    assert len(df) == 6  # 0..3, 9 (one member), NULL
    for k, lin in zip(df["g"], got):
        assert lin == _members(t, "g", _key(k), where)
    assert {len(x) for x in got} >= {1}


def test_string_keys_of_one_character_and_the_empty_string(data, forced):
    t = data[3]
    q = "SELECT a.s, max(a.x) AS m FROM t AS a GROUP BY a.s ORDER BY a.s NULLS FIRST"
    df, got = _run(data, q, forced, applied=True)
    for k, lin in zip(df["s"], got):
        assert lin == _members(t, "s", _key(k))


def test_two_keys_date_and_boolean_with_having_and_limit(data, forced):
    t = data[3]
    q = "SELECT d, b, count(*) AS n FROM t GROUP BY d, b HAVING count(*) > 1 ORDER BY n DESC, d, b LIMIT 4"
    df, got = _run(data, q, forced, applied=True)
    for d, b, lin in zip(df["d"], df["b"], got):
        want = np.flatnonzero((t["d"] == pd.Timestamp(d).date()).to_numpy() & (t["b"] == b).to_numpy())
        assert lin == rows_of("t", want)


def test_ungrouped_and_empty_selection(data, forced):
    t = data[3]
    q = "SELECT count(*) AS n, sum(x) AS sx FROM t WHERE x < 50"
    _, got = _run(data, q, forced, applied=True)
    assert got == [rows_of("t", np.flatnonzero((t["x"] < 50).to_numpy()))]
    q = "SELECT count(*) AS n, sum(x) AS sx FROM t WHERE x < 0"  # one row over no rows: no lineage
    _, got = _run(data, q, forced, applied=True)
    assert got == [set()]
    q = "SELECT g, count(*) AS n FROM t WHERE x < 0 GROUP BY g"  # no group at all
    df, got = _run(data, q, forced, applied=True)
    assert len(df) == 0 and got == []


def test_refused_shapes_and_unbounded_keys_take_the_list_path(data, forced):
    t = data[3]
    for q in (
        "SELECT name, count(*) AS n FROM t GROUP BY name ORDER BY name",  # strings longer than 1 byte
        "SELECT wide, count(*) AS n FROM t GROUP BY wide ORDER BY wide",  # 10^6 values allowed
        "SELECT g % 2 AS h, count(*) AS n FROM t GROUP BY h ORDER BY h",  # an expression
        "SELECT t.g, count(*) AS n FROM t JOIN u ON t.g = u.g GROUP BY t.g ORDER BY t.g",  # a join
    ):
        df, got = _run(data, q, forced, applied=False)
        assert len(got) == len(df)
    df, got = _run(data, "SELECT name, count(*) AS n FROM t GROUP BY name ORDER BY name", forced, False)
    for k, lin in zip(df["name"], got):
        assert lin == _members(t, "name", k)


def test_the_estimate_decides_only_the_path(data, monkeypatch):
    """Without forcing: a selective WHERE is estimated sparse (lists), the whole table dense."""
    monkeypatch.setattr(dense_bits, "MIN_RANGE", 1)
    used = _spy(monkeypatch)
    t = data[3]
    _, got = _run(data, "SELECT b, count(*) AS n FROM t GROUP BY b ORDER BY b", used, applied=True)
    assert got == [_members(t, "b", False), _members(t, "b", True)]
    q = "SELECT b, count(*) AS n FROM t WHERE x = 3 GROUP BY b ORDER BY b"
    _run(data, q, used, applied=False)


def test_memory_bound_refuses(data, forced, monkeypatch):
    monkeypatch.setattr(dense_bits, "CAP", 8)  # no bitstring fits
    _run(data, "SELECT g, count(*) AS n FROM t GROUP BY g ORDER BY g", forced, applied=False)


@pytest.mark.parametrize("seed", range(6))
def test_decode_against_python_sets(seed):
    """DuckDB's BITSTRING_AGG through Arrow, decoded, against the sets it was given."""
    rng = np.random.default_rng(seed)
    lo = int(rng.integers(0, 1 << 41))
    width = int(rng.integers(1, 3000))  # any padding 0..7
    n_groups = int(rng.integers(1, 6))
    ids = lo + rng.integers(0, width, int(rng.integers(0, 4000)))
    grp = rng.integers(0, n_groups, len(ids))
    frame = pa.table({"k": pa.array(grp), "i": pa.array(ids, pa.int64())})
    con = duckdb.connect()
    con.register("f", frame)
    hi = lo + width - 1
    q = f"SELECT k, bitstring_agg(i, {lo}, {hi}) AS b FROM f GROUP BY k UNION ALL SELECT -1, NULL ORDER BY k"
    table = con.sql(q).to_arrow_table()
    dec = dense_bits.decode(table.column("b"), lo).to_pylist()
    for k, got in zip(table.column("k").to_pylist(), dec):
        want = sorted(set(ids[grp == k].tolist())) if k >= 0 else []
        assert got == want


def test_values_of_statistics():
    v = dense_bits._values
    assert v({"min": 3, "max": 7, "has_null": False}) == 5
    assert v({"min": 3, "max": 7, "has_null": True}) == 6
    assert v({"min": False, "max": True, "has_null": False}) == 2
    s = {"min": "A", "max": "R", "has_null": False, "has_unicode": False, "max_string_length": 1}
    assert v(s) == 18
    assert v({**s, "min": ""}) == ord("R") + 2  # '' and every byte up to 'R'
    assert v({**s, "max_string_length": 2}) is None
    assert v({**s, "has_unicode": True}) is None
    assert v({"has_null": True}) == 1  # only NULL
    assert v({"min": 1.5, "max": 2.5, "has_null": False}) is None


def test_lineage_read_after_the_table_changed_is_the_captured_one(tmp_path, forced):
    """The bitstrings are read at capture and decoded at the first lineage read: rows deleted in
    between do not change the lineage of the earlier result."""
    t = pd.DataFrame({"k": [1, 2, 1, 2, 1], "x": [5, 6, 7, 8, 9]})
    eager, lazy, plain = eager_lazy_plain(tmp_path, {"t": t})
    try:
        df = eager.sql("SELECT k, sum(x) AS s FROM t GROUP BY k ORDER BY k")
        assert forced
        eager.sql("DELETE FROM t WHERE k = 1")
        assert lineage_sets(df) == [rows_of("t", [0, 2, 4]), rows_of("t", [1, 3])]
    finally:
        eager.close()
        lazy.close()
        plain.close()
