"""Training as a deterministic function of per-sample weights ``w`` (the object a sketch differentiates).

:class:`WeightedTraining` trains an MLP (no hidden layer = logistic regression) from a fixed
initialisation over a fixed batch order: every epoch visits a permutation of *all* ``n`` samples drawn from ``seed``, so deleting samples (``w_i = 0``)
changes their weight and nothing else. Batch ``B`` contributes ``Σ_B w_i ℓ_i / Σ_B w_i`` plus the L2
penalty ``alpha ||W||² / (2 Σ w)`` (biases too when ``penalize_bias``), as the estimators' objectives.

The model is :class:`WeightedMLP`: the estimators' ``MLPLogit`` layer for layer (same parameter names,
same seeded initialisation) with the activation as a parameter.

The same code runs on plain tensors (retraining: the ground truth) and on
:class:`~traceprop_frames.attribution.taylor.Jet` weights (all Taylor coefficients of the trained
parameters in one pass), so the two can never drift apart.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import torch

from traceprop_frames.attribution import taylor as tj
from traceprop_frames.errors import SketchError


@dataclass(frozen=True)
class WeightedTraining:
    """Hyper-parameters of a deterministic weighted training run.

    Parameters
    ----------
    hidden : tuple of int
        Hidden layer widths; ``()`` is logistic regression.
    alpha : float
        L2 strength (``alpha ||W||² / (2 Σw)``).
    lr : float
    epochs : int
    batch_size : int or None
        ``None``: full batch.
    optimizer : {"adam", "sgd"}
        ``"adam"`` puts ``eps`` inside the square root (``√(v̂ + eps)``) so the map stays smooth where a
        gradient coordinate is near zero; ``"sgd"`` is heavy-ball momentum.
    momentum, beta1, beta2, eps : float
    seed : int
        Initialisation and batch order.
    penalize_bias : bool
    activation : {"relu", "softplus", "tanh"}
        ReLU makes ``θ(w)`` only piecewise analytic (a deletion that flips a unit's sign anywhere in
        the run is outside the Taylor series' reach); the smooth ones keep it analytic.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(40, 3)); y = (X[:, 0] > 0).astype(float)
    >>> tr = WeightedTraining(hidden=(4,), epochs=3, batch_size=10)
    >>> tr.train(X, y, np.ones(40))(torch.as_tensor(X)).shape
    torch.Size([40])
    """

    hidden: tuple = (64,)
    alpha: float = 1e-4
    lr: float = 1e-3
    epochs: int = 20
    batch_size: int | None = 200
    optimizer: str = "adam"
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    seed: int = 0
    penalize_bias: bool = False
    activation: str = "relu"

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise SketchError(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        if self.optimizer not in ("adam", "sgd"):
            raise SketchError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))

    @classmethod
    def from_estimator(cls, est, **overrides) -> WeightedTraining:
        """The run matching a ``TorchMLPClassifier``'s hyper-parameters (init and order from its seed)."""
        if not hasattr(est, "hidden_layer_sizes"):
            raise SketchError(
                f"{type(est).__name__} has no hidden_layer_sizes; build WeightedTraining(...) directly"
            )
        if not isinstance(est.random_state, (int, np.integer)):
            raise SketchError(
                "a sketch needs a deterministic run: fit the estimator with an int random_state"
            )
        h = est.hidden_layer_sizes
        kw = dict(
            hidden=(h,) if np.isscalar(h) else tuple(h),
            alpha=float(est.alpha),
            lr=float(est.learning_rate_init),
            epochs=int(est.max_iter),
            batch_size=int(est.batch_size),
            seed=int(est.random_state),
            activation=str(getattr(est, "activation", "relu")),
        )
        kw.update(overrides)
        return cls(**kw)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, s: str) -> WeightedTraining:
        return cls(**json.loads(s))

    # ------------------------------------------------------------------ pieces
    def module(self, n_features: int) -> torch.nn.Module:
        """The initial model (float64), seeded exactly as the estimators seed their ``MLPLogit``."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            module = WeightedMLP(n_features, self.hidden, self.activation)
        return module.double()

    def batches(self, n: int) -> list[np.ndarray]:
        rng = np.random.default_rng(self.seed)
        bs = n if self.batch_size is None else max(1, min(int(self.batch_size), n))
        out = []
        for _ in range(int(self.epochs)):
            perm = rng.permutation(n)
            out += [perm[lo : lo + bs] for lo in range(0, n, bs)]
        return out

    # ------------------------------------------------------------------ the run
    def run(self, X, y, w, params0: list[torch.Tensor] | None = None) -> list:
        """Parameters after training on weights ``w`` (tensor, or a Jet for all Taylor coefficients).

        Returns a list in ``module.named_parameters()`` order: plain tensors, or Jets when ``w`` is one.
        """
        X = torch.as_tensor(np.asarray(X, dtype=np.float64))
        y = torch.as_tensor(np.asarray(y, dtype=np.float64))
        if not isinstance(w, (tj.Jet, torch.Tensor)):  # tensors pass through (torch.func transforms)
            w = torch.as_tensor(np.asarray(w, dtype=np.float64))
        params = params0 or [p.detach().clone() for p in self.module(X.shape[1]).parameters()]
        n_layers = len(params) // 2
        act, dact = ACTIVATIONS[self.activation][:2]
        inv_total = tj.reciprocal(tj.sum_(w))
        state = [[0.0, 0.0] for _ in params]
        for t, B in enumerate(self.batches(len(X)), start=1):
            Bt = torch.as_tensor(B)
            hs, pre = [X[Bt]], []
            for layer in range(n_layers):
                Wl, bl = params[2 * layer], params[2 * layer + 1]
                a = tj.add(tj.matmul(hs[-1], tj.transpose(Wl)), bl)
                pre.append(a)
                hs.append(act(a) if layer < n_layers - 1 else a)
            f = hs.pop()[:, 0]
            wB = w[Bt]
            r = tj.add(tj.sigmoid(f), -y[Bt])
            delta = tj.mul(tj.mul(wB, r), tj.reciprocal(tj.sum_(wB)))[:, None]  # dObj/dlogit, (|B|, 1)
            grads = [None] * len(params)
            for layer in reversed(range(n_layers)):
                h = hs[layer]
                grads[2 * layer] = tj.matmul(tj.transpose(delta), h)
                grads[2 * layer + 1] = tj.sum_(delta, 0)
                if layer:
                    delta = tj.mul(tj.matmul(delta, params[2 * layer]), dact(pre[layer - 1], hs[layer]))
            for i, p in enumerate(params):
                if i % 2 == 0 or self.penalize_bias:
                    grads[i] = tj.add(grads[i], tj.mul(tj.mul(p, self.alpha), inv_total))
            params = [self._step(p, g, s, t) for p, g, s in zip(params, grads, state)]
        return params

    def _step(self, p, g, s, t):
        if self.optimizer == "sgd":
            s[0] = tj.add(tj.mul(s[0], self.momentum), g)
            return tj.add(p, tj.mul(s[0], -self.lr))
        s[0] = tj.add(tj.mul(s[0], self.beta1), tj.mul(g, 1 - self.beta1))
        s[1] = tj.add(tj.mul(s[1], self.beta2), tj.mul(tj.mul(g, g), 1 - self.beta2))
        mhat = tj.mul(s[0], 1 / (1 - self.beta1**t))
        vhat = tj.add(tj.mul(s[1], 1 / (1 - self.beta2**t)), self.eps)
        return tj.add(p, tj.mul(tj.mul(mhat, tj.reciprocal(tj.sqrt(vhat))), -self.lr))

    def train(self, X, y, sample_weight) -> torch.nn.Module:
        """Retrain on ``sample_weight`` (the ground truth a sketch predicts); a float64 ``MLPLogit``."""
        X = np.asarray(X, dtype=np.float64)
        return self.to_module(self.run(X, y, sample_weight), X.shape[1])

    def to_module(self, params: list[torch.Tensor], n_features: int) -> torch.nn.Module:
        module = self.module(n_features)
        with torch.no_grad():
            for p, v in zip(module.parameters(), params):
                p.copy_(torch.as_tensor(v).reshape(p.shape))
        return module


class WeightedMLP(torch.nn.Module):
    """``d -> hidden... -> 1`` logit model: the layers (so the parameter names and the seeded
    initialisation) of the estimators' ``MLPLogit``, with the run's activation."""

    def __init__(self, n_features: int, hidden: tuple[int, ...], activation: str = "relu") -> None:
        super().__init__()
        layers: list[torch.nn.Module] = []
        d = n_features
        for h in hidden:
            layers += [torch.nn.Linear(d, int(h)), ACTIVATIONS[activation][2]()]
            d = int(h)
        layers.append(torch.nn.Linear(d, 1))
        self.net = torch.nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def _value(a):
    return a.value if isinstance(a, tj.Jet) else a


# activation, its derivative given (pre-activation, activation), torch module
ACTIVATIONS = {
    "relu": (tj.relu, lambda a, h: _value(a) > 0, torch.nn.ReLU),
    "softplus": (tj.softplus, lambda a, h: tj.sigmoid(a), torch.nn.Softplus),
    "tanh": (tj.tanh, lambda a, h: tj.add(tj.mul(tj.mul(h, h), -1.0), 1.0), torch.nn.Tanh),
}


def forward(params: list, X, activation: str = "relu") -> object:
    """Logits of the MLP with (possibly Jet) ``params`` on constant inputs ``X``, shape ``(n,)``."""
    h = torch.as_tensor(np.asarray(X, dtype=np.float64))
    n_layers = len(params) // 2
    for layer in range(n_layers):
        h = tj.add(tj.matmul(h, tj.transpose(params[2 * layer])), params[2 * layer + 1])
        if layer < n_layers - 1:
            h = ACTIVATIONS[activation][0](h)
    return h[:, 0]
