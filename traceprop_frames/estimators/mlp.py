"""A multi-layer perceptron binary classifier in torch (Adam mini-batches, L2 ``alpha`` like scikit-learn)."""

from __future__ import annotations

import numpy as np
import torch

from traceprop_frames.attribution.replay import Adam, fixed_batches, segment_length
from traceprop_frames.attribution.replay_models import MLPRun
from traceprop_frames.estimators.base import TorchBinaryClassifier

REPLAY_STATE_BYTES = 64 << 20  # fit keeps its √T training states for replay up to this size

_ACT_MODULES = {"relu": torch.nn.ReLU, "softplus": torch.nn.Softplus, "tanh": torch.nn.Tanh}


class MLPLogit(torch.nn.Module):
    """MLP ``d -> hidden... -> 1`` returning shape ``(n,)`` (the logit of the positive class).

    ``activation``: ``"relu"`` (default), ``"softplus"`` or ``"tanh"``; activations have no parameters,
    so the seeded initialisation is the same for all three.
    """

    # each row's output depends on that row only: per-sample gradients by the Linear outer-product rule
    per_sample_independent = True

    def __init__(self, n_features: int, hidden: tuple[int, ...], activation: str = "relu") -> None:
        super().__init__()
        if activation not in _ACT_MODULES:
            raise ValueError(f"activation must be one of {sorted(_ACT_MODULES)}, got {activation!r}")
        layers: list[torch.nn.Module] = []
        d = n_features
        for h in hidden:
            layers += [torch.nn.Linear(d, int(h)), _ACT_MODULES[activation]()]
            d = int(h)
        layers.append(torch.nn.Linear(d, 1))
        self.net = torch.nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class TorchMLPClassifier(TorchBinaryClassifier):
    """Binary MLP classifier whose training rows can be traced, scored and erased.

    Objective (``W = Σ w``): ``Σ_i w_i BCE(f_i, y_i) / W + alpha ||weights||² / (2 W)`` (biases are not
    penalised, as in scikit-learn's ``MLPClassifier``), minimised by Adam (``torch.optim.Adam``'s update)
    on mini-batches; each batch uses its own weight-normalised loss ``Σ_B w_i ℓ_i / Σ_B w_i`` plus the
    full penalty.

    Training is a deterministic function of the sample weights (for an integer ``random_state``): the
    initialisation and the batch order come from the seed, and every epoch cuts a permutation of *all*
    rows into fixed batch slots. A row of weight 0 keeps its slot and contributes nothing, so
    ``fit(X, y, sample_weight=mask)`` with 0/1 ``mask`` is exactly the deletion retrain that
    ``influence_scores(X_test, method="replay")`` differentiates. It is *not* ``fit(X[mask], y[mask])``:
    that re-draws the permutation over fewer rows, so every batch holds different rows and there are
    fewer steps per epoch — a different, equally valid run, whose difference from the full fit mixes
    the effect of the deleted rows with the change of batch order.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default=(64,)
    alpha : float, default=1e-4
    batch_size : int, default=200
    learning_rate_init : float, default=1e-3
    max_iter : int, default=20
        Epochs.
    random_state : int or None, default=None
        Seeds the initialisation and the batch order (``_fit_module`` is deterministic given it).
    store : str, True or None, default=None
        Fill a gradient store after fitting (directory path, or ``True`` for in-memory).
    store_variant : {"TRAK", "LL", "BM"}, default="TRAK"
    n_checkpoints : int, default=1
        Checkpoints whose features are ensembled (evenly spaced over the second half of training).
    n_models : int, default=1
        Models in the store's ensemble: with a store, ``n_models - 1`` extra models are trained in ``fit``
        on the same data with seeds ``random_state + 1, ...`` (own initialisation and batch order) and kept
        as extra checkpoints (``n_checkpoints`` each) with their own parameters; TRAK averages over all.
        ``module_`` (predictions, erasure) is always the first model.
    ensemble_fraction : float in (0, 1], default=0.5
        Each extra model trains on its own random subset of this fraction of the training rows (drawn
        with ``np.random.default_rng(seed).choice``; ``1.0``: all rows), as TRAK ensembles models trained on
        random halves. On UCI Adult, 8 models reach LDS 0.82 with halves against 0.79 with full copies, at
        about half the training cost; ``n_models=4, n_checkpoints=2, k=512, rel_damping=0.5`` gives 0.81
        at ~8.5 fits (benchmarks/bench_attribution.py ``--only ensemble``; README, "MLP attribution with
        model ensembling").
        Features are still computed for every training row.
    k : int, default=1024
    store_dtype : {"float16", "float32"}, default="float16"
    projection_seed : int, default=0
    rel_damping : float or None, default=None
        TRAK kernel damping ``λ = alpha + rel_damping × mean diag(ΦᵀWΦ)``. The non-convex model's
        Gauss-Newton kernel needs far more damping than its L2 term. ``None``: 1.0 for the full-gradient
        "TRAK" variant, 0.3 for "LL" and "BM" — the best round values on UCI Adult (LDS of one TRAK model
        0.44 / 0.54 / 0.64 / 0.71 / 0.72 / 0.65 at 0.03 / 0.1 / 0.3 / 1 / 3 / 10; see
        benchmarks/bench_attribution.py).

    activation : {"relu", "softplus", "tanh"}, default="relu"
        Hidden-unit non-linearity. For replay attribution use ``"softplus"``: the trained model is then a
        smooth function of the sample weights, and first-order predictions of deletions hold much better.
        LDS of replay against ``fit(X, y, sample_weight=mask)`` retrains (40 random halves / 40 random 5 %
        drops; 32 hidden units): UCI Adult 0.980 / 0.995 with softplus against 0.946 / 0.962 with ReLU;
        scikit-learn's digits (binary) 0.938 / 0.995 against 0.786 / 0.726
        (``benchmarks/bench_attribution.py --only replay``).

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> X, y = make_classification(n_samples=200, n_features=5, random_state=0)
    >>> clf = TorchMLPClassifier(hidden_layer_sizes=(8,), max_iter=30, random_state=0).fit(X, y)
    >>> clf.predict_proba(X[:3]).shape
    (3, 2)
    """

    def __init__(
        self,
        hidden_layer_sizes=(64,),
        alpha: float = 1e-4,
        batch_size: int = 200,
        learning_rate_init: float = 1e-3,
        max_iter: int = 20,
        random_state=None,
        store=None,
        store_variant: str = "TRAK",
        n_checkpoints: int = 1,
        n_models: int = 1,
        ensemble_fraction: float = 0.5,
        k: int | None = 1024,
        store_dtype: str = "float16",
        projection_seed: int = 0,
        rel_damping: float | None = None,
        activation: str = "relu",
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.random_state = random_state
        self.store = store
        self.store_variant = store_variant
        self.n_checkpoints = n_checkpoints
        self.n_models = n_models
        self.ensemble_fraction = ensemble_fraction
        self.k = k
        self.store_dtype = store_dtype
        self.projection_seed = projection_seed
        self.rel_damping = rel_damping
        self.activation = activation

    def penalty(self, module: torch.nn.Module, n_active=None) -> torch.Tensor:
        """``alpha ||weights||² / (2 n_active)`` over the weight matrices (biases excluded)."""
        n_active = self._n_active(n_active)
        sq = sum((p**2).sum() for n, p in module.named_parameters() if n.endswith("weight"))
        return self.alpha * sq / (2.0 * n_active)

    def _damping(self, n_active: float) -> float:
        return float(self.alpha)

    def _rel_damping(self, variant: str) -> float:
        if self.rel_damping is not None:
            return float(self.rel_damping)
        return 1.0 if variant == "TRAK" else 0.3

    def _seed(self) -> int:
        if self.random_state is None:
            return int(np.random.randint(0, 2**31 - 1))
        if isinstance(self.random_state, np.random.RandomState):
            return int(self.random_state.randint(0, 2**31 - 1))
        return int(self.random_state)

    def _hidden(self) -> tuple[int, ...]:
        h = self.hidden_layer_sizes
        return (int(h),) if np.isscalar(h) else tuple(int(v) for v in h)

    def _replay_run(self, n_features: int, n_rows: int, seed: int, dtype=torch.float64, init_module=None):
        """The training run as a function of the sample weights (:class:`~traceprop_frames.attribution.
        replay.MLPRun`): the seeded initialisation, Adam, and the batch slots over all ``n_rows`` rows."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = MLPLogit(n_features, self._hidden(), self.activation)
        if init_module is not None:
            module.load_state_dict(init_module.state_dict())
        params = list(module.parameters())
        theta0 = torch.cat([p.detach().reshape(-1) for p in params]).to(dtype)
        batches = fixed_batches(n_rows, int(self.batch_size), int(self.max_iter), seed)
        opt = Adam(lr=float(self.learning_rate_init))
        return MLPRun([p.shape for p in params], theta0, self.activation, float(self.alpha), opt, batches)

    def _fit_module(self, X, y, sample_weight, init_module=None, callback=None, seed=None) -> torch.nn.Module:
        """Train a model on ``(X, y, sample_weight)``; deterministic for an integer ``random_state``
        (or the given ``seed``: initialisation and batch order).

        Every epoch visits a permutation of *all* rows in fixed batch slots; a row of weight 0 keeps
        its slot and contributes nothing, so a zero weight is exactly the deletion that replay
        attribution differentiates (see the class docstring)."""
        seed = self._seed() if seed is None else int(seed)
        X = torch.as_tensor(np.asarray(X, dtype=np.float32))
        y = torch.as_tensor(np.asarray(y, dtype=np.float32))
        w = torch.as_tensor(np.asarray(sample_weight, dtype=np.float32))
        run = self._replay_run(X.shape[1], len(X), seed, torch.float32, init_module)
        per_epoch = max(1, len(run.batches) // max(1, int(self.max_iter)))

        def on_step(k, state):
            if callback is not None and k % per_epoch == 0:
                callback(dict(zip(names, (p.clone() for p in run.params(state[: run.n_params])))))

        with torch.random.fork_rng(devices=[]):  # the values are overwritten below
            module = MLPLogit(X.shape[1], self._hidden(), self.activation)
        names = [n for n, _ in module.named_parameters()]
        T = len(run.batches)
        L = segment_length(T)
        keep = (
            L if (T // L + 2) * (run.n_params * (1 + run.optimizer.slots)) * 4 <= REPLAY_STATE_BYTES else None
        )
        final, kept = run.run(X, y, w, keep_every=keep, on_step=on_step)
        with torch.no_grad():
            for p, v in zip(module.parameters(), run.params(final[: run.n_params])):
                p.copy_(v)
        module._n_iter = int(self.max_iter)
        module._replay_states = kept or None
        return module

    def fit(self, X, y, sample_weight=None):
        """Fit (see :meth:`TorchBinaryClassifier.fit`); also keeps ``replay_states_``.

        ``replay_states_``: the training states (parameters and Adam moments, float32) every ``⌈√T⌉``
        of the ``T`` steps, so ``influence_scores(..., method="replay")`` starts its reverse pass at once
        (None when they would exceed ``REPLAY_STATE_BYTES``; replay then re-runs the forward pass).
        """
        super().fit(X, y, sample_weight)
        states = self.module_.__dict__.pop("_replay_states", None)
        self.replay_states_ = (
            None if states is None else {"states": states, "weights": self.sample_weight_.copy()}
        )
        return self
