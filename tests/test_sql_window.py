"""Window functions: a window value's lineage is the rows of its frame (sufficient, checked by re-running).

Oracles (independent of the rewriter):
- sufficiency: plain DuckDB re-runs the original query on only an output row's lineage rows and must
  produce that row again;
- exactness: for the common frames the expected rows are computed in Python from the frame's definition.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

import traceprop_frames as tpf
from traceprop_frames.errors import UnsupportedSQLError
from traceprop_frames.lineage import decode

SEEDS = [0, 1]


def _tables(seed: int):
    rng = np.random.default_rng(seed)
    n = 9
    t = pd.DataFrame(
        {"k": rng.integers(0, 3, n), "o": rng.integers(0, 4, n), "x": rng.permutation(n) * 10 + 1}
    ).astype("int64")
    u = pd.DataFrame({"k": rng.integers(0, 3, 5), "y": rng.permutation(5) + 100}).astype("int64")
    return t, u


@pytest.fixture(params=SEEDS)
def env(request, tmp_path):
    t, u = _tables(request.param)
    t.to_parquet(tmp_path / "t.parquet")
    con = tpf.connect()
    con.read_parquet(tmp_path / "t.parquet", name="t")
    con.register("u", tpf.track(u, f"u_{request.param}"))
    yield con, t, u
    con.close()


SUFFICIENT = [
    "SELECT k, x, sum(x) OVER (PARTITION BY k) AS s FROM t",
    "SELECT x, x / sum(x) OVER (PARTITION BY k) AS ratio FROM t WHERE x > 20",
    "SELECT x, sum(x) OVER (PARTITION BY k ORDER BY o) AS s FROM t",
    "SELECT x, rank() OVER (PARTITION BY k ORDER BY o) AS r, dense_rank() OVER (ORDER BY o) AS d FROM t",
    "SELECT x, row_number() OVER (ORDER BY o, x) AS r FROM t",
    "SELECT x, sum(x) OVER (ORDER BY o, x ROWS BETWEEN 1 PRECEDING AND 1 FOLLOWING) AS s FROM t",
    "SELECT x, count(*) OVER (ORDER BY o RANGE BETWEEN 1 PRECEDING AND CURRENT ROW) AS c FROM t",
    "SELECT x, lag(x, 2) OVER (PARTITION BY k ORDER BY x) AS l, lead(x) OVER (ORDER BY x) AS e FROM t",
    "SELECT x FROM t QUALIFY x = max(x) OVER (PARTITION BY k)",
    "SELECT x, percent_rank() OVER (ORDER BY o) AS p, ntile(2) OVER (ORDER BY x) AS n FROM t",
    "SELECT k, sum(x) AS s, rank() OVER (ORDER BY sum(x) DESC) AS r FROM t GROUP BY k",
    "SELECT x, sum(x) OVER (ORDER BY o GROUPS BETWEEN 1 PRECEDING AND CURRENT ROW EXCLUDE GROUP) AS s FROM t",
    "SELECT x, first_value(x) OVER w AS f, last_value(x) OVER w AS l FROM t "
    "WINDOW w AS (PARTITION BY k ORDER BY x ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)",
    "SELECT t.x, u.y, sum(u.y) OVER (PARTITION BY t.k) AS s FROM t JOIN u USING (k)",
    "SELECT x, sum(x) OVER w AS s FROM t WINDOW b AS (PARTITION BY k ORDER BY o, x), "
    "w AS (b ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)",
    "WITH w AS (SELECT k, x, avg(x) OVER (PARTITION BY k) AS a FROM t) SELECT k, x FROM w WHERE x > a",
    "SELECT x, lag(x IGNORE NULLS) OVER (ORDER BY x) AS l FROM t",
    "SELECT x FROM t WHERE x IN (SELECT max(x) OVER (PARTITION BY k) FROM t)",
    # not windows, but row choices checked by the same re-run oracle
    "SELECT DISTINCT ON (k) k, x FROM t ORDER BY k, x DESC",
    "SELECT x, o FROM t SEMI JOIN u ON t.k = u.k AND u.y > 101",
    "SELECT k, o, count(*) AS c, sum(x) AS s FROM t GROUP BY ROLLUP (k, o)",
    "SELECT k, o, grouping(k) AS g, max(x) AS m FROM t GROUP BY GROUPING SETS ((k), (o), ())",
    "SELECT k, o, sum(x) AS s FROM t GROUP BY CUBE (k, o)",
    "SELECT k, sum(x) FILTER (WHERE o > 1) AS s, count(*) AS n FROM t GROUP BY k",
]


def _rows(df: pd.DataFrame) -> list[tuple]:
    out = []
    for row in df.astype(object).itertuples(index=False, name=None):
        out.append(tuple(None if pd.isna(v) else round(float(v), 6) for v in row))
    return out


def _lineage_rows(df, i) -> dict[str, np.ndarray]:
    src = {Path(p).stem: rows for p, rows in df.tp.sources(i).items()}
    return {("u" if k.startswith("u_") else k): v for k, v in src.items()}


@pytest.mark.parametrize("query", SUFFICIENT, ids=[q[:70] for q in SUFFICIENT])
def test_rerun_on_lineage_reproduces_row(env, query):
    con, t, u = env
    got = con.sql(query)
    plain = duckdb.connect()
    plain.register("t", t)
    plain.register("u", u)
    assert Counter(_rows(got)) == Counter(_rows(plain.sql(query).df()))
    plain.close()
    values = _rows(got)
    sub = duckdb.connect()  # one connection; each row's subset replaces the views
    for i in range(len(got)):
        rows = _lineage_rows(got, i)
        sub.register("t", t.iloc[np.sort(rows.get("t", np.zeros(0, dtype=np.int64)))])
        sub.register("u", u.iloc[np.sort(rows.get("u", np.zeros(0, dtype=np.int64)))])
        again = _rows(sub.sql(query).df())
        assert values[i] in again, f"row {i} {values[i]} not reproduced from its lineage {rows}"


def _expected_frames(t: pd.DataFrame, which: str) -> dict[int, set[int]]:
    """x value -> expected lineage rows of t, straight from the frame definitions."""
    k, o, x = (t[c].to_numpy() for c in ("k", "o", "x"))
    n = len(t)
    out = {}
    for r in range(n):
        if which == "partition":
            rows = {i for i in range(n) if k[i] == k[r]}
        elif which == "running":
            rows = {i for i in range(n) if k[i] == k[r] and o[i] <= o[r]}
        elif which == "rows":
            order = sorted(range(n), key=lambda i: (o[i], x[i]))
            p = order.index(r)
            rows = set(order[max(p - 1, 0) : p + 2])
        else:  # lag 2 within k by x, lead 1 over all by x
            part = sorted((i for i in range(n) if k[i] == k[r]), key=lambda i: x[i])
            p = part.index(r)
            every = sorted(range(n), key=lambda i: x[i])
            q = every.index(r)
            rows = set(part[max(p - 2, 0) : p + 1]) | set(every[q : q + 2])
        out[int(x[r])] = rows
    return out


EXACT = {
    "partition": "SELECT x, sum(x) OVER (PARTITION BY k) AS s FROM t",
    "running": "SELECT x, sum(x) OVER (PARTITION BY k ORDER BY o) AS s FROM t",
    "rows": "SELECT x, sum(x) OVER (ORDER BY o, x ROWS BETWEEN 1 PRECEDING AND 1 FOLLOWING) AS s FROM t",
    "offsets": "SELECT x, lag(x, 2) OVER (PARTITION BY k ORDER BY x) AS l, lead(x) OVER (ORDER BY x) AS e FROM t",
}


@pytest.mark.parametrize("which", sorted(EXACT))
def test_frame_lineage_equals_definition(env, which):
    con, t, _ = env
    got = con.sql(EXACT[which])
    want = _expected_frames(t, which)
    for i in range(len(got)):
        assert set(_lineage_rows(got, i)["t"].tolist()) == want[int(got["x"].iloc[i])]


def test_offset_known_only_at_run_time_reads_the_partition(env):
    """lag(x, k) / lead(x, -1): which row is read is known only when it runs: the whole partition."""
    con, t, _ = env
    want = _expected_frames(t, "partition")
    for q in (
        "SELECT x, lag(x, k) OVER (PARTITION BY k ORDER BY x) AS l FROM t",
        "SELECT x, lead(x, -1) OVER (PARTITION BY k ORDER BY x) AS l FROM t",
    ):
        got = con.sql(q)
        for i in range(len(got)):
            assert set(_lineage_rows(got, i)["t"].tolist()) == want[int(got["x"].iloc[i])]


def test_running_frames_are_stored_once(tmp_path):
    """2,000 running sums: each row refers to one prefix of one shared pool, not a copy of its prefix."""
    n = 2000
    con = tpf.connect()
    con.register("big", tpf.track(pd.DataFrame({"k": np.arange(n) % 3, "x": np.arange(n)}), "big_window"))
    df = con.sql("SELECT x, sum(x) OVER (PARTITION BY k ORDER BY x) AS s FROM big")
    lin = df.tp.lineage()
    assert lin.n_ids == n and sum(len(b.pool) for b in lin.context.blocks.values()) == n
    for i in (0, 1, n - 1):
        x = int(df["x"].iloc[i])
        want = {r for r in range(n) if r % 3 == x % 3 and r <= x}  # the prefix of its partition
        assert set(decode(lin.row_ids(i))[1].tolist()) == want
    con.close()


ZERO_OFFSETS = [
    "RANGE BETWEEN 0 PRECEDING AND 0 PRECEDING",
    "RANGE BETWEEN 0 FOLLOWING AND 0 FOLLOWING",
    "RANGE BETWEEN UNBOUNDED PRECEDING AND 0 FOLLOWING",
    "GROUPS BETWEEN 0 PRECEDING AND 0 FOLLOWING",
]


@pytest.mark.parametrize("spec", ZERO_OFFSETS)
def test_zero_offset_frames_are_the_peers(env, spec):
    """A 0 offset bound in RANGE / GROUPS mode is the current row's peers (rows with the same ``o``):
    the lineage is the frame as the SQL standard defines it, eager and lazy alike. (The positions that
    place such a frame were once counted with DuckDB's ``RANGE ... AND 0 PRECEDING``, which DuckDB 2.0
    sometimes cuts short: a frame starting before its partition.)"""
    _, t, _ = env
    q = f"SELECT x, count(*) OVER (PARTITION BY k ORDER BY o {spec}) AS c FROM t"
    k, o, x = (t[c].to_numpy() for c in ("k", "o", "x"))
    running = "UNBOUNDED" in spec
    for capture in ("eager", "lazy"):
        con = tpf.connect(capture=capture)
        con.register("t", tpf.track(t, "t"))
        got = con.sql(q)
        for i in range(len(got)):
            r = int(np.flatnonzero(x == int(got["x"].iloc[i]))[0])
            want = {j for j in range(len(t)) if k[j] == k[r] and (o[j] <= o[r] if running else o[j] == o[r])}
            assert set(_lineage_rows(got, i)["t"].tolist()) == want, (capture, i)
            assert int(got["c"].iloc[i]) == len(want)
        con.close()


@pytest.mark.parametrize("end", ["0 PRECEDING", "-0 PRECEDING"])
def test_frame_duckdb_answers_unstably_is_refused(env, end):
    """``RANGE BETWEEN UNBOUNDED PRECEDING AND 0 PRECEDING``: plain DuckDB 2.0 gives other counts from run
    to run, so the traced connection refuses it and names the frame to write instead."""
    con, _, _ = env
    with pytest.raises(UnsupportedSQLError, match="AND CURRENT ROW, the same frame"):
        con.sql(
            f"SELECT x, sum(x) OVER (PARTITION BY k ORDER BY o RANGE BETWEEN UNBOUNDED PRECEDING AND {end}) FROM t"
        )


def test_frame_placed_outside_its_partition_raises():
    """Frame positions that do not fit their partition (an engine miscount) raise a named error, never
    lineage from a neighbouring partition."""
    import pyarrow as pa

    from traceprop_frames.lineage import RowLineage
    from traceprop_frames.sql.connection import lineage_from_arrow
    from traceprop_frames.sql.shared import with_frames

    side = pa.table({"p": [1, 1, 2], "pos": [0, 1, 0], "lin": pa.array([7, 8, 9], pa.int64())})
    lin = RowLineage(np.arange(4), np.array([7, 8, 9]))
    ok = [pa.array([1, 1, 2]), pa.array([0, 0, 0]), pa.array([2, 2, 1])]  # whole partitions
    out = with_frames(lin, [ok], [(side, "w")], lineage_from_arrow, [], lambda v: v)
    assert [out.row_ids(i).tolist() for i in range(3)] == [[7, 8], [7, 8], [9]]
    for start, end in (([-1, 0, 0], [1, 2, 1]), ([0, 0, 0], [3, 2, 1]), ([1, 0, 0], [0, 2, 1])):
        bad = [pa.array([1, 1, 2]), pa.array(start), pa.array(end)]
        with pytest.raises(UnsupportedSQLError, match="outside its partition"):
            with_frames(lin, [bad], [(side, "w")], lineage_from_arrow, [], lambda v: v)
