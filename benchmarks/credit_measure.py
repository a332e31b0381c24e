"""The credit SQL ETL's traced / plain ratio, measured so that a few-percent target can be judged.

    python benchmarks/bench_sql.py --credit --applicants 20000 --processes 5 --repeat 15
    python benchmarks/credit_measure.py 20000 --processes 5 --repeat 15 --data data/credit   # the same

Why a new measure: the old one (``bench_sql.credit_modes``: one process, sides in a fixed order, the
ratio of two medians of ``--repeat`` runs) gave lazy / plain between 0.94x and 1.13x for the same code
from one process to the next. Where other work shares the cores, a process's speed moves by up to a
third within seconds (CPU time inflates too, not only wall clock), a 9-run median of a 30 ms run moves
by more than the 1 ms lazy adds, and the side that runs at a given place in the round or whose
connection was made first gets a small edge (1-2 %). Two plain connections in one process (the A/A
control below) differ by 0.97-1.02x per process with little other work running and by 0.93-1.11x
beside much (benchmarks/results/2026-12-07-sql-credit-measure-r11.md).

The measure (the same for every side, never favouring a traced one):

- ``--processes`` fresh Python processes, one after another; each loads the same files into one
  connection per side: ``plain`` (a DuckDB connection of its own, tables read from the files without
  the library's hidden id column), ``control`` (a second such connection, the A/A check), ``eager``,
  ``lazy``. Process ``k`` makes the connections in the order of round ``k`` below.
- Each process runs every side once (warm-up), then ``--repeat`` rounds; round ``r`` runs the sides in
  the order of row ``k + r`` of a Williams square (as the TPC-H measure): over four rounds each side is
  first, second, ... once and runs straight after every other side once.
- Each side's time in a round is divided by plain's time in the same round (per-repeat pair ratio):
  neighbouring runs share the machine's speed of that moment.
- Printed per side: the median of all ``processes x repeat`` pair ratios, their inter-quartile range,
  and the lowest / highest per-process median; wall clock and CPU time (``time.process_time``: every
  thread of the process) both, from the same runs. The control's line is the measure's own noise: a
  traced ratio is resolved from plain only where it lies outside the control's range.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

SIDES = ("plain", "control", "eager", "lazy")


def _connections(paths: dict, order: list[str]) -> dict:
    from bench_sql import credit_connection

    return {side: credit_connection(paths, side if side in ("eager", "lazy") else "plain") for side in order}


def _runner(con, side: str):
    from bench_sql import credit_run

    return credit_run(con, plain=side in ("plain", "control"))


def round_order(k: int, r: int) -> list[str]:
    """The sides in the order process ``k`` runs them in round ``r`` (``r = 0``: the order it makes their
    connections in): row ``k + r`` of the TPC-H measure's Williams square (``bench_sql.side_order``), so
    over four rounds every side takes every place once and runs straight after every other side once."""
    from bench_sql import side_order

    return side_order(k, r)


def child(paths: dict, repeat: int, k: int) -> dict:
    """In a fresh process: {side: [[wall s, cpu s] per round]} (see the module docstring)."""
    made = round_order(k, 0)
    cons = _connections(paths, made)
    run = {side: _runner(cons[side], side) for side in SIDES}
    for side in made:
        run[side]()
    times: dict[str, list] = {side: [] for side in SIDES}
    for r in range(repeat):
        for side in round_order(k, r):
            w0, c0 = time.perf_counter(), time.process_time()
            run[side]()
            times[side].append([time.perf_counter() - w0, time.process_time() - c0])
    for con in cons.values():
        con.close()
    return times


def _quartiles(xs: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


def summarise(per_process: list[dict]) -> dict:
    """{side: {clock: (median, q1, q3, lowest process median, highest, plain's median s)}}."""
    out = {}
    for side in SIDES[1:]:
        out[side] = {}
        for j, clock in enumerate(("wall", "cpu")):
            pooled, medians = [], []
            for t in per_process:
                ratios = [s[j] / p[j] for s, p in zip(t[side], t["plain"])]
                pooled += ratios
                medians.append(statistics.median(ratios))
            plain_s = statistics.median(p[j] for t in per_process for p in t["plain"])
            out[side][clock] = (
                statistics.median(pooled),
                *_quartiles(pooled),
                min(medians),
                max(medians),
                plain_s,
            )
    return out


def measure(applicants: int, repeat: int, processes: int, folder: Path) -> dict:
    """Make the data once, run ``processes`` fresh children, print and return the summary."""
    from traceprop_frames.datasets import make_credit_risk

    paths = make_credit_risk(folder / f"credit_{applicants}", applicants=applicants, seed=0)
    paths = {k: str(v) for k, v in paths.items()}
    per_process = []
    for k in range(processes):
        cmd = [sys.executable, "-W", "ignore", __file__, "--_child", json.dumps(paths), str(repeat), str(k)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        per_process.append(json.loads(done.stdout.strip().splitlines()[-1]))
    summary = summarise(per_process)
    print_summary(f"credit {applicants // 1000}k", summary, processes, repeat)
    return summary


def print_summary(name: str, summary: dict, processes: int, repeat: int) -> None:
    print(f"{name}: {processes} processes x {repeat} rounds, pair ratio side / plain (same round)")
    print(f"  {'side':<8} {'clock':<5} {'median':>7} {'IQR':>13} {'process medians':>17} {'plain ms':>9}")
    for side, clocks in summary.items():
        for clock, (med, q1, q3, lo, hi, plain_s) in clocks.items():
            print(
                f"  {side:<8} {clock:<5} {med:>7.3f} {q1:>6.3f}-{q3:<6.3f} {lo:>8.3f}-{hi:<8.3f} "
                f"{plain_s * 1000:>9.1f}"
            )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("applicants", type=int, nargs="*", default=[20_000])
    ap.add_argument("--processes", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--data", default="data/credit")
    ap.add_argument("--_child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._child:
        paths, repeat, k = json.loads(args._child[0]), int(args._child[1]), int(args._child[2])
        print(json.dumps(child(paths, repeat, k)))
        return
    for n in args.applicants:
        measure(n, args.repeat, args.processes, Path(args.data).resolve())


if __name__ == "__main__":
    main()
