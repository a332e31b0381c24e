"""Plain / eager / lazy Spark capture of a few TPC-H queries on one core, with variants of the rewrite.

    PYTHONPATH=. python benchmarks/spark_variants.py data/sh_tpch_sf0.1 5 15 --copy

Spark ``local[1]`` (a shared machine), interleaved rounds after one warm-up; medians of the Spark JVM's
CPU seconds and of wall clock, each as a ratio to plain, with the load average. ``--copy`` adds
``eager-copy``: the eager rewrite with a scalar subquery over the query's CTEs copied into each row
(the code before shared sets over CTEs). Queries are read from ``../shared/tpch``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from pyspark.sql import SparkSession

import traceprop_frames as tpf
from traceprop_frames.spark.dialect import to_spark
from traceprop_frames.spark.shared import SharedSets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_spark import TPCH_TABLES, _jvm_cpu, _run  # noqa: E402

QUERIES = Path(__file__).resolve().parents[2] / "shared" / "tpch"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("repeat", type=int)
    ap.add_argument("queries", type=int, nargs="+")
    ap.add_argument("--copy", action="store_true")
    args = ap.parse_args()
    spark = (
        SparkSession.builder.master("local[1]")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.driver.memory", "2g")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    eager, lazy = tpf.spark.connect(spark, capture="eager"), tpf.spark.connect(spark, capture="lazy")
    plain = spark.newSession()
    for t in TPCH_TABLES:
        p = args.data / f"{t}.parquet"
        eager.read_parquet(p, t)
        lazy._hidden, lazy._nodes, lazy._plain = eager._hidden, eager._nodes, eager._plain
        plain.read.parquet(str(p)).createOrReplaceTempView(t)

    def eager_copy(q: str):
        rw = eager._rewrite(eager._parse(q)[0], SharedSets(), over_ctes=False)
        return spark.sql(to_spark(rw.expression, eager._plain, eager._standalone))

    sides = {"plain": plain.sql, "eager": lambda q: eager.sql(q).frame, "lazy": lambda q: lazy.sql(q).frame}
    if args.copy:
        sides["eager-copy"] = eager_copy
    cpu = _jvm_cpu(spark)
    print("query " + " ".join(f"{n:>12}" for n in sides) + "   (seconds, ratio to plain)  load", flush=True)
    for n in args.queries:
        q = (QUERIES / f"q{n:02d}.sql").read_text()
        fns = [lambda f=f, q=q: _run(f(q)) for f in sides.values()]
        for f in fns:
            f()
        c: list[list[float]] = [[] for _ in fns]
        w: list[list[float]] = [[] for _ in fns]
        for _ in range(args.repeat):
            for f, cc, ww in zip(fns, c, w):
                t0, c0 = time.perf_counter(), cpu()
                f()
                ww.append(time.perf_counter() - t0)
                cc.append(cpu() - c0)
        mc, mw = [statistics.median(x) for x in c], [statistics.median(x) for x in w]
        load = " ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"q{n:02d} cpu  " + " ".join(f"{x:>7.2f} {x / mc[0]:>4.2f}" for x in mc) + f"  {load}")
        print(f"q{n:02d} wall " + " ".join(f"{x:>7.2f} {x / mw[0]:>4.2f}" for x in mw), flush=True)
    spark.stop()


if __name__ == "__main__":
    main()
