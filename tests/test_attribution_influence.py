"""Influence scores against exact leave-one-out retraining on a tiny convex problem."""

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification

from traceprop_frames.attribution import TRAKScorer, compute_influence_scores
from traceprop_frames.attribution.lds import lds, random_subsets, retrain_subsets
from traceprop_frames.estimators import TorchLogisticRegression


@pytest.fixture(scope="module")
def problem():
    X, y = make_classification(n_samples=90, n_features=4, n_informative=3, n_redundant=0, random_state=3)
    Xtr, ytr, Xte = X[:70], y[:70], X[70:]
    est = TorchLogisticRegression(C=0.5, store=True, k=None).fit(Xtr, ytr)
    return est, Xtr, ytr, Xte


def _loo_effects(est, Xte, samples):
    """Exact effect of including each sample: f(all) - f(all but i), by retraining."""
    full = est.decision_function(Xte)
    out = []
    for i in samples:
        w = est.sample_weight_.copy()
        w[i] = 0
        m = est._fit_module(est.X_train_, est.y_train_, w)
        with torch.no_grad():
            out.append(full - m(torch.as_tensor(Xte)).numpy())
    return np.stack(out, axis=1)  # (n_test, n_samples)


def test_exact_influence_matches_leave_one_out(problem):
    est, _, _, Xte = problem
    samples = list(range(0, 70, 7))
    actual = _loo_effects(est, Xte, samples)
    pred = est.influence_scores(Xte, method="exact")[:, samples]
    # first-order influence: sign convention (positive = including raises the logit) and magnitude
    assert np.mean(np.sign(pred) == np.sign(actual)) > 0.95
    assert np.corrcoef(pred.ravel(), actual.ravel())[0, 1] > 0.99
    # first order misses the leverage term of high-leverage points (up to ~15% here)
    np.testing.assert_allclose(pred, actual, rtol=0.2, atol=0.01 * np.abs(actual).max())


def test_weighted_trak_without_projection_equals_exact_influence(problem):
    est, _, _, Xte = problem
    exact = est.influence_scores(Xte, method="exact")
    trak = est.influence_scores(Xte, method="trak", damping=1 / est.C)
    np.testing.assert_allclose(trak, exact, rtol=1e-3, atol=1e-5 * np.abs(exact).max())
    unweighted = est.influence_scores(Xte, method="trak", weighted=False)
    assert (
        np.corrcoef(unweighted.ravel(), exact.ravel())[0, 1] < np.corrcoef(trak.ravel(), exact.ravel())[0, 1]
    )


def test_projected_weighted_trak_approaches_exact(problem):
    _, Xtr, ytr, Xte = problem
    est = TorchLogisticRegression(C=0.5, store=True, k=2048, store_dtype="float16").fit(Xtr, ytr)
    exact = est.influence_scores(Xte, method="exact")
    trak = est.influence_scores(Xte)
    assert np.corrcoef(trak.ravel(), exact.ravel())[0, 1] > 0.95


def test_removed_samples_never_returned(problem):
    _, Xtr, ytr, Xte = problem
    est = TorchLogisticRegression(C=0.5, store=True, k=None).fit(Xtr, ytr)
    best = compute_influence_scores(est, est.store_, Xte, top_k=3)
    victim = int(best.indices[0, 0])
    est.store_.mark_removed([victim])
    S = est.influence_scores(Xte)
    assert np.isnan(S[:, victim]).all() and np.isfinite(np.delete(S, victim, axis=1)).all()
    again = compute_influence_scores(est.module_, est.store_, Xte, top_k=70)
    assert victim not in again.indices and again.indices.shape == (20, 69)
    assert victim not in est.influence(Xte, top_k=5)["train_row"].to_numpy()
    one = compute_influence_scores(est, est.store_, Xte[0], top_k=4)  # a single 1-D sample: 1-D results
    assert one.indices.shape == (4,) and np.all(np.diff(one.scores) <= 0)


def test_lds_harness_exact_beats_random(problem):
    est, Xtr, ytr, Xte = problem
    masks = random_subsets(70, 25, alpha=0.5, random_state=1)
    assert masks.shape == (25, 70) and (masks.sum(1) == 35).all()
    rt = retrain_subsets(est, Xtr, ytr, Xte, n_subsets=25, random_state=1)
    good = lds(est.influence_scores(Xte, method="exact"), rt)
    noise = lds(np.random.default_rng(0).normal(size=(20, 70)), rt)
    assert good.mean > 0.9 and abs(noise.mean) < 0.3
    scipy_stats = pytest.importorskip("scipy.stats")
    pred = rt.masks.astype(float) @ est.influence_scores(Xte, method="exact").T
    ref = [scipy_stats.spearmanr(pred[:, t], rt.outputs[:, t])[0] for t in range(20)]
    np.testing.assert_allclose(good.per_test, ref, atol=1e-12)


def test_trak_scorer_kernel_is_cached(problem):
    est, _, _, Xte = problem
    sc = TRAKScorer(est.store_)
    sc.scores(est.module_, Xte)
    assert any(k[0] == "kernel" for k in est.store_._cache)
    cached = sc.scores(est.module_, Xte)
    est.store_._cache.clear()
    streamed = TRAKScorer(est.store_, max_cache_bytes=0, block_rows=16).scores(est.module_, Xte)
    np.testing.assert_allclose(streamed, cached, rtol=1e-4, atol=1e-7)
    assert not any(k[0] == "phi" for k in est.store_._cache)


def test_streaming_top_k_equals_full_matrix(problem):
    from traceprop_frames.attribution import top_k_scores

    est, _, _, Xte = problem
    est.store_.mark_removed([5])
    for cache in (1 << 30, 0):  # folded (d <= k) and row-streamed paths
        sc = TRAKScorer(est.store_, max_cache_bytes=cache)
        full = top_k_scores(sc.scores(est.module_, Xte), 7)
        streamed = sc.top_k(est.module_, Xte, 7, block_samples=16)
        np.testing.assert_array_equal(streamed.indices, full.indices)
        np.testing.assert_allclose(streamed.scores, full.scores, rtol=1e-6)
        assert 5 not in streamed.indices
    est.store_.removed[5] = False  # leave the shared fixture as it was
    est.store_._cache.clear()
