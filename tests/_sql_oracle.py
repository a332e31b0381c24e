"""Helpers shared by the SQL oracle tests: a result's lineage as plain Python sets, to compare with
lineage written out by hand (independent of the implementation)."""

from __future__ import annotations

from pathlib import Path


def lineage_sets(df) -> list[set]:
    """Per result row of a traced frame: the set of (source file stem, row number) it came from."""
    return [
        {(Path(p).stem, int(r)) for p, rows in df.tp.sources(i).items() for r in rows} for i in range(len(df))
    ]


def rows_of(table: str, idx) -> set:
    """``{(table, row), ...}`` for the row numbers ``idx`` of source ``table`` (the expected side)."""
    return {(table, int(i)) for i in idx}


def eager_lazy_plain(root, tables: dict, plain_reads_parquet: bool = True):
    """(eager, lazy, plain) connections over ``tables`` (name -> DataFrame), each written to
    ``root/<name>.parquet`` and loaded as a traced source; plain DuckDB reads the same file (or, with
    ``plain_reads_parquet=False``, the DataFrame itself)."""
    import duckdb

    import traceprop_frames as tpf

    eager, lazy = tpf.connect(capture="eager"), tpf.connect(capture="lazy")
    plain = duckdb.connect()
    for name, df in tables.items():
        path = root / f"{name}.parquet"
        df.to_parquet(path, index=False)
        eager.read_parquet(path, name=name)
        lazy.read_parquet(path, name=name)
        if plain_reads_parquet:
            plain.execute(f"CREATE TABLE {name} AS SELECT * FROM read_parquet('{path}')")
        else:
            plain.register(name, df)
    return eager, lazy, plain


def assert_lazy_equals_eager(eager, lazy, queries) -> None:
    """Each query gives the same frame on both connections, and each row the same source rows."""
    import numpy as np
    import pandas as pd

    for q in queries:
        want, got = eager.sql(q), lazy.sql(q)
        pd.testing.assert_frame_equal(want.reset_index(drop=True), got.reset_index(drop=True))
        for i in range(len(got)):
            w, g = want.tp.sources(rows=[i]), got.tp.sources(rows=[i])
            assert w.keys() == g.keys() and all(np.array_equal(w[k], g[k]) for k in w), (q, i)


def left_join_groups(c, o, cond) -> dict:
    """Group key -> (customer rows, order rows, [count(oid)]) of ``c LEFT JOIN o ON ck = ock AND
    cond(order row)`` grouped by ``ck``, by brute force over every pair (NULL keys: one group, no orders)."""
    import pandas as pd

    out: dict = {}
    for i, k in enumerate(c["ck"]):
        key = None if pd.isna(k) else int(k)
        rows_c, rows_o, n = out.setdefault(key, (set(), set(), [0]))
        rows_c.add(("c", i))
        for j in range(len(o)):
            if key is not None and not pd.isna(o["ock"][j]) and int(o["ock"][j]) == key and cond(o.iloc[j]):
                rows_o.add(("o", j))
                n[0] += 0 if pd.isna(o["oid"][j]) else 1
    return out


TPCH_TABLES = ["customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier"]


def tpch_connections(root: Path):
    """For a fixture (``yield from``): (eager, lazy) traced connections with the TPC-H tables of ``root``
    loaded, closed afterwards (skips without the tables)."""
    import pytest

    import traceprop_frames as tpf

    if not (root / "q01.sql").exists():
        pytest.skip(f"no TPC-H data at {root}")
    cons = tpf.connect(capture="eager"), tpf.connect(capture="lazy")
    for t in TPCH_TABLES:
        for con in cons:
            con.read_parquet(root / f"{t}.parquet", name=t)
    yield cons
    for con in cons:
        con.close()


def join_brute_force(got, t, u, t_file, u_file) -> None:
    """``SELECT t.v, u.w FROM t JOIN u ON t.k = u.k WHERE u.w > 30`` (any order, any LIMIT keeping all rows):
    each result row's sources against pandas, as the multiset of (v, w, t row, u row)."""
    from collections import Counter

    t2, u2 = t.assign(tr=range(len(t))), u.assign(ur=range(len(u)))
    want = Counter(
        (round(r.v, 6), r.w, r.tr, r.ur) for r in t2.merge(u2, on="k").query("w > 30").itertuples()
    )
    have = Counter()
    for i, (v, w) in enumerate(zip(got["v"], got["w"])):
        src = got.tp.sources(rows=[i])
        have[(round(v, 6), w, *src[str(t_file)].tolist(), *src[str(u_file)].tolist())] += 1
    assert have == want
