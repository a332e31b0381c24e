"""The lazy query's keys taken out of DuckDB's frame (issue 21, round 13): the key columns are read and the
data columns kept by column position only (``df.iloc(axis=1)``), on results with one key, several keys, a
key that is NULL on some rows (a LEFT JOIN's unmatched side: a nullable pandas column), keys beside data
columns of every kind ``.df()`` gives (int, float, string, nullable int, bool), and a frame wider and
narrower than its keys.

Checked, for the first capture and the kept plan: the frame equals plain DuckDB's ``.df()`` (values,
dtypes, names; the index is the carrier's), the lineage equals a brute-force pandas oracle built from the data alone (rows by
their key values), and eager capture's lineage. The frame is the user's: changing it leaves the lineage,
a later run and the connection's tables as they were.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _sql_oracle import eager_lazy_plain, lineage_sets, rows_of


def _tables(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    t = pd.DataFrame(
        {
            "k": rng.integers(0, 7, 40),
            "v": rng.normal(size=40).round(3),
            "s": rng.choice(["x", "yy", "zzz"], 40),
            "f": rng.integers(0, 2, 40).astype(bool),
        }
    )
    u = pd.DataFrame({"k": rng.integers(3, 11, 25), "w": rng.integers(0, 50, 25)})
    return {"t": t, "u": u}


def _one_key(t, u):  # a filter: row i from t's row i
    rows = np.flatnonzero(t.v > 0)
    return [rows_of("t", [i]) for i in rows]


def _left_join(t, u):  # t's rows in order, each with every u row of its key (none: t's row only)
    out = []
    for i, k in enumerate(t.k):
        matches = np.flatnonzero(u.k == k)
        for j in matches if len(matches) else [None]:
            out.append(rows_of("t", [i]) | (rows_of("u", [j]) if j is not None else set()))
    return out


def _inner_join(t, u):  # pairs with equal keys, t's order then u's
    return [
        rows_of("t", [i]) | rows_of("u", [j]) for i, k in enumerate(t.k) for j in np.flatnonzero(u.k == k)
    ]


CASES = [
    ("SELECT k, v, s, f FROM t WHERE v > 0", _one_key),
    ("SELECT t.k, t.s, u.w, t.v FROM t LEFT JOIN u ON t.k = u.k ORDER BY t.rowid, u.rowid", _left_join),
    ("SELECT u.w FROM t JOIN u ON t.k = u.k ORDER BY t.rowid, u.rowid", _inner_join),
    ("SELECT t.*, u.w, u.w + 1 AS w1 FROM t JOIN u USING (k) ORDER BY t.rowid, u.rowid", _inner_join),
]


def _pairs(con) -> list:
    """The connection's DuckDB frames of t and u (to see they stay as loaded)."""
    return [con.raw.sql(f"SELECT * EXCLUDE (__tp_rid) FROM {n}").df() for n in ("t", "u")]


@pytest.mark.parametrize("query, oracle", CASES, ids=["one-key", "left-join", "two-keys-one-column", "star"])
def test_lazy_frame_without_keys_equals_plain_and_lineage_the_oracle(tmp_path, query, oracle):
    tables = _tables(5)
    eager, lazy, plain = eager_lazy_plain(tmp_path, tables)
    want_frame = plain.sql(query).df()
    want = oracle(tables["t"], tables["u"])
    assert len(want) == len(want_frame) > 0
    got = [lazy.sql(query) for _ in range(2)]  # the first capture, then its kept plan
    assert lazy._captures[query][1].n_keys >= 1  # keys were appended: the path under test ran
    for df in got:
        # (the index is the carrier's row ids: see frames.carrier; the data and names are DuckDB's)
        pd.testing.assert_frame_equal(
            df.reset_index(drop=True), want_frame, check_dtype=True, check_exact=True
        )
        assert list(df.columns) == list(want_frame.columns)
        assert lineage_sets(df) == want
    assert lineage_sets(eager.sql(query)) == want


def test_left_join_key_is_null_on_unmatched_rows(tmp_path):
    """The unmatched side's key is NULL: a nullable pandas column, read into the keys with its NULLs."""
    tables = _tables(5)
    _, lazy, _ = eager_lazy_plain(tmp_path, tables)
    query = CASES[1][0]
    df = lazy.sql(query)
    t, u = tables["t"], tables["u"]
    unmatched = [i for i, k in enumerate(t.k) if not (u.k == k).any()]
    assert unmatched  # the data has the case
    capture = lazy._captures[query][2]
    keys = lazy._con.sql(capture).df().iloc[:, len(df.columns) :]
    assert keys.shape[1] == 2 and keys.iloc[:, 1].isna().sum() == len(unmatched)
    assert lineage_sets(df) == _left_join(t, u)


def test_the_lazy_frame_is_the_users(tmp_path):
    """Changing the returned frame (a column, a cell) changes neither its lineage, nor the next run's frame,
    nor the tables."""
    tables = _tables(9)
    _, lazy, plain = eager_lazy_plain(tmp_path, tables)
    query = CASES[3][0]
    before = _pairs(lazy)
    df = lazy.sql(query)
    want = lineage_sets(df)
    df["w"] = -1
    df.iloc[0, 0] = 99
    df["extra"] = 1.0
    assert lineage_sets(df) == want
    again = lazy.sql(query)
    pd.testing.assert_frame_equal(again.reset_index(drop=True), plain.sql(query).df(), check_dtype=True)
    for a, b in zip(_pairs(lazy), before):
        pd.testing.assert_frame_equal(a, b)
