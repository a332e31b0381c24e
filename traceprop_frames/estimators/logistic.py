"""L2-regularised logistic regression in torch, fit to tight convergence (float64 damped Newton)."""

from __future__ import annotations

import numpy as np
import torch

from traceprop_frames.attribution.replay_models import NewtonRun
from traceprop_frames.estimators.base import TorchBinaryClassifier
from traceprop_frames.estimators.newton import newton_fit, weights_digest


class LogitLinear(torch.nn.Module):
    """``x -> x @ w + b`` returning shape ``(n,)`` (the logit of the positive class)."""

    def __init__(self, n_features: int, bias: bool = True, dtype=torch.float64) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(n_features, 1, bias=bias, dtype=dtype)
        with torch.no_grad():
            self.linear.weight.zero_()
            if bias:
                self.linear.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).squeeze(-1)


class TorchLogisticRegression(TorchBinaryClassifier):
    """Binary logistic regression whose training rows can be traced, scored and erased.

    Objective (``W = Σ w``, ``θ`` = all parameters *including the intercept*)::

        Σ_i w_i BCE(f_i, y_i) / W  +  ||θ||² / (2 C W)

    — the same minimiser as ``C Σ w_i ℓ_i + ||θ||²/2``, strongly convex with modulus ``1/(C W)``.
    Minimised in float64 by damped Newton (analytic Hessian, Armijo backtracking; quadratic convergence,
    ~10 iterations) to a gradient max-norm of ``tol``, so the exact influence function is exact to first
    order and retraining (unlearning, LDS) is fast and reproducible.

    Parameters
    ----------
    C : float, default=1.0
        Inverse L2 strength (as in scikit-learn, but the intercept is penalised too).
    fit_intercept : bool, default=True
    max_iter : int, default=100
        Newton iterations.
    tol : float, default=1e-10
        Stop when every gradient coordinate is below ``tol`` in absolute value.
    store : str, True or None, default=None
        Fill a :class:`~traceprop_frames.attribution.GradientStore` after fitting: a directory path, or
        ``True`` for an in-memory store; ``None`` for none (influence then uses the exact method).
    k : int, default=1024
        Projection dimension of the store.
    store_dtype : {"float16", "float32"}, default="float32"
    projection_seed : int, default=0

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> X, y = make_classification(n_samples=200, n_features=5, random_state=0)
    >>> clf = TorchLogisticRegression(C=1.0).fit(X, y)
    >>> clf.score(X, y) > 0.8
    True
    >>> clf.influence_scores(X[:2]).shape
    (2, 200)
    """

    _dtype = torch.float64
    _convex = True

    def __init__(
        self,
        C: float = 1.0,
        fit_intercept: bool = True,
        max_iter: int = 100,
        tol: float = 1e-10,
        store=None,
        k: int | None = 1024,
        store_dtype: str = "float32",
        projection_seed: int = 0,
    ) -> None:
        self.C = C
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.store = store
        self.k = k
        self.store_dtype = store_dtype
        self.projection_seed = projection_seed

    random_state = None  # the objective is strictly convex: the fit does not depend on any seed

    def fit(self, X, y, sample_weight=None):
        """Fit (see :meth:`TorchBinaryClassifier.fit`); also keeps ``newton_state_`` for fast erasure.

        ``newton_state_`` (None above ``newton.MAX_FACTOR_PARAMS`` parameters): the last data Hessian of the
        Newton fit and the final gradient, so the first erasure needs no ``O(n d²)`` Hessian pass.
        """
        super().fit(X, y, sample_weight)
        state = self.module_.__dict__.pop("_newton_state", None)
        if state is not None:
            state["weights"] = weights_digest(self.sample_weight_)
        self.newton_state_ = state
        return self

    def penalty(self, module: torch.nn.Module, n_active=None) -> torch.Tensor:
        """``||θ||² / (2 C n_active)`` over all parameters (intercept included); ``n_active = Σ w``."""
        n_active = self._n_active(n_active)
        sq = sum((p**2).sum() for p in module.parameters())
        return sq / (2.0 * self.C * n_active)

    def _damping(self, n_active: float) -> float:
        return 1.0 / self.C

    def _fit_module(self, X, y, sample_weight, init_module=None, callback=None) -> torch.nn.Module:
        """Train a fresh (or ``init_module``-initialised) model on ``(X, y, sample_weight)``; deterministic.

        Damped Newton in float64 with the analytic Hessian ``X̃ᵀ diag(w p(1-p)) X̃ / W + I / (C W)`` and an
        Armijo backtracking line search; stops when every gradient coordinate is below ``tol``. The passes
        over the rows are blocked (:mod:`traceprop_frames.estimators.newton`): no float64 copy of ``X``.
        """
        if self.C <= 0:
            raise ValueError(f"C must be positive, got {self.C}")
        X = np.asarray(X)
        if X.dtype not in (np.float32, np.float64):
            X = X.astype(np.float64)
        module = LogitLinear(X.shape[1], bias=self.fit_intercept)
        if init_module is not None:
            module.load_state_dict({k: v.to(torch.float64) for k, v in init_module.state_dict().items()})
        lin = module.linear
        theta = lin.weight.detach().reshape(-1)
        if self.fit_intercept:
            theta = torch.cat([theta, lin.bias.detach().reshape(-1)])
        theta, n_iter, state = newton_fit(
            X, np.asarray(y, dtype=np.float64), np.asarray(sample_weight, dtype=np.float64),
            theta.numpy(), self.C, self.tol, self.max_iter, self.fit_intercept,
        )  # fmt: skip
        theta = torch.from_numpy(theta)
        module._newton_state = state
        module._n_iter = n_iter
        with torch.no_grad():
            d = X.shape[1]
            lin.weight.copy_(theta[:d].reshape(1, d))
            if self.fit_intercept:
                lin.bias.copy_(theta[d:])
        if callback is not None:
            callback({n: p.detach().clone() for n, p in module.named_parameters()})
        return module

    def _replay_run(self) -> NewtonRun:
        """The fit as a function of the sample weights (:class:`~traceprop_frames.attribution.replay.NewtonRun`)."""
        return NewtonRun(self.C, self.tol, self.max_iter, self.fit_intercept)

    @property
    def coef_(self) -> np.ndarray:
        """``(1, n_features)`` weights, as in scikit-learn."""
        return self.module_.linear.weight.detach().numpy().copy()

    @property
    def intercept_(self) -> np.ndarray:
        b = self.module_.linear.bias
        return np.zeros(1) if b is None else b.detach().numpy().copy()
