"""An IN list whose rows compare with a correlated aggregate (TPC-H q20's shape), written once to a
temporary table that the query's IN and the witness's side query both read (``sql.temp_witness``).

Oracle: each result row's lineage written out by hand in pandas from the query's structure (its own row;
each qualifying IN row of its value; the rows that row's sum read; the rows of the nested IN list equal
to that row's key), compared as sets, eager and lazy; answers compared with plain DuckDB. Each case
checks which path ran, and that no table is left behind.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest
from _sql_oracle import lineage_sets

import traceprop_frames as tpf

Q = (
    "SELECT sk, n FROM s WHERE sk IN (SELECT ps.sk FROM ps WHERE ps.pk IN (SELECT pk FROM p WHERE f) "
    "AND ps.avail > (SELECT 0.5 * sum(l.q) FROM l WHERE l.pk = ps.pk AND l.sk = ps.sk AND l.yr = 1)) "
    "ORDER BY sk"
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(20)
    root = tmp_path_factory.mktemp("temp_witness")
    frames = {
        "s": pd.DataFrame({"sk": np.arange(10), "n": rng.integers(0, 3, 10)}),
        "p": pd.DataFrame({"pk": np.arange(8), "f": rng.random(8) < 0.6}),
        "ps": pd.DataFrame(
            {"pk": rng.integers(0, 8, 40), "sk": rng.integers(0, 12, 40), "avail": rng.integers(0, 30, 40)}
        ),
        "l": pd.DataFrame(
            {
                "pk": rng.integers(0, 8, 300),
                "sk": rng.integers(0, 12, 300),
                "q": rng.integers(1, 10, 300),
                "yr": rng.integers(0, 2, 300),
            }
        ),
    }
    paths = {}
    for name, df in frames.items():
        paths[name] = root / f"{name}.parquet"
        df.to_parquet(paths[name], index=False)
    cons = {}
    for mode in ("eager", "lazy"):
        cons[mode] = tpf.connect(capture=mode)
        for name, path in paths.items():
            cons[mode].read_parquet(path, name=name)
    plain = duckdb.connect()
    for name, path in paths.items():
        plain.execute(f"CREATE TABLE {name} AS SELECT * FROM read_parquet('{path}')")
    yield cons, plain, frames
    for con in cons.values():
        con.close()
    plain.close()


def _oracle(frames) -> dict[int, set]:
    """Result value -> its lineage, by brute force over the rows."""
    s, p, ps, l_ = (frames[k] for k in ("s", "p", "ps", "l"))
    good_p = set(p.loc[p["f"], "pk"])
    by_value: dict[int, set] = {}
    for j, r in ps.iterrows():
        if r["pk"] not in good_p:
            continue
        read = np.flatnonzero((l_["pk"] == r["pk"]) & (l_["sk"] == r["sk"]) & (l_["yr"] == 1))
        if not read.size or not r["avail"] > 0.5 * l_["q"].to_numpy()[read].sum():
            continue
        rows = {("ps", j)} | {("l", int(i)) for i in read}
        rows |= {("p", int(i)) for i in np.flatnonzero((p["pk"] == r["pk"]) & p["f"])}
        by_value.setdefault(int(r["sk"]), set()).update(rows)
    return {int(k): {("s", int(i))} | by_value[int(k)] for i, k in enumerate(s["sk"]) if int(k) in by_value}


def _temps_left(con) -> int:
    sql = "SELECT count(*) FROM duckdb_tables() WHERE table_name LIKE '\\_\\_tp\\_in\\_%' ESCAPE '\\'"
    return con.raw.sql(sql).fetchall()[0][0]


def test_lineage_and_answer_through_the_witness_table(data):
    cons, plain, frames = data
    want = _oracle(frames)
    assert len(want) > 1, "too few result rows: the case tests little"
    for mode, con in cons.items():
        for _ in range(2):  # the second run reuses the plan and writes the table again
            df = con.sql(Q)
            pd.testing.assert_frame_equal(df.reset_index(drop=True), plain.sql(Q).df())
            assert df["sk"].tolist() == sorted(want)
            assert lineage_sets(df) == [want[k] for k in df["sk"]], mode
            assert _temps_left(con) == 0
    main = cons["eager"]._eager_plans[Q][1][0]
    assert "__tp_in_" in main, "the IN did not read the witness table"
    assert "__tp_in_" not in cons["eager"].rewrite(Q), "rewrite() must not name a table it does not make"


def test_inside_the_users_transaction(data):
    cons, plain, frames = data
    con = cons["eager"]
    want = _oracle(frames)
    con.execute("BEGIN")
    df = con.sql(Q)
    assert _temps_left(con) == 0
    con.execute("COMMIT")
    assert lineage_sets(df) == [want[k] for k in df["sk"]]
    assert _temps_left(con) == 0


def test_not_in_has_no_witness_table(data):
    cons, plain, _ = data
    con = cons["eager"]
    q = Q.replace("sk IN (", "sk NOT IN (", 1)
    df = con.sql(q)
    pd.testing.assert_frame_equal(df.reset_index(drop=True), plain.sql(q).df())
    assert con._eager_plans[q][1][2].temps == []
    assert lineage_sets(df) == [{("s", int(k))} for k in df["sk"]]


def test_window_frames_read_after_the_query(data):
    """A window's frames are read by a query of their own after the result: the table is still there."""
    cons, plain, frames = data
    q = Q.replace("SELECT sk, n FROM s", "SELECT sk, n, sum(n) OVER () AS t FROM s")
    want = _oracle(frames)
    every = set().union(*want.values())
    con = cons["eager"]
    df = con.sql(q)
    pd.testing.assert_frame_equal(df.reset_index(drop=True), plain.sql(q).df())
    assert con._eager_plans[q][1][2].frames, "the frames were not read by a query of their own"
    assert lineage_sets(df) == [every] * len(df)
    assert _temps_left(con) == 0
