"""The training objective of a fitted estimator as a function of one flat parameter vector.

``L(θ) = Σ w ℓ(θ) / Σ w + penalty(θ)`` evaluated through the estimator's own ``per_sample_loss`` and
``penalty`` (``torch.func.functional_call`` swaps the flat vector into a copy of ``module_``), with
gradients, Hessians (``Jᵀ diag(w σ′) J / Σw + ∇²penalty``) and, for the convex models, a closed-form
fast path that is checked numerically against autograd before it is used. Also: model fingerprints and
the convexity test.
"""

from __future__ import annotations

import copy
import hashlib

import numpy as np
import torch
from torch.func import functional_call

from traceprop_frames.errors import UnlearningError

MAX_NEWTON_PARAMS = 5000


def parameter_fingerprint(module: torch.nn.Module) -> str:
    """sha256 over the module's state (names, dtypes, shapes and bytes, in sorted name order)."""
    return state_fingerprint(module.state_dict())


def state_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """:func:`parameter_fingerprint` of a state dict (e.g. read from a model folder's parameters.pt)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(repr(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def is_convex(est) -> bool:
    """True when the training objective is convex in the parameters (an affine logit).

    An estimator may say so itself (``convex_``, or the class attribute ``_convex``); otherwise a module
    whose parameters all belong to one ``torch.nn.Linear`` is taken as convex (logistic regression).
    """
    flag = getattr(est, "convex_", getattr(est, "_convex", None))
    if flag is not None:
        return bool(flag)
    module = est.module_
    linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    if len(linears) != 1:
        return False
    owned = {id(p) for p in linears[0].parameters()}
    return all(id(p) in owned for p in module.parameters())


def check_fitted(est) -> None:
    missing = [a for a in ("module_", "X_train_", "y_train_", "sample_weight_") if not hasattr(est, a)]
    if missing:
        raise UnlearningError(
            f"{type(est).__name__} is not fitted (missing {missing}); call fit(X, y) before unlearning."
        )


def _per_sample_loss(est, module, X, y) -> torch.Tensor:
    fn = getattr(est, "per_sample_loss", None)
    if fn is not None:
        return fn(module, X, y)
    return torch.nn.functional.binary_cross_entropy_with_logits(module(X).reshape(-1), y, reduction="none")


def _penalty(est, module):
    fn = getattr(est, "penalty", None)
    return fn(module) if fn is not None else 0.0


class _Wrapped(torch.nn.Module):
    """The weighted objective as a module, so ``functional_call`` can swap in flat parameters."""

    def __init__(self, est, inner: torch.nn.Module) -> None:
        super().__init__()
        self.est = est
        self.inner = inner

    def forward(self, X, y, w):
        loss = _per_sample_loss(self.est, self.inner, X, y)
        return (w * loss).sum() / w.sum() + _penalty(self.est, self.inner)


class _PenaltyOnly(torch.nn.Module):
    def __init__(self, est, inner: torch.nn.Module) -> None:
        super().__init__()
        self.est = est
        self.inner = inner

    def forward(self):
        return torch.as_tensor(_penalty(self.est, self.inner))


class _LossOnly(_PenaltyOnly):
    def forward(self, X, y):
        return _per_sample_loss(self.est, self.inner, X, y)


class Objective:
    """``L(θ) = Σ w ℓ(θ) / Σ w + penalty(θ)`` over a flat float64 parameter vector ``θ``."""

    def __init__(
        self, est, module: torch.nn.Module, X, y, w, affine: bool = False, dtype=torch.float64
    ) -> None:
        self.est = est
        self.affine = affine
        self._J: torch.Tensor | None = None
        self._pen_H: tuple | None = None
        self._fast: tuple | None = None
        self.dtype = next(module.parameters()).dtype
        self.ftype = dtype
        self.module = copy.deepcopy(module).to(dtype)
        named = list(self.module.named_parameters())
        self.names = ["inner." + n for n, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.wrapped = _Wrapped(est, self.module)
        self.X = torch.as_tensor(np.asarray(X), dtype=dtype)
        self.y = torch.as_tensor(np.asarray(y), dtype=dtype).reshape(-1)
        self.w = torch.as_tensor(np.asarray(w), dtype=dtype).reshape(-1)
        if float(self.w.sum()) <= 0:
            raise UnlearningError("no training sample would remain active; nothing to fit on.")

    @property
    def d(self) -> int:
        return sum(self.sizes)

    def flat(self, module: torch.nn.Module) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1).to(self.ftype) for p in module.parameters()])

    def _params(self, theta: torch.Tensor) -> dict:
        parts = torch.split(theta, self.sizes)
        return {n: t.view(s) for n, t, s in zip(self.names, parts, self.shapes)}

    def loss(self, theta: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
        if self._fast is not None and w is None:
            J, H_pen = self._fast
            f = J @ theta
            bce = torch.nn.functional.binary_cross_entropy_with_logits(f, self.y, reduction="none")
            return (self.w * bce).sum() / self.w.sum() + 0.5 * theta @ (H_pen @ theta)
        return functional_call(
            self.wrapped, self._params(theta), (self.X, self.y, self.w if w is None else w)
        )

    def grad(self, theta: torch.Tensor) -> torch.Tensor:
        if self._fast is not None:
            J, H_pen = self._fast
            r = self.w * (torch.sigmoid(J @ theta) - self.y) / self.w.sum()
            return J.T @ r + H_pen @ theta
        return self.exact_grad(theta)

    def exact_grad(self, theta: torch.Tensor) -> torch.Tensor:
        """The gradient by autograd through the estimator's own ``per_sample_loss`` and ``penalty``."""
        return torch.func.grad(self.loss)(theta) if self._fast is None else self._without_fast(theta)

    def _without_fast(self, theta: torch.Tensor) -> torch.Tensor:
        fast, self._fast = self._fast, None
        try:
            return torch.func.grad(self.loss)(theta)
        finally:
            self._fast = fast

    def enable_fast_path(self, theta: torch.Tensor, trusted: bool = False) -> bool:
        """Closed-form loss/gradient when the logit is ``[X, 1] θ`` and the penalty is ``½ θᵀ H θ``.

        Both facts are checked numerically (at ``θ`` and at a probe point) against autograd through the
        estimator's own functions; if either check fails, the generic path is kept.
        """
        if trusted:  # checked by prepare_unlearning for this model and training data
            self._fast = (self._J, self.penalty_hessian(theta))
            return True
        J = self._linear_jacobian(theta) if self.affine else None
        if J is None:
            return False
        self._J = J
        H_pen = self.penalty_hessian(theta)
        probe = theta + torch.linspace(-0.5, 0.5, self.d, dtype=theta.dtype)
        exact = [(self.exact_grad(t), float(self.loss(t))) for t in (theta, probe)]
        self._fast = (J, H_pen)
        for t, (g, f) in zip((theta, probe), exact):
            ok = torch.allclose(self.grad(t), g, rtol=1e-7, atol=1e-11) and abs(
                float(self.loss(t)) - f
            ) <= 1e-9 * (1 + abs(f))
            if not ok:
                self._fast = None
                return False
        return True

    def logits(self, theta: torch.Tensor) -> torch.Tensor:
        inner = {n[6:]: p for n, p in self._params(theta).items()}
        return functional_call(self.module, inner, (self.X,)).reshape(-1)

    def _linear_jacobian(self, theta: torch.Tensor) -> torch.Tensor | None:
        """``[X, 1]`` when the logit is one ``Linear(d, 1)`` of the input (checked at two points), else None."""
        named = [n for n in self.names]
        if len(named) not in (1, 2) or self.sizes[0] != self.X.shape[1]:
            return None
        J = (
            self.X
            if len(named) == 1
            else torch.cat([self.X, torch.ones(len(self.X), 1, dtype=self.X.dtype)], 1)
        )
        if J.shape[1] != self.d:
            return None
        probe = theta + torch.linspace(-0.5, 0.5, self.d, dtype=theta.dtype)
        with torch.no_grad():
            for t in (theta, probe):
                if not torch.allclose(self.logits(t), J @ t, rtol=1e-9, atol=1e-9):
                    return None
        return J

    def penalty_hessian(self, theta: torch.Tensor) -> torch.Tensor:
        """Hessian of the penalty, formed once: it is constant for the L2 penalties of the estimators (for
        another penalty it only slows Newton's convergence; the gradient is always exact)."""
        if self._pen_H is not None:
            return self._pen_H[1]
        wrapped = _PenaltyOnly(self.est, self.module)
        H = torch.func.hessian(lambda t: functional_call(wrapped, self._params(t), ()))(theta).detach()
        self._pen_H = (theta.detach().clone(), H)
        return H

    def data_hessian(self, theta: torch.Tensor, idx=None, w: torch.Tensor | None = None) -> torch.Tensor:
        """``Σ_i w_i σ′(f_i) J_iᵀ J_i`` over rows ``idx`` (all by default), unnormalised, no penalty.

        ``J = ∂logits/∂θ``: this is the exact Hessian of the weighted BCE-with-logits sum of the contract
        when the logit is affine in ``θ`` (the convex models) and the generalised Gauss-Newton matrix
        otherwise. Far faster than double autograd; the gradient is always computed exactly.
        """
        if self.d > MAX_NEWTON_PARAMS:
            raise UnlearningError(
                f"method='newton' forms a {self.d}x{self.d} Hessian; above {MAX_NEWTON_PARAMS} parameters "
                "use method='gradient' (or 'retrain')."
            )
        theta = theta.detach()
        w = self.w if w is None else w
        if self._J is None and self.affine:
            self._J = self._linear_jacobian(theta)
        if self._J is not None:
            J = self._J if idx is None else self._J[torch.as_tensor(np.asarray(idx, dtype=np.int64))]
        else:
            sub = self if idx is None else self._subset(idx)
            J = torch.func.jacfwd(sub.logits)(theta)
        ix = slice(None) if idx is None else torch.as_tensor(np.asarray(idx, dtype=np.int64))
        with torch.no_grad():
            p = torch.sigmoid(self.logits(theta)[ix])
            s = w[ix] * p * (1 - p)
            return J.T @ (J * s[:, None])

    def _subset(self, idx) -> Objective:
        sub = copy.copy(self)
        ix = torch.as_tensor(np.asarray(idx, dtype=np.int64))
        sub.X, sub.y, sub.w, sub._J = self.X[ix], self.y[ix], self.w[ix], None
        return sub

    def hessian(self, theta: torch.Tensor) -> torch.Tensor:
        """Hessian of the objective (see :meth:`data_hessian`) at ``θ``."""
        return self.data_hessian(theta) / self.w.sum() + self.penalty_hessian(theta)

    def penalty_min_eig(self, theta: torch.Tensor) -> float:
        """Smallest eigenvalue of the penalty's Hessian (its strong-convexity modulus; 0 if none)."""
        H = self.penalty_hessian(theta).detach()
        diag = torch.diagonal(H)
        if torch.equal(H, torch.diag(diag)):  # the usual L2 penalty: no eigen-solver needed
            return max(float(diag.min()), 0.0)
        return max(float(np.linalg.eigvalsh(H.numpy()).min()), 0.0)

    def per_sample(self, theta: torch.Tensor, idx) -> torch.Tensor:
        """Unregularised per-sample losses of training samples ``idx`` at ``θ``."""
        ix = torch.as_tensor(np.asarray(idx, dtype=np.int64))
        if self._fast is not None:
            f = self._fast[0][ix] @ theta
            return torch.nn.functional.binary_cross_entropy_with_logits(f, self.y[ix], reduction="none")
        wrapped = _LossOnly(self.est, self.module)
        with torch.no_grad():
            return functional_call(wrapped, self._params(theta), (self.X[ix], self.y[ix]))

    def to_module(self, theta: torch.Tensor, like: torch.nn.Module) -> torch.nn.Module:
        """A copy of ``like`` holding ``θ`` in ``like``'s dtype."""
        out = copy.deepcopy(like)
        with torch.no_grad():
            for p, t in zip(out.parameters(), torch.split(theta.detach(), self.sizes)):
                p.copy_(t.view(p.shape).to(p.dtype))
        return out
