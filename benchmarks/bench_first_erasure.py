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
import copy, json, sys, time
import numpy as np
import torch
import traceprop_frames
from traceprop_frames.estimators import TorchLogisticRegression

n, d, k, key = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.set_num_threads(1)
rng = np.random.default_rng(0)
X = rng.standard_normal((n, d), dtype=np.float32)
beta = rng.standard_normal(d) / np.sqrt(d)
y = (rng.random(n) < 1 / (1 + np.exp(-(X @ beta)))).astype(np.int64)
forget = np.sort(np.random.default_rng(1).choice(n, k, replace=False))
before = set(sys.modules)
t0 = time.perf_counter()
est = TorchLogisticRegression().fit(X, y)
t_fit = time.perf_counter() - t0
first, warm = copy.copy(est), copy.copy(est)
t0 = time.perf_counter()
first.unlearn(samples=forget, key=key)
t_first = time.perf_counter() - t0
t0 = time.perf_counter()
warm.unlearn(samples=forget, key=key)
t_warm = time.perf_counter() - t0
print(json.dumps({"fit": t_fit, "first": t_first, "warm": t_warm,
                  "imported": sorted(m for m in set(sys.modules) - before if "." not in m)}))
"""


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def one_run(n: int, d: int, k: int, key: str, threads: int) -> dict:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(n), str(d), str(k), key],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--d", type=int, default=100)
    ap.add_argument("--k", type=int, default=10, help="rows erased")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import traceprop_frames
    from traceprop_frames.unlearn import generate_key, save_private_key

    compileall.compile_dir(os.path.dirname(traceprop_frames.__file__), quiet=1)
    key = os.path.join(tempfile.mkdtemp(), "signing_key.pem")
    save_private_key(generate_key(), key)
    runs = [one_run(args.n, args.d, args.k, key, args.threads) for _ in range(args.runs)]
    fit = statistics.median(r["fit"] for r in runs)
    first = statistics.median(r["first"] for r in runs)
    warm = statistics.median(r["warm"] for r in runs)
    print(
        f"{args.n:,} x {args.d}, {args.k} rows erased, {args.runs} fresh processes, {args.threads} thread(s)"
    )
    print("| case | median s | % of fit (median of per-run ratios) |")
    print("|---|---|---|")
    print(f"| fit | {fit:.3f} | 100 |")
    for case in ("first", "warm"):
        ratio = statistics.median(100 * r[case] / r["fit"] for r in runs)
        label = "first erasure (fresh process)" if case == "first" else "second erasure (warm)"
        print(f"| {label} | {statistics.median(r[case] for r in runs):.3f} | {ratio:.2f} |")
    print(
        "per run (fit / first / warm, s): "
        + "; ".join(f"{r['fit']:.2f}/{r['first']:.3f}/{r['warm']:.3f}" for r in runs)
    )
    print("top-level modules the fit and the erasures imported: " + ", ".join(runs[0]["imported"]))
    del first, warm


if __name__ == "__main__":
    main()
