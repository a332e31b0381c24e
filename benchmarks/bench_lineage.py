"""Lineage overhead, measured side by side in one process (interleaved runs, medians).

    .venv/bin/python benchmarks/bench_lineage.py [--applicants 20000 200000] [--repeats 7]
        [--only-rows | --only-etl] [--clock cpu]

Prints one table: case, plain time, traced time, ratio; then the look-up latencies.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

import traceprop_frames as tpf
from traceprop_frames.datasets import make_credit_risk
from traceprop_frames.frames import attach
from traceprop_frames.lineage import OpNode, RowLineage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "credit_risk"))
from etl import plain_etl, traced_etl  # noqa: E402

CLOCK = [time.perf_counter]  # --clock cpu: time.process_time (steadier on a shared machine)


def interleaved(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each callable, runs interleaved (the order alternates every round, so neither
    side always runs on a warmer cache) and ``ratio``: the median of the per-round traced/plain ratios,
    which is steadier than the ratio of medians on a shared machine."""
    times = {k: [] for k in fns}
    keys = list(fns)
    for r in range(repeats):
        for k in keys if r % 2 == 0 else keys[::-1]:
            gc.collect()
            t0 = CLOCK[0]()
            fns[k]()
            times[k].append(CLOCK[0]() - t0)
    out = {k: statistics.median(v) for k, v in times.items()}
    out["ratio"] = statistics.median(t / p for t, p in zip(times["traced"], times["plain"]))
    return out


def peak_mb(fn) -> float:
    gc.collect()
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def per_call(fn, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def bench_etl(applicants: int, repeats: int, rows: list) -> None:
    folder = Path(tempfile.mkdtemp()) / f"credit_{applicants}"
    paths = make_credit_risk(folder, applicants, seed=0)
    traced = (
        tpf.read_csv(paths["application"]),
        tpf.read_csv(paths["bureau"]),
        tpf.read_parquet(paths["previous_application"]),
    )
    plain = (
        pd.read_csv(paths["application"]),
        pd.read_csv(paths["bureau"]),
        pd.read_parquet(paths["previous_application"]),
    )
    t = interleaved({"plain": lambda: plain_etl(*plain), "traced": lambda: traced_etl(*traced)}, repeats)
    mem_p = peak_mb(lambda: plain_etl(*plain))
    mem_t = peak_mb(lambda: traced_etl(*traced))
    n_src = sum(len(x) for x in traced)
    rows.append(
        (
            f"credit ETL, {applicants:,} applicants ({n_src:,} source rows)",
            t["plain"],
            t["traced"],
            t["ratio"],
        )
    )
    print(f"  peak memory of one ETL run at {applicants:,}: plain {mem_p:.1f} MiB, traced {mem_t:.1f} MiB "
          f"({mem_t / mem_p:.2f}x)")  # fmt: skip

    train = traced_etl(*traced)
    t0 = time.perf_counter()
    train.tp.sources()
    compose = time.perf_counter() - t0
    print(f"  first query on the ETL result (composes the deferred lineage, {train.tp.lineage().n_ids:,} "
          f"source-row refs): {compose * 1e3:.1f} ms")  # fmt: skip
    bureau = str(paths["bureau"])
    rng = np.random.default_rng(0)
    some = rng.integers(0, len(train), 200)
    train.tp.trace(0)  # first call stats the files once
    trace_s = per_call(lambda: [r.trace_to_file() for r in train.tp.trace(int(some[0]))], 2000)
    b_rows = rng.integers(0, len(traced[1]), 1000)
    t0 = time.perf_counter()
    train.tp.rows_from_source(bureau, [int(b_rows[0])])
    first = time.perf_counter() - t0
    it = iter(b_rows.tolist() * 3)
    fwd_s = per_call(lambda: train.tp.rows_from_source(bureau, [next(it)]), 2000)
    print(f"  trace(i) + trace_to_file(): {trace_s * 1e3:.3f} ms;  rows_from_source(1 bureau row): "
          f"first {first * 1e3:.1f} ms (builds the inverted index), then {fwd_s * 1e3:.3f} ms")  # fmt: skip


def bench_row_ops(n: int, repeats: int, rows: list) -> None:
    rng = np.random.default_rng(1)
    base = pd.DataFrame({"a": rng.normal(size=n), "b": rng.integers(0, 100, n), "c": rng.normal(size=n)})
    traced = tpf.track(base, "bench_1m")
    plain = base.copy()  # the same block layout as the traced copy that tpf.track makes

    def chain(d):
        d = d[d["a"] > -1.0]
        d = d.assign(r=d["a"] / (d["c"].abs() + 1))
        d = d.sort_values("b")
        d = d.fillna(0).head(n // 2)
        return d[["a", "r"]] * 2

    t = interleaved({"plain": lambda: chain(plain), "traced": lambda: chain(traced)}, repeats)
    rows.append((f"row-preserving chain (filter, assign, sort, fillna, head, arithmetic), {n:,} rows", t["plain"], t["traced"], t["ratio"]))  # fmt: skip


def bench_cross_row(n: int, repeats: int, rows: list) -> None:
    """Calls that read other rows: plain pandas vs the same call on a traced frame (which also records the
    shared sets), and the row-preserving chain on untraced frames with and without the wrappers."""
    from traceprop_frames.frames import cross_row

    rng = np.random.default_rng(2)
    base = pd.DataFrame({"a": rng.normal(size=n), "g": rng.integers(0, 1000, n)})
    calls = {
        "s.shift(1)": lambda d: d["a"].shift(1),
        "s.cumsum()": lambda d: d["a"].cumsum(),
        "s.rolling(3).mean()": lambda d: d["a"].rolling(3).mean(),
        "groupby(g)[a].transform('sum')": lambda d: d.groupby("g")["a"].transform("sum"),
        "groupby(g)[a].cumsum()": lambda d: d.groupby("g")["a"].cumsum(),
        "s / s.sum()": lambda d: d["a"] / d["a"].sum(),
        "(d - d.mean()) / d.std()": lambda d: (d - d.mean()) / d.std(),
    }
    plain = base.copy()
    for label, call in calls.items():
        fresh = [tpf.track(base, "bench_xr") for _ in range(repeats)]  # sets accumulate on a frame's rows

        def traced_run(call=call, fresh=fresh):
            call(fresh.pop())

        t = interleaved({"plain": lambda call=call: call(plain), "traced": traced_run}, repeats)
        rows.append((f"{label}, {n:,} rows (traced: pandas + recording the sets)", t["plain"], t["traced"], t["ratio"]))  # fmt: skip
        src = tpf.track(base, "bench_xr")  # kept alive: a Series result may not hold the table's handle
        out = call(src)
        out = out.to_frame() if isinstance(out, pd.Series) else out
        t0 = time.perf_counter()
        out.tp.sources(rows=[n // 2])
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        out.tp.sources(rows=[n // 3])
        print(f"  {label}: first sources(row) {first * 1e3:.1f} ms (lays out the recorded sets), "
              f"then {(time.perf_counter() - t0) * 1e3:.1f} ms")  # fmt: skip

    def chain(d):
        d = d[d["a"] > -1.0]
        d = d.assign(r=d["a"] * 2)
        d["s"] = d["r"] + 1
        return d.sort_values("g").head(n // 2)

    def wrapped():
        chain(plain)

    def unwrapped():
        cross_row.uninstall()
        try:
            chain(plain)
        finally:
            cross_row.install()

    t = interleaved({"plain": unwrapped, "traced": wrapped}, repeats)
    rows.append((f"untraced row-preserving chain, wrappers installed vs not, {n:,} rows", t["plain"], t["traced"], t["ratio"]))  # fmt: skip


def bench_ancestors(depth: int) -> None:
    t0 = time.perf_counter()
    node = OpNode("read_csv")
    for i in range(depth):
        node = OpNode("merge" if i % 2 else "groupby_agg", {"i": i}, (node,))
    build = time.perf_counter() - t0
    df = attach(pd.DataFrame({"x": [1]}), RowLineage.empty(1, node))
    t0 = time.perf_counter()
    dag = df.tp.ancestors()
    first = time.perf_counter() - t0
    again = per_call(df.tp.ancestors, 2000)
    assert len(dag) == depth + 1
    print(
        f"  ancestors() of a {depth}-op chain: first call {first * 1e3:.4f} ms, then {again * 1e3:.4f} ms "
        f"(creating the {depth} op nodes, ancestor lists included: {build * 1e3:.2f} ms)"
    )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--applicants", type=int, nargs="+", default=[20_000, 200_000])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--only-rows", action="store_true", help="skip the ETL cases")
    ap.add_argument("--only-etl", action="store_true", help="skip the row-operation cases")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="cpu: process time")
    args = ap.parse_args(argv)
    CLOCK[0] = time.process_time if args.clock == "cpu" else time.perf_counter
    rows: list = []
    print("lineage benchmark (medians of interleaved runs)")
    for a in [] if args.only_rows else args.applicants:
        bench_etl(a, args.repeats, rows)
    if not args.only_etl:
        bench_row_ops(args.rows, args.repeats, rows)
        bench_cross_row(args.rows, args.repeats, rows)
        bench_ancestors(1000)
    print()
    print(
        "| case | plain pandas (s), median | traced (s), median | traced / plain, median of per-round ratios |"
    )
    print("|---|---|---|---|")
    for name, p, t, ratio in rows:
        print(f"| {name} | {p:.4f} | {t:.4f} | {ratio:.3f}x |")


if __name__ == "__main__":
    main()
