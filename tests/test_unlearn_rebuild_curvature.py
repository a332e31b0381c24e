"""The certified curvature floor a rebuild erasure uses (issue 19): the fit's kept Hessian minus the measured
perturbation of the rebuilt rows, against the exact smallest eigenvalue of the rebuilt table's Hessian, and
the resulting bound against the rebuilt table's optimum found by an independent tight Newton solve."""

from __future__ import annotations

import copy

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from traceprop_frames.estimators import TorchLogisticRegression
from traceprop_frames.estimators.newton import data_hessian, newton_fit
from traceprop_frames.unlearn.factored import _flat, curvature_floor
from traceprop_frames.unlearn.rebuild_solve import _first_pass, _kept, newton_to_table


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
    old = (est.X_train_, np.asarray(est.sample_weight_, dtype=np.float64), theta_h)
    theta = _flat(est.module_)
    _, _, _, delta = _first_pass(Xn, yn.astype(np.float64), w.astype(np.float64), theta, est.C, True, old)
    floor = curvature_floor(S_old, n) - delta
    exact = float(np.linalg.eigvalsh(data_hessian(Xn, w.astype(np.float64), theta_h, True))[0])
    assert floor <= exact * (1 + 1e-12) + 1e-12
    if shift == 0.0 and vanish == 0:  # nothing moved: no perturbation at all
        assert delta < 1e-9 * np.trace(S_old)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(60, 400), d=st.integers(1, 5),
       shift=st.sampled_from([1e-4, 1e-2, 0.3]), vanish=st.integers(0, 5))  # fmt: skip
def test_certified_bound_holds_against_the_rebuilt_optimum(seed, n, d, shift, vanish):
    est, Xn, yn, w = _tables(seed, n, d, shift, vanish)
    after, info = newton_to_table(copy.deepcopy(est), Xn, yn, w, bound=1e-6, max_iter=25)
    theta = _flat(after)
    star, _, _ = newton_fit(Xn, yn.astype(np.float64), w.astype(np.float64), theta, est.C, 1e-15, 50)
    assert np.linalg.norm(theta - star) <= info["certified_bound"] * (1 + 1e-9) + 1e-13
    assert info["certified_bound"] <= 1e-6
