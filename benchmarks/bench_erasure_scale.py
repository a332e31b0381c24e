"""Erasure at production scale: first erasure vs a fit, batches of requests, and a 2M x 200 memmapped fit.

    .venv/bin/python benchmarks/bench_erasure_scale.py [--n 200000] [--d 100] [--repeat 3]
        [--requests 1000] [--scale-n 2000000] [--scale-d 200] [--skip-scale] [--skip-batch] [--only-batch]
        [--threads 1]

Synthetic, seeded data (standard normal float32 features, labels from a logistic model). Everything is
measured in one process, interleaved, medians of ``--repeat``:

1. ``TorchLogisticRegression().fit`` vs ``est.unlearn(samples=<k random rows>)`` on a *fresh copy* of the
   fitted model each time (so every erasure timed is the model's first), k = 1, 10, 100; wall and CPU
   time (``process_time``: less sensitive to other load on a shared box); the certified bound it signs
   (and the penalty-only bound ``C ‖∇F_rem‖`` for comparison); and max |Δp| on 2,000 rows against exact
   Newton retraining on the remaining rows (``tol=1e-13``). The library is imported (and the certificate
   schema loaded) before timing.
2. ``--requests`` single-row requests against a traced Parquet source (one solve, one signed certificate
   each) vs the fit on the same traced frame: ``erase_requests`` in memory, and
   ``erase_requests_in_folder`` on the saved model folder plus the requesters' copies (what
   ``traceprop erase MODEL --requests FILE`` does: lock, load, solve, one journal commit of the model, the
   store's marks and the chained ledger entries). ``--only-batch`` runs this part alone.
3. The fit and one 100-row erasure at ``--scale-n`` x ``--scale-d`` float32, memory-mapped from a file,
   with the process's peak resident memory (``ru_maxrss``; the mapped file's pages count in it).

``--skip-batch`` / ``--skip-scale`` leave out parts 2 / 3.
"""

from __future__ import annotations

import argparse
import copy
import os
import resource
import statistics
import sys
import tempfile
import time

import numpy as np
import pandas as pd
import torch

import traceprop_frames as tpf
from traceprop_frames._durable import atomic_write_many
from traceprop_frames.estimators import TorchLogisticRegression
from traceprop_frames.unlearn import generate_key, ledger
from traceprop_frames.unlearn.batch import erase_requests
from traceprop_frames.unlearn.bundle import save_model
from traceprop_frames.unlearn.certificate import _validator
from traceprop_frames.unlearn.folder import erase_in_folder, erase_requests_in_folder


def synthetic(n: int, d: int, seed: int = 0, out=None):
    rng = np.random.default_rng(seed)
    X = np.empty((n, d), dtype=np.float32) if out is None else out
    beta = rng.standard_normal(d) / np.sqrt(d)
    y = np.empty(n, dtype=np.int64)
    for a in range(0, n, 100_000):  # in blocks: no float64 copy of a large X
        b = min(n, a + 100_000)
        X[a:b] = rng.standard_normal((b - a, d), dtype=np.float32)
        y[a:b] = rng.random(b - a) < 1 / (1 + np.exp(-(X[a:b] @ beta)))
    return X, y


def proba(m, X) -> np.ndarray:
    with torch.no_grad():
        return torch.sigmoid(m(torch.as_tensor(X, dtype=torch.float64))).numpy()


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def first_erasures(n: int, d: int, repeat: int, key) -> None:
    X, y = synthetic(n, d)
    rng = np.random.default_rng(1)
    ks = (1, 10, 100)
    forget = {k: np.sort(rng.choice(n, k, replace=False)) for k in ks}
    fits, cfits, erase, cerase = [], [], {k: [] for k in ks}, {k: [] for k in ks}
    certs = {}
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        est = TorchLogisticRegression().fit(X, y)
        fits.append(time.perf_counter() - t0)
        cfits.append(time.process_time() - c0)
        for k in ks:
            fresh = copy.copy(est)  # shares X; module_ and the kept Hessian are replaced, not mutated
            t0, c0 = time.perf_counter(), time.process_time()
            certs[k] = fresh.unlearn(samples=forget[k], key=key)
            erase[k].append(time.perf_counter() - t0)
            cerase[k].append(time.process_time() - c0)
            last = fresh
        del last
    t_fit, c_fit = statistics.median(fits), statistics.median(cfits)
    print(
        f"\n1. first erasure vs fit, {n:,} x {d} float32 (fit {t_fit:.2f} s wall, {c_fit:.2f} s CPU, "
        f"{est.n_iter_} Newton steps)"
    )
    cols = ["erased rows", "wall", "% of fit", "CPU % of fit", "passes", "certified bound",
            "penalty-only bound", "max|Δp| vs retrain"]  # fmt: skip
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join("-" * (len(c) + 2) for c in cols) + "|")
    for k in ks:
        keep = np.setdiff1d(np.arange(n), forget[k])
        retrain = TorchLogisticRegression(tol=1e-13).fit(X[keep], y[keep])
        fresh = copy.copy(est)
        fresh.unlearn(samples=forget[k], key=key)
        dp = np.abs(proba(fresh.module_, X[:2000]) - proba(retrain.module_, X[:2000])).max()
        t, c = statistics.median(erase[k]), statistics.median(cerase[k])
        body = certs[k].body
        terms = body["method"]["parameters"].get("bound_terms", {})
        print(
            f"| {k} | {t:.3f} s | {100 * t / t_fit:.2f}% | {100 * c / c_fit:.2f}% "
            f"| {body['method']['iterations']} | {body['evidence']['certified_bound']:.2e} "
            f"| {terms.get('penalty_only_bound', float('nan')):.2e} | {dp:.2e} |"
        )


def batch(n: int, d: int, n_req: int, repeat: int, key) -> None:
    X, y = synthetic(n, d, seed=2)
    folder = tempfile.mkdtemp()
    src = os.path.join(folder, "clients.parquet")
    pd.DataFrame(X, columns=[f"f{j}" for j in range(d)]).assign(label=y).to_parquet(src)
    df = tpf.read_parquet(src)
    feats = [f"f{j}" for j in range(d)]
    rows = np.random.default_rng(3).choice(n, n_req, replace=False)
    requests = [
        {"request_id": f"r{i:05d}", "source": src, "rows": [int(r)], "received": "2026-12-01"}
        for i, r in enumerate(rows)
    ]
    fits, memory, committed, single = [], [], [], []
    for i in range(repeat):  # interleaved: fit, then the batch in memory, then on a saved model folder
        t0 = time.perf_counter()
        est = TorchLogisticRegression().fit(df[feats], df["label"])
        fits.append(time.perf_counter() - t0)
        model = save_model(est, os.path.join(folder, f"model{i}"))
        t0 = time.perf_counter()
        certs = erase_requests(copy.copy(est), requests, key=key)
        memory.append(time.perf_counter() - t0)
        t0 = time.perf_counter()  # what `traceprop erase MODEL --requests FILE` does after parsing the file
        on_disk = erase_requests_in_folder(model, requests, key=key)
        atomic_write_many(
            {os.path.join(folder, f"certs{i}", f"{r['request_id']}.json"): c.to_json().encode("ascii")
             for r, c in zip(requests, on_disk)}
        )  # fmt: skip
        committed.append(time.perf_counter() - t0)
        assert len(ledger.verify_chain(model, key.public_key())) == n_req
        t0 = time.perf_counter()  # one single-row erasure on the same folder: the cost of any commit
        erase_in_folder(model, source=src, rows=[int(np.setdiff1d(np.arange(n), rows)[i])], key=key)
        single.append(time.perf_counter() - t0)
    t_fit, t_m, t_c = statistics.median(fits), statistics.median(memory), statistics.median(committed)
    b = certs[0].body
    print(f"\n2. {n_req:,} single-row requests in one solve, traced Parquet source {n:,} x {d}")
    print(
        f"fit {t_fit:.2f} s; in memory (solve + {len(certs)} signed certificates) {t_m:.2f} s = "
        f"{t_m / t_fit:.2f} fits; on a model folder (lock, load, solve, certificates, one journal commit of "
        f"model + store marks + {n_req} ledger entries, requesters' copies) {t_c:.2f} s = {t_c / t_fit:.2f} fits "
        f"({b['batch']['n_samples']} samples, solve {b['method']['seconds']:.2f} s, certified bound "
        f"{b['evidence']['certified_bound']:.1e}; ledger verified)"
    )
    t_s = statistics.median(single)
    print(f"   one single-row erasure on the same folder afterwards: {t_s:.2f} s = {t_s / t_fit:.2f} fits")
    print(
        f"   per repeat: fits {_fmt(fits)}; in memory {_fmt(memory)}; on a folder {_fmt(committed)}; "
        f"single {_fmt(single)}"
    )


def _fmt(xs) -> str:
    return " ".join(f"{x:.2f}" for x in xs)


def scale(n: int, d: int, key) -> None:
    folder = tempfile.mkdtemp()
    path = os.path.join(folder, "X.f32")
    X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    X, y = synthetic(n, d, seed=4, out=X)
    X.flush()
    X = np.load(path, mmap_mode="r")
    t0, c0 = time.perf_counter(), time.process_time()
    est = TorchLogisticRegression().fit(X, y)
    t_fit, c_fit = time.perf_counter() - t0, time.process_time() - c0
    peak_fit = peak_gib()
    forget = np.sort(np.random.default_rng(5).choice(n, 100, replace=False))
    t0, c0 = time.perf_counter(), time.process_time()
    cert = est.unlearn(samples=forget, key=key)
    t_e, c_e = time.perf_counter() - t0, time.process_time() - c0
    print(f"\n3. {n:,} x {d} float32, memory-mapped ({X.nbytes / 2**30:.2f} GiB on disk)")
    print(
        f"fit {t_fit:.1f} s wall / {c_fit:.1f} s CPU ({est.n_iter_} Newton steps), peak RSS after fit "
        f"{peak_fit:.2f} GiB; 100-row erasure {t_e:.2f} s = {100 * t_e / t_fit:.2f}% of the fit "
        f"(CPU {c_e:.2f} s = {100 * c_e / c_fit:.2f}%; {cert.body['method']['iterations']} gradient passes, "
        f"bound {cert.body['evidence']['certified_bound']:.1e}); peak RSS {peak_gib():.2f} GiB"
    )
    os.remove(path)


def pin_threads(n: int) -> None:
    """Fix the BLAS threads through the environment, re-running this script if numpy loaded OpenBLAS
    with others: limiting them at run time (threadpoolctl) left LAPACK calls such as ``eigvalsh``
    stalling ~16 ms at random on this box (an erasure's fixed cost measured 30 ms that way, 9 ms pinned)."""
    want = str(n)
    if os.environ.get("OPENBLAS_NUM_THREADS") != want or os.environ.get("OMP_NUM_THREADS") != want:
        env = {**os.environ, "OPENBLAS_NUM_THREADS": want, "OMP_NUM_THREADS": want, "MKL_NUM_THREADS": want}
        sys.stdout.flush()
        os.execve(sys.executable, [sys.executable, "-u", *sys.argv], env)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--d", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--scale-n", type=int, default=2_000_000)
    ap.add_argument("--scale-d", type=int, default=200)
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument("--only-batch", action="store_true", help="run part 2 (the batch of requests) only")
    ap.add_argument("--skip-batch", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="BLAS/torch threads (default 1: a shared box)")
    args = ap.parse_args()
    pin_threads(args.threads)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs (shared box)")
    key = generate_key()
    _validator()  # load the certificate schema before timing (once per process)
    if not args.only_batch:
        first_erasures(args.n, args.d, args.repeat, key)
    if not args.skip_batch:
        batch(args.n, args.d, args.requests, args.repeat, key)
    if not args.skip_scale and not args.only_batch:
        scale(args.scale_n, args.scale_d, key)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
