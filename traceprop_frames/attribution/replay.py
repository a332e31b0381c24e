"""Attribution by replay: exact metagradients ``∂ f_t(θ_T(w)) / ∂ w_i`` through a whole training run.

A replayable run is a deterministic function of the per-sample weights ``w``: a fixed initial state,
a fixed list of batches over *all* rows (a deleted row keeps its slot with weight 0), and a step
``s_{k+1} = step_k(s_k, w_B, W)`` where ``s`` is one flat vector (parameters and optimizer state), ``w_B``
the batch's weights and ``W = Σ w`` the total weight (it scales the L2 penalty). Training *is* that
function, so ``fit(X, y, sample_weight=mask)`` is exactly the retrain the scores predict.

One reverse pass (MAGIC, Ilyas & Engstrom 2025) gives the derivative of every test output with respect
to every row's weight at once: the cotangents of the ``n_test`` outputs are carried backwards through
the steps as one ``(n_test, |s|)`` matrix, and each step deposits its batch's ``(n_test, |B|)`` share
into the score matrix. A run supplies its step's adjoint (:class:`~.replay_models.MLPRun` writes it out:
the optimizer's adjoint and Hessian-vector products by the R-operator, no autograd graph). Memory is
bounded by checkpointing: the forward pass keeps the state every ``L = ⌈√T⌉`` steps; the reverse pass
recomputes one segment at a time, so memory is ``O((T/L + L) · |s|)`` plus ``O(n_test · (|s| + n))``
for the cotangents and scores (:attr:`ReplayResult.state_bytes` reports it).

Modules: this one (schedule, optimizers, the run protocol, the reverse pass, the estimators' entry
point); :mod:`.replay_models` (the MLP / logistic-regression run and the Newton run);
:mod:`.replay_loop` (a user's own loop recorded by :class:`~.context.TrainingContext`).

The first-order prediction of deleting the set ``D`` is ``f(w) − Σ_{i∈D} scores[:, i]``; ``scores[t, i]``
follows the package's sign convention (positive: including row ``i`` raises test logit ``t``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from traceprop_frames.errors import ReplayError


# ---------------------------------------------------------------------- schedule
def fixed_batches(n: int, batch_size: int, epochs: int, seed: int) -> list[np.ndarray]:
    """Row indices of every step: each epoch a permutation of *all* ``n`` rows from
    ``np.random.default_rng(seed)``, cut into slots of ``batch_size`` (the last one may be shorter)."""
    rng = np.random.default_rng(seed)
    bs = max(1, min(int(batch_size), n))
    out: list[np.ndarray] = []
    for _ in range(int(epochs)):
        perm = rng.permutation(n)
        out += [perm[lo : lo + bs] for lo in range(0, n, bs)]
    return out


# ---------------------------------------------------------------------- optimizers
@dataclass(frozen=True)
class Adam:
    """``torch.optim.Adam``'s update (no weight decay, no amsgrad), as a pure function and its adjoint.

    ``√v`` is taken with a zero derivative where ``v = 0`` (a coordinate whose gradient has been exactly
    zero so far, e.g. a one-hot column absent from every batch yet): its true derivative there is 0
    along every deletion, while autograd's ``∞ · 0`` would give NaN.
    """

    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    slots = 2

    def update(self, k: int, theta, opt, g):
        return self.update_cached(k, theta, opt, g, want=False)[:2]

    def update_cached(self, k: int, theta, opt, g, want: bool = True):
        """``(θ', (m', v'), coefficients of the adjoint)``: ``θ' = θ + A ⊙ m'`` and ``∂θ'/∂v' = K``."""
        m, v = opt
        m = self.beta1 * m + (1 - self.beta1) * g
        v = self.beta2 * v + (1 - self.beta2) * g * g
        pos = v > 0
        root = torch.where(pos, torch.sqrt(torch.where(pos, v, torch.ones_like(v))), torch.zeros_like(v))
        c1, c2 = self.lr / (1 - self.beta1**k), math.sqrt(1 - self.beta2**k)
        A = (-c1) / (root / c2 + self.eps)
        coef = None
        if want:  # dθ'/dv' = A² m' / c1 · d(root/c2)/dv', and d root/dv' = 1 / (2 root) (0 at v' = 0)
            coef = (A, torch.where(pos, (0.5 / c1 / c2) * A * A * m / torch.where(pos, root, 1.0), 0.0))
        return theta + A * m, (m, v), coef

    def adjoint(self, k: int, g, coef, theta_bar, opt_bar) -> torch.Tensor:
        """Cotangent of ``g`` (``(N, P)``) from those of the new state; turns ``opt_bar`` (in place) into the
        cotangents of the previous optimizer state."""
        A, K = coef
        m_bar, v_bar = opt_bar
        m_bar.addcmul_(theta_bar, A)
        v_bar.addcmul_(theta_bar, K)
        g_bar = m_bar * (1 - self.beta1)
        g_bar.addcmul_(v_bar, (2 * (1 - self.beta2)) * g)
        m_bar.mul_(self.beta1)
        v_bar.mul_(self.beta2)
        return g_bar


@dataclass(frozen=True)
class SGD:
    """``torch.optim.SGD`` with heavy-ball ``momentum`` (dampening 0, no Nesterov, no weight decay)."""

    lr: float = 1e-2
    momentum: float = 0.0

    slots = 1

    def update(self, k: int, theta, opt, g):
        (b,) = opt
        b = g if k == 1 or self.momentum == 0 else self.momentum * b + g
        return theta - self.lr * b, (b,)

    def update_cached(self, k: int, theta, opt, g, want: bool = True):
        return (*self.update(k, theta, opt, g), None)

    def adjoint(self, k: int, g, coef, theta_bar, opt_bar) -> torch.Tensor:
        (b_bar,) = opt_bar
        b_bar.add_(theta_bar, alpha=-self.lr)
        g_bar = b_bar.clone()
        b_bar.mul_(0.0 if k == 1 else self.momentum)
        return g_bar


# ---------------------------------------------------------------------- run protocol
class ReplayableRun:
    """A training run as a function of the sample weights; subclasses define the model.

    Subclasses set ``optimizer`` (:class:`Adam` or :class:`SGD`), ``batches`` (list of index arrays) and
    ``theta0`` (flat initial parameters, whose dtype is the run's), and implement :meth:`grad`,
    :meth:`output`, :meth:`output_grads` and :meth:`vjp_step`.
    """

    optimizer: Adam | SGD
    batches: list[np.ndarray]
    theta0: torch.Tensor

    def grad(self, theta, X, y, wB, W) -> torch.Tensor:  # pragma: no cover - abstract
        """Flat gradient of the batch objective."""
        raise NotImplementedError

    def output(self, theta, X) -> torch.Tensor:  # pragma: no cover - abstract
        """Test outputs (logits) ``(n_test,)`` at flat parameters ``theta``."""
        raise NotImplementedError

    def output_grads(self, theta, X) -> torch.Tensor:  # pragma: no cover - abstract
        """``(n_test, P)`` gradients of the test outputs."""
        raise NotImplementedError

    def vjp_step(self, k, cache, s_next, X, y, wB, W, cot):  # pragma: no cover - abstract
        """Pull the ``(N, |s|)`` cotangent ``cot`` of the state after step ``k`` back to the state before
        it (in place), given the step's ``cache`` from :meth:`step_cached`; return
        ``(cot, ∂/∂w_B (N, |B|), ∂/∂W (N,))``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ state
    @property
    def n_params(self) -> int:
        return int(self.theta0.numel())

    @property
    def dtype(self) -> torch.dtype:
        return self.theta0.dtype

    def initial_state(self) -> torch.Tensor:
        P, slots = self.n_params, self.optimizer.slots
        return torch.cat([self.theta0.reshape(-1), torch.zeros(P * slots, dtype=self.dtype)])

    def split(self, state: torch.Tensor):
        P = self.n_params
        return state[..., :P], tuple(
            state[..., P * (j + 1) : P * (j + 2)] for j in range(self.optimizer.slots)
        )

    def step(self, k: int, state, X, y, wB, W) -> torch.Tensor:
        """State after step ``k`` (1-based) on batch ``batches[k-1]`` (already sliced into ``X, y, wB``)."""
        return self.step_cached(k, state, X, y, wB, W)[0]

    def step_cached(self, k: int, state, X, y, wB, W):
        """``(state after step k, what vjp_step needs of this step)`` (default: the input state)."""
        theta, opt = self.split(state)
        theta, opt = self.optimizer.update(k, theta, opt, self.grad(theta, X, y, wB, W))
        return torch.cat([theta, *opt]), state

    def run(self, X, y, w, keep_every: int | None = None, on_step=None):
        """Train: the final state and, with ``keep_every = L``, the states after steps ``0, L, 2L, …`` and ``T``.

        ``on_step(k, state)`` is called after every step (e.g. to keep per-epoch checkpoints).
        """
        X, y, w = (self.tensor(a) for a in (X, y, w))
        W = w.sum()
        s = self.initial_state()
        kept = {0: s} if keep_every else {}
        with torch.no_grad():
            for k, B in enumerate(self.batches, start=1):
                Bt = torch.as_tensor(B)
                s = self.step(k, s, X[Bt], y[Bt], w[Bt], W)
                if keep_every and (k % keep_every == 0 or k == len(self.batches)):
                    kept[k] = s
                if on_step is not None:
                    on_step(k, s)
        return s, kept

    def replay(self, X, y, w, X_test, segment: int | None = None) -> ReplayResult:
        """:func:`replay_scores` of this run."""
        return replay_scores(self, X, y, w, X_test, segment)

    def tensor(self, a) -> torch.Tensor:
        if isinstance(a, torch.Tensor):
            return a.detach().to(self.dtype)
        return torch.as_tensor(np.asarray(a, dtype=np.float64)).to(self.dtype)


# ---------------------------------------------------------------------- reverse pass
@dataclass
class ReplayResult:
    """``scores`` ``(n_test, n)`` = ``∂ output_t / ∂ w_i``; ``outputs`` the test outputs at ``w``;
    ``segment`` the checkpoint spacing ``L``; ``state_bytes`` the memory of the kept states, the largest
    segment's recomputed states and step caches, the cotangents and the score matrix; ``seconds`` per
    phase."""

    scores: np.ndarray
    outputs: np.ndarray
    segment: int
    state_bytes: int
    seconds: dict = field(default_factory=dict)
    final: torch.Tensor | None = None  # the replayed run's final state


def segment_length(n_steps: int) -> int:
    """The default checkpoint spacing ``⌈√T⌉`` (memory ``O(√T)`` states, one extra forward pass)."""
    return max(1, math.ceil(math.sqrt(n_steps)))


def replay_scores(
    run: ReplayableRun, X, y, w, X_test, segment: int | None = None, kept: dict | None = None
) -> ReplayResult:
    """Exact first-order metagradient of ``run.output(θ_T(w), X_test)`` with respect to every ``w_i``.

    Parameters
    ----------
    run : ReplayableRun
    X, y, w : array-like
        The training rows, 0/1 targets and weights (``w_i = 0``: row ``i`` deleted, in its slot).
    X_test : array-like of shape (n_test, d)
    segment : int or None
        Steps between kept states (default ``⌈√T⌉``).
    kept : dict or None
        States the training run kept (``{step: state}`` every ``segment`` steps and the final one, e.g.
        recorded by ``fit``): the forward pass is skipped.

    Returns
    -------
    ReplayResult

    Examples
    --------
    A logistic regression trained by SGD (no hidden layer); row 0's score against a retrain without it
    (first order: a batch of 10 loses a tenth of its weight, so within ~12 %):

    >>> import numpy as np, torch
    >>> from traceprop_frames.attribution.replay_models import MLPRun
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(40, 3)); y = (X[:, 0] > 0).astype(float)
    >>> run = MLPRun([(1, 3), (1,)], torch.zeros(4, dtype=torch.float64), "relu", 0.0, SGD(0.5),
    ...              fixed_batches(40, 10, 5, seed=0))
    >>> res = replay_scores(run, X, y, np.ones(40), X[:2])
    >>> w = np.ones(40); w[0] = 0
    >>> final, _ = run.run(X, y, w)
    >>> actual = res.outputs - run.output(final[:4], run.tensor(X[:2])).numpy()
    >>> bool(np.allclose(res.scores[:, 0], actual, rtol=0.2))
    True
    """
    T = len(run.batches)
    if T == 0:
        raise ReplayError("the run has no steps: nothing to replay (max_iter=0 or no rows)")
    L = int(segment or segment_length(T))
    X, y, w, Xt = (run.tensor(a) for a in (X, y, w, X_test))
    t0 = time.perf_counter()
    if kept is None:
        final, kept = run.run(X, y, w, keep_every=L)
    else:
        final = kept[T]
    t1 = time.perf_counter()
    theta = final[: run.n_params]
    with torch.no_grad():
        out = run.output(theta, Xt)
        cot = torch.zeros(len(Xt), final.numel(), dtype=run.dtype)
        cot[:, : run.n_params] = run.output_grads(theta, Xt)
        scores = torch.zeros(len(Xt), len(X), dtype=run.dtype)
        gW = torch.zeros(len(Xt), dtype=run.dtype)
        W = w.sum()
        seg_bytes = 0
        for lo in reversed(range(0, T, L)):
            cot, nb = _reverse_segment(run, kept[lo], lo, min(lo + L, T), X, y, w, W, cot, scores, gW)
            seg_bytes = max(seg_bytes, nb)
        scores += gW[:, None]  # ∂W/∂w_i = 1 for every row
    t2 = time.perf_counter()
    item = final.element_size()
    state_bytes = final.numel() * item * (len(kept) + 1 + len(Xt)) + scores.numel() * item + seg_bytes
    return ReplayResult(
        scores.numpy().astype(np.float64),
        out.numpy().astype(np.float64),
        L,
        int(state_bytes),
        {"forward": t1 - t0, "reverse": t2 - t1},
        final,
    )


def _reverse_segment(run, s0, lo, hi, X, y, w, W, cot, scores, gW):
    """Recompute the states after steps ``lo … hi`` from the kept one, then pull the cotangent back
    through steps ``hi … lo+1``, adding each batch's share to ``scores`` / ``gW``."""
    states, caches = [s0], []
    for k in range(lo + 1, hi + 1):
        Bt = torch.as_tensor(run.batches[k - 1])
        s, cache = run.step_cached(k, states[-1], X[Bt], y[Bt], w[Bt], W)
        states.append(s)
        caches.append(cache)
    for k in range(hi, lo, -1):
        Bt = torch.as_tensor(run.batches[k - 1])
        cot, c_w, c_W = run.vjp_step(k, caches[k - 1 - lo], states[k - lo], None, y[Bt], w[Bt], W, cot)
        scores[:, Bt] += c_w
        gW += c_W
    return cot, _nbytes(states) + _nbytes(caches)


def _nbytes(obj) -> int:
    """Bytes of the tensors in nested lists / tuples (a segment's states and step caches)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(o) for o in obj)
    return 0


# ---------------------------------------------------------------------- estimators
def estimator_replay_scores(est, X_test, segment: int | None = None, dtype=None, full: bool = False):
    """``(n_test, n_train)`` replay scores of a fitted traceprop estimator (erased rows: NaN).

    The estimator supplies its run through ``_replay_run`` (the same object its ``fit`` trains with).
    ``dtype``: the precision of the replay; default the fit's own (float32 for the MLP, whose ``fit``
    keeps its training states in ``replay_states_``, so the reverse pass starts at once); ``torch.float64``
    re-runs the forward pass in double precision. ``full``: return the :class:`ReplayResult` (memory,
    timings) with the masked scores instead of the score matrix alone.
    """
    if not hasattr(est, "_replay_run"):
        raise ReplayError(f"{type(est).__name__} does not record a replayable training run")
    X, y, w = est.X_train_, est.y_train_, est.sample_weight_
    if getattr(est, "_convex", False):
        res = est._replay_run().replay(X, y, w, X_test)
    else:
        rs = getattr(est, "random_state", None)
        if not isinstance(rs, (int, np.integer)):
            raise ReplayError(
                f"replay needs the run's seed, but random_state={rs!r}: refit {type(est).__name__} "
                "with an integer random_state (it fixes the initialisation and the batch order)"
            )
        dtype = dtype or getattr(est, "_dtype", torch.float32)
        run = est._replay_run(X.shape[1], len(X), int(rs), dtype)
        kept = _recorded_states(est, run, dtype) if segment is None else None
        res = replay_scores(run, X, y, w, X_test, segment, kept=kept)
    S = res.scores
    removed = np.asarray(w) == 0
    store = getattr(est, "store_", None)
    if store is not None:
        removed = removed | store.removed
    S[:, removed] = np.nan
    return res if full else S


def _recorded_states(est, run: ReplayableRun, dtype) -> dict | None:
    """The states ``fit`` kept, when they belong to this run: same precision, the weights the model was
    fit with, and a final state equal to the current model (not changed since, e.g. by unlearning)."""
    rec = getattr(est, "replay_states_", None)
    if rec is None or dtype != torch.float32 or not np.array_equal(rec["weights"], est.sample_weight_):
        return None
    states = rec["states"]
    final = states.get(len(run.batches))
    current = torch.cat([p.detach().reshape(-1) for p in est.module_.parameters()])
    if final is None or not torch.equal(final[: run.n_params], current.to(final.dtype)):
        return None
    return states
