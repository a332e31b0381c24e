"""Id set operations: ``lineage.refs`` (sort-based) against numpy's, alone and inside an erasure request.

    .venv/bin/python benchmarks/bench_id_sets.py [--n 1000000] [--repeat 5]

numpy >= 2.3 answers ``np.unique`` on int64 through a hash table, and ``np.setdiff1d`` / ``np.union1d`` /
``np.intersect1d`` / ``np.isin`` call it: on a million row ids each takes seconds where a sort takes tens
of milliseconds. Measured in one process, side by side, CPU time (``process_time``), median of
``--repeat``:

1. each operation on two arrays of ``--n`` random int64 ids (30 % shared);
2. mapping erasure requests to training samples (``forget_from_request`` for 1,000 rows, and a batch of
   20 requests of 10 rows through ``forget_from_requests``) on ``--n`` traced rows that all read the
   requested rows through a shared statistic (a z-scored column) -- the case where the samples "via a
   shared statistic" are nearly all of them -- with the library's operations, then with numpy's patched
   in their place.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

import traceprop_frames as tpf
from traceprop_frames.lineage import refs
from traceprop_frames.unlearn import request


def _cpu(fn, repeat: int) -> float:
    ts = []
    for _ in range(repeat):
        t = time.process_time()
        fn()
        ts.append(time.process_time() - t)
    return statistics.median(ts)


@contextmanager
def _numpy_ops():
    """The request module's set operations replaced by numpy's (what the code did before)."""
    saved = request.setdiff_ids, request.sorted_unique
    request.setdiff_ids, request.sorted_unique = np.setdiff1d, np.unique
    try:
        yield
    finally:
        request.setdiff_ids, request.sorted_unique = saved


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    n, rep = args.n, args.repeat
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2**40, n).astype(np.int64)
    b = np.concatenate([a[: int(0.3 * n)], rng.integers(0, 2**40, n - int(0.3 * n))])
    print(f"{'operation, ' + format(n, ',') + ' ids':44s} {'numpy ms':>9s} {'ours ms':>8s} {'ratio':>6s}")
    for name, theirs, ours in [
        ("unique", lambda: np.unique(a), lambda: refs.sorted_unique(a)),
        ("setdiff", lambda: np.setdiff1d(a, b), lambda: refs.setdiff_ids(a, b)),
        ("union", lambda: np.union1d(a, b), lambda: refs.union_ids(a, b)),
        ("intersect", lambda: np.intersect1d(a, b), lambda: refs.intersect_ids(a, b)),
        ("isin", lambda: np.isin(a, b), lambda: refs.isin_ids(a, b)),
    ]:
        tn, to = _cpu(theirs, rep), _cpu(ours, rep)
        print(f"{name:44s} {tn * 1e3:9.1f} {to * 1e3:8.1f} {tn / to:6.1f}")

    with tempfile.TemporaryDirectory() as d:
        path = str(Path(d) / "a.parquet")
        pd.DataFrame({"x": rng.normal(size=n)}).to_parquet(path)
        df = tpf.read_parquet(path)
        df["z"] = (df["x"] - df["x"].mean()) / df["x"].std()
        lin = df.tp.lineage()
        rows = rng.choice(n, 1000, replace=False)
        reqs = [{"source": path, "rows": rng.choice(n, 10, replace=False)} for _ in range(20)]
        cases = [
            ("erasure request, 1,000 rows", lambda: request.forget_from_request(lin, path, rows, cache={})),
            ("batch of 20 requests x 10 rows", lambda: request.forget_from_requests(lin, reqs, {})),
        ]
        for name, fn in cases:
            to = _cpu(fn, rep)
            with _numpy_ops():
                tn = _cpu(fn, max(1, rep // 2))
            print(f"{name:44s} {tn * 1e3:9.1f} {to * 1e3:8.1f} {tn / to:6.1f}")


if __name__ == "__main__":
    main()
