"""The first erasure in a fresh process (what every ``traceprop erase`` is) against a fit.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_first_erasure.py [--n 200000] [--d 100] [--runs 5] [--k 10]
        [--threads 1]

Each run is a new Python process that imports the library and the estimators (both needed to fit, so
not counted), builds seeded synthetic data (standard normal float32 features, logistic labels), fits a
``TorchLogisticRegression`` (timed), then times ``est.unlearn(samples=<k random rows>, key=<PEM file>)``
on a copy of the fitted model: the *first* erasure of the process (it pays for importing
``traceprop_frames.unlearn``, reading the key, the certificate validator, every lazy import) and then a
*warm* one on another copy. The table gives medians and each run's figures. The package is byte-compiled
first (``compileall``), as ``pip install`` leaves it.

Every time is taken twice: wall clock (``perf_counter``) and the process's CPU time (``process_time``), whose
ratios hold up when other jobs share the machine (both sides run one thread). ``--steps`` adds a table of
where an erasure's CPU time goes (importing ``traceprop_frames.unlearn``, selecting the forget set, the
certified gradient pass, the closed-form check, the rest of the solve, the certificate body, signing,
recording), first and warm, medians over the runs.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import copy, json, os, sys, time
import numpy as np
import torch
import traceprop_frames
from traceprop_frames.estimators import TorchLogisticRegression

n, d, k, key, steps = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5] == "1"
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
rng = np.random.default_rng(0)
X = rng.standard_normal((n, d), dtype=np.float32)
beta = rng.standard_normal(d) / np.sqrt(d)
y = (rng.random(n) < 1 / (1 + np.exp(-(X @ beta)))).astype(np.int64)
forget = np.sort(np.random.default_rng(1).choice(n, k, replace=False))
before = set(sys.modules)
clocks = (time.perf_counter, time.process_time)
t0 = [c() for c in clocks]
est = TorchLogisticRegression().fit(X, y)
out = {"fit": [c() - a for c, a in zip(clocks, t0)]}
first, warm = copy.copy(est), copy.copy(est)
T = {}
if steps:  # import explicitly (timed), then time the named steps of the plain erasure path
    import importlib
    t0 = time.process_time()
    import traceprop_frames.unlearn
    T["import"] = time.process_time() - t0
    STEPS = [("correction", "requested_samples", "select"), ("correction", "select_forget_set", "select"),
             ("factored", "residual_grad", "gradient pass"), ("factored", "_check_closed_form", "closed-form check"),
             ("correction", "_solve_factored", "solve"), ("correction", "certificate_body", "certificate body"),
             ("correction", "sign_erasure", "sign"), ("correction", "record_erasure", "record")]
    def timed(f, name):
        def g(*a, **kw):
            c = time.process_time()
            try:
                return f(*a, **kw)
            finally:
                T[name] = T.get(name, 0.0) + time.process_time() - c
        return g
    for mod, fn, name in STEPS:
        m = importlib.import_module("traceprop_frames.unlearn." + mod)
        setattr(m, fn, timed(getattr(m, fn), name))
for case, e in (("first", first), ("warm", warm)):
    t0 = [c() for c in clocks]
    e.unlearn(samples=forget, key=key)
    out[case] = [c() - a for c, a in zip(clocks, t0)]
    if case == "first" and steps:
        out["first"] = [v + T["import"] for v in out["first"]]
    out[case + "_steps"] = dict(T)
    T.clear()
out["imported"] = sorted(m for m in set(sys.modules) - before if "." not in m)
print(json.dumps(out))
"""


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def one_run(n: int, d: int, k: int, key: str, threads: int, steps: bool) -> dict:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(n), str(d), str(k), key, str(int(steps))],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _ratio(runs: list[dict], case: str, clock: int) -> float:
    return statistics.median(100 * r[case][clock] / r["fit"][clock] for r in runs)


def _steps_table(runs: list[dict]) -> None:
    """Median CPU milliseconds per step, first and warm; "other" is the erasure less its named steps."""
    names = ["import", "select", "gradient pass", "closed-form check", "solve", "certificate body", "sign",
             "record"]  # fmt: skip
    print("\n| step (CPU ms, median) | first | warm |")
    print("|---|---|---|")
    for name in names + ["other", "total"]:
        row = []
        for case in ("first", "warm"):
            vals = []
            for r in runs:
                st, total = r[case + "_steps"], r[case][1]
                named = sum(st.get(x, 0.0) for x in names if x not in ("gradient pass", "closed-form check"))
                vals.append({"other": total - named, "total": total}.get(name, st.get(name, 0.0)))
            row.append(f"{1e3 * statistics.median(vals):.1f}")
        label = {"solve": "solve (all of it, pass and check included)"}.get(name, name)
        print(f"| {label} | {row[0]} | {row[1]} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--d", type=int, default=100)
    ap.add_argument("--k", type=int, default=10, help="rows erased")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", action="store_true", help="also time the erasure's steps (CPU time)")
    args = ap.parse_args()
    import traceprop_frames
    from traceprop_frames.unlearn import generate_key, save_private_key

    compileall.compile_dir(os.path.dirname(traceprop_frames.__file__), quiet=1)
    key = os.path.join(tempfile.mkdtemp(), "signing_key.pem")
    save_private_key(generate_key(), key)
    runs = [one_run(args.n, args.d, args.k, key, args.threads, args.steps) for _ in range(args.runs)]
    print(
        f"{args.n:,} x {args.d}, {args.k} rows erased, {args.runs} fresh processes, {args.threads} thread(s)"
    )
    print("| case | median wall s | % of fit, wall | median CPU s | % of fit, CPU |")
    print("|---|---|---|---|---|")
    labels = {"fit": "fit", "first": "first erasure (fresh process)", "warm": "second erasure (warm)"}
    for case, label in labels.items():
        wall, cpu = (statistics.median(r[case][c] for r in runs) for c in (0, 1))
        ratios = (
            ("100", "100")
            if case == "fit"
            else (f"{_ratio(runs, case, 0):.2f}", f"{_ratio(runs, case, 1):.2f}")
        )
        print(f"| {label} | {wall:.3f} | {ratios[0]} | {cpu:.3f} | {ratios[1]} |")
    print("(% of fit: the median of the per-run ratios)")
    print(
        "per run, wall (CPU) s, fit / first / warm: "
        + "; ".join("/".join(f"{r[c][0]:.3f} ({r[c][1]:.3f})" for c in labels) for r in runs)
    )
    print("top-level modules the fit and the erasures imported: " + ", ".join(runs[0]["imported"]))
    if args.steps:
        _steps_table(runs)


if __name__ == "__main__":
    main()
