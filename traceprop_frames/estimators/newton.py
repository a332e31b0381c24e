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
GRAD_BLOCK_BYTES = 1 << 19  # float64 rows per block of a gradient pass: ~512 KiB, cache-resident
EPS = 2.0**-53  # unit roundoff of float64


def gamma(m: int) -> float:
    """``γ_m = m u / (1 − m u)``: the classic bound on the relative rounding error of ``m`` float64 ops."""
    return m * EPS / (1 - m * EPS)


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


def _sigmoid(z: np.ndarray, out=None) -> np.ndarray:
    return expit(z, out=out)


def _bce(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``BCEWithLogits(z, y) = log(1 + e^z) − y z`` computed stably."""
    return np.logaddexp(0.0, z) - y * z


def _block_rows(d: int) -> int:
    return max(64, GRAD_BLOCK_BYTES // (8 * max(d, 1)))


def _row_blocks(X):
    """``(a, b, x)`` per block of rows of ``X`` widened to float64 (no intercept column: a contiguous
    copy into one reused buffer of ~512 KiB, which stays in cache for the two products of a pass)."""
    n, d = X.shape
    block = _block_rows(d)
    buf = np.empty((min(block, n), d))
    for a in range(0, n, block):
        b = min(n, a + block)
        x = buf[: b - a]
        np.copyto(x, X[a:b])
        yield a, b, x


def _grad_pass(X, y, w, theta, C: float, intercept: bool, need_loss: bool):
    """``(F or None, ∇F, Σ_i |w_i (σ_i − y_i)|)`` in one blocked pass over ``X``'s rows."""
    theta = np.asarray(theta, dtype=np.float64)
    y, w = np.asarray(y), np.asarray(w)
    coef, b0 = (theta[:-1], float(theta[-1])) if intercept else (theta, 0.0)
    gx, gb, abs_r = np.zeros(len(coef)), 0.0, 0.0
    F = 0.5 * float(theta @ theta) / C
    z = np.empty(min(len(y), _block_rows(len(coef))))
    gblock = np.empty(len(coef))  # one block's r·x, reused
    for a, b, x in _row_blocks(X):
        zb = z[: b - a]
        np.dot(x, coef, out=zb)
        zb += b0
        if need_loss:
            F += float(w[a:b] @ _bce(zb, y[a:b]))
        r = _sigmoid(zb, out=zb)
        r -= y[a:b]
        r *= w[a:b]
        gx += np.dot(r, x, out=gblock)
        gb += float(r.sum())
        abs_r += float(np.abs(r, out=r).sum())  # r is not needed after this
    G = theta / C
    G[: len(coef)] += gx
    if intercept:
        G[-1] += gb
    return (F if need_loss else None), G, abs_r


def loss_grad(X, y, w, theta, C: float, intercept: bool = True, need_loss: bool = True):
    """``(F(θ), ∇F(θ))`` (``F`` is None unless ``need_loss``) in one blocked pass over ``X``'s rows."""
    F, G, _ = _grad_pass(X, y, w, theta, C, intercept, need_loss)
    return F, G


def residual_grad(X, y, w, theta, C: float, intercept: bool, xmax: float):
    """``(∇F(θ), err)`` in one blocked pass, ``err`` a bound on ``‖fl(∇F) − ∇F‖`` (float64 rounding).

    ``xmax`` bounds every ``‖x̃_i‖``. Each logit ``x̃_i·θ`` is off by at most ``γ_p ‖x̃_i‖ ‖θ‖``, so each
    residual ``w_i (σ − y_i)`` by ``w_i (γ_p xmax ‖θ‖ / 4 + 5u)`` (σ is ¼-Lipschitz; a few ulps for
    ``expit`` and the subtraction); summing the products ``r_i x̃_i`` of a block (any order) and then the
    blocks' sums adds at most ``γ_{b+B} Σ |r_i| ‖x̃_i‖`` (``b`` rows a block, ``B`` blocks). ``Σ |r_i|`` is
    accumulated in the same pass.

    Examples
    --------
    >>> X = np.array([[0.0], [1.0], [2.0]], dtype=np.float32)
    >>> G, err = residual_grad(X, np.array([0.0, 1.0, 1.0]), np.ones(3), np.zeros(2), 1.0, True, 2.3)
    >>> G.round(4).tolist(), 0 < err < 1e-14
    ([-1.5, -0.5], True)
    """
    theta = np.asarray(theta, dtype=np.float64)
    _, G, abs_r = _grad_pass(X, y, w, theta, C, intercept, need_loss=False)
    return G, gradient_rounding(X.shape, w, theta, C, xmax, abs_r)


def gradient_rounding(shape, w, theta, C: float, xmax: float, abs_r: float) -> float:
    """The float64 rounding bound of one blocked gradient pass (see :func:`residual_grad`) over ``shape``
    rows x columns, from the pass's ``Σ |r_i|``."""
    (n, d), p = shape, len(theta)
    b = min(n, _block_rows(d))
    tn = float(np.linalg.norm(theta))
    per_row = 0.25 * gamma(p + 2) * xmax * tn + 5 * EPS
    terms = gamma(b + -(-n // b) + p + 10) * abs_r
    return xmax * (terms + float(np.sum(w, dtype=np.float64)) * per_row) + 2 * EPS * tn / C


def row_norm_max(X, intercept: bool = True) -> float:
    """An upper bound on ``max_i ‖x̃_i‖`` (one blocked pass; rounded up by ``γ``)."""
    m = 0.0
    for _, _, x in _blocks(X, intercept):
        m = max(m, float(np.einsum("ij,ij->i", x, x).max()))
    return float(np.sqrt(m)) * (1 + gamma(X.shape[1] + 4))


def data_hessian(X, w, theta, intercept: bool = True, rows=None, with_norm: bool = False):
    """``S = Σ_i w_i σ′(x̃_i·θ) x̃_i x̃_iᵀ`` (no penalty, unnormalised), over ``rows`` or all rows.

    ``with_norm=True`` (all rows only) returns ``(S, xmax)``, ``xmax`` as :func:`row_norm_max`, from the
    same pass.
    """
    theta, w = np.asarray(theta, dtype=np.float64), np.asarray(w)
    if rows is not None:
        x = _rows(X, rows, intercept)
        p = _sigmoid(x @ theta)
        return x.T @ (x * (w[np.asarray(rows)] * p * (1 - p))[:, None])
    S = np.zeros((len(theta), len(theta)))
    m = 0.0
    for a, b, x in _blocks(X, intercept):
        p = _sigmoid(x @ theta)
        S += x.T @ (x * (w[a:b] * p * (1 - p))[:, None])
        if with_norm:
            m = max(m, float(np.einsum("ij,ij->i", x, x).max()))
    return (S, float(np.sqrt(m)) * (1 + gamma(X.shape[1] + 4))) if with_norm else S


def newton_fit(X, y, w, theta, C: float, tol: float, max_iter: int, intercept: bool = True):
    """Damped Newton (Armijo backtracking) until ``max|∇F| / Σw < tol``.

    Returns ``(θ, iterations, state)`` where ``state`` holds what erasures reuse: the last data Hessian
    ``S`` formed (at ``theta_h``, the iterate before the last step), the final gradient ``grad`` of
    ``F`` at ``θ`` and ``xmax`` (:func:`row_norm_max`, from the first Hessian pass) — or None when ``θ``
    has more than :data:`MAX_FACTOR_PARAMS` entries.
    """
    W = float(np.asarray(w, dtype=np.float64).sum())
    theta = np.array(theta, dtype=np.float64)
    F, G = loss_grad(X, y, w, theta, C, intercept)
    S = theta_h = xmax = None
    eye = np.eye(len(theta))
    it = 0
    for it in range(1, int(max_iter) + 1):
        if float(np.abs(G).max()) / W < tol:
            it -= 1
            break
        if xmax is None:
            S, xmax = data_hessian(X, w, theta, intercept, with_norm=True)
        else:
            S = data_hessian(X, w, theta, intercept)
        theta_h = theta.copy()
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
            (S, xmax), theta_h = data_hessian(X, w, theta, intercept, with_norm=True), theta.copy()
        state = {"theta": theta.copy(), "grad": G, "theta_h": theta_h, "S": S, "xmax": xmax}
    return theta, it, state


def weights_digest(w) -> str:
    """sha256 of the float32 sample weights: ties a kept Hessian to the active set it was formed on."""
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(w, dtype=np.float32)).hexdigest()  # the buffer: no copy
