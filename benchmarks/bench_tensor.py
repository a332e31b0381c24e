"""ProvenanceTensor overhead vs plain numpy / torch, side by side in one process (interleaved pairs, medians).

    .venv/bin/python benchmarks/bench_tensor.py [--repeats 101] [--only chain,lookup,loader,context] [--no-reuse]

- The seed's chain (normalise by column mean/std, then filter rows) on 1M elements, as 1,000,000 x 1 and
  1,000 x 1,000, in each granularity; the traced side makes its tensor from the in-memory array inside
  the timed part (``chain(tp.tensor(raw, source=...))`` vs ``chain(raw)``). Targets: op <= 1.02x,
  row <= 1.10x, cell <= 1.25x.
- One row's ``sources()`` / ``trace()`` after the first query (target <= 5 us): the median of many single
  calls, each timed alone in wall-clock and CPU time.
- A shuffled DataLoader epoch over ``X.to_torch()`` (20,000 x 16, batch 64) vs the same loader over a
  plain tensor: iterating only, and with a training step (target <= 1.10x).
- ``TrainingContext(model, store)`` over the row-carrying loader vs the same training with the same kind
  of store over a plain loader that hands its sample indices to ``ctx.backward`` (target <= 1.2x).

Each round runs plain and traced back to back (which one goes first alternates) and gives one traced/plain
ratio; a row reports the median of those per-pair ratios and their interquartile range, in CPU time
(``time.thread_time``: this thread's work, unaffected by waiting for a core when other processes share the
machine) and in wall-clock time. "met" judges the median CPU-time ratio. The load average is printed with
every table. ``--no-reuse`` switches off the reuse of temporaries' buffers (``tensor/elide.py``), to see
the bookkeeping's cost alone.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
import warnings

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

import traceprop_frames as tp
from traceprop_frames.attribution import GradientStore, TrainingContext

TARGETS = {"op": 1.02, "row": 1.10, "cell": 1.25}


def load() -> str:
    return "load average " + " / ".join(f"{x:.1f}" for x in os.getloadavg()) + " (1 / 5 / 15 min)"


def _quartiles(xs: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(xs, n=4)
    return q[0], statistics.median(xs), q[2]


def interleaved(fns: dict, repeats: int) -> dict:
    """Median seconds of ``fns["plain"]`` and ``fns["traced"]`` (run back to back each round, the order
    alternating) and the quartiles of the per-pair traced/plain ratios, CPU time and wall clock."""
    times = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    keys = list(fns)
    for r in range(repeats):
        for k in keys if r % 2 == 0 else keys[::-1]:
            gc.collect()
            c0, t0 = time.thread_time(), time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
            cpu[k].append(time.thread_time() - c0)
    out = {k: statistics.median(v) for k, v in times.items()}
    out["wall"] = _quartiles([t / p for t, p in zip(times["traced"], times["plain"])])
    out["cpu"] = _quartiles([t / p for t, p in zip(cpu["traced"], cpu["plain"]) if p > 0])
    return out


HEADER = (
    "| case | plain ms | traced ms | CPU-time ratio (IQR) | wall ratio (IQR) | target | met |\n"
    "|---|---|---|---|---|---|---|"
)


def row(case: str, r: dict, target: float | None = None, unit: float = 1e3) -> None:
    c, w = r["cpu"], r["wall"]
    ok = "-" if target is None else ("yes" if c[1] <= target else "**no**")
    print(f"| {case} | {r['plain'] * unit:.2f} | {r['traced'] * unit:.2f} | {c[1]:.3f}x ({c[0]:.3f}-{c[2]:.3f}) | "
          f"{w[1]:.3f}x ({w[0]:.3f}-{w[2]:.3f}) | {'-' if target is None else f'<= {target}'} | {ok} |")  # fmt: skip


def chain(X):
    Z = (X - X.mean(axis=0)) / X.std(axis=0)
    return Z[Z[:, 0] > 0]


def bench_chain(repeats: int) -> None:
    rng = np.random.default_rng(0)
    print(f"{load()}\n\n{HEADER}")
    for shape in ((1_000_000, 1), (1_000, 1_000)):
        raw = rng.normal(size=shape).astype(np.float32)
        for gran in ("op", "row", "cell"):
            name = f"bench_{shape[0]}_{gran}"
            fns = {
                "plain": lambda raw=raw: chain(raw),
                "traced": lambda raw=raw, g=gran, n=name: chain(tp.tensor(raw, source=n, granularity=g)),
            }
            fns["traced"]()  # warm: first-call imports
            r = interleaved(fns, repeats)
            row(f"tensor + normalise + filter {shape[0]:,} x {shape[1]:,} {gran}", r, TARGETS[gran])
    print(f"\n{load()}")


def per_call_us(fn, n: int = 20001) -> tuple[float, float]:
    """(wall-clock, CPU-time) microseconds of one call: medians over ``n`` calls, each timed alone."""
    wall, cpu = [], []
    for _ in range(n):
        c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
        fn()
        t1, c1 = time.perf_counter_ns(), time.thread_time_ns()
        wall.append(t1 - t0)
        cpu.append(c1 - c0)
    return statistics.median(wall) / 1e3, statistics.median(cpu) / 1e3


def bench_lookup() -> None:
    rng = np.random.default_rng(1)
    Z = chain(tp.tensor(rng.normal(size=(1000, 4)), source="bench_lookup"))
    Z.sources(rows=[0])  # the first query composes the lineage
    Z.trace(0)
    Xt = tp.tensor(rng.normal(size=(1000, 4)), source="bench_lookup_torch").to_torch()
    xb = next(iter(DataLoader(TensorDataset(Xt), batch_size=64, shuffle=True)))[0]
    xb.sources(rows=[0])
    print(
        f"\n{load()}\n\n| look-up (one row, after the first query) | wall us (median) | CPU us (median) | "
        "<= 5 us (wall) |\n|---|---|---|---|"
    )
    cases = {
        "(an empty call: the timers' own cost)": lambda: None,
        "Z.sources(rows=[7], direct=True)": lambda: Z.sources(rows=[7], direct=True),
        "Z.sources(rows=[7]) (sufficient: + mean/std's 1000 rows)": lambda: Z.sources(rows=[7]),
        "Z.trace(7, direct=True)": lambda: Z.trace(7, direct=True),
        "Z.trace(7) (1000 SourceRows)": lambda: Z.trace(7),
        "batch.sources(rows=[3]) (DataLoader batch)": lambda: xb.sources(rows=[3]),
        "batch.trace(3)": lambda: xb.trace(3),
    }
    for name, fn in cases.items():
        us, cpu = per_call_us(fn)
        print(
            f"| {name} | {us:.2f} | {cpu:.2f} | {'-' if name.startswith('(') else 'yes' if us <= 5 else '**no**'} |"
        )


def _data(n: int = 20_000, d: int = 16):
    rng = np.random.default_rng(2)
    data = rng.normal(size=(n, d)).astype(np.float32)
    return data, torch.tensor((data[:, 0] > 0).astype(np.float32))


def _model(d: int):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(d, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
    return model, torch.optim.SGD(model.parameters(), lr=0.01)


def bench_loader(repeats: int) -> None:
    data, y = _data()
    Xt = tp.tensor(data, source="bench_epoch").to_torch()
    traced = DataLoader(TensorDataset(Xt, y), batch_size=64, shuffle=True)
    plain = DataLoader(TensorDataset(torch.tensor(data), y), batch_size=64, shuffle=True)
    model, opt = _model(data.shape[1])

    def iterate(loader):
        for _xb, _yb in loader:
            pass

    def train(loader):
        for xb, yb in loader:
            opt.zero_grad()
            torch.nn.functional.binary_cross_entropy_with_logits(model(xb).reshape(-1), yb).backward()
            opt.step()

    print(f"\n{load()}\n\n{HEADER}")
    r = interleaved({"plain": lambda: iterate(plain), "traced": lambda: iterate(traced)}, repeats)
    row("shuffled DataLoader epoch 20,000 x 16, batch 64 (iterate)", r, 1.10)
    # the plain side fetching whole batches too (a BatchSampler as the sampler): lineage's own cost
    ds = TensorDataset(torch.tensor(data), y)
    batched = DataLoader(ds, sampler=BatchSampler(RandomSampler(ds), 64, False), batch_size=None)
    r = interleaved({"plain": lambda: iterate(batched), "traced": lambda: iterate(traced)}, repeats)
    row("... vs a plain loader that also fetches whole batches (iterate)", r)
    r = interleaved({"plain": lambda: train(plain), "traced": lambda: train(traced)}, repeats)
    row("shuffled DataLoader epoch 20,000 x 16, batch 64 (train step)", r, 1.10)


def bench_context(repeats: int) -> None:
    data, y = _data()
    n, d = data.shape
    Xt = tp.tensor(data, source="bench_ctx").to_torch()
    traced = DataLoader(TensorDataset(Xt, y), batch_size=64, shuffle=True)
    plain = DataLoader(TensorDataset(torch.tensor(data), y, torch.arange(n)), batch_size=64, shuffle=True)

    def run(carrying: bool):
        model, opt = _model(d)
        store = GradientStore(k=256, path=None)
        with TrainingContext(model, store, n_samples=None if carrying else n) as ctx:
            for i, batch in enumerate(traced if carrying else plain):
                xb, yb = batch[0], batch[1]
                opt.zero_grad()
                loss = torch.nn.functional.binary_cross_entropy_with_logits(model(xb).reshape(-1), yb)
                ctx.backward(loss, i if carrying else batch[2])
                opt.step()

    r = interleaved({"plain": lambda: run(False), "traced": lambda: run(True)}, max(3, repeats // 2))
    row("TrainingContext epoch 20,000 x 16, batch 64 (same store; plain passes indices)", r, 1.2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=101)
    ap.add_argument("--only", default="chain,lookup,loader,context")
    ap.add_argument(
        "--no-reuse", action="store_true", help="never reuse a temporary's buffer (tensor/elide.py)"
    )
    args = ap.parse_args()
    if args.no_reuse:
        from traceprop_frames.tensor import elide

        elide._state["temp"] = False  # as on an interpreter where temporaries cannot be told apart
    warnings.simplefilter("ignore", RuntimeWarning)
    torch.set_num_threads(1)  # one intra-op thread: steadier side-by-side timings on a shared machine
    parts = args.only.split(",")
    if "chain" in parts:
        bench_chain(args.repeats)
    if "lookup" in parts:
        bench_lookup()
    if "loader" in parts:
        bench_loader(max(5, args.repeats // 5))
    if "context" in parts:
        bench_context(max(5, args.repeats // 10))
    print(f"\n{load()}")


if __name__ == "__main__":
    main()
