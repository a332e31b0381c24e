"""ProvenanceTensor overhead vs plain numpy / torch, side by side in one process (interleaved, medians).

    .venv/bin/python benchmarks/bench_tensor.py [--repeats 15]

The seed's chain (normalize by column mean/std, then filter rows) on 1M elements, as 1,000,000 x 1 and
1,000 x 1,000, in each granularity; look-up latencies; one torch epoch over a lineage-carrying
DataLoader vs a plain one.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

import traceprop_frames as tp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lineage import interleaved  # noqa: E402  (interleaved medians of per-round ratios)


def chain(X):
    Z = (X - X.mean(axis=0)) / X.std(axis=0)
    return Z[Z[:, 0] > 0]


def per_call_ms(fn, n: int = 2000) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e3


def epoch(loader, model, opt):
    for xb, yb in loader:
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(model(xb).reshape(-1), yb).backward()
        opt.step()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print("| case | plain ms | traced ms | ratio |\n|---|---|---|---|")
    for shape in ((1_000_000, 1), (1_000, 1_000)):
        raw = rng.normal(size=shape).astype(np.float32)
        for gran in ("op", "row", "cell"):
            X = tp.tensor(raw, source=f"bench_{shape[0]}_{gran}", granularity=gran)
            r = interleaved(
                {"plain": lambda raw=raw: chain(raw), "traced": lambda X=X: chain(X)}, args.repeats
            )
            print(f"| normalize+filter {shape[0]:,}x{shape[1]:,} {gran} | {r['plain'] * 1e3:.2f} | "
                  f"{r['traced'] * 1e3:.2f} | {r['ratio']:.3f}x |")  # fmt: skip
    X = tp.tensor(rng.normal(size=(1000, 4)), source="bench_lookup")
    Z = chain(X)
    deep = X
    for _ in range(1000):
        deep = deep[:]  # 1000 row_select ops
    print(
        f"\nsources() depth 1 (direct part, 1 row): {per_call_ms(lambda: Z.sources(rows=[0], direct=True)):.4f} ms"
    )
    print(f"ops() depth 1: {per_call_ms(lambda: X.ops()):.4f} ms")
    print(f"ancestors() depth 1000: {per_call_ms(lambda: deep.ancestors(), 200):.4f} ms")
    # torch epoch: a DataLoader over a RowTensor vs over a plain tensor
    n, d = 20_000, 32
    data = rng.normal(size=(n, d)).astype(np.float32)
    y = torch.tensor((data[:, 0] > 0).astype(np.float32))
    traced = DataLoader(
        TensorDataset(tp.tensor(data, source="bench_epoch").to_torch(), y), batch_size=256, shuffle=True
    )
    plain = DataLoader(TensorDataset(torch.tensor(data), y), batch_size=256, shuffle=True)
    model = torch.nn.Sequential(torch.nn.Linear(d, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    r = interleaved({"plain": lambda: epoch(plain, model, opt), "traced": lambda: epoch(traced, model, opt)},
                    max(3, args.repeats // 3))  # fmt: skip
    print(
        f"\n| torch epoch 20,000 x 32, batch 256 | {r['plain'] * 1e3:.1f} | {r['traced'] * 1e3:.1f} | {r['ratio']:.3f}x |"
    )


if __name__ == "__main__":
    main()
