"""Where a lazy query's first lineage question goes: per TPC-H query, CPU milliseconds (median of
``--repeat``) of plain DuckDB, the first capture of the query text, a later capture, the first one-row
request (and its planning part alone), and a later request with the plan cached.

    PYTHONPATH=. python benchmarks/bench_sql_first_request.py [--tpch-sf 1] [--queries 15 20] [--repeat 5]

Tables from ``data/tpch_sf<SF>`` (``bench_sql.py --tpch-sf SF`` generates them), queries from ``--tpch``
(``qNN.sql``). One lazy connection; its plan caches are emptied before each repeat, so every "first" is a
first. ``--wall`` measures wall clock instead of CPU time. Run it on two versions of the code, one after
the other, to compare them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import traceprop_frames as tpf

TABLES = ["customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier"]


def _clear(con) -> None:
    for cache in ("_backward_plans", "_captures", "_names", "_first_rewrites"):
        if hasattr(con, cache):
            getattr(con, cache).clear()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tpch-sf", default="1")
    ap.add_argument("--tpch", default=str(Path(__file__).resolve().parents[2] / "shared" / "tpch"))
    ap.add_argument("--queries", type=int, nargs="*", default=list(range(1, 23)))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--wall", action="store_true")
    args = ap.parse_args()
    clock = time.perf_counter if args.wall else time.process_time
    root = Path(__file__).resolve().parents[1] / "data" / f"tpch_sf{args.tpch_sf}"
    con = tpf.connect(capture="lazy")
    for t in TABLES:
        con.read_parquet(root / f"{t}.parquet", name=t)
    firsts, plans = [], []
    print(
        "query   plain  capture1  capture |  first (plan)  cached   [ms, "
        + ("wall" if args.wall else "CPU")
        + "]"
    )
    for n in args.queries:
        q = (Path(args.tpch) / f"q{n:02d}.sql").read_text()
        con.sql(q)  # warm-up
        con.raw.sql(q).df()
        cols = {k: [] for k in ("plain", "capture1", "capture", "first", "plan", "cached")}
        for _ in range(args.repeat):
            _clear(con)
            t0 = clock()
            con.raw.sql(q).df()
            cols["plain"].append(clock() - t0)
            t0 = clock()
            con.sql(q)
            cols["capture1"].append(clock() - t0)
            t0 = clock()
            df = con.sql(q)
            cols["capture"].append(clock() - t0)
            resolver = df.tp.lineage()._resolver
            t0 = clock()
            resolver._backward()  # the planning part of the first request
            t1 = clock()
            df.tp.sources(rows=[0])
            t2 = clock()
            cols["plan"].append(t1 - t0)
            cols["first"].append(t2 - t0)
            df = con.sql(q)
            t0 = clock()
            df.tp.sources(rows=[0])
            cols["cached"].append(clock() - t0)
        m = {k: statistics.median(v) * 1e3 for k, v in cols.items()}
        firsts.append(m["first"])
        plans.append(m["plan"])
        print(
            f"q{n:02d}  {m['plain']:7.1f} {m['capture1']:8.1f} {m['capture']:8.1f} | {m['first']:6.1f} "
            f"({m['plan']:5.1f}) {m['cached']:7.1f}",
            flush=True,
        )
    print(f"first request: median {statistics.median(firsts):.1f} ms; planning summed {sum(plans):.1f} ms")
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
