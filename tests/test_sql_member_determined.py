"""Member tables joined ``USING`` their group key read from the first table's key (``sql.member_determined``):
one hidden ``t."k"`` column instead of each table's key, only where that is sound.

Shape: the credit ETL's (``t`` the applicants, ``a`` / ``b`` grouping ``u`` / ``w`` by ``k``, then ``t``
joined to both). Oracle: brute force in pandas from the frames written, per result row by its ``id``
(``t``'s row number): that ``t`` row, and the ``u`` / ``w`` rows of the group the row joined (key equal,
not NULL, and the group present in the table: a ``HAVING`` may drop it). Eager = lazy on every query.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _sql_oracle import lineage_sets, rows_of

import traceprop_frames as tpf
from traceprop_frames.errors import SourceChangedError
from traceprop_frames.sql import member_determined

CTAS_A = "CREATE OR REPLACE TABLE a AS SELECT k, count(*) AS n FROM u GROUP BY k"
CTAS_B = "CREATE OR REPLACE TABLE b AS SELECT k, CAST(sum(x) AS BIGINT) AS s FROM w GROUP BY k"
CTAS_A_HAVING = "CREATE OR REPLACE TABLE a AS SELECT k, count(*) AS n FROM u GROUP BY k HAVING count(*) > 3"
CTAS_A_LIMIT = "CREATE OR REPLACE TABLE a AS SELECT k, count(*) AS n FROM u GROUP BY k ORDER BY k LIMIT 2"
LEFT = "SELECT t.*, a.n, b.s FROM t LEFT JOIN a USING (k) LEFT JOIN b USING (k) WHERE t.id >= 0"
INNER = "SELECT t.*, a.n, b.s FROM t JOIN a USING (k) LEFT OUTER JOIN b USING (k)"
INNER2 = "SELECT t.id, b.s, a.n FROM t AS tt INNER JOIN b USING (k) INNER JOIN a USING (k)".replace(
    "t.id", "tt.id"
)
RIGHT = "SELECT t.*, a.n, b.s FROM t LEFT JOIN b USING (k) RIGHT JOIN a USING (k)"
ON = "SELECT t.*, a.n, b.s FROM t LEFT JOIN a ON a.k = t.k LEFT JOIN b ON b.k = t.k"
BIG = 2**62 + 1  # not exact as a float


def _frames(seed: int, keys=(0, 1, 2, 3, 4, 5, -1, BIG), t_type="Int64"):
    """t (id, k: NULL keys, repeated keys, keys without u or w rows), u (k), w (k, x); no NULL group."""
    rng = np.random.default_rng(seed)
    t = pd.DataFrame({"id": np.arange(40), "k": pd.array(rng.choice(np.array(keys), 40), dtype="Int64")})
    t.loc[rng.choice(40, 5, replace=False), "k"] = pd.NA
    if t_type != "Int64":
        t["k"] = t["k"].astype(t_type)
    u = pd.DataFrame({"k": pd.array(rng.choice(np.array(keys[2:]), 25), dtype="Int64")})
    w = pd.DataFrame({"k": pd.array(rng.choice(np.array(keys[1:]), 20), dtype="Int64")})
    w["x"] = rng.integers(0, 50, len(w))
    return t, u, w


def _write(tmp, name: str, df: pd.DataFrame):
    path = tmp / f"{name}.parquet"
    df.to_parquet(path, index=False)
    return path


def _oracle(df, t, srcs: dict) -> list[set]:
    """Per result row (by ``id``): its ``t`` row, and for each source (stem -> (frame, the keys its
    table has)) the rows of the group the row's key joined."""
    out = []
    for i in df["id"]:
        k = t.k.iloc[int(i)]
        rows = rows_of("t", [int(i)])
        for stem, (src, present) in srcs.items():
            if not pd.isna(k) and k in present:
                rows |= rows_of(stem, np.flatnonzero((src.k == k).fillna(False).to_numpy()))
        out.append(rows)
    return out


def _connect(tmp, t, u, w, capture="eager"):
    tmp = tmp / capture
    tmp.mkdir(exist_ok=True)
    con = tpf.connect(capture=capture)
    con.read_parquet(_write(tmp, "t", t), name="t")
    con.read_parquet(_write(tmp, "u", u), name="u")
    con.read_parquet(_write(tmp, "w", w), name="w")
    return con


def _spy(monkeypatch) -> list:
    """Records each plan :func:`member_determined.plan` gives the connection (None: declined)."""
    seen, real = [], member_determined.plan

    def spied(*args):
        out = real(*args)
        seen.append(out)
        return out

    monkeypatch.setattr(member_determined, "plan", spied)
    return seen


def _run(con, ctas_a, query, runs=3):
    for _ in range(runs):  # plans kept from the second run: the third takes the member paths
        con.execute(ctas_a)
        con.execute(CTAS_B)
        df = con.sql(query)
    return df


def _keys(con, table) -> set:
    return {k for (k,) in con.raw.sql(f"SELECT k FROM {table}").fetchall()}


@pytest.mark.parametrize(
    "keys", [(0, 1, 2, 3, 4, 5, -1, BIG), (0, 1, 2, 3, 4, 5, -1, 9)], ids=["sparse", "dense"]
)
@pytest.mark.parametrize("query", [LEFT, INNER, INNER2], ids=["left", "inner", "inner-alias"])
def test_determined_joins_match_the_oracle_and_lazy(tmp_path, monkeypatch, query, keys):
    """Four runs: from the third the query reads ``t."k"`` once for both tables; every run's lineage is
    the oracle's and lazy's (NULL keys, -1, repeated keys, applicants without groups, dense and sparse
    keys); the frame equals plain DuckDB's, dtypes included."""
    seen = _spy(monkeypatch)
    t, u, w = _frames(1, keys=keys)
    con = _connect(tmp_path, t, u, w)
    lazy = _connect(tmp_path, t, u, w, capture="lazy")
    for _ in range(4):
        df = _run(con, CTAS_A, query, runs=1)
        srcs = {"u": (u, _keys(con, "a")), "w": (w, _keys(con, "b"))}
        assert lineage_sets(df) == _oracle(df, t, srcs)
        ldf = _run(lazy, CTAS_A, query, runs=1)
        assert lineage_sets(ldf) == lineage_sets(df)
    assert sum(p is not None for p in seen) >= 2  # the third and fourth runs
    assert all(p.n_hidden == 2 for p in seen if p is not None)  # t's id and t."k": no a / b key columns
    plain = con.raw.sql(query.replace("t.*", "t.* EXCLUDE (__tp_rid)")).df()
    key = ["id"]
    pd.testing.assert_frame_equal(
        df.sort_values(key).reset_index(drop=True), plain.sort_values(key).reset_index(drop=True)
    )


@pytest.mark.parametrize("ctas_a", [CTAS_A_HAVING, CTAS_A_LIMIT], ids=["having", "limit"])
def test_a_table_without_every_group_is_not_determined(tmp_path, monkeypatch, ctas_a):
    """``a`` made with ``HAVING`` / ``LIMIT`` lacks groups its members have: ``t.k`` does not tell whether
    ``a`` joined, so ``a`` keeps its key column; applicants of a dropped group get no ``u`` rows."""
    seen = _spy(monkeypatch)
    t, u, w = _frames(2, keys=(0, 1, 2, 3, 4, 5, -1, 9))
    con = _connect(tmp_path, t, u, w)
    df = _run(con, ctas_a, LEFT)
    present = _keys(con, "a")
    assert present and present < set(u.k.dropna())  # the case: some group dropped
    assert lineage_sets(df) == _oracle(df, t, {"u": (u, present), "w": (w, _keys(con, "b"))})
    assert seen and all(p is None for p in seen)


@pytest.mark.parametrize("query", [RIGHT, ON], ids=["right", "on"])
def test_other_joins_keep_the_key_columns(tmp_path, monkeypatch, query):
    """A RIGHT join (rows of ``a`` without a ``t`` row: ``t.k`` NULL) and ``ON`` joins are not
    determined; their lineage is lazy's, and the RIGHT join's rows without ``t`` have ``a``'s rows."""
    seen = _spy(monkeypatch)
    t, u, w = _frames(3, keys=(0, 1, 2, 3, 4, 5, -1, 9))
    t = t[t.k.isna() | (t.k != 2)].reset_index(drop=True)  # group 2 of a joins no t row
    t["id"] = np.arange(len(t))
    con = _connect(tmp_path, t, u, w)
    lazy = _connect(tmp_path, t, u, w, capture="lazy")
    df, ldf = _run(con, CTAS_A, query), _run(lazy, CTAS_A, query)
    assert seen and all(p is None for p in seen)
    assert lineage_sets(df) == lineage_sets(ldf)
    if query is RIGHT:
        lone = [s for i, s in zip(df["id"], lineage_sets(df)) if pd.isna(i)]
        assert lone and all(s and all(stem == "u" for stem, _ in s) for s in lone)


@pytest.mark.parametrize("t_type", ["float64", "UInt64"], ids=["double", "ubigint"])
def test_a_key_not_read_exactly_keeps_the_key_path(tmp_path, t_type):
    """``t.k`` a DOUBLE or an unsigned BIGINT (2**64 - 1 would read as -1, a group of ``u``): the
    determined path declines, the lineage is the oracle's (nothing joins 2**64 - 1)."""
    t, u, w = _frames(4, keys=(0, 1, 2, 3, 4, 5, -1, 9))
    if t_type == "UInt64":
        t["k"] = t["k"].where(t["k"] != -1, pd.NA).astype("UInt64")
        t.loc[0, "k"] = 2**64 - 1
    else:
        t["k"] = t["k"].astype("float64")
    con = _connect(tmp_path, t, u, w)
    df = _run(con, CTAS_A, LEFT)
    tk = t.k.astype("object").where(t.k != 2**64 - 1, np.nan) if t_type == "UInt64" else t.k
    srcs = {"u": (u, _keys(con, "a")), "w": (w, _keys(con, "b"))}
    assert lineage_sets(df) == _oracle(df, t.assign(k=tk), srcs)


@pytest.mark.parametrize(
    "change",
    [
        "DELETE FROM a WHERE k = 3",
        "UPDATE a SET k = 77 WHERE k = 3",
        "INSERT INTO a VALUES (77, 1, NULL)",
    ],
    ids=["delete", "update-key", "insert"],
)
def test_a_group_table_changed_through_raw(tmp_path, monkeypatch, change):
    """``a`` changed through ``con.raw`` after its CTAS: the query then raises ``SourceChangedError``
    or gives the changed table's rows (oracle), never ``t.k``'s group where ``a`` no longer has it."""
    t, u, w = _frames(5, keys=(0, 1, 2, 3, 4, 5, -1, 9))
    t.loc[[1, 2], "k"] = 3
    t.loc[[3], "k"] = 77
    con = _connect(tmp_path, t, u, w)
    _run(con, CTAS_A, LEFT, runs=2)
    con.execute(CTAS_A)
    con.execute(CTAS_B)
    con.raw.execute(change)
    try:
        df = con.sql(LEFT)
        got = lineage_sets(df)
    except SourceChangedError:
        return
    present = _keys(con, "a")
    assert got == _oracle(df, t, {"u": (u, present), "w": (w, _keys(con, "b"))})


KEY_FIRST = "SELECT t.k AS key, t.id, a.n, b.s FROM t LEFT JOIN a USING (k) LEFT JOIN b USING (k)"
REPLACED = "SELECT t.* REPLACE (t.k + 1 AS k), a.n, b.s FROM t LEFT JOIN a USING (k) LEFT JOIN b USING (k)"
TWICE = "SELECT t.*, a.n, b.s, t.k + 1 AS k FROM t LEFT JOIN a USING (k) LEFT JOIN b USING (k)"  # via Arrow


def _spy_relation(monkeypatch) -> list:
    """Records, per call of :func:`member_determined.relation`, the data column it reads ``t.k`` from."""
    seen, real = [], member_determined.relation

    def spied(*args):
        out = real(*args)
        seen.append(out[2])
        return out

    monkeypatch.setattr(member_determined, "relation", spied)
    return seen


@pytest.mark.parametrize(
    ("query", "column"), [(LEFT, 1), (KEY_FIRST, 0), (TWICE, 1), (REPLACED, None), (INNER2, None)]
)
def test_the_key_read_from_the_result_itself(tmp_path, monkeypatch, query, column):
    """Where the result's first item is ``t.*`` or ``t.k``, no hidden key column: ``t.k`` is read from
    the result (the star's first ``k``: column 1 after ``id``); ``t.* REPLACE`` and other first items
    read the hidden ``t."k"``. The lineage is the oracle's and lazy's; the frame is plain DuckDB's."""
    seen = _spy_relation(monkeypatch)
    t, u, w = _frames(7, keys=(0, 1, 2, 3, 4, 5, -1, 9))
    con = _connect(tmp_path, t, u, w)
    lazy = _connect(tmp_path, t, u, w, capture="lazy")
    df, ldf = _run(con, CTAS_A, query), _run(lazy, CTAS_A, query)
    assert seen and seen[-1] == column
    srcs = {"u": (u, _keys(con, "a")), "w": (w, _keys(con, "b"))}
    assert lineage_sets(df) == _oracle(df, t, srcs) == lineage_sets(ldf)
    plain = con.raw.sql(query.replace("t.*", "t.* EXCLUDE (__tp_rid)")).df()
    key = ["id"]
    pd.testing.assert_frame_equal(
        df.sort_values(key).reset_index(drop=True), plain.sort_values(key).reset_index(drop=True)
    )


def test_the_users_frame_written_before_the_lineage_is_read(tmp_path):
    """The key read from the result is copied: writing the frame's ``k`` column before the first lineage
    read leaves the lineage the oracle's."""
    t, u, w = _frames(8, keys=(0, 1, 2, 3, 4, 5, -1, 9))
    t["k"] = t["k"].fillna(4)  # no NULL: an int64 column, read in place
    con = _connect(tmp_path, t, u, w)
    df = _run(con, CTAS_A, LEFT)
    assert str(df["k"].dtype) == "int64"
    expected = _oracle(df, t, {"u": (u, _keys(con, "a")), "w": (w, _keys(con, "b"))})
    df.loc[:, "k"] = 5
    df.iloc[0:3, 1] = 0
    assert lineage_sets(df) == expected


def test_a_table_joined_and_named_again_has_its_lineage_filled(tmp_path):
    """``a`` joined ``USING (k)`` and read again by a scalar subquery over all its rows: the subquery reads
    ``a``'s stored lineage, so ``a`` must be filled first (not only joined by key). Oracle: each row has
    its ``t`` row, the ``u`` rows of its group, every ``u`` row (the subquery's ``count(*)`` of ``a``'s
    groups reads them all) and, from the LEFT JOIN of ``b``, the ``w`` rows of its group."""
    t, u, w = _frames(3, keys=(0, 1, 2, 3, 4, 5, -1, 9))
    query = (
        "SELECT t.id, a.n, b.s, (SELECT count(*) FROM a) AS g FROM t JOIN a USING (k) LEFT JOIN b USING (k)"
    )
    con, lazy = _connect(tmp_path, t, u, w), _connect(tmp_path, t, u, w, capture="lazy")
    for _ in range(3):
        df, ldf = _run(con, CTAS_A, query, runs=1), _run(lazy, CTAS_A, query, runs=1)
        everything = rows_of("u", np.flatnonzero(u.k.notna().to_numpy()))
        want = [
            r | everything for r in _oracle(df, t, {"u": (u, _keys(con, "a")), "w": (w, _keys(con, "b"))})
        ]
        assert len(df) and lineage_sets(df) == want
        assert lineage_sets(ldf) == lineage_sets(df)


def test_a_grouped_table_read_only_by_a_scalar_subquery(tmp_path):
    """``(SELECT count(*) FROM a)`` over a grouped table: every row's lineage is its ``t`` row and every
    ``u`` row with a key (the rows of all of ``a``'s groups), in both modes (eager read ``a``'s lineage
    for the subquery's temporary table before filling it, and gave no ``u`` row)."""
    t, u, w = _frames(4, keys=(0, 1, 2, 3, 4, 5, -1, 9))
    query = "SELECT t.id, (SELECT count(*) FROM a) AS g FROM t"
    everything = rows_of("u", np.flatnonzero(u.k.notna().to_numpy()))
    for capture in ("eager", "lazy"):
        con = _connect(tmp_path, t, u, w, capture=capture)
        df = _run(con, CTAS_A, query, runs=2)
        assert lineage_sets(df) == [rows_of("t", [int(i)]) | everything for i in df["id"]]
