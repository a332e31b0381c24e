"""Remove training samples' influence from a fitted estimator without retraining from scratch.

The estimator contract (``traceprop_frames.estimators``) this module relies on, after ``fit``:
``module_`` (``torch.nn.Module`` whose output is the positive-class logit), ``X_train_`` (float32,
row ``i`` = training sample ``i``), ``y_train_`` (float32 in {0, 1}), ``sample_weight_`` (1.0 active,
0.0 erased), ``lineage_`` (RowLineage of the training rows or None), ``store_`` (GradientStore or None),
``per_sample_loss(module, X, y)``, ``penalty(module)`` and ``_fit_module(X, y, sample_weight)``. The
training objective is exactly ``(w * per_sample_loss).sum() / w.sum() + penalty(module)``.

Methods
-------
``"newton"``
    Newton steps on the remaining-data objective, iterated until the gradient norm is below ``tol``.
    The Hessian is ``Jᵀ diag(w σ′) J / Σw + ∇²penalty`` (exact for an affine logit); the full-data part
    is formed once (:func:`prepare_unlearning`, or the first erasure) and *downdated* for the forgotten
    samples, so an erasure costs ``|forget|·d²`` plus a few gradients; a step that fails to cut the
    gradient tenfold switches to exact Hessians. The residual gradient in the evidence is always
    computed at the stored parameters, by autograd through the estimator's own ``per_sample_loss`` and
    ``penalty`` or by the closed form that was checked against them. For a strongly convex objective (logistic regression with an L2
    penalty) the distance to the exact retrained optimum is certified:
    ``‖θ′ − θ*‖ ≤ ‖∇L_rem(θ′)‖ / λ`` with ``λ`` the smallest eigenvalue of the penalty's Hessian.
``"gradient"``
    Gradient correction for non-convex models (the MLP): subtract the forgotten samples' share of the
    gradient, preconditioned by the remaining data's Gauss-Newton curvature (``steps`` CG iterations,
    ``damping``); or, with ``eta``, plain gradient steps on the remaining objective (the seeds' form).
    Nothing is certified; the evidence is measured.
``"retrain"``
    Exact: ``_fit_module`` on the remaining data from scratch.
``"sketch"``
    The parameters a training sketch (``est.sketch_``, from
    :func:`traceprop_frames.attribution.sketch.fit_sketch`) predicts for the run without every erased
    sample; the parameters record the degree, ``m`` and the estimated error (see :func:`_sketch`).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.func import functional_call

from traceprop_frames.errors import UnlearningError
from traceprop_frames.estimators.newton import weights_digest
from traceprop_frames.lineage.events import lineage_step
from traceprop_frames.lineage.refs import sorted_unique
from traceprop_frames.unlearn import factored
from traceprop_frames.unlearn.objective import (
    Objective,
    _PenaltyOnly,
    check_fitted,
    is_convex,
    parameter_fingerprint,
)
from traceprop_frames.unlearn.request import _record_erasure, certificate_body, forget_from_request

METHODS = ("newton", "gradient", "retrain", "sketch")
DEFAULTS = {
    "newton": {"tol": 1e-9, "max_iter": 25, "bound": 1e-6},
    "gradient": {"steps": 10, "damping": 1e-3, "eta": None, "curvature_samples": 2048},
    "retrain": {},
    "sketch": {"degree": None},
}


@dataclass
class UnlearnResult:
    """What one unlearning run did and measured (the evidence section of a certificate)."""

    method: str
    params: dict
    forget: np.ndarray  # training indices newly forgotten by this run
    already_removed: np.ndarray  # requested indices that were erased earlier
    n_train: int
    n_active_before: int
    n_active_after: int
    iterations: int = 0
    seconds: float = 0.0
    residual_grad_norm: float | None = None
    strong_convexity: float | None = None
    certified_bound: float | None = None
    forget_loss_before: float | None = None
    forget_loss_after: float | None = None
    holdout: dict | None = None
    fingerprint_before: str = ""
    fingerprint_after: str = ""
    n_parameters: int = 0
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------- the three methods
def _solve(H: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    H = 0.5 * (H + H.T)
    L, info = torch.linalg.cholesky_ex(H)
    return torch.cholesky_solve(g[:, None], L)[:, 0] if int(info) == 0 else torch.linalg.lstsq(H, g).solution


def _newton(
    obj: Objective,
    theta: torch.Tensor,
    tol: float,
    max_iter: int,
    H0: torch.Tensor | None = None,
    refresh=None,
) -> tuple[torch.Tensor, int, int]:
    """Damped Newton on the objective until ``‖∇L‖ ≤ tol`` (or ``max_iter`` steps).

    ``H0`` (optional) is an approximate Hessian (the cached full-data Hessian downdated for the forgotten
    samples): the first step uses it as is, later steps refine it with BFGS updates from the observed
    gradient changes (superlinear convergence, ``d²`` work a step instead of ``n·d²``). If a step fails to
    reduce the gradient norm by a quarter, ``refresh(θ)`` (when given) rebuilds the approximation from the
    samples whose curvature changed most; if that fails too, exact Hessians are formed from then on.
    Returns ``(θ, steps, exact Hessians formed)``.
    """
    H, n_exact, f_prev, refreshed = H0, 0, None, False
    g = obj.grad(theta)
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007
        gn = float(g.norm())
        if gn <= tol:
            return theta, it - 1, n_exact
        if H is None:
            H, n_exact = obj.hessian(theta), n_exact + 1
        step = _solve(H, g)
        f0 = float(obj.loss(theta)) if f_prev is None else f_prev
        t = 1.0
        while True:
            cand = (theta - t * step).detach()
            f1 = float(obj.loss(cand))
            if f1 <= f0 + 1e-12 * abs(f0) or t < 1e-6:
                break
            t *= 0.5
        s_k = cand - theta
        theta, f_prev = cand, f1
        g_new = obj.grad(theta)
        if n_exact or (H0 is not None and float(g_new.norm()) > 0.75 * gn):
            if refresh is not None and not refreshed and not n_exact:
                H, refreshed = refresh(theta), True
            else:
                H = None  # exact Newton from here on: a fresh Hessian each step
        else:  # BFGS update of the approximate Hessian
            y_k = g_new - g
            sy = float(s_k @ y_k)
            Hs = H @ s_k
            sHs = float(s_k @ Hs)
            if sy > 1e-12 * float(s_k.norm() * y_k.norm()) and sHs > 0:
                H = H + torch.outer(y_k, y_k) / sy - torch.outer(Hs, Hs) / sHs
        g = g_new
    return theta, it, n_exact


def prepare_unlearning(est) -> dict:
    """Form and cache what Newton erasures reuse (``est._unlearn_hessian_``): the full-data Hessian at the
    current parameters, the Jacobian of the logits when it is ``[X, 1]``, and the penalty's Hessian.

    Optional: the first Newton erasure does it otherwise. With the cache, an erasure costs a downdate
    over the forgotten samples and a few gradient evaluations instead of ``n·d²`` work.
    """
    check_fitted(est)
    w = np.asarray(est.sample_weight_, dtype=np.float32).copy()
    obj = Objective(est, est.module_, est.X_train_, est.y_train_, w, affine=is_convex(est))
    theta = obj.flat(est.module_)
    fast = obj.enable_fast_path(theta)
    H1 = obj.penalty_hessian(theta)
    saved = est.sample_weight_
    est.sample_weight_ = w * 0.5  # does the penalty scale as 1/Σw (both estimators' L2 penalties do)?
    try:
        H2 = Objective(est, est.module_, est.X_train_[:1], est.y_train_[:1], w[:1] + 1).penalty_hessian(theta)
    finally:
        est.sample_weight_ = saved
    W = float(w.sum())
    cache = {
        "x_id": id(est.X_train_),
        "w": w,
        "theta": theta,
        "S": obj.data_hessian(theta),
        "J": obj._J if fast else None,
        "pen_unit": H1 * W if torch.allclose(H2, 2 * H1, rtol=1e-9, atol=1e-15) else None,
    }
    est._unlearn_hessian_ = cache
    return cache


def _gradient(
    obj: Objective,
    theta: torch.Tensor,
    g_all: torch.Tensor | None,
    steps: int,
    eta: float | None,
    damping: float,
    curvature_samples: int | None = None,
) -> torch.Tensor:
    """Gradient correction for non-convex models.

    Default (``eta=None``): remove the forgotten samples' share of the gradient, preconditioned by the
    curvature of the remaining data — ``θ′ = θ − (G + δI)⁻¹ (∇L_rem(θ) − ∇L_all(θ))`` with ``G`` the
    generalised Gauss-Newton matrix of the remaining objective, solved by ``steps`` conjugate-gradient
    iterations (matrix-free: a jvp and a vjp of the logits per iteration; the curvature is estimated on
    ``curvature_samples`` random remaining samples, the gradients use all of them). For a model at an optimum of
    a convex objective this is one Newton step; for an early-stopped network it moves the parameters by
    the forget set's own influence rather than towards a different optimum (which overshoots: measured
    in benchmarks/bench_unlearn.py). With ``eta`` given: ``steps`` plain gradient steps of size ``eta``
    on the remaining objective (the seeds' form).
    """
    if eta is not None:
        for _ in range(int(steps)):
            theta = (theta - eta * obj.grad(theta)).detach()
        return theta
    b = (obj.grad(theta) - g_all).detach()
    active = np.flatnonzero(obj.w.numpy() > 0)
    if curvature_samples and len(active) > curvature_samples:  # curvature from a fixed random subsample
        active = np.sort(np.random.default_rng(0).choice(active, int(curvature_samples), replace=False))
    sub = obj._subset(active)
    logits, vjp_fn = torch.func.vjp(sub.logits, theta)

    def jvp_fn(v: torch.Tensor) -> torch.Tensor:
        return torch.func.jvp(sub.logits, (theta,), (v,))[1]

    with torch.no_grad():
        p = torch.sigmoid(logits)
        s = sub.w * p * (1 - p) / sub.w.sum()
    wrapped = _PenaltyOnly(obj.est, obj.module)
    pen_grad = torch.func.grad(lambda t: functional_call(wrapped, obj._params(t), ()))

    def hvp(v: torch.Tensor) -> torch.Tensor:
        return vjp_fn(s * jvp_fn(v))[0] + torch.func.jvp(pen_grad, (theta,), (v,))[1] + damping * v

    x = torch.zeros_like(b)
    r = b.clone()
    d = r.clone()
    rs = r @ r
    for _ in range(int(steps)):
        Ad = hvp(d).detach()
        alpha = rs / (d @ Ad)
        x = x + alpha * d
        r = r - alpha * Ad
        rs_new = r @ r
        if float(rs_new.sqrt()) <= 1e-10 * float(b.norm()):
            break
        d = r + (rs_new / rs) * d
        rs = rs_new
    return (theta - x).detach()


def _fingerprint(module) -> str:
    from traceprop_frames.attribution.gradients import fingerprint

    return fingerprint(module)


def _sketch(est, w_after: np.ndarray, degree) -> tuple[dict, dict]:
    """Predicted parameters of the sketched run with weights ``w_after`` (every erased sample deleted).

    Returns ``(state_dict, record)``; the record's ``estimated_error`` is the Euclidean norm (parameter
    space) of the sampling standard error over the sketch's directions combined with the norm of the
    last Taylor term included (a truncation proxy: the terms decay geometrically when the series
    converges).
    """
    from traceprop_frames.attribution.sketch import predict_deletion

    sk = getattr(est, "sketch_", None)
    if sk is None:
        raise UnlearningError(
            "method='sketch' needs a training sketch: run traceprop_frames.attribution.fit_sketch(est) first"
        )
    fp = _fingerprint(est.module_)
    if fp != sk.model_fingerprint and fp not in sk.applied:
        raise UnlearningError(
            "the model is neither the sketch's base run nor a model the sketch produced (it changed by "
            "another method); rebuild the sketch with fit_sketch(est)"
        )
    pred = predict_deletion(None, sk, np.flatnonzero(w_after == 0), degree=degree)
    last = pred.term_norms[-1] if pred.degree else 0.0
    se = float(np.linalg.norm(pred.stderr))
    names = [n for n, _ in est.module_.named_parameters()]
    state = dict(zip(names, sk.unflat(pred.value)))
    record = {
        "degree": pred.degree,
        "m": pred.m,
        "estimated_error": float(np.hypot(se, last)),
        "sampling_stderr": se,
        "last_term_norm": float(last),
        "error_estimate": "parameter-space Euclidean norm: sample std over the m directions / sqrt(m), "
        "combined with the norm of the last Taylor term included (truncation proxy)",
    }
    return state, record


def _accuracy(est, module: torch.nn.Module, X, y) -> float:
    classes = getattr(est, "classes_", None)
    y = np.asarray(y)
    y01 = (
        (y == classes[1]) if classes is not None and len(classes) == 2 and not np.isin(y, [0, 1]).all() else y
    )
    dtype = next(module.parameters()).dtype
    with torch.no_grad():
        logit = module(torch.as_tensor(np.asarray(X, dtype=np.float64), dtype=dtype)).reshape(-1)
    return float(((logit.numpy() >= 0) == (np.asarray(y01) > 0.5)).mean())


def run_unlearning(
    est, forget, method: str | None = None, *, holdout=None, **params
) -> tuple[torch.nn.Module, np.ndarray, UnlearnResult]:
    """Compute the unlearned module without changing ``est``.

    Returns ``(module_after, sample_weight_after, result)``. Samples already erased (weight 0) are
    reported in ``result.already_removed`` and do not count as new; if none is new, the module is
    returned unchanged with ``method="none"``.
    """
    check_fitted(est)
    sel = select_forget_set(est, forget)
    method, params = _method_and_params(est, method, params)
    result = _start_result(est, sel, method, params, holdout)
    if sel.new.size == 0:
        result.fingerprint_after = result.fingerprint_before
        if result.holdout is not None:
            result.holdout.update(accuracy_after=result.holdout["accuracy_before"], delta=0.0)
        return est.module_, sel.w_after, result
    if method == "newton" and factored.applicable(est, sel.w_before):  # the fit kept its Hessian
        after = _solve_factored(est, sel, params, result)
    else:
        after = _solve_objective(est, sel, method, params, result)
    return _finish(est, after, sel.w_after, result, holdout)


@dataclass
class ForgetSet:
    """The samples an erasure forgets: ``new`` (still active), ``already`` (erased before), and the sample
    weights before and after (the forgotten samples' set to 0)."""

    new: np.ndarray
    already: np.ndarray
    w_before: np.ndarray
    w_after: np.ndarray


def select_forget_set(est, forget) -> ForgetSet:
    """Step 1 of an erasure: the requested training samples, split into new and already erased."""
    n = len(est.X_train_)
    forget = sorted_unique(np.asarray(forget, dtype=np.int64).reshape(-1))
    bad = forget[(forget < 0) | (forget >= n)]
    if bad.size:
        raise UnlearningError(f"training sample indices outside 0..{n - 1}: {bad[:20].tolist()}")
    w_before = np.asarray(est.sample_weight_, dtype=np.float32).copy()
    removed = w_before[forget] == 0
    new, already = forget[~removed], forget[removed]
    w_after = w_before.copy()
    w_after[new] = 0.0
    return ForgetSet(new, already, w_before, w_after)


def _method_and_params(est, method: str | None, params: dict) -> tuple[str, dict]:
    """The method (default: newton for convex models, gradient otherwise) and its full parameters."""
    method = method or ("newton" if is_convex(est) else "gradient")
    if method not in METHODS:
        raise UnlearningError(f"unknown unlearning method {method!r}; choose one of {list(METHODS)}")
    unknown = set(params) - set(DEFAULTS[method])
    if unknown:
        raise UnlearningError(
            f"method {method!r} takes parameters {sorted(DEFAULTS[method])}, not {sorted(unknown)}"
        )
    return method, {**DEFAULTS[method], **params}


def _start_result(est, sel: ForgetSet, method: str, params: dict, holdout) -> UnlearnResult:
    """The result record before solving: the request's counts, the model before, holdout accuracy."""
    module = est.module_
    result = UnlearnResult(
        method=method if sel.new.size else "none",
        params=params if sel.new.size else {},
        forget=sel.new,
        already_removed=sel.already,
        n_train=len(est.X_train_),
        n_active_before=int((sel.w_before > 0).sum()),
        n_active_after=int((sel.w_after > 0).sum()),
        fingerprint_before=parameter_fingerprint(module),
        n_parameters=sum(p.numel() for p in module.parameters()),
    )
    if holdout is not None:
        result.holdout = {"n": len(holdout[1]), "accuracy_before": _accuracy(est, module, *holdout)}
    return result


def _solve_factored(est, sel: ForgetSet, params: dict, result: UnlearnResult) -> torch.nn.Module:
    """Step 2 (convex, the fit's Hessian kept): the factored Newton solve and its certified bound."""
    t0 = time.perf_counter()
    after, info = factored.erase(
        est, sel.new, sel.w_before, sel.w_after, float(params["bound"]), int(params["max_iter"])
    )
    result.seconds = time.perf_counter() - t0
    result.iterations = info.pop("iterations")
    result.extra["hessian_passes"] = info.pop("hessian_passes")
    result.extra["newton_state"] = info.pop("newton_state")
    result.params = {**result.params, "bound_terms": info.pop("bound_terms")}
    for k, v in info.items():
        setattr(result, k, v)
    return after


def _solve_objective(est, sel: ForgetSet, method: str, params: dict, result: UnlearnResult):
    """Step 2 (every other case): solve on the remaining samples' objective, then measure the evidence."""
    module, convex = est.module_, is_convex(est)
    # the non-certified gradient correction runs in the model's own precision (float32 for the MLP)
    native = next(module.parameters()).dtype
    ftype = torch.float32 if method == "gradient" and native == torch.float32 else torch.float64
    before = _before_weights_change(est, method, params, sel.w_before, ftype)
    saved_w = est.sample_weight_
    est.sample_weight_ = sel.w_after  # the penalty may scale with the number of active samples
    try:
        t0 = time.perf_counter()
        obj = Objective(est, module, est.X_train_, est.y_train_, sel.w_after, affine=convex, dtype=ftype)
        theta0 = obj.flat(module)
        after = _SOLVERS[method](est, obj, theta0, sel, params, result, before)
        result.seconds = time.perf_counter() - t0
        measure_evidence(obj, theta0, after, sel.new, convex, result)
    finally:
        est.sample_weight_ = saved_w
    if method == "retrain" and getattr(after, "_newton_state", None) is not None:
        state = after.__dict__.pop("_newton_state")
        result.extra["newton_state"] = {**state, "weights": weights_digest(sel.w_after)}
    return after


def _before_weights_change(est, method: str, params: dict, w_before, ftype):
    """What a solve needs from the full data: newton's Hessian cache, gradient's full-data gradient."""
    if method == "newton":  # reuse (or build) the full-data Hessian, before the weights change
        cache = getattr(est, "_unlearn_hessian_", None)
        if not (
            cache is not None and cache["x_id"] == id(est.X_train_) and np.array_equal(cache["w"], w_before)
        ):
            cache = prepare_unlearning(est)
        return cache
    if method == "gradient" and params["eta"] is None:  # the full-data gradient, before the weights change
        full = Objective(est, est.module_, est.X_train_, est.y_train_, w_before, dtype=ftype)
        return full.grad(full.flat(est.module_)).detach()
    return None


def _solve_newton(est, obj, theta0, sel: ForgetSet, params, result, cache):
    """Newton steps from θ with the cached full-data Hessian downdated by the forgotten samples."""
    convex = is_convex(est)
    W_rem = float(obj.w.sum())
    if cache["pen_unit"] is not None:
        obj._pen_H = (theta0, cache["pen_unit"] / W_rem)
    if cache["J"] is not None:
        obj._J = cache["J"]
        obj.enable_fast_path(theta0, trusted=True)
    w_old = torch.as_tensor(sel.w_before, dtype=torch.float64)
    S_rem = cache["S"] - obj.data_hessian(cache["theta"], idx=sel.new, w=w_old)
    H0 = S_rem / W_rem + obj.penalty_hessian(theta0)
    refresh = _hessian_refresher(obj, cache, S_rem, W_rem) if obj._fast is not None else None
    tol, lam = float(params["tol"]), obj.penalty_min_eig(theta0) if convex else 0.0
    tol = min(tol, float(params["bound"]) * lam) if lam > 0 else tol
    theta, result.iterations, n_exact = _newton(
        obj, theta0, tol, int(params["max_iter"]), H0=H0, refresh=refresh
    )
    result.extra["exact_hessians"] = n_exact
    result.extra["hessian_cache"] = {**cache, "w": sel.w_after, "S": S_rem}
    return obj.to_module(theta, est.module_)


def _hessian_refresher(obj, cache, S_rem, W_rem):
    """``refresh(theta)``: the cached Hessian corrected on the 10% of samples whose curvature moved most."""
    J, theta_c = obj._fast[0], cache["theta"]
    with torch.no_grad():
        p_c = torch.sigmoid(J @ theta_c)
        s_c = obj.w * p_c * (1 - p_c)

    def refresh(theta, share: float = 0.1):
        """The cached Hessian corrected on the 10% of samples whose curvature moved most."""
        with torch.no_grad():
            p = torch.sigmoid(J @ theta)
            ds = obj.w * p * (1 - p) - s_c
            k = max(1, int(share * len(ds)))
            idx = torch.topk(ds.abs(), k).indices
            Jk = J[idx]
            return (S_rem + Jk.T @ (Jk * ds[idx, None])) / W_rem + obj.penalty_hessian(theta)

    return refresh


def _solve_gradient(est, obj, theta0, sel, params, result, g_all):
    theta = _gradient(
        obj, theta0, g_all, params["steps"], params["eta"], float(params["damping"]),
        params["curvature_samples"],
    )  # fmt: skip
    result.iterations = int(params["steps"])
    return obj.to_module(theta, est.module_)


def _solve_sketch(est, obj, theta0, sel, params, result, _):
    state, record = _sketch(est, sel.w_after, params["degree"])
    params.update(record)
    after = copy.deepcopy(est.module_)
    after.load_state_dict(state)
    est.sketch_.applied.add(_fingerprint(after))
    result.iterations = 1
    return after


def _solve_retrain(est, obj, theta0, sel, params, result, _):
    Xr, yr, wr = est.X_train_, est.y_train_, sel.w_after
    if not getattr(est, "_convex", False):  # a mini-batch model fits on the remaining rows alone
        keep = wr > 0  # (zero weights would keep the erased rows' batch slots)
        Xr, yr, wr = Xr[keep], yr[keep], wr[keep]
    result.iterations = 1
    return est._fit_module(Xr, yr, wr)


_SOLVERS = {"newton": _solve_newton, "gradient": _solve_gradient, "sketch": _solve_sketch,
            "retrain": _solve_retrain}  # fmt: skip


def measure_evidence(obj, theta0, after, new: np.ndarray, convex: bool, result: UnlearnResult) -> None:
    """Step 3 of an erasure: the residual gradient on the remaining data (the closed form when it was
    verified against autograd through the estimator's own functions, autograd otherwise), the certified
    bound where the objective is strongly convex, and the forget set's loss before and after."""
    theta_after = obj.flat(after)  # as stored (after the cast back to the module's dtype)
    result.residual_grad_norm = float(obj.grad(theta_after).norm())
    if convex:
        lam = obj.penalty_min_eig(theta_after)
        if lam > 0:
            result.strong_convexity = lam
            result.certified_bound = result.residual_grad_norm / lam
    result.forget_loss_before = float(obj.per_sample(theta0, new).mean())
    result.forget_loss_after = float(obj.per_sample(theta_after, new).mean())


def _finish(est, after, w_after, result: UnlearnResult, holdout):
    result.fingerprint_after = parameter_fingerprint(after)
    if result.holdout is not None:
        acc = _accuracy(est, after, *holdout)
        result.holdout.update(accuracy_after=acc, delta=acc - result.holdout["accuracy_before"])
    return after, w_after, result


# ---------------------------------------------------------------------------- public API
def approximate_unlearn(model, forget, method: str | None = None, *, holdout=None, **params):
    """Return a copy of the fitted estimator ``model`` with the training samples ``forget`` unlearned.

    Parameters
    ----------
    model : fitted estimator or torch.nn.Module
        A ``TorchLogisticRegression`` / ``TorchMLPClassifier`` (or anything following the estimator
        contract in this module's docstring). It is not modified. A raw module (a custom training loop)
        needs ``data=(X_train, y_train)``; it comes back as a corrected copy of the module.
    forget : array-like of int
        Training sample indices (row ``i`` of the training data), e.g. from
        ``store.samples_from_source(path, rows)``.
    method : {"newton", "gradient", "retrain"}, optional
        Default ``"newton"`` for a convex model, ``"gradient"`` otherwise.
    holdout : (X, y), optional
        Transformed held-out inputs and labels; accuracy before/after goes into the evidence.
    **params
        ``tol``, ``max_iter`` (newton); ``steps``, ``eta`` (gradient).

    Returns
    -------
    estimator
        A shallow copy sharing the store and training data, with new ``module_`` and
        ``sample_weight_``, and ``unlearn_result_`` (:class:`UnlearnResult`). The GradientStore is not
        touched: :func:`export_compliance` (with ``store=``) marks the samples removed when it certifies.

    Raises
    ------
    UnlearningError
        Unfitted model, unknown method or parameter, indices outside the training data.

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> from traceprop_frames.estimators import TorchLogisticRegression
    >>> X, y = make_classification(n_samples=300, n_features=5, random_state=0)
    >>> clf = TorchLogisticRegression(C=1.0).fit(X, y)
    >>> after = approximate_unlearn(clf, [0, 1, 2])
    >>> r = after.unlearn_result_
    >>> r.method, r.forget.tolist(), r.certified_bound < 1e-6, clf.sample_weight_[:3].tolist()
    ('newton', [0, 1, 2], True, [1.0, 1.0, 1.0])
    """
    if isinstance(model, torch.nn.Module):  # a raw module from a custom loop: needs its training data
        from traceprop_frames.unlearn.raw_module import wrap

        est = wrap(model, params.pop("data", None), params.pop("weight_decay", 0.0))
        after_est = approximate_unlearn(est, forget, method, holdout=holdout, **params)
        corrected = after_est.module_
        corrected.unlearn_result_ = after_est.unlearn_result_
        corrected._tp_before = est  # what export_compliance certifies against
        return corrected
    after, w_after, result = run_unlearning(model, forget, method, holdout=holdout, **params)
    out = copy.copy(model)
    _set_fitted_state(out, after, w_after, result)
    out.unlearn_result_ = result
    return out


@lineage_step("erase")
def unlearn_estimator(est, source=None, rows=None, *, samples=None, method: str | None = None,
                      holdout=None, key=None, regulations=("EU_AI_ACT_ART26", "GDPR_ART17"), chain=None,
                      refresh: bool = False, **params):  # fmt: skip
    """Erase source rows (or training samples) from a fitted estimator in place; returns a signed Certificate.

    This is the body of ``est.unlearn(...)``.

    Parameters
    ----------
    est : fitted estimator
        Follows the contract in this module's docstring; ``module_`` and ``sample_weight_`` are updated
        in place, ``store_`` (if any) marks the samples removed, ``lineage_`` gains an ``erase`` op and
        ``erasures_`` lists the certificates issued.
    source, rows : path and 0-based data rows, or ``source={path: rows, ...}``
        The erasure request: every training sample whose lineage contains one of these rows is forgotten.
    samples : array-like of int, optional
        Training sample indices to forget directly (with or instead of ``source``).
    method : {"newton", "gradient", "retrain"}, optional
        Default: ``"newton"`` for convex models, ``"gradient"`` otherwise.
    holdout : (X, y), optional
        Transformed held-out data: accuracy before/after goes into the evidence.
    key : Ed25519 private key, PEM path or bytes, optional
        Signing key; default :func:`traceprop_frames.unlearn.certificate.default_key`.
    regulations : sequence of str
        Tags, from ``EU_AI_ACT_ART26``, ``GDPR_ART17``.
    chain : dict, optional
        The certificate's link in the model folder's erasure ledger (:func:`.ledger.next_link`); default:
        the link after the last certificate this estimator issued (``est.ledger_head_``), or entry 1.
    refresh : bool
        Also refill the gradient store without the erased samples (retrain its ensemble members,
        recompute every checkpoint's gradients; :mod:`.refresh`) before signing; the certificate records
        it (``store.refreshed``). Costs about a fit per ensemble member.
    **params
        Method parameters (``tol``, ``max_iter``; ``steps``, ``eta``).

    Returns
    -------
    Certificate
        ``status="no-op"`` when every requested sample had been erased before (nothing changes but,
        with ``refresh``, the store).

    Raises
    ------
    UnknownSourceError, UnknownRowError
        The request names a source or rows the training data does not come from (nothing changes).
    UnlearningError
        Unfitted model, no request, unknown method or parameter; ``refresh`` without a gradient store.
    """
    from traceprop_frames.unlearn.refresh import has_store, refill

    check_fitted(est)
    if refresh and not has_store(est):
        raise UnlearningError(f"refresh=True, but {type(est).__name__} keeps no gradient store to refresh")
    forget, request_sources = requested_samples(est, source, rows, samples)  # 1. select the forget set
    after, w_after, result = run_unlearning(est, forget, method, holdout=holdout, **params)  # 2. 3.
    new_store = refill(est, after, w_after)[0] if refresh else None
    body = certificate_body(
        est, result, lineage=getattr(est, "lineage_", None), request_sources=request_sources,
        samples=None if samples is None else sorted_unique(np.asarray(samples, dtype=np.int64)).tolist(), regulations=regulations,
        previous=_earlier_certificates(est, result), store_refreshed=new_store is not None,
    )  # fmt: skip
    cert, new_lineage = sign_erasure(est, body, key, chain)  # 4. sign
    record_erasure(est, cert, after, w_after, result, new_lineage, new_store)  # 5. record
    return cert


def requested_samples(est, source=None, rows=None, samples=None) -> tuple[np.ndarray, list]:
    """The training samples an erasure request names (source rows through the lineage, and/or sample
    indices), sorted and unique, with the request's source records for the certificate."""
    parts, request_sources = [], []
    if source is not None:
        f, request_sources = forget_from_request(getattr(est, "lineage_", None), source, rows)
        parts.append(f)
    elif rows is not None:
        raise UnlearningError("rows= needs source= (the path of the file the rows come from)")
    if samples is not None:
        parts.append(np.atleast_1d(np.asarray(samples, dtype=np.int64)))
    if not parts:
        raise UnlearningError("nothing to erase: pass source= and rows=, or samples=")
    return sorted_unique(np.concatenate(parts)), request_sources


def _earlier_certificates(est, result: UnlearnResult) -> list[str]:
    """The ids of the certificates that erased some of this request's samples before."""
    done = set(result.already_removed.tolist())
    return [e["certificate_id"] for e in getattr(est, "erasures_", []) if done & set(e["samples"])]


def sign_erasure(est, body: dict, key, chain=None):
    """Step 4: link the body into the ledger (``chain``, else after ``est.ledger_head_``), add the erase
    op to the lineage, and sign; returns ``(certificate, new lineage)``."""
    from traceprop_frames.unlearn.certificate import Certificate

    body["chain"] = dict(
        chain or getattr(est, "ledger_head_", None) or {"sequence": 1, "previous_sha256": None}
    )
    new_lineage = _record_erasure(est, getattr(est, "lineage_", None), body)
    return Certificate.sign(body, key), new_lineage


def record_erasure(est, cert, after, w_after, result: UnlearnResult, new_lineage, new_store=None) -> None:
    """Step 5: the estimator adopts the erasure: ledger head, store (refreshed or marked), parameters,
    weights, lineage and the list of certificates issued."""
    from traceprop_frames.unlearn.ledger import link_of

    log = list(getattr(est, "erasures_", []))
    est.ledger_head_ = link_of(cert)
    if new_store is not None:
        est.store_ = new_store
    if result.forget.size:
        _adopt(est, after, w_after, result, new_lineage)
        log.append({"certificate_id": cert.id, "samples": result.forget.tolist()})
    est.erasures_ = log


def _set_fitted_state(est, after, w_after, result: UnlearnResult) -> None:
    """Parameters, sample weights and the caches later erasures reuse, from one unlearning run."""
    est.module_ = after
    est.sample_weight_ = w_after
    if "hessian_cache" in result.extra:
        est._unlearn_hessian_ = result.extra.pop("hessian_cache")
    if "newton_state" in result.extra:
        est.newton_state_ = result.extra.pop("newton_state")


def _adopt(est, after, w_after, result: UnlearnResult, new_lineage) -> None:
    """Make an unlearning run's outcome the estimator's state (in place; the store marks the samples)."""
    _set_fitted_state(est, after, w_after, result)
    est.lineage_ = new_lineage
    store = getattr(est, "store_", None)
    if store is not None:
        store.mark_removed(result.forget)
