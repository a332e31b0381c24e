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

Lineage at a scale factor: Spark's (eager and lazy) for 2 sampled rows of each query equal to
``tpf.connect()``'s (DuckDB) for the row with the same values (no timing)::

    python benchmarks/bench_spark.py --tpch-sf 1 --lineage-check 2

Lineage storage: ids per output row (the size of each row's lineage list) x 8 bytes, against the bytes
of the source files it refers to — the ratio that scales a 1 TB source to its lineage size.
"""

from __future__ import annotations

import argparse
import datetime
import decimal
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

import traceprop_frames as tpf
from traceprop_frames.datasets import make_credit_risk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sql import _median_pair, tpch_tables  # noqa: E402  (interleaved medians)

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
    con = tpf.spark.connect(spark, capture="eager")  # (the lineage column is measured)
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


def _jvm_cpu(spark):
    """A function returning the Spark JVM's CPU seconds so far (user + system, from /proc): only
    Spark's own work, so steadier under a loaded machine than wall clock (local mode: one JVM)."""
    pid = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()
    tick = os.sysconf("SC_CLK_TCK")

    def cpu() -> float:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick  # utime, stime (fields 14, 15)

    return cpu


def tpch_modes(spark, data: Path, queries: Path, numbers: list[int], repeat: int) -> None:
    """Plain / eager / lazy capture of TPC-H queries on one session's views, interleaved medians of
    wall clock and of the JVM's CPU seconds (one warm-up round first)."""
    eager, lazy = tpf.spark.connect(spark, capture="eager"), tpf.spark.connect(spark, capture="lazy")
    plain = spark.newSession()
    for t in TPCH_TABLES:
        p = data / f"{t}.parquet"
        eager.read_parquet(p, t)
        lazy._hidden, lazy._nodes, lazy._plain = eager._hidden, eager._nodes, eager._plain  # the same views
        plain.read.parquet(str(p)).createOrReplaceTempView(t)
    cpu = _jvm_cpu(spark)
    print(
        f"{'case':<12} {'plain s':>8} {'eager s':>8} {'ratio':>6} {'lazy s':>8} {'ratio':>6}   "
        f"{'plain cpu':>9} {'eager cpu':>9} {'ratio':>6} {'lazy cpu':>9} {'ratio':>6}  load",
        flush=True,
    )
    ratios = []
    for n in numbers:
        q = (queries / f"q{n:02d}.sql").read_text()
        fns = [lambda q=q: _run(plain.sql(q)), lambda q=q: _run(eager.sql(q).frame),
               lambda q=q: _run(lazy.sql(q).frame)]  # fmt: skip
        for f in fns:  # warm-up
            f()
        wall: list[list[float]] = [[], [], []]
        jvm: list[list[float]] = [[], [], []]
        for _ in range(repeat):
            for f, w, c in zip(fns, wall, jvm):
                t0, c0 = time.perf_counter(), cpu()
                f()
                w.append(time.perf_counter() - t0)
                c.append(cpu() - c0)
        (p, e, lz), (pc, ec, lc) = ([statistics.median(x) for x in xs] for xs in (wall, jvm))
        ratios.append((e / p, lz / p, ec / pc, lc / pc))
        load = " ".join(f"{x:.1f}" for x in os.getloadavg())
        print(
            f"TPC-H q{n:02d}    {p:>8.2f} {e:>8.2f} {e / p:>6.2f} {lz:>8.2f} {lz / p:>6.2f}   "
            f"{pc:>9.2f} {ec:>9.2f} {ec / pc:>6.2f} {lc:>9.2f} {lc / pc:>6.2f}  {load}",
            flush=True,
        )
    med = [statistics.median(r[i] for r in ratios) for i in range(4)]
    print(
        f"median ratio, wall clock: eager {med[0]:.2f}, lazy {med[1]:.2f}; JVM CPU: eager {med[2]:.2f}, "
        f"lazy {med[3]:.2f} ({len(numbers)} queries, repeat {repeat})"
    )


def _value(v):
    """A value both engines agree on: numbers as floats (Spark keeps DECIMAL), timestamps as dates."""
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NaT:
        return None
    if isinstance(v, (float, np.floating, decimal.Decimal)):
        return float(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, (pd.Timestamp, datetime.datetime)):
        return v.date()
    return v


def _same(a: tuple, b: tuple) -> bool:
    """Keys exact; floats to 1e-9 relative or 1e-6 absolute (Spark rounds a DECIMAL average to 6 places)."""
    return len(a) == len(b) and all(
        math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-6)
        if isinstance(x, float) and isinstance(y, float)
        else x == y
        for x, y in zip(a, b)
    )


def _answer(sources: dict) -> dict:
    return {p: np.asarray(r).tolist() for p, r in sources.items() if len(r)}


def tpch_lineage(spark, data: Path, queries: Path, numbers: list[int], k: int) -> None:
    """Spark's lineage (eager and lazy) of ``k`` sampled rows per query vs ``tpf.connect()``'s (DuckDB).

    Rows are matched by their values (keys exact, numbers to 1e-9 relative / 1e-6 absolute), never by
    position; where several DuckDB rows carry the same values, Spark's answer must equal one of theirs.
    """
    from traceprop_frames.spark.result import POS

    cons = {
        "eager": tpf.spark.connect(spark, capture="eager"),
        "lazy": tpf.spark.connect(spark, capture="lazy"),
    }
    duck = tpf.connect()
    for t in TPCH_TABLES:
        for con in cons.values():
            con.read_parquet(data / f"{t}.parquet", t)
        duck.read_parquet(str(data / f"{t}.parquet"), t)
    print(
        f"{'case':<10} {'mode':<6} {'rows':>6} {'checked':>8} {'equal':>6} {'ids':>10} {'s':>7}", flush=True
    )
    bad = 0
    for n in numbers:
        q = (queries / f"q{n:02d}.sql").read_text()
        want = duck.sql(q)
        want_rows = [tuple(map(_value, r)) for r in want.astype(object).itertuples(index=False, name=None)]
        for mode, con in cons.items():
            t0 = time.perf_counter()
            res = con.sql(q)
            got = res.pinned().select(POS, *[F.col(f"`{c}`") for c in res.df.columns]).toPandas()
            got = got.sort_values(POS).drop(columns=[POS])
            got_rows = [tuple(map(_value, r)) for r in got.astype(object).itertuples(index=False, name=None)]
            sample = np.random.default_rng(n).choice(len(got_rows), size=min(k, len(got_rows)), replace=False)
            equal, ids = len(got_rows) == len(want_rows), 0
            for i in sorted(sample.tolist()):
                matches = [j for j, r in enumerate(want_rows) if _same(got_rows[i], r)]
                answer = _answer(res.sources(rows=[i]))
                ids += sum(map(len, answer.values()))
                equal &= any(answer == _answer(want.tp.sources(rows=[j])) for j in matches)
            bad += not equal
            print(f"TPC-H q{n:02d}  {mode:<6} {len(got_rows):>6} {len(sample):>8} {'yes' if equal else 'NO':>6} "
                  f"{ids:>10} {time.perf_counter() - t0:>7.1f}", flush=True)  # fmt: skip
    duck.close()
    print(f"lineage equal to DuckDB's: {2 * len(numbers) - bad} of {2 * len(numbers)} (query, mode) cases")


def credit_rows(spark, applicants: int, repeat: int, folder: Path):
    paths = {k: str(v) for k, v in make_credit_risk(folder / f"credit_{applicants}", applicants, 0).items()}
    con = tpf.spark.connect(spark, capture="eager")  # (the lineage column is measured)
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
    ap.add_argument(
        "--lineage-check", type=int, default=0, metavar="K",
        help="with --tpch-sf: instead of timing, compare K sampled rows' lineage per query with DuckDB's",
    )  # fmt: skip
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
    if args.tpch_sf is not None and args.lineage_check:
        tpch_lineage(spark, tpch_tables(args.tpch_sf), Path(args.tpch), args.queries, args.lineage_check)
        spark.stop()
        return
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
