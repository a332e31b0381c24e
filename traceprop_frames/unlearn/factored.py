"""Newton erasure from the Hessian the logistic regression's fit kept (``newton_state_``): no ``O(n d²)`` pass.

The fit (:func:`traceprop_frames.estimators.newton.newton_fit`) leaves the unnormalised data Hessian
``S`` (at ``θ_h``, the last Newton iterate before convergence) and the gradient ``∇F`` at the fitted
``θ``. Erasing samples ``f``:

1. the remaining objective's gradient at ``θ`` is ``∇F(θ) − Σ_f w_i (σ(x̃_i·θ) − y_i) x̃_i`` — no pass;
2. its Hessian is the rank-``|f|`` downdate ``S − Σ_f w_i σ′(x̃_i·θ_h) x̃_i x̃_iᵀ + I/C``, refactored by
   Cholesky (``O(|f| d² + d³)``, independent of ``n``);
3. Newton corrections ``θ ← θ − H⁻¹ ∇F_rem(θ)``, each followed by one blocked gradient pass over the
   remaining rows (``O(n d)``), until the certified bound ``‖θ′ − θ*‖ ≤ ‖∇L_rem‖ / λ = C ‖∇F_rem‖`` is
   below ``bound``. A correction that does not cut the gradient tenfold re-forms the Hessian at the
   current point (one ``O(n d²)`` pass; counted in the result).

The closed form of these passes is checked against autograd through the estimator's own
``per_sample_loss`` and ``penalty`` (on the forgotten rows and a fixed random sample of the others) before
the certificate relies on it.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from scipy.linalg import cho_factor, cho_solve

from traceprop_frames.estimators.newton import _bce, _rows, _sigmoid, data_hessian, loss_grad, weights_digest

CHECK_ROWS = 256


def _flat(module: torch.nn.Module) -> np.ndarray:
    return torch.cat([p.detach().reshape(-1).to(torch.float64) for p in module.parameters()]).numpy()


def _module(like: torch.nn.Module, theta: np.ndarray) -> torch.nn.Module:
    out = copy.deepcopy(like)
    with torch.no_grad():
        t = torch.from_numpy(np.asarray(theta, dtype=np.float64))
        for p, part in zip(out.parameters(), torch.split(t, [p.numel() for p in out.parameters()])):
            p.copy_(part.view(p.shape).to(p.dtype))
    return out


def applicable(est, w_before: np.ndarray) -> bool:
    """True when ``est`` kept a Newton state for exactly its current parameters and active samples."""
    st = getattr(est, "newton_state_", None)
    if st is None or not hasattr(est, "C") or not getattr(est, "_convex", False):
        return False
    return st["weights"] == weights_digest(w_before) and np.array_equal(st["theta"], _flat(est.module_))


def _check_closed_form(est, theta, rows) -> None:
    """Raise if the blocked closed form disagrees with the estimator's own objective on ``rows``."""
    from traceprop_frames.errors import UnlearningError

    X, y, wr = est.X_train_[rows], est.y_train_[rows], np.ones(len(rows))
    m = _module(est.module_, theta)
    for p in m.parameters():
        p.requires_grad_(True)
    own = est.objective(m, X, y, wr)
    own.backward()
    g_own = torch.cat([p.grad.reshape(-1) for p in m.parameters()]).double().numpy()
    F, G = loss_grad(X, y.astype(np.float64), wr, theta, float(est.C), est.fit_intercept)
    W, f_own = float(wr.sum()), float(own.detach())
    if abs(F / W - f_own) > 1e-9 * (1 + abs(f_own)) or not np.allclose(G / W, g_own, rtol=1e-7, atol=1e-11):
        raise UnlearningError(
            f"{type(est).__name__}'s objective is not the closed form the fast Newton erasure assumes; "
            "erase with method='retrain'"
        )


def erase(est, new: np.ndarray, w_before, w_after, bound: float, max_iter: int):
    """Erase training samples ``new`` (all active); returns ``(module, info)``.

    ``info``: ``iterations``, ``hessian_passes`` (full Hessians re-formed), ``residual_grad_norm``
    (``‖∇L_rem‖``, normalised objective), ``strong_convexity``, ``certified_bound``,
    ``forget_loss_before``/``_after``, ``newton_state`` (for the next erasure).
    """
    st = est.newton_state_
    C, icpt = float(est.C), bool(est.fit_intercept)
    X = est.X_train_
    y = np.asarray(est.y_train_, dtype=np.float64)
    w_after = np.asarray(w_after, dtype=np.float64)
    theta0 = st["theta"]
    xf, yf = _rows(X, new, icpt), y[new]
    wf = np.asarray(w_before, dtype=np.float64)[new]
    z0 = xf @ theta0
    G = st["grad"] - (wf * (_sigmoid(z0) - yf)) @ xf
    ph = _sigmoid(xf @ st["theta_h"])
    S = st["S"] - xf.T @ (xf * (wf * ph * (1 - ph))[:, None])  # the rank-|new| downdate
    theta_h, eye = st["theta_h"], np.eye(len(theta0)) / C
    fac = cho_factor(S + eye)
    theta, gn, it, passes = theta0, float(np.linalg.norm(G)), 0, 0
    while C * gn > bound and it < max_iter:
        it += 1
        cand = theta - cho_solve(fac, G)
        _, G1 = loss_grad(X, y, w_after, cand, C, icpt, need_loss=False)
        g1 = float(np.linalg.norm(G1))
        if g1 > 0.1 * gn and C * g1 > bound:  # the kept Hessian is stale here: re-form it
            at = cand if g1 < gn else theta
            S, theta_h = data_hessian(X, w_after, at, icpt), at.copy()
            fac, passes = cho_factor(S + eye), passes + 1
            if g1 >= gn:  # the step went uphill: retry it from the same point with the exact Hessian
                continue
        theta, G, gn = cand, G1, g1
    rng = np.random.default_rng(0)
    keep = np.flatnonzero(w_after > 0)
    probe = np.union1d(new[:CHECK_ROWS], rng.choice(keep, min(CHECK_ROWS, len(keep)), replace=False))
    _check_closed_form(est, theta, probe)
    W = float(w_after.sum())
    info = {
        "iterations": it,
        "hessian_passes": passes,
        "residual_grad_norm": gn / W,
        "strong_convexity": 1.0 / (C * W),
        "certified_bound": C * gn,
        "forget_loss_before": float(_bce(z0, yf).mean()),
        "forget_loss_after": float(_bce(xf @ theta, yf).mean()),
        "newton_state": {
            "theta": theta.copy(),
            "grad": G,
            "theta_h": theta_h,
            "S": S,
            "weights": weights_digest(w_after),
        },  # fmt: skip
    }
    return _module(est.module_, theta), info
