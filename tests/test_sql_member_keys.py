"""An eager query joining member tables reads their group keys, not rowid plus list reads
(``sql.member_keys``), only where that is sound.

Shape: the credit ETL's (``t`` the applicants, ``a`` / ``b`` grouping ``u`` / ``w`` by ``k``, then ``t``
LEFT JOIN both). Oracle: brute force in pandas from the frames written, per result row by its ``id``
(``t``'s row number): that ``t`` row, and every ``u`` / ``w`` row whose key the join condition matches
(``USING``: equal and not NULL; ``IS NOT DISTINCT FROM``: NULL matches NULL).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _sql_oracle import lineage_sets, rows_of

import traceprop_frames as tpf
from traceprop_frames.errors import SourceChangedError

CTAS_A = "CREATE OR REPLACE TABLE a AS SELECT k, count(*) AS n FROM u GROUP BY k"
CTAS_B = "CREATE OR REPLACE TABLE b AS SELECT k, sum(x) AS s FROM w GROUP BY k"  # s HUGEINT: via Arrow
CTAS_B_DF = "CREATE OR REPLACE TABLE b AS SELECT k, CAST(sum(x) AS BIGINT) AS s FROM w GROUP BY k"  # .df()
USING = "SELECT t.*, a.n, b.s FROM t LEFT JOIN a USING (k) LEFT JOIN b USING (k)"
NULLSAFE = (
    "SELECT t.*, a.n, b.s FROM t LEFT JOIN a ON a.k IS NOT DISTINCT FROM t.k "
    "LEFT JOIN b ON b.k IS NOT DISTINCT FROM t.k"
)
BIG = 2**62 + 1  # not exact as a float


def _frames(seed: int, w_nulls: bool = False, keys=(0, 1, 2, 3, 4, 5, -1, BIG)):
    """t (id, k: NULL keys, repeated keys, keys without u or w rows), u (k, no NULL), w (k, x)."""
    rng = np.random.default_rng(seed)
    kt = rng.choice(np.array(keys, dtype=np.int64), 40)
    t = pd.DataFrame({"id": np.arange(40), "k": pd.array(kt, dtype="Int64")})
    t.loc[rng.choice(40, 5, replace=False), "k"] = pd.NA
    u = pd.DataFrame({"k": pd.array(rng.choice(np.array(keys[2:], dtype=np.int64), 25), dtype="Int64")})
    w = pd.DataFrame({"k": pd.array(rng.choice(np.array(keys[1:], dtype=np.int64), 20), dtype="Int64")})
    w["x"] = rng.integers(0, 50, len(w))
    if w_nulls:
        w.loc[[0, 3, 7], "k"] = pd.NA
    return t, u, w


def _write(tmp, name: str, df: pd.DataFrame):
    path = tmp / f"{name}.parquet"
    df.to_parquet(path, index=False)
    return path


def _matches(src: pd.DataFrame, k, nullsafe: bool) -> np.ndarray:
    if pd.isna(k):
        return np.flatnonzero(src.k.isna().to_numpy()) if nullsafe else np.zeros(0, dtype=int)
    return np.flatnonzero((src.k == k).fillna(False).to_numpy())


def _oracle(df, t, srcs: dict, nullsafe: bool) -> list[set]:
    """Per result row (by its ``id``): its ``t`` row, every row of each source in ``srcs`` (stem ->
    frame) whose key the join matches."""
    out = []
    for i in df["id"]:
        k = t.k.iloc[int(i)]
        rows = rows_of("t", [int(i)])
        for stem, src in srcs.items():
            rows |= rows_of(stem, _matches(src, k, nullsafe))
        out.append(rows)
    return out


def _connect(tmp, t, u, w):
    con = tpf.connect(capture="eager")
    con.read_parquet(_write(tmp, "t", t), name="t")
    con.read_parquet(_write(tmp, "u", u), name="u")
    con.read_parquet(_write(tmp, "w", w), name="w")
    hits = [0]
    read = con._read_by_keys

    def counted(*args):
        out = read(*args)
        hits[0] += out is not None
        return out

    con._read_by_keys = counted
    return con, hits


@pytest.mark.parametrize(
    "keys", [(0, 1, 2, 3, 4, 5, -1, BIG), (0, 1, 2, 3, 4, 5, -1, 9)], ids=["sparse", "dense"]
)
@pytest.mark.parametrize("ctas_b", [CTAS_B, CTAS_B_DF], ids=["arrow", "df"])
@pytest.mark.parametrize("query", [USING, NULLSAFE], ids=["using", "nullsafe"])
def test_keys_read_in_the_query_match_the_oracle(tmp_path, query, ctas_b, keys):
    """Three runs, then ``u`` replaced by new rows and a fourth run: the third and fourth answer by keys;
    every run's lineage is the oracle's (NULL keys, -1, repeated keys, applicants without rows; keys in a
    dense range or one beyond a float's precision); the frame equals plain DuckDB's."""
    t, u, w = _frames(1, keys=keys)
    con, hits = _connect(tmp_path, t, u, w)
    for run in range(4):
        if run == 3:  # the table replaced between runs: the new rows
            u = _frames(2, keys=keys)[1]
            con.read_parquet(_write(tmp_path, "u2", u), name="u")
        con.execute(CTAS_A)
        con.execute(ctas_b)
        df = con.sql(query)
        assert hits[0] == max(run - 1, 0)  # from the third run (all plans kept) on
        srcs = {"u2" if run == 3 else "u": u, "w": w}
        assert lineage_sets(df) == _oracle(df, t, srcs, query is NULLSAFE)
    plain = con.raw.sql(query.replace("t.*", "t.* EXCLUDE (__tp_rid)")).df()
    key = ["id"]
    pd.testing.assert_frame_equal(
        df.sort_values(key).reset_index(drop=True), plain.sort_values(key).reset_index(drop=True)
    )


def test_a_null_group_is_read_by_rowid(tmp_path):
    """``w`` has NULL keys, so ``b`` has a NULL group that ``IS NOT DISTINCT FROM`` joins: a NULL key in
    the result would not tell it from "no row joined"; ``b`` is read by rowid (the key path declines)
    and the NULL applicants get ``w``'s NULL rows."""
    t, u, w = _frames(3, w_nulls=True)
    con, hits = _connect(tmp_path, t, u, w)
    for _ in range(4):  # (the key path would answer from the third run)
        con.execute(CTAS_A)
        con.execute(CTAS_B)
        df = con.sql(NULLSAFE)
        assert lineage_sets(df) == _oracle(df, t, {"u": u, "w": w}, True)
    assert hits[0] == 0
    assert any(pd.isna(t.k.iloc[int(i)]) and ("w", 0) in s for i, s in zip(df["id"], lineage_sets(df)))


def _keep_plans(con) -> None:
    """Two runs of the ETL: its statements' plans are kept, so the next run may take the key path."""
    for _ in range(2):
        con.execute(CTAS_A)
        con.execute(CTAS_B)
        con.sql(NULLSAFE)


def test_a_row_added_through_a_cursor_before_the_query(tmp_path):
    """A row with a NULL key and no members added to ``a`` on another connection after the CTAS: the
    count moved, the rowid path runs and the lineage read raises (never the NULL applicants' lineage
    without the row they joined)."""
    t, u, w = _frames(4)
    con, hits = _connect(tmp_path, t, u, w)
    _keep_plans(con)
    con.execute(CTAS_A)
    con.execute(CTAS_B)
    con._con.cursor().execute("INSERT INTO a VALUES (NULL, 7, NULL)")
    before = hits[0]
    df = con.sql(NULLSAFE)
    assert hits[0] == before
    with pytest.raises(SourceChangedError):
        lineage_sets(df)


def test_a_row_added_through_a_cursor_during_the_query(tmp_path):
    """The same row added after the key path's check but before its query runs: the count moved meanwhile,
    so its answer is dropped and the rowid path runs (its lineage read raises)."""
    t, u, w = _frames(5)
    con, hits = _connect(tmp_path, t, u, w)
    _keep_plans(con)
    cursor, frame, done = con._con.cursor(), con._refs_frame, []

    def with_a_row_first(*args):
        if not done:
            done.append(cursor.execute("INSERT INTO a VALUES (NULL, 7, NULL)"))
        return frame(*args)

    con._refs_frame = with_a_row_first
    con.execute(CTAS_A)
    con.execute(CTAS_B)
    before = hits[0]
    df = con.sql(NULLSAFE)
    assert done and hits[0] == before
    with pytest.raises(SourceChangedError):
        lineage_sets(df)


@pytest.mark.parametrize("keys_path", [True, False], ids=["keys", "rowid"])
def test_an_empty_group_table(tmp_path, keys_path, monkeypatch):
    """``u`` without rows: ``a`` is empty, every applicant joins nothing; the lineage is its ``t`` row
    alone on both paths (the rowid path raised IndexError in ``compose`` before)."""
    t, _, w = _frames(6)
    u = pd.DataFrame({"k": pd.array([], dtype="Int64")})
    if not keys_path:
        monkeypatch.setattr("traceprop_frames.sql.connection.key_columns", lambda *a: None)
    con, hits = _connect(tmp_path, t, u, w)
    for _ in range(3):
        con.execute(CTAS_A)
        con.execute(CTAS_B)
        df = con.sql(USING)
    assert hits[0] == (1 if keys_path else 0)
    assert df["n"].isna().all()
    assert lineage_sets(df) == _oracle(df, t, {"u": u, "w": w}, False)
