"""The certified curvature floor a rebuild erasure uses (issue 19): the fit's kept Hessian minus the measured
perturbation of the rebuilt rows, against the exact smallest eigenvalue of the rebuilt table's Hessian, and
the resulting bound against the rebuilt table's optimum found by an independent tight Newton solve."""

from __future__ import annotations

import copy

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from traceprop_frames.estimators import TorchLogisticRegression
from traceprop_frames.estimators.newton import (
    data_hessian,
    gradient_rounding,
    newton_fit,
    residual_grad,
    row_norm_max,
)
from traceprop_frames.unlearn.factored import _flat, curvature_floor
from traceprop_frames.unlearn.rebuild_solve import _first_pass, _kept, newton_to_table, perturbation


def _tables(seed: int, n: int, d: int, shift: float, vanish: int):
    """An old table, the model fit on it, and a rebuilt table: every row shifted and rescaled a little
    (a z-score over fewer rows), ``vanish`` samples removed (weight 0, old row kept), one label flipped."""
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((n, d)) * rng.uniform(0.5, 3, d)).astype(np.float32)
    y = (X @ rng.standard_normal(d) + rng.standard_normal(n) > 0).astype(np.float32)
    est = TorchLogisticRegression().fit(X, y)
    Xn = (X * (1 + shift * rng.standard_normal(d)) + shift * rng.standard_normal(d)).astype(np.float32)
    w = np.ones(n, dtype=np.float32)
    gone = rng.choice(n, vanish, replace=False)
    w[gone], Xn[gone] = 0.0, X[gone]
    yn = y.copy()
    yn[int(rng.integers(n))] = 1 - yn[int(rng.integers(n))]
    return est, Xn, yn, w


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(40, 400), d=st.integers(1, 6),
       shift=st.sampled_from([0.0, 1e-4, 1e-2, 0.3]), vanish=st.integers(0, 5))  # fmt: skip
def test_perturbed_floor_is_below_the_rebuilt_tables_curvature(seed, n, d, shift, vanish):
    est, Xn, yn, w = _tables(seed, n, d, shift, vanish)
    S_old, theta_h = _kept(est, d + 1)
    w_old = np.asarray(est.sample_weight_, dtype=np.float64)
    delta = perturbation(Xn, w.astype(np.float64), est.X_train_, w_old, theta_h, True)
    floor = curvature_floor(S_old, n) - delta
    exact = float(np.linalg.eigvalsh(data_hessian(Xn, w.astype(np.float64), theta_h, True))[0])
    assert floor <= exact * (1 + 1e-12) + 1e-12
    if shift == 0.0 and vanish == 0:  # nothing moved: no perturbation at all
        assert delta < 1e-9 * np.trace(S_old)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(60, 400), d=st.integers(1, 5),
       shift=st.sampled_from([1e-4, 1e-2, 0.3]), vanish=st.integers(0, 5),
       target=st.sampled_from([1e-6, 1e-15]))  # fmt: skip
def test_certified_bound_holds_against_the_rebuilt_optimum(seed, n, d, shift, vanish, target):
    """``target`` 1e-15 is below the rounding term: the penalty-only bound cannot reach it and the solve
    falls back on the kept Hessian's perturbed floor (the path 200,000-row tables take at 1e-6)."""
    est, Xn, yn, w = _tables(seed, n, d, shift, vanish)
    after, info = newton_to_table(copy.deepcopy(est), Xn, yn, w, bound=target, max_iter=25)
    theta = _flat(after)
    star, _, _ = newton_fit(Xn, yn.astype(np.float64), w.astype(np.float64), theta, est.C, 1e-15, 50)
    assert np.linalg.norm(theta - star) <= info["certified_bound"] * (1 + 1e-9) + 1e-13
    if target == 1e-6:
        assert info["certified_bound"] <= 1e-6
    else:
        assert info["bound_terms"]["curvature"] != "penalty only"
        assert info["certified_bound"] <= info["bound_terms"]["penalty_only_bound"]


def test_first_pass_is_the_residual_pass_and_the_row_norm_bound():
    rng = np.random.default_rng(3)
    X = (rng.standard_normal((5000, 4)) * 10).astype(np.float32)
    y, w, theta = (rng.random(5000) > 0.5).astype(np.float64), rng.random(5000), rng.standard_normal(5)
    G, abs_r, xmax = _first_pass(X, y, w, theta, 1.0, True)
    G2, err2 = residual_grad(X, y, w, theta, 1.0, True, row_norm_max(X, True))
    assert np.array_equal(G, G2) and np.isclose(xmax, row_norm_max(X, True), rtol=1e-12, atol=0)
    assert np.isclose(gradient_rounding(X.shape, w, theta, 1.0, xmax, abs_r), err2, rtol=1e-12, atol=0)
