"""Blocked float64 passes over float32 rows for the logistic regression's Newton fit and fast erasure.

The unnormalised objective is ``F(θ) = Σ_i w_i BCE(x̃_i·θ, y_i) + ‖θ‖² / (2C)`` with ``x̃ = [x, 1]``
(``L = F / Σw`` is what the estimator minimises). Rows are read in blocks that fit in cache and widened
to float64 there, so one pass reads the float32 matrix once (memory-mapped arrays work too) and never
holds a float64 copy of it: a gradient pass costs ``O(n d)``, a Hessian pass ``O(n d²)``.

Examples
--------
>>> import numpy as np
>>> X = np.array([[0.0], [1.0], [2.0]], dtype=np.float32)
>>> F, G = loss_grad(X, np.array([0.0, 1.0, 1.0]), np.ones(3), np.zeros(2), C=1.0)
>>> round(F, 4), G.shape
(2.0794, (2,))
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

BLOCK = 2048
MAX_FACTOR_PARAMS = 4096  # above this many parameters the fit keeps no d x d Hessian (d² floats)


def _blocks(X, intercept: bool, block: int = BLOCK):
    """``(a, b, x̃)`` per block of rows; ``x̃`` is a float64 view into one reused buffer (no allocation)."""
    n, d = X.shape
    buf = np.ones((min(block, n), d + int(intercept)))
    for a in range(0, n, block):
        b = min(n, a + block)
        x = buf[: b - a]
        np.copyto(x[:, :d], X[a:b])
        yield a, b, x


def _rows(X, rows, intercept: bool) -> np.ndarray:
    x = np.asarray(X[np.asarray(rows)], dtype=np.float64)
    return np.hstack([x, np.ones((len(x), 1))]) if intercept else x


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return expit(z)


def _bce(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``BCEWithLogits(z, y) = log(1 + e^z) − y z`` computed stably."""
    return np.logaddexp(0.0, z) - y * z


def loss_grad(X, y, w, theta, C: float, intercept: bool = True, need_loss: bool = True):
    """``(F(θ), ∇F(θ))`` (``F`` is None unless ``need_loss``) in one blocked pass over ``X``'s rows."""
    theta = np.asarray(theta, dtype=np.float64)
    y, w = np.asarray(y), np.asarray(w)
    G = theta / C
    F = 0.5 * float(theta @ theta) / C
    for a, b, x in _blocks(X, intercept):
        z = x @ theta
        wb = w[a:b]
        G += (wb * (_sigmoid(z) - y[a:b])) @ x
        if need_loss:
            F += float(wb @ _bce(z, y[a:b]))
    return (F if need_loss else None), G


def data_hessian(X, w, theta, intercept: bool = True, rows=None) -> np.ndarray:
    """``S = Σ_i w_i σ′(x̃_i·θ) x̃_i x̃_iᵀ`` (no penalty, unnormalised), over ``rows`` or all rows."""
    theta, w = np.asarray(theta, dtype=np.float64), np.asarray(w)
    if rows is not None:
        x = _rows(X, rows, intercept)
        p = _sigmoid(x @ theta)
        return x.T @ (x * (w[np.asarray(rows)] * p * (1 - p))[:, None])
    S = np.zeros((len(theta), len(theta)))
    for a, b, x in _blocks(X, intercept):
        p = _sigmoid(x @ theta)
        S += x.T @ (x * (w[a:b] * p * (1 - p))[:, None])
    return S


def newton_fit(X, y, w, theta, C: float, tol: float, max_iter: int, intercept: bool = True):
    """Damped Newton (Armijo backtracking) until ``max|∇F| / Σw < tol``.

    Returns ``(θ, iterations, state)`` where ``state`` holds what erasures reuse: the last data Hessian
    ``S`` formed (at ``theta_h``, the iterate before the last step) and the final gradient ``grad`` of
    ``F`` at ``θ`` — or None when ``θ`` has more than :data:`MAX_FACTOR_PARAMS` entries.
    """
    W = float(np.asarray(w, dtype=np.float64).sum())
    theta = np.array(theta, dtype=np.float64)
    F, G = loss_grad(X, y, w, theta, C, intercept)
    S = theta_h = None
    eye = np.eye(len(theta))
    it = 0
    for it in range(1, int(max_iter) + 1):
        if float(np.abs(G).max()) / W < tol:
            it -= 1
            break
        S, theta_h = data_hessian(X, w, theta, intercept), theta.copy()
        step = np.linalg.solve(S + eye / C, G)
        t, slope = 1.0, float(G @ step)
        while True:
            cand = theta - t * step
            F1, G1 = loss_grad(X, y, w, cand, C, intercept)
            # Armijo, with a relative slack of 1e-12: at the optimum F no longer resolves the decrease
            if F1 <= F - 1e-4 * t * slope + 1e-12 * abs(F) or t <= 1e-12:
                break
            t *= 0.5
        theta, F, G = cand, F1, G1
    state = None
    if len(theta) <= MAX_FACTOR_PARAMS:
        if S is None:  # converged before any step (warm start): form the Hessian here
            S, theta_h = data_hessian(X, w, theta, intercept), theta.copy()
        state = {"theta": theta.copy(), "grad": G, "theta_h": theta_h, "S": S}
    return theta, it, state


def weights_digest(w) -> str:
    """sha256 of the float32 sample weights: ties a kept Hessian to the active set it was formed on."""
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(w, dtype=np.float32).tobytes()).hexdigest()
