"""Linear datamodeling score (LDS): how well attribution scores predict retraining on random subsets.

Protocol (TRAK, Park et al. 2023): draw ``M`` random subsets ``S_m`` of ``α·n`` training samples,
retrain on each, and record the test outputs ``f_m(x_t)`` (``decision_function``). The attribution's
prediction for subset ``m`` is ``Σ_{i ∈ S_m} scores[t, i]``. LDS is the Spearman correlation over the
``M`` subsets between predicted and actual outputs, averaged over test points.

Retraining uses the estimator's ``_fit_module`` on the subset's rows when it has one (same code path
as unlearning), else ``sklearn.base.clone(est).fit(X[S_m], y[S_m])``. Retrains are
separate from scoring (:func:`retrain_subsets`, then :func:`lds` per score matrix), so several
attribution methods are compared on the same retrains.

Examples
--------
>>> from sklearn.datasets import make_classification
>>> from traceprop_frames.estimators import TorchLogisticRegression
>>> X, y = make_classification(n_samples=120, n_features=4, random_state=0)
>>> est = TorchLogisticRegression(C=1.0).fit(X[:100], y[:100])
>>> res = linear_datamodeling_score(est, X[:100], y[:100], X[100:], est.influence_scores(X[100:]), n_subsets=20)
>>> res.mean > 0.9
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.base import clone


@dataclass
class Retrains:
    """Subset masks ``(M, n_train)`` and the retrained models' test outputs ``(M, n_test)``."""

    masks: np.ndarray
    outputs: np.ndarray
    seconds: float = 0.0


@dataclass
class LDSResult:
    """``mean`` LDS and the per-test-point Spearman correlations ``per_test``."""

    mean: float
    per_test: np.ndarray

    def __float__(self) -> float:
        return self.mean


def random_subsets(n: int, n_subsets: int, alpha: float = 0.5, random_state=0) -> np.ndarray:
    """``(n_subsets, n)`` boolean masks, each selecting ``round(alpha * n)`` samples uniformly."""
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    rng = np.random.default_rng(random_state)
    m = max(1, int(round(alpha * n)))
    masks = np.zeros((n_subsets, n), dtype=bool)
    for j in range(n_subsets):
        masks[j, rng.choice(n, m, replace=False)] = True
    return masks


def retrain_subsets(
    estimator, X, y, X_test, n_subsets: int = 50, alpha: float = 0.5, random_state=0, progress: bool = False
) -> Retrains:
    """Retrain ``estimator`` on ``n_subsets`` random ``alpha``-subsets; record ``decision_function(X_test)``."""
    import time

    X = np.asarray(X)
    y = np.asarray(y)
    masks = random_subsets(len(X), n_subsets, alpha, random_state)
    fitted = hasattr(estimator, "module_") and hasattr(estimator, "_fit_module")
    if fitted:
        Xt = estimator._validate_test(X_test)
        base_w = estimator.sample_weight_
    outs = []
    t0 = time.perf_counter()
    it = range(n_subsets)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="LDS retrains")
    for j in it:
        if fitted:
            import torch

            init = estimator.module_ if getattr(estimator, "_convex", False) else None  # same optimum, faster
            keep = (base_w * masks[j]) > 0  # the rows of the subset alone, as clone().fit(X[S], y[S])
            module = estimator._fit_module(
                estimator.X_train_[keep], estimator.y_train_[keep], base_w[keep], init_module=init
            )
            with torch.no_grad():
                p = next(module.parameters())
                outs.append(module(torch.as_tensor(Xt).to(p.dtype)).double().numpy().reshape(-1))
        else:
            est = clone(estimator).fit(X[masks[j]], y[masks[j]])
            outs.append(np.asarray(est.decision_function(X_test), dtype=np.float64).reshape(-1))
    return Retrains(masks, np.stack(outs), time.perf_counter() - t0)


def _rank(a: np.ndarray) -> np.ndarray:
    """Ranks along axis 0 (average ranks for ties)."""
    try:
        from scipy.stats import rankdata

        return rankdata(a, axis=0)
    except ImportError:  # pragma: no cover
        return np.argsort(np.argsort(a, axis=0), axis=0).astype(np.float64)


def lds(scores: np.ndarray, retrains: Retrains) -> LDSResult:
    """LDS of a ``(n_test, n_train)`` score matrix against precomputed retrains (NaN scores count 0)."""
    S = np.nan_to_num(np.asarray(scores, dtype=np.float64))
    pred = retrains.masks.astype(np.float64) @ S.T  # (M, n_test)
    rp, ra = _rank(pred), _rank(retrains.outputs)
    rp -= rp.mean(0)
    ra -= ra.mean(0)
    denom = np.sqrt((rp**2).sum(0) * (ra**2).sum(0))
    rho = np.where(denom > 0, (rp * ra).sum(0) / np.where(denom > 0, denom, 1), np.nan)
    return LDSResult(float(np.nanmean(rho)), rho)


def linear_datamodeling_score(
    estimator, X, y, X_test, scores, n_subsets: int = 50, alpha: float = 0.5, random_state=0
) -> LDSResult:
    """Retrain on random subsets and return the LDS of ``scores`` (see the module docstring)."""
    return lds(scores, retrain_subsets(estimator, X, y, X_test, n_subsets, alpha, random_state))
