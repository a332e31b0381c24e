"""Correct a fitted model to a rebuilt training table (the pipeline re-run without the erased rows).

Convex model (``TorchLogisticRegression``): Newton from the current parameters on the rebuilt table's
objective ``F(θ) = Σ w_i BCE(x̃_i·θ, y_i) + ‖θ‖²/(2C)``. The first steps are preconditioned by the
curvature the fit kept (``newton_state_``, the old table's data Hessian): each step costs one blocked
gradient pass over the rebuilt rows (``O(n d)``), not a Hessian (``O(n d²)``). A step that does not cut
the gradient tenfold forms the rebuilt table's own Hessian once (exact Newton from then on). Stops when
the certified bound is below ``bound``.

The bound is measured against the rebuilt table: ``F`` is ``1/C``-strongly convex, so
``‖θ − θ*‖ ≤ C (‖∇F(θ)‖ + err)`` with ``∇F`` measured by one pass at the final parameters and ``err``
the float64 rounding bound of that pass; where the rebuilt table's Hessian was formed, the sharper
data-curvature bound of :func:`traceprop_frames.unlearn.factored.certify` is used.

Non-convex model (the MLP): the documented gradient correction
(:func:`traceprop_frames.unlearn.correction._gradient`) with the old table's gradient as the reference:
``θ′ = θ − (G + δI)⁻¹ (∇L_new(θ) − ∇L_old(θ))``, ``G`` the rebuilt table's Gauss-Newton curvature. No bound.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from traceprop_frames.estimators.newton import data_hessian, residual_grad, row_norm_max, weights_digest
from traceprop_frames.unlearn.factored import _flat, _module, certify, curvature_floor, newton_info


def _preconditioner(est, X, w, theta, d: int):
    """(S, θ_h, formed_on_rebuilt): the fit's kept data Hessian if it fits, else the rebuilt table's."""
    st = getattr(est, "newton_state_", None)
    if st is not None and np.shape(st.get("S")) == (d, d):
        return st["S"], st["theta_h"], False
    return data_hessian(X, w, theta, bool(est.fit_intercept)), theta.copy(), True


def newton_to_table(est, X, y, w, bound: float = 1e-6, max_iter: int = 25) -> tuple:
    """Newton from ``est.module_`` to the optimum on ``(X, y, w)``; returns ``(module, info)``.

    ``info``: ``iterations`` (gradient passes after the first), ``hessian_passes`` (rebuilt-table
    Hessians formed), ``residual_grad_norm`` (normalised by ``Σw``), ``strong_convexity`` (normalised),
    ``certified_bound``, ``bound_terms``, ``newton_state`` (for later erasures; None unless the
    rebuilt table's Hessian was formed).
    """
    C, icpt = float(est.C), bool(est.fit_intercept)
    y64, w64 = np.asarray(y, dtype=np.float64), np.asarray(w, dtype=np.float64)
    theta = _flat(est.module_)
    xmax = row_norm_max(X, icpt)
    S, theta_h, exact = _preconditioner(est, X, w64, theta, len(theta))
    eye = np.eye(len(theta)) / C
    fac = cho_factor(S + eye)
    G, err = residual_grad(X, y64, w64, theta, C, icpt, xmax)
    gn, it, passes = float(np.linalg.norm(G)), 0, int(exact)
    while it < max_iter and C * (gn + err) > bound and gn > err:  # (below err no step can help)
        it += 1
        cand = theta - cho_solve(fac, G)
        G1, err1 = residual_grad(X, y64, w64, cand, C, icpt, xmax)
        g1 = float(np.linalg.norm(G1))
        if g1 > 0.1 * gn and C * (g1 + err1) > bound:  # the curvature used is stale: re-form it here
            at = cand if g1 < gn else theta
            S, theta_h, exact = data_hessian(X, w64, at, icpt), at.copy(), True
            fac, passes = cho_factor(S + eye), passes + 1
            if g1 >= gn:  # uphill with the old curvature: retry from the same point
                continue
        theta, G, gn, err = cand, G1, g1, err1
    W = float(w64.sum())
    lam = curvature_floor(S, len(X)) if exact else None
    if exact:
        cert = certify(gn, err, theta, theta_h, lam, xmax, C)
    else:
        cert = {"bound": C * (gn + err), "modulus": 1.0 / C, "radius": np.inf, "rounding": err,
                "hessian_point_distance": float(np.linalg.norm(theta - theta_h))}  # fmt: skip
    info = newton_info(it, passes, gn, W, cert, xmax, C, lam)
    info["bound_terms"]["curvature"] = "rebuilt table" if exact else "penalty only"
    info["newton_state"] = None
    if exact:
        info["newton_state"] = {"theta": theta.copy(), "grad": G, "theta_h": theta_h, "S": S, "xmax": xmax,
                                "weights": weights_digest(np.asarray(w, dtype=np.float32))}  # fmt: skip
    return _module(est.module_, theta), info


def gradient_to_table(est, X_old, y_old, w_old, X, y, w, steps: int = 10, damping: float = 1e-3,
                      curvature_samples: int = 2048):  # fmt: skip
    """The gradient correction from the old table's objective to the rebuilt one's (non-convex models)."""
    import torch

    from traceprop_frames.unlearn.correction import _gradient
    from traceprop_frames.unlearn.objective import Objective

    module = est.module_
    ftype = torch.float32 if next(module.parameters()).dtype == torch.float32 else torch.float64
    old = Objective(est, module, X_old, y_old, w_old, dtype=ftype)
    g_old = old.grad(old.flat(module)).detach()
    saved = est.sample_weight_
    est.sample_weight_ = np.asarray(w, dtype=np.float32)  # the penalty may scale with Σw
    try:
        obj = Objective(est, module, X, y, w, dtype=ftype)
        theta = _gradient(obj, obj.flat(module), g_old, steps, None, damping, curvature_samples)
        after = obj.to_module(theta, module)
        resid = float(obj.grad(obj.flat(after)).norm())
    finally:
        est.sample_weight_ = saved
    return after, {"iterations": int(steps), "residual_grad_norm": resid}
