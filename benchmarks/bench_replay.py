"""Replay attribution (``influence_scores(X_test, method="replay")``) against retrains, TRAK, traker, dattri.

Run through ``benchmarks/bench_attribution.py --only replay`` (options there). For each data set:

1. the benchmark retrains ``fit(X, y, sample_weight=mask)`` on ``M`` random halves and ``M`` random 5 %
   drops (the same masks for every method) and records the test logits;
2. LDS (Spearman over subsets of the predicted vs retrained logits, averaged over test points) of the
   replay scores, with softplus and with ReLU units;
3. our TRAK ensemble (4 half-data models x 2 checkpoints, k=512) and, with the ``[bench]`` extra
   installed, the official ``traker`` and ``dattri`` TRAK on the same 4 models' final checkpoints;
4. cost in fits: replay for 1 and for ``n_test`` test points against one ``fit`` of the same estimator,
   interleaved in this process, medians of ``repeat`` runs (the ratio survives a loaded machine).
"""

from __future__ import annotations

import importlib.util
import statistics
import time

import numpy as np
from sklearn.base import clone

from traceprop_frames.attribution.lds import Retrains, lds, random_subsets
from traceprop_frames.attribution.replay import estimator_replay_scores
from traceprop_frames.estimators import TorchMLPClassifier


def digits_binary(n_test: int = 300, seed: int = 0):
    """scikit-learn's bundled digits (1,797 8x8 images, 64 pixel features): digit < 5 vs >= 5, scaled
    to [0, 1], a random train/test split."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    y = (y >= 5).astype(int)
    pos = np.random.default_rng(seed).permutation(len(X))
    return X[pos[n_test:]], y[pos[n_test:]], X[pos[:n_test]], y[pos[:n_test]]


def retrains(est, X, y, Xte, masks) -> Retrains:
    """``fit(X, y, sample_weight=mask)`` for every mask (the deletion the replay scores predict)."""
    t0 = time.perf_counter()
    outs = [clone(est).fit(X, y, sample_weight=m.astype(np.float64)).decision_function(Xte) for m in masks]
    return Retrains(masks, np.stack(outs), time.perf_counter() - t0)


def _time(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def cost_in_fits(est, X, y, Xte, n_test: int, repeat: int):
    """Median seconds of (fit, replay for 1 test point, replay for ``n_test``), interleaved."""
    fit, one, many, mem = [], [], [], {}
    for _ in range(repeat):
        t, fitted = _time(lambda: clone(est).fit(X, y))
        fit.append(t)
        for out, m in ((one, 1), (many, n_test)):
            Xt = fitted._validate_test(Xte[:m])
            t, res = _time(lambda f=fitted, Xt=Xt: estimator_replay_scores(f, Xt, full=True))
            out.append(t)
            mem[m] = res.state_bytes
    return statistics.median(fit), statistics.median(one), statistics.median(many), mem


def trak_rows(row, est, X, y, Xte, rt_half, rt_drop, t_fit, versus: bool):
    """Our TRAK ensemble, then traker / dattri on the same checkpoints (when installed)."""
    trak = clone(est).set_params(store=True, n_models=4, n_checkpoints=2, k=512, rel_damping=1.0)
    t, trak = _time(lambda: trak.fit(X, y))
    t_s, S = _time(lambda: trak.influence_scores(Xte))
    row(
        "  TRAK ours, 4 half-data models x 2 ckpts, k=512: LDS halves / 5% drops",
        f"{lds(S, rt_half).mean:.3f} / {lds(S, rt_drop).mean:.3f}",
        "",
        f"{(t + t_s) / t_fit:.1f} fits",
    )
    if not versus:
        return
    missing = [m for m in ("trak", "dattri") if importlib.util.find_spec(m) is None]
    if missing:
        row("  traker / dattri", "skipped", "", f"not installed: {missing} (pip install -e .[bench])")
        return
    from trak_baselines import dattri_scores, mean_diag_unweighted, traker_scores

    finals = [ck.params for ck in trak.store_.checkpoints[1::2]]  # each model's final checkpoint
    Xa, ya, Xt = trak.X_train_, trak.y_train_, trak._validate_test(Xte)
    md = mean_diag_unweighted(trak.module_, finals[0], Xa)
    for name, fn, lam in (("traker 0.3.2", traker_scores, md), ("dattri 0.3.0", dattri_scores, md / 512)):
        t, St = _time(lambda fn=fn, lam=lam: fn(trak.module_, finals, Xa, ya, Xt, 512, lam))
        row(
            f"  {name}, same 4 models' final checkpoints, k=512: LDS halves / drops",
            f"{lds(St, rt_half).mean:.3f} / {lds(St, rt_drop).mean:.3f}",
            "",
            f"attribution {t:.1f} s (+ the 4 fits)",
        )


def bench_dataset(row, name, X, y, Xte, kw, subsets, n_test, repeat, versus, relu=True, lds_rows=True):
    """All rows for one data set (see the module docstring)."""
    Xte = Xte[:n_test]
    X = np.asarray(X, dtype=np.float64)
    Xte = np.asarray(Xte, dtype=np.float64)
    masks_half = random_subsets(len(X), subsets, 0.5, random_state=1)
    masks_drop = random_subsets(len(X), subsets, 0.95, random_state=2)
    base = TorchMLPClassifier(**kw, activation="softplus", random_state=0)
    base.fit(X, y)  # warm-up (first torch calls), not timed
    t_fit, t_one, t_many, mem = cost_in_fits(base, X, y, Xte, n_test, repeat)
    row(
        f"{name}: fit (median of {repeat})",
        f"{t_fit:.2f} s",
        "",
        f"{len(X)} rows x {X.shape[1]} features, {kw}",
    )
    row(f"{name}: replay cost, 1 test point", f"{t_one / t_fit:.2f} fits", "<=3", f"{t_one:.2f} s")
    row(f"{name}: replay cost, {n_test} test points", f"{t_many / t_fit:.2f} fits", "<=15", f"{t_many:.2f} s")
    kept = base.replay_states_["states"]
    kept_mb = sum(v.numel() * v.element_size() for v in kept.values()) / 2**20
    T = max(kept)
    row(f"{name}: replay memory, 1 / {n_test} test points", f"{mem[1] / 2**20:.1f} / {mem[n_test] / 2**20:.1f} MiB",
        "", f"incl. the {len(kept)} states fit keeps ({kept_mb:.2f} MiB) of T = {T} steps")  # fmt: skip
    if not lds_rows:
        return
    for act in ("softplus", "relu") if relu else ("softplus",):
        est = clone(base).set_params(activation=act).fit(X, y)
        rt_half = retrains(est, X, y, Xte, masks_half)
        rt_drop = retrains(est, X, y, Xte, masks_drop)
        S = est.influence_scores(Xte, method="replay")
        row(f"{name} {act}: LDS replay, {subsets} random halves", f"{lds(S, rt_half).mean:.3f}", ">=0.93")
        row(f"{name} {act}: LDS replay, {subsets} random 5% drops", f"{lds(S, rt_drop).mean:.3f}", ">=0.98",
            f"retrains {(rt_half.seconds + rt_drop.seconds) / (2 * subsets):.2f} s each")  # fmt: skip
        if act == "softplus":
            trak_rows(row, est, X, y, Xte, rt_half, rt_drop, t_fit, versus)
