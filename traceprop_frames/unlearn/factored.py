"""Newton erasure from the Hessian the logistic regression's fit kept (``newton_state_``): no ``O(n d²)`` pass.

The fit (:func:`traceprop_frames.estimators.newton.newton_fit`) leaves the unnormalised data Hessian
``S`` (at ``θ_h``, the last Newton iterate before convergence), the gradient ``∇F`` at the fitted ``θ``
and ``xmax ≥ max_i ‖x̃_i‖``. Erasing samples ``f``:

1. the remaining objective's gradient at ``θ`` is ``∇F(θ) − Σ_f w_i (σ(x̃_i·θ) − y_i) x̃_i`` — no pass;
2. its Hessian is the rank-``|f|`` downdate ``S − Σ_f w_i σ′(x̃_i·θ_h) x̃_i x̃_iᵀ + I/C``, refactored by
   Cholesky (``O(|f| d² + d³)``, independent of ``n``);
3. Newton corrections ``θ ← θ − H⁻¹ ∇F_rem(θ)``, each followed by one blocked gradient pass over the
   remaining rows (``O(n d)``) that measures ``∇F_rem`` at the new point, until the certified bound
   (:func:`certify`) is below ``bound``. A correction that does not cut the gradient tenfold re-forms
   the Hessian at the current point (one ``O(n d²)`` pass; counted in the result).

The certificate is always measured by a pass at the final parameters. Its bound uses the curvature the
data give near the optimum, not only the penalty's ``1/C``: one correction is then enough at the
benchmark's sizes, where the penalty-only bound ``C ‖∇F_rem‖`` needed two or three.

The closed form of these passes is checked against autograd through the estimator's own
``per_sample_loss`` and ``penalty`` (on the forgotten rows and a fixed random sample of the others) before
the certificate relies on it.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from scipy.linalg import cho_factor, cho_solve

from traceprop_frames.estimators.newton import (
    EPS,
    _bce,
    _rows,
    _sigmoid,
    data_hessian,
    gamma,
    loss_grad,
    residual_grad,
    row_norm_max,
    weights_digest,
)
from traceprop_frames.lineage.refs import union_ids

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


def _check_closed_form(est, m: torch.nn.Module, theta, rows) -> None:
    """Raise if the blocked closed form disagrees with the estimator's own objective on ``rows``.

    ``m`` is the module holding ``theta``; it is left as it was (no gradients kept).
    """
    from traceprop_frames.errors import UnlearningError

    X, y, wr = est.X_train_[rows], est.y_train_[rows], np.ones(len(rows))
    flags = [p.requires_grad for p in m.parameters()]
    for p in m.parameters():
        p.requires_grad_(True)
    own = est.objective(m, X, y, wr)
    own.backward()
    g_own = torch.cat([p.grad.reshape(-1) for p in m.parameters()]).double().numpy()
    for p, flag in zip(m.parameters(), flags):
        p.grad = None
        p.requires_grad_(flag)
    F, G = loss_grad(X, y.astype(np.float64), wr, theta, float(est.C), est.fit_intercept)
    W, f_own = float(wr.sum()), float(own.detach())
    if abs(F / W - f_own) > 1e-9 * (1 + abs(f_own)) or not np.allclose(G / W, g_own, rtol=1e-7, atol=1e-11):
        raise UnlearningError(
            f"{type(est).__name__}'s objective is not the closed form the fast Newton erasure assumes; "
            "erase with method='retrain'"
        )


def curvature_floor(S: np.ndarray, n_rows: int) -> float:
    """A lower bound on ``λ_min(S)`` for the float64 ``S`` the passes and downdates accumulated.

    Subtracts the worst-case rounding of summing ``n_rows`` rank-one terms and of the downdates,
    ``2 γ_{n+p} tr(S)``, and of the eigenvalue solver, ``p u ‖S‖ ≤ p u tr(S)``.
    """
    p = len(S)
    tr = float(np.trace(S))
    lam = float(np.linalg.eigvalsh(S)[0])
    return max(lam - (2 * gamma(n_rows + p + 10) + p * EPS) * tr, 0.0)


def newton_info(it: int, passes: int, gn: float, W: float, cert: dict, xmax: float, C: float,
                lam: float | None) -> dict:  # fmt: skip
    """What a certified Newton solve reports: iterations, the residual gradient and the bound with its
    terms (``cert`` from :func:`certify`, or the penalty-only bound with ``radius`` inf and ``lam`` None)."""
    return {
        "iterations": it,
        "hessian_passes": passes,
        "residual_grad_norm": gn / W,
        "strong_convexity": cert["modulus"] / W,
        "certified_bound": cert["bound"],
        "bound_terms": {
            "ball_radius": None if np.isinf(cert["radius"]) else cert["radius"],
            "row_norm_max": xmax,
            "curvature_floor": lam,
            "hessian_point_distance": cert["hessian_point_distance"],
            "gradient_rounding": cert["rounding"],
            "penalty_only_bound": C * (gn + cert["rounding"]),
        },
    }


def certify(g: float, err: float, theta, theta_h, lam: float, xmax: float, C: float) -> dict:
    """Certified ``‖θ − θ*‖`` from a measured gradient norm ``g`` (rounding bound ``err``) at ``θ``.

    ``F_rem`` is ``1/C``-strongly convex everywhere, so ``θ*`` lies in the ball ``B(θ, R₀)``,
    ``R₀ = C (g + err)``. On ``B(θ, R)`` every logit ``x̃_i·ϑ`` is within ``ρ = xmax (R + ‖θ − θ_h‖)`` of
    ``x̃_i·θ_h``, and ``σ′(a) ≥ σ′(b) e^{−|a−b|}`` (``|d ln σ′/dz| ≤ 1``), so there ``∇²F_rem ⪰ I/C +
    e^{−ρ} S_rem(θ_h)``: modulus ``μ(R) = 1/C + e^{−ρ} lam`` (``lam`` from :func:`curvature_floor`).
    Strong convexity on a ball holding both points gives ``‖θ − θ*‖ ≤ (g + err) / μ(R)``, a smaller ball;
    repeated while it shrinks. Returns ``bound``, ``modulus`` (``μ`` of the last ball), ``radius`` (that
    ball's) and the terms.
    """
    gt = g + err
    dh = float(np.linalg.norm(np.asarray(theta) - np.asarray(theta_h)))
    ball, mu = np.inf, 1.0 / C
    R = C * gt
    for _ in range(60):
        m = 1.0 / C + float(np.exp(-xmax * (R + dh))) * lam
        if gt / m >= R * (1 - 1e-9):
            break
        ball, mu, R = R, m, gt / m
    return {"bound": R, "modulus": mu, "radius": ball, "rounding": err, "hessian_point_distance": dh}


def erase(est, new: np.ndarray, w_before, w_after, bound: float, max_iter: int):
    """Erase training samples ``new`` (all active); returns ``(module, info)``.

    ``info``: ``iterations`` (gradient passes), ``hessian_passes`` (full Hessians re-formed),
    ``residual_grad_norm`` (``‖∇L_rem‖``, normalised objective, measured), ``strong_convexity`` (``μ / Σw``,
    see :func:`certify`), ``certified_bound``, ``bound_terms``, ``forget_loss_before``/``_after``,
    ``newton_state`` (for the next erasure).
    """
    st = est.newton_state_
    C, icpt = float(est.C), bool(est.fit_intercept)
    X = est.X_train_
    y, w_after = np.asarray(est.y_train_), np.asarray(w_after)  # float32: the passes widen per block
    xmax = st.get("xmax") or row_norm_max(X, icpt)  # model folders saved before xmax was kept
    xf, yf = _rows(X, new, icpt), y[new].astype(np.float64)
    wf = np.asarray(w_before)[new].astype(np.float64)
    z0 = xf @ st["theta"]
    G = st["grad"] - (wf * (_sigmoid(z0) - yf)) @ xf  # at θ0, from the fit's pass: steers the first step
    ph = _sigmoid(xf @ st["theta_h"])
    S = st["S"] - xf.T @ (xf * (wf * ph * (1 - ph))[:, None])  # the rank-|new| downdate
    steps = _newton_steps(X, y, w_after, C, icpt, xmax, st["theta"], G, S, st["theta_h"], bound, max_iter)
    theta, G, gn, it, passes, cert, S, theta_h, lam = steps
    after = _module(est.module_, theta)
    _check_closed_form(est, after, theta, _probe_rows(new, w_after, len(X)))
    W = float(np.sum(w_after, dtype=np.float64))
    info = {
        **newton_info(it, passes, gn, W, cert, xmax, C, lam),
        "forget_loss_before": float(_bce(z0, yf).mean()),
        "forget_loss_after": float(_bce(xf @ theta, yf).mean()),
        "newton_state": {
            "theta": theta.copy(),
            "grad": G,
            "theta_h": theta_h,
            "S": S,
            "xmax": xmax,
            "weights": weights_digest(w_after),
        },  # fmt: skip
    }
    return after, info


def _newton_steps(X, y, w_after, C, icpt, xmax, theta, G, S, theta_h, bound, max_iter):
    """Newton steps preconditioned by the downdated Hessian ``S`` until the certified bound is met (or
    the gradient is within its own rounding bound); the Hessian is re-formed where it went stale.
    Returns ``(theta, G, ‖G‖, steps, hessian passes, certificate, S, theta_h, curvature floor)``."""
    n = len(X)
    eye = np.eye(len(theta)) / C
    fac, lam = cho_factor(S + eye), curvature_floor(S, n)
    gn, it, passes, cert = float(np.linalg.norm(G)), 0, 0, None
    # stop at the bound, or once the gradient is within its own rounding bound (no step can improve it)
    while it < max(int(max_iter), 1) and (cert is None or (cert["bound"] > bound and gn > cert["rounding"])):
        it += 1
        cand = theta - cho_solve(fac, G)
        G1, err = residual_grad(X, y, w_after, cand, C, icpt, xmax)
        g1 = float(np.linalg.norm(G1))
        c1 = certify(g1, err, cand, theta_h, lam, xmax, C)
        if g1 > 0.1 * gn and c1["bound"] > bound:  # the kept Hessian is stale here: re-form it
            at = cand if g1 < gn else theta
            S, theta_h = data_hessian(X, w_after, at, icpt), at.copy()
            fac, lam, passes = cho_factor(S + eye), curvature_floor(S, n), passes + 1
            if g1 >= gn:  # the step went uphill: retry it from the same point with the exact Hessian
                continue
            c1 = certify(g1, err, cand, theta_h, lam, xmax, C)
        theta, G, gn, cert = cand, G1, g1, c1
    if cert is None:  # every step went uphill: certify the starting point by a pass there
        G, err = residual_grad(X, y, w_after, theta, C, icpt, xmax)
        gn = float(np.linalg.norm(G))
        cert = certify(gn, err, theta, theta_h, lam, xmax, C)
    return theta, G, gn, it, passes, cert, S, theta_h, lam


def _probe_rows(new: np.ndarray, w_after: np.ndarray, n: int) -> np.ndarray:
    """The rows the closed form is checked on: some forgotten, some remaining (seeded)."""
    rng = np.random.default_rng(0)
    others = rng.choice(n, min(2 * CHECK_ROWS, n), replace=False)
    return union_ids(new[:CHECK_ROWS], others[w_after[others] > 0][:CHECK_ROWS])
