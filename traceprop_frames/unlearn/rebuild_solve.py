"""Correct a fitted model to a rebuilt training table (the pipeline re-run without the erased rows).

Convex model (``TorchLogisticRegression``): Newton from the current parameters on the rebuilt table's
objective ``F(θ) = Σ w_i BCE(x̃_i·θ, y_i) + ‖θ‖²/(2C)``. The first steps are preconditioned by the
curvature the fit kept (``newton_state_``, the old table's data Hessian): each step costs one blocked
gradient pass over the rebuilt rows (``O(n d)``), not a Hessian (``O(n d²)``). A step that does not cut
the gradient tenfold forms the rebuilt table's own Hessian once (exact Newton from then on). Stops when
the certified bound is below ``bound``.

The bound is measured against the rebuilt table: ``‖θ − θ*‖ ≤ (‖∇F(θ)‖ + err) / μ`` with ``∇F``
measured by one pass at the final parameters, ``err`` the float64 rounding bound of that pass and ``μ``
the strong convexity :func:`traceprop_frames.unlearn.factored.certify` derives from a certified floor on
the rebuilt table's data curvature: the kept Hessian's floor minus a measured bound on how far the
rebuild moved it (:func:`perturbation`), or, where the rebuilt table's Hessian was formed, its own floor.
Without a kept Hessian for the current table only the penalty's ``1/C`` is used (``C (‖∇F‖ + err)``).
The rounding term ``err`` grows with ``n``; dividing by the data curvature (which grows with ``n`` too)
instead of multiplying by ``C`` keeps the bound below the default ``1e-6`` at 200,000 rows.

Non-convex model (the MLP): the documented gradient correction
(:func:`traceprop_frames.unlearn.correction._gradient`) with the old table's gradient as the reference:
``θ′ = θ − (G + δI)⁻¹ (∇L_new(θ) − ∇L_old(θ))``, ``G`` the rebuilt table's Gauss-Newton curvature. No bound.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from traceprop_frames.estimators.newton import (
    _block_rows,
    _row_blocks,
    _sigmoid,
    data_hessian,
    gamma,
    gradient_rounding,
    residual_grad,
    weights_digest,
)
from traceprop_frames.unlearn.factored import _flat, _module, certify, curvature_floor, newton_info


def _kept(est, d: int):
    """``(S, θ_h)``: the data Hessian the fit (or the last erasure) kept, when it is the current table's
    (same sample weights; ``X_train_`` is only replaced together with ``newton_state_``), else None."""
    st = getattr(est, "newton_state_", None)
    if st is None or np.shape(st.get("S")) != (d, d):
        return None
    if st.get("weights") != weights_digest(est.sample_weight_) or len(est.X_train_) != len(
        est.sample_weight_
    ):
        return None
    return st["S"], np.asarray(st["theta_h"], dtype=np.float64)


def _first_pass(X, y, w, theta, C: float, icpt: bool):
    """``(∇F, Σ|r_i|, xmax)`` in one blocked pass over the rebuilt rows ``X``: ``∇F`` and ``Σ|r_i|`` exactly
    as :func:`~traceprop_frames.estimators.newton.residual_grad`'s pass (same blocks, same order: its
    rounding bound holds), ``xmax`` as :func:`~traceprop_frames.estimators.newton.row_norm_max`."""
    theta = np.asarray(theta, dtype=np.float64)
    n, d = X.shape
    coef, b0 = (theta[:-1], float(theta[-1])) if icpt else (theta, 0.0)
    gx, gb, abs_r, m2 = np.zeros(d), 0.0, 0.0, 0.0
    z = np.empty(min(n, _block_rows(d)))
    gblock = np.empty(d)
    for a, b, x in _row_blocks(X):
        m2 = max(m2, float(np.einsum("ij,ij->i", x, x).max()))
        zb = z[: b - a]
        np.dot(x, coef, out=zb)
        zb += b0
        r = _sigmoid(zb, out=zb)
        r -= y[a:b]
        r *= w[a:b]
        gx += np.dot(r, x, out=gblock)
        gb += float(r.sum())
        abs_r += float(np.abs(r, out=r).sum())
    G = theta / C
    G[:d] += gx
    if icpt:
        G[-1] += gb
    return G, abs_r, float(np.sqrt(m2 + float(icpt))) * (1 + gamma(d + 4))


SIGMA2_MAX = 0.0963  # ≥ max |σ″| = 1 / (6 √3) ≈ 0.096225: σ′ is that Lipschitz


def perturbation(X, w, X_old, w_old, theta_h, icpt: bool) -> float:
    """A bound on ``‖S_new − S_old‖₂`` for the data Hessians at ``θ_h`` of the rebuilt rows ``X`` (weights
    ``w``) and the old table (row ``i < len(X_old)`` of ``X`` is old sample ``i``'s rebuilt row).

    Per row, with ``u``, ``v`` the new and old row (intercept included), ``Δ = u − v``, ``a = w_new σ′(u·θ_h)``
    and ``b = w_old σ′(v·θ_h)``: ``a uuᵀ − b vvᵀ = (a − b) uuᵀ + b (uΔᵀ + Δvᵀ)``, so its norm is at most
    ``|a − b| ‖u‖² + b ‖Δ‖ (‖u‖ + ‖v‖)``; with ``σ′ ≤ ¼``, ``|σ″| ≤ 0.0963`` and ``|Δ·θ_h| ≤ ‖Δ‖ ‖θ_h‖``:
    ``|a − b| ≤ |w_new − w_old| / 4 + 0.0963 w_old ‖θ_h‖ ‖Δ‖`` and ``b ≤ w_old / 4``, ``‖v‖ ≤ ‖u‖ + ‖Δ‖``.
    Zero for unchanged rows; no logistic function evaluated (one pass, two norms per row). The sum is
    rounded up by ``2 γ_{n+d+20}``. Rows only the rebuilt table has add a positive semidefinite term and
    are left out (they cannot lower the smallest eigenvalue)."""
    n, d = len(X_old), X.shape[1]
    th = float(np.linalg.norm(theta_h)) * (1 + gamma(len(theta_h) + 2))
    block = _block_rows(d)
    ubuf, vbuf = np.empty((min(n, block), d)), np.empty((min(n, block), d))
    total = 0.0
    for a in range(0, n, block):
        e = min(n, a + block)
        u, v = ubuf[: e - a], vbuf[: e - a]
        np.copyto(u, X[a:e])
        np.copyto(v, X_old[a:e])
        v -= u  # −Δ
        nu = np.sqrt(np.einsum("ij,ij->i", u, u) + float(icpt))
        nd = np.sqrt(np.einsum("ij,ij->i", v, v))
        wn, wo = w[a:e], w_old[a:e]
        rows = (0.25 * np.abs(wn - wo) + SIGMA2_MAX * th * wo * nd) * nu * nu + 0.25 * wo * nd * (2 * nu + nd)
        total += float(rows.sum())
    return total * (1 + 2 * gamma(len(X) + d + 20))


def _certificate(g: float, err: float, theta, theta_h, lam, xmax: float, C: float) -> dict:
    """:func:`~.factored.certify` with the curvature floor ``lam``, or the penalty-only bound (``lam`` None)."""
    if lam is None:
        return {"bound": C * (g + err), "modulus": 1.0 / C, "radius": np.inf, "rounding": err,
                "hessian_point_distance": float(np.linalg.norm(theta - theta_h))}  # fmt: skip
    return certify(g, err, theta, theta_h, lam, xmax, C)


def newton_to_table(est, X, y, w, bound: float = 1e-6, max_iter: int = 25) -> tuple:
    """Newton from ``est.module_`` to the optimum on ``(X, y, w)``; returns ``(module, info)``.

    The first steps use the data Hessian the fit kept (the old table's, at ``θ_h``) as preconditioner, and
    a certified floor on the rebuilt table's curvature: the kept Hessian's smallest eigenvalue
    (:func:`~.factored.curvature_floor`) minus a bound on how much the changed, vanished and rebuilt rows
    moved it (:func:`perturbation`: one pass over both tables, taken only when the penalty-only bound
    cannot reach ``bound``). A step that does not cut the gradient tenfold forms the rebuilt table's own
    Hessian (exact Newton and its floor from then on).

    ``info``: ``iterations`` (gradient passes after the first), ``hessian_passes`` (rebuilt-table
    Hessians formed), ``residual_grad_norm`` (normalised by ``Σw``), ``strong_convexity`` (normalised),
    ``certified_bound``, ``bound_terms``, ``newton_state`` (for later erasures; None unless the
    rebuilt table's Hessian was formed).
    """
    C, icpt = float(est.C), bool(est.fit_intercept)
    y64, w64 = np.asarray(y, dtype=np.float64), np.asarray(w, dtype=np.float64)
    theta = _flat(est.module_)
    cv = _Curvature(est, X, w64, theta, C, icpt)
    G, abs_r, xmax = _first_pass(X, y64, w64, theta, C, icpt)
    err = gradient_rounding(X.shape, w64, theta, C, xmax, abs_r)
    gn, it = float(np.linalg.norm(G)), 0
    cert = _certificate(gn, err, theta, cv.theta_h, cv.lam, xmax, C)
    while it < max_iter and cert["bound"] > bound and gn > err:  # (below err no step can help)
        it += 1
        cand = theta - cho_solve(cv.fac, G)
        G1, err1 = residual_grad(X, y64, w64, cand, C, icpt, xmax)
        g1 = float(np.linalg.norm(G1))
        if cv.lam is None and C * err1 > 0.5 * bound and g1 <= 0.1 * gn:
            cv.use_kept_floor()  # the penalty-only bound cannot reach ``bound``: its rounding term is above
        c1 = _certificate(g1, err1, cand, cv.theta_h, cv.lam, xmax, C)
        if g1 > 0.1 * gn and c1["bound"] > bound:  # the curvature used is stale: re-form it here
            cv.reform(cand if g1 < gn else theta)
            if g1 >= gn:  # uphill with the old curvature: retry from the same point
                cert = _certificate(gn, err, theta, cv.theta_h, cv.lam, xmax, C)
                continue
            c1 = _certificate(g1, err1, cand, cv.theta_h, cv.lam, xmax, C)
        theta, G, gn, err, cert = cand, G1, g1, err1, c1
    if cert["bound"] > bound and cv.lam is None:  # stopped above the target with the penalty only
        cv.use_kept_floor()
        cert = _certificate(gn, err, theta, cv.theta_h, cv.lam, xmax, C)
    info = newton_info(it, cv.passes, gn, float(w64.sum()), cert, xmax, C, cv.lam)
    info["bound_terms"]["curvature"] = cv.label()
    if cv.delta is not None:
        info["bound_terms"]["curvature_perturbation"] = cv.delta
    info["newton_state"] = None
    if cv.exact:
        info["newton_state"] = {"theta": theta.copy(), "grad": G, "theta_h": cv.theta_h, "S": cv.S,
                                "xmax": xmax, "weights": weights_digest(np.asarray(w, dtype=np.float32))}  # fmt: skip
    return _module(est.module_, theta), info


class _Curvature:
    """What a rebuild solve steps and certifies with: the kept Hessian (the old table's; its certified
    floor for the rebuilt table made on demand, :meth:`use_kept_floor`) or the rebuilt table's own."""

    def __init__(self, est, X, w64, theta, C: float, icpt: bool) -> None:
        self.est, self.X, self.w64, self.icpt = est, X, w64, icpt
        kept = _kept(est, len(theta))
        if kept is not None:
            (self.S, self.theta_h), self.exact = kept, False
        else:
            self.S, self.theta_h, self.exact = data_hessian(X, w64, theta, icpt), theta.copy(), True
        self.eye = np.eye(len(theta)) / C
        self.fac = cho_factor(self.S + self.eye)
        self.lam = curvature_floor(self.S, len(X)) if self.exact else None  # kept: only when needed
        self.delta, self.passes = None, int(self.exact)

    def use_kept_floor(self) -> None:
        """The rebuilt table's curvature floor from the kept Hessian (one :func:`perturbation` pass)."""
        w_old = np.asarray(self.est.sample_weight_, dtype=np.float64)
        self.delta = perturbation(self.X, self.w64, self.est.X_train_, w_old, self.theta_h, self.icpt)
        self.lam = max(curvature_floor(self.S, len(self.est.X_train_)) - self.delta, 0.0)

    def reform(self, at) -> None:
        """The rebuilt table's own Hessian at ``at`` (exact Newton and its floor from then on)."""
        self.S, self.theta_h, self.exact = data_hessian(self.X, self.w64, at, self.icpt), at.copy(), True
        self.fac, self.lam = cho_factor(self.S + self.eye), curvature_floor(self.S, len(self.X))
        self.passes += 1

    def label(self) -> str:
        if self.exact:
            return "rebuilt table"
        return "penalty only" if self.lam is None else "kept Hessian minus the rebuild's perturbation"


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
