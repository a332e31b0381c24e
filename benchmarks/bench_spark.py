"""Traced / plain Spark (local[2]): the 22 TPC-H queries and the credit-risk SQL ETL; lineage storage.

    python benchmarks/bench_spark.py                        # TPC-H from ../shared/tpch, credit 200k
    python benchmarks/bench_spark.py --tpch /path/to/sf1    # any folder with <table>.parquet and qNN.sql
    python benchmarks/bench_spark.py --check                # also: all 22 results == Spark's own

Measured in one process on one SparkSession, interleaved (plain, traced, plain, traced, ...), median of
``--repeat`` runs. "Plain" runs the query in a second session (``spark.newSession()``) whose views read the same files
without lineage (CSV without ``multiLine``, as one would read it plainly);
"traced" runs ``con.sql(q).frame`` (the rewritten query with its lineage column). Both are executed in
full with Spark's ``noop`` writer, so nothing is collected to the driver.

TPC-H at a scale factor, plain / eager / lazy capture (tables from ``bench_sql.tpch_tables``)::

    python benchmarks/bench_spark.py --tpch-sf 1 --queries 1 4 6 13 18 --repeat 3

Lineage storage: ids per output row (the size of each row's lineage list) x 8 bytes, against the bytes
of the source files it refers to — the ratio that scales a 1 TB source to its lineage size.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

import traceprop_frames as tpf
from traceprop_frames.datasets import make_credit_risk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sql import _median_pair, _median_three, tpch_tables  # noqa: E402  (interleaved medians)

TPCH_TABLES = ["customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier"]
AGGS = {
    "bureau_agg": "SELECT SK_ID_CURR, count(AMT_CREDIT_SUM) AS n_loans, sum(AMT_CREDIT_SUM_DEBT) AS debt "
    "FROM bureau GROUP BY SK_ID_CURR",
    "prev_agg": "SELECT SK_ID_CURR, count(AMT_APPLICATION) AS n_prev FROM previous_application GROUP BY SK_ID_CURR",
}
TRAIN = (
    "SELECT a.*, b.n_loans, b.debt, p.n_prev, a.AMT_CREDIT / a.AMT_INCOME_TOTAL AS ratio "
    "FROM application a LEFT JOIN bureau_agg b USING (SK_ID_CURR) LEFT JOIN prev_agg p USING (SK_ID_CURR) "
    "WHERE a.AMT_INCOME_TOTAL > 0"
)


def _run(df) -> None:
    df.write.format("noop").mode("overwrite").save()


def _storage(res, source_bytes: int) -> tuple[float, float]:
    """(ids per output row, lineage bytes / source bytes) of a traced result (one Spark job)."""
    n, ids = res.frame.select(F.count(F.lit(1)), F.sum(F.size(res._ids()))).first()
    return (ids or 0) / max(n, 1), 8 * (ids or 0) / source_bytes


def tpch_rows(spark, root: Path, repeat: int, check: bool):
    con = tpf.spark.connect(spark)
    plain = spark.newSession()  # its own temp views: the same names over the files, without lineage
    for t in TPCH_TABLES:
        p = root / f"{t}.parquet"
        con.read_parquet(p, t)
        plain.read.parquet(str(p)).createOrReplaceTempView(t)
    source_bytes = sum(os.path.getsize(root / f"{t}.parquet") for t in TPCH_TABLES)
    rows = []
    for n in range(1, 23):
        q = (root / f"q{n:02d}.sql").read_text()
        res = con.sql(q)
        if check:
            got = sorted(map(repr, res.df.collect()))
            assert got == sorted(map(repr, plain.sql(q).collect())), f"q{n:02d} result differs"
        p, t = _median_pair(lambda q=q: _run(plain.sql(q)), lambda q=q: _run(con.sql(q).frame), repeat)
        rows.append(_show((f"TPC-H q{n:02d}", p, t, *_storage(res, source_bytes))))
    return rows


def tpch_modes(spark, data: Path, queries: Path, numbers: list[int], repeat: int) -> None:
    """Plain / eager / lazy capture of TPC-H queries on one session's views, interleaved medians."""
    eager, lazy = tpf.spark.connect(spark), tpf.spark.connect(spark, capture="lazy")
    plain = spark.newSession()
    for t in TPCH_TABLES:
        p = data / f"{t}.parquet"
        eager.read_parquet(p, t)
        lazy._hidden, lazy._nodes = eager._hidden, eager._nodes  # the same views
        plain.read.parquet(str(p)).createOrReplaceTempView(t)
    print(
        f"{'case':<12} {'plain s':>9} {'eager s':>9} {'ratio':>6} {'lazy s':>9} {'ratio':>6}  load",
        flush=True,
    )
    ratios = []
    for n in numbers:
        q = (queries / f"q{n:02d}.sql").read_text()
        p, e, lz = _median_three(
            [lambda q=q: _run(plain.sql(q)), lambda q=q: _run(eager.sql(q).frame),
             lambda q=q: _run(lazy.sql(q).frame)], repeat)  # fmt: skip
        ratios.append((e / p, lz / p))
        load = " ".join(f"{x:.1f}" for x in os.getloadavg())
        print(
            f"TPC-H q{n:02d}    {p:>9.3f} {e:>9.3f} {e / p:>6.2f} {lz:>9.3f} {lz / p:>6.2f}  {load}",
            flush=True,
        )
    print(
        f"median ratio: eager {statistics.median(r[0] for r in ratios):.2f}, "
        f"lazy {statistics.median(r[1] for r in ratios):.2f} ({len(numbers)} queries)"
    )


def credit_rows(spark, applicants: int, repeat: int, folder: Path):
    paths = {k: str(v) for k, v in make_credit_risk(folder / f"credit_{applicants}", applicants, 0).items()}
    con = tpf.spark.connect(spark)
    con.read_csv(paths["application"], "application").read_csv(paths["bureau"], "bureau")
    con.read_parquet(paths["previous_application"], "previous_application")
    plain = spark.newSession()
    opts = {"header": True, "inferSchema": True}
    plain.read.options(**opts).csv(paths["application"]).createOrReplaceTempView("application")
    plain.read.options(**opts).csv(paths["bureau"]).createOrReplaceTempView("bureau")
    plain.read.parquet(paths["previous_application"]).createOrReplaceTempView("previous_application")
    for name, q in AGGS.items():
        con.sql(f"CREATE OR REPLACE TEMP VIEW {name} AS {q}")
        plain.sql(f"CREATE OR REPLACE TEMP VIEW {name} AS {q}")
    source_bytes = sum(os.path.getsize(p) for p in paths.values())
    res = con.sql(TRAIN)
    p, t = _median_pair(lambda: _run(plain.sql(TRAIN)), lambda: _run(con.sql(TRAIN).frame), repeat)
    return [_show((f"credit ETL {applicants // 1000}k", p, t, *_storage(res, source_bytes)))]


def _show(row: tuple) -> tuple:
    name, p, t, per_row, frac = row
    print(f"{name:<22} {p:>9.3f} {t:>9.3f} {t / p:>6.2f} {per_row:>10.1f} {frac:>12.4f}", flush=True)
    return row


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tpch", default=str(Path(__file__).resolve().parents[2] / "shared" / "tpch"))
    ap.add_argument("--applicants", type=int, nargs="*", default=[200_000])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--check", action="store_true", help="also check all 22 results against Spark's own")
    ap.add_argument("--data", default=None, help="folder for generated credit data (default: a temp dir)")
    ap.add_argument(
        "--tpch-sf", type=float, default=None, help="TPC-H at this scale factor: plain/eager/lazy"
    )
    ap.add_argument("--queries", type=int, nargs="*", default=list(range(1, 23)))
    ap.add_argument("--driver-memory", default="4g", help="Spark driver heap (local mode: the whole JVM)")
    args = ap.parse_args(argv)
    spark = (
        SparkSession.builder.master("local[2]")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.driver.memory", args.driver_memory)
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    if args.tpch_sf is not None:
        tpch_modes(spark, tpch_tables(args.tpch_sf), Path(args.tpch), args.queries, args.repeat)
        spark.stop()
        return
    folder = Path(args.data or tempfile.mkdtemp(prefix="tp_bench_spark_"))
    print(f"{'case':<22} {'plain s':>9} {'traced s':>9} {'ratio':>6} {'ids/row':>10} {'lineage/src':>12}")
    rows = []
    for n in args.applicants:
        rows += credit_rows(spark, n, args.repeat, folder)
    tpch = Path(args.tpch)
    if (tpch / "q01.sql").exists():
        rows += tpch_rows(spark, tpch, args.repeat, args.check)
    tp = [(t / p, name) for name, p, t, *_ in rows if name.startswith("TPC-H")]
    if tp:
        print(f"TPC-H ({tpch}): median ratio {statistics.median(r for r, _ in tp):.2f}, worst {max(tp)[0]:.2f} "
              f"({max(tp)[1]}){'; all 22 results identical to Spark' + chr(39) + 's own' if args.check else ''}")  # fmt: skip
    spark.stop()


if __name__ == "__main__":
    main()
