"""The fast Newton erasure's certificate: the local strong-convexity bound, checked against independent oracles."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

from traceprop_frames.estimators import TorchLogisticRegression
from traceprop_frames.estimators.newton import residual_grad, row_norm_max
from traceprop_frames.unlearn import approximate_unlearn
from traceprop_frames.unlearn.factored import certify


def data(n, d, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    X = (scale * rng.standard_normal((n, d))).astype(np.float32)
    y = (rng.random(n) < expit(X.astype(np.float64) @ rng.standard_normal(d) / np.sqrt(d))).astype(int)
    return X, y


def augmented(X):
    return np.hstack([X.astype(np.float64), np.ones((len(X), 1))])


def oracle_optimum(X, y, w, C):
    """Exact minimiser of Σ w_i BCE + ‖θ‖²/(2C), by plain dense Newton in float64 (not the library's code)."""
    Xt = augmented(X)
    theta = np.zeros(Xt.shape[1])
    for _ in range(60):
        s = expit(Xt @ theta)
        g = Xt.T @ (w * (s - y)) + theta / C
        H = Xt.T @ (Xt * (w * s * (1 - s))[:, None]) + np.eye(len(theta)) / C
        step = np.linalg.solve(H, g)
        theta = theta - step
        if np.linalg.norm(step) < 1e-15 * (1 + np.linalg.norm(theta)):
            break
    return theta


def hessian_min_eig(X, w, theta, C):
    Xt = augmented(X)
    s = expit(Xt @ theta)
    H = Xt.T @ (Xt * (w * s * (1 - s))[:, None]) + np.eye(len(theta)) / C
    return np.linalg.eigvalsh(H)[0]


def flat(est):
    return np.concatenate([est.coef_.reshape(-1), est.intercept_.reshape(-1)]).astype(np.float64)


@pytest.mark.parametrize(("C", "k"), [(1.0, 1), (1.0, 40), (20.0, 5), (1e4, 3)])
def test_certified_bound_holds_against_an_independent_optimum(C, k):
    X, y = data(3000, 8, seed=int(C) % 7 + k)
    est = TorchLogisticRegression(C=C).fit(X, y)
    forget = np.random.default_rng(k).choice(len(X), k, replace=False)
    after = approximate_unlearn(est, forget)
    r = after.unlearn_result_
    w = np.ones(len(X))
    w[forget] = 0
    star = oracle_optimum(X, y.astype(np.float64), w, C)
    dist = np.linalg.norm(flat(after) - star)
    assert r.certified_bound <= 1e-6 and dist <= r.certified_bound
    # the bound reported is the measured gradient (plus its rounding bound) over the modulus reported
    terms = r.params["bound_terms"]
    g = r.residual_grad_norm * w.sum()
    assert np.isclose(r.certified_bound, (g + terms["gradient_rounding"]) / (r.strong_convexity * w.sum()))
    assert terms["penalty_only_bound"] >= r.certified_bound * (1 - 1e-12)


def test_local_modulus_lower_bounds_the_hessian_on_its_ball():
    X, y = data(2000, 6, seed=3, scale=2.0)
    C = 5.0
    est = TorchLogisticRegression(C=C).fit(X, y)
    forget = np.arange(0, 60)
    after = approximate_unlearn(est, forget, bound=1e-4)  # a loose target: a large ball is used
    r = after.unlearn_result_
    w = np.ones(len(X))
    w[forget] = 0
    R, mu = r.params["bound_terms"]["ball_radius"], r.strong_convexity * w.sum()
    assert R is not None and mu > 2 / C  # the data's curvature, not only the penalty's, is used
    theta = flat(after)
    rng = np.random.default_rng(0)
    for t in [1.0] * 20 + list(rng.random(20)):  # points on the sphere and inside the ball
        u = rng.standard_normal(len(theta))
        point = theta + t * R * u / np.linalg.norm(u)
        assert hessian_min_eig(X, w, point, C) >= mu
    star = oracle_optimum(X, y.astype(np.float64), w, C)
    assert np.linalg.norm(theta - star) <= r.certified_bound <= R


def test_certify_without_data_curvature_is_the_penalty_bound():
    out = certify(2e-3, 1e-12, np.zeros(3), np.zeros(3), lam=0.0, xmax=5.0, C=2.0)
    assert out["bound"] == pytest.approx(2.0 * (2e-3 + 1e-12)) and out["radius"] == np.inf
    strong = certify(2e-3, 1e-12, np.zeros(3), np.zeros(3), lam=100.0, xmax=5.0, C=2.0)
    # modulus 1/C + e^{-ρ} λ with ρ = xmax · radius, and the bound is the gradient over it
    assert strong["modulus"] == pytest.approx(0.5 + np.exp(-5.0 * strong["radius"]) * 100.0)
    assert strong["bound"] == pytest.approx((2e-3 + 1e-12) / strong["modulus"])
    assert strong["bound"] < 1e-4 < out["bound"]


def test_gradient_rounding_bound_covers_extended_precision():
    X, y = data(5000, 30, seed=5, scale=3.0)
    theta = np.random.default_rng(1).standard_normal(31)
    w = np.ones(len(X))
    w[::7] = 0.0
    xmax = row_norm_max(X)
    G, err = residual_grad(X, y.astype(np.float64), w, theta, 0.7, True, xmax)
    Xl = np.hstack([X.astype(np.longdouble), np.ones((len(X), 1), dtype=np.longdouble)])
    tl = theta.astype(np.longdouble)
    rl = w.astype(np.longdouble) * (expit(Xl @ tl) - y.astype(np.longdouble))
    Gl = Xl.T @ rl + tl / np.longdouble(0.7)
    assert float(np.linalg.norm((G - Gl).astype(np.float64))) <= err < 1e-6 * np.linalg.norm(G)
    assert xmax >= np.sqrt((augmented(X) ** 2).sum(1)).max()


def test_one_gradient_pass_and_older_states_without_row_norms():
    X, y = data(20000, 20, seed=7)
    est = TorchLogisticRegression().fit(X, y)
    forget = np.random.default_rng(2).choice(len(X), 10, replace=False)
    r = approximate_unlearn(est, forget).unlearn_result_
    # the penalty-only bound would need more corrections; the local one certifies after the first
    assert r.iterations == 1 and r.extra["hessian_passes"] == 0 and r.certified_bound <= 1e-6
    assert r.params["bound_terms"]["penalty_only_bound"] > 1e-6
    # a model folder saved before the fit kept xmax: the row norms are measured by a pass instead
    est.newton_state_ = {k: v for k, v in est.newton_state_.items() if k != "xmax"}
    old = approximate_unlearn(est, forget)
    assert old.unlearn_result_.certified_bound == pytest.approx(r.certified_bound, rel=1e-9)
    assert old.newton_state_["xmax"] == pytest.approx(row_norm_max(X), rel=1e-12)
