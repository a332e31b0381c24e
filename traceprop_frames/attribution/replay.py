"""Attribution by replay: exact metagradients ``∂ f_t(θ_T(w)) / ∂ w_i`` through a whole training run.

A replayable run is a deterministic function of the per-sample weights ``w``: a fixed initial state,
a fixed list of batches over *all* rows (a deleted row keeps its slot with weight 0), and a step
``s_{k+1} = step_k(s_k, w_B, W)`` where ``s`` is one flat vector (parameters and optimizer state), ``w_B``
the batch's weights and ``W = Σ w`` the total weight (it scales the L2 penalty). Training *is* that
function, so ``fit(X, y, sample_weight=mask)`` is exactly the retrain the scores predict.

One reverse pass (MAGIC, Ilyas & Engstrom 2025) gives the derivative of every test output with respect
to every row's weight at once: the cotangents of the ``n_test`` outputs are carried backwards through
the steps as one ``(n_test, |s|)`` batch (``is_grads_batched``), and each step deposits its batch's
``(n_test, |B|)`` share into the score matrix. Memory is bounded by checkpointing: the forward pass
keeps the state every ``L ≈ √T`` steps; the reverse pass recomputes one segment at a time, holding
that segment's graphs only, so memory is ``O((T/L + L) · |s|)`` plus ``O(n_test · (|s| + n))`` for the
cotangents and scores (:attr:`ReplayResult.peak_state_bytes` reports it).

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


# ---------------------------------------------------------------------- the MLP / logistic model
def _relu_d(a, h):
    return (a > 0).to(a.dtype), None


def _softplus_d(a, h):
    s = torch.sigmoid(a)
    return s, s * (1 - s)


def _tanh_d(a, h):
    d1 = 1 - h * h
    return d1, -2 * h * d1


# activation, its first and second derivatives given (pre-activation, activation); None = 0
ACTIVATIONS = {
    "relu": (torch.relu, _relu_d),
    "softplus": (torch.nn.functional.softplus, _softplus_d),
    "tanh": (torch.tanh, _tanh_d),
}


class MLPRun(ReplayableRun):
    """Mini-batch training of a ``d -> hidden... -> 1`` logit MLP (no hidden layer: logistic regression).

    Batch objective: ``Σ_B w_i BCE(f_i, y_i) / Σ_B w_i + alpha Σ_l ||W_l||² / (2 W)`` (a batch whose
    weights are all zero contributes the penalty only). The batch gradient is written out (one forward
    and one backward of the batch), and so is its adjoint: Pearlmutter's R-operator gives the batch
    Hessian times all ``N`` cotangents at once in a handful of matrix products, with no autograd graph.

    Parameters
    ----------
    shapes : list of torch.Size
        ``[W_1, b_1, …, W_L, b_L]`` in ``torch.nn.Linear`` layout (``W_l`` is ``(out, in)``).
    theta0 : torch.Tensor
        The flat initial parameters (their dtype is the run's dtype).
    activation : {"relu", "softplus", "tanh"}
    alpha : float
        L2 strength on the weight matrices (biases are not penalised).
    optimizer : Adam or SGD
    batches : list of index arrays
    """

    def __init__(self, shapes, theta0, activation, alpha, optimizer, batches) -> None:
        if activation not in ACTIVATIONS:
            raise ReplayError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.shapes = [torch.Size(s) for s in shapes]
        self.theta0 = theta0.detach().reshape(-1)
        self.activation, self.alpha = activation, float(alpha)
        self.optimizer, self.batches = optimizer, batches
        self._sizes = [s.numel() for s in self.shapes]
        mask = [torch.full((n,), float(i % 2 == 0), dtype=self.dtype) for i, n in enumerate(self._sizes)]
        self._weight_mask = torch.cat(mask)  # 1 on weight matrices (penalised), 0 on biases

    def _views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Like :meth:`params`, but views only (raises rather than copy): for in-place accumulation."""
        lead = flat.shape[:-1]
        return [p.view(*lead, *s) for p, s in zip(torch.split(flat, self._sizes, -1), self.shapes)]

    def params(self, theta: torch.Tensor) -> list[torch.Tensor]:
        """Per-layer views ``[W_1, b_1, …]`` of flat parameters (a leading batch axis is kept)."""
        lead = theta.shape[:-1]
        return [p.reshape(*lead, *s) for p, s in zip(torch.split(theta, self._sizes, -1), self.shapes)]

    def _forward(self, params, X):
        act = ACTIVATIONS[self.activation][0]
        hs, pre = [X], []
        n_layers = len(params) // 2
        for layer in range(n_layers):
            a = torch.addmm(params[2 * layer + 1], hs[-1], params[2 * layer].T)
            pre.append(a)
            hs.append(act(a) if layer < n_layers - 1 else a)
        return hs, pre

    def output(self, theta, X):
        return self._forward(self.params(theta), X)[0][-1][:, 0]

    def _backward(self, params, hs, pre, delta, per_sample: bool = False):
        """Gradients of ``Σ delta · f`` (``delta`` ``(B, 1)``); per sample: ``(B, P)``."""
        n_layers = len(params) // 2
        d_act = ACTIVATIONS[self.activation][1]
        grads: list = [None] * len(params)
        for layer in reversed(range(n_layers)):
            if per_sample:
                grads[2 * layer] = (delta[:, :, None] * hs[layer][:, None, :]).flatten(1)
                grads[2 * layer + 1] = delta
            else:
                grads[2 * layer] = (delta.T @ hs[layer]).reshape(-1)
                grads[2 * layer + 1] = delta.sum(0)
            if layer:
                delta = (delta @ params[2 * layer]) * d_act(pre[layer - 1], hs[layer])[0]
        return torch.cat(grads, -1)

    def output_grads(self, theta, X):
        params = self.params(theta)
        hs, pre = self._forward(params, X)
        return self._backward(params, hs, pre, torch.ones(len(X), 1, dtype=self.dtype), per_sample=True)

    def _batch(self, theta, X, y, wB, W):
        params = self.params(theta)
        hs, pre = self._forward(params, X)
        f = hs[-1][:, 0]
        sB = float(wB.sum())
        c = wB / sB if sB > 0 else torch.zeros_like(wB)
        p = torch.sigmoid(f)
        g_data = self._backward(params, hs, pre, (c * (p - y))[:, None])
        return params, hs, pre, f, p, c, sB, g_data

    def grad(self, theta, X, y, wB, W):
        g_data = self._batch(theta, X, y, wB, W)[-1]
        return g_data + (self.alpha / W) * theta * self._weight_mask

    def step_cached(self, k, state, X, y, wB, W):
        theta, opt = self.split(state)
        batch = self._batch(theta, X, y, wB, W)
        g = batch[-1] + (self.alpha / W) * theta * self._weight_mask
        new, opt, coef = self.optimizer.update_cached(k, theta, opt, g)
        return torch.cat([new, *opt]), (theta, g, batch, coef)

    def vjp_step(self, k, cache, s_next, X, y, wB, W, cot):
        theta, g, (params, hs, pre, f, p, c, sB, g_data), coef = cache
        theta_bar, opt_bar = self.split(cot)
        g_bar = self.optimizer.adjoint(k, g, coef, theta_bar, opt_bar)
        Rf = self._add_hvp(params, hs, pre, p, c, y, g_bar, theta_bar)  # θ̄ += H_data ḡ
        theta_bar.addcmul_(g_bar, self._weight_mask * (self.alpha / float(W)))  # + the penalty's Hessian
        c_W = -(self.alpha / float(W) ** 2) * (g_bar @ (theta * self._weight_mask))
        if sB > 0:
            c_w = ((p - y)[None, :] * Rf - (g_bar @ g_data)[:, None]) / sB
        else:
            c_w = torch.zeros(len(g_bar), len(wB), dtype=self.dtype)
        return cot, c_w, c_W

    def _add_hvp(self, params, hs, pre, p, c, y, U_flat, out_flat):
        """Add the data Hessian of the batch objective times each row of ``U_flat`` ``(N, P)`` to
        ``out_flat`` (in place); return the directional derivatives ``R{f}`` ``(N, B)`` of the batch logits
        (Pearlmutter's R-operator).

        Directional quantities are laid out ``(B, N, width)`` so that every product with the ``N``
        directions is one matrix product (``(B, in) @ (in, N·out)`` and its transposes)."""
        n_layers = len(params) // 2
        d_act = ACTIVATIONS[self.activation][1]
        U, out = self.params(U_flat), self._views(out_flat)
        N, B = U_flat.shape[0], hs[0].shape[0]
        Ra, Rh = [], [None]  # R{a_l}, R{h_l} as (B, N, width); h_0 = X is constant
        for layer in range(n_layers):
            Wl, Ul, ul = params[2 * layer], U[2 * layer], U[2 * layer + 1]
            out_w = Wl.shape[0]
            a = torch.addmm(ul.reshape(1, N * out_w), hs[layer], Ul.reshape(N * out_w, -1).T).view(
                B, N, out_w
            )
            if Rh[-1] is not None:
                a = a.add_(Rh[-1] @ Wl.T)
            Ra.append(a)
            if layer < n_layers - 1:
                Rh.append(d_act(pre[layer], hs[layer + 1])[0][:, None, :] * a)
        delta = (c * (p - y))[:, None]
        Rdelta = (c * p * (1 - p))[:, None, None] * Ra[-1]
        for layer in reversed(range(n_layers)):
            Wl, Ul = params[2 * layer], U[2 * layer]
            out_w, in_w = Wl.shape
            RgW = (Rdelta.reshape(B, N * out_w).T @ hs[layer]).view(N, out_w, in_w)
            if layer:
                RgW.add_((delta.T @ Rh[layer].reshape(B, N * in_w)).view(out_w, N, in_w).transpose(0, 1))
            out[2 * layer].add_(RgW)
            out[2 * layer + 1].add_(Rdelta.sum(0))
            if layer:
                d1, d2 = d_act(pre[layer - 1], hs[layer])
                back = delta @ Wl
                new = (delta @ Ul.transpose(0, 1).reshape(out_w, N * in_w)).view(B, N, in_w)
                new.add_(Rdelta @ Wl).mul_(d1[:, None, :])
                if d2 is not None:
                    new.addcmul_(Ra[layer - 1], (back * d2)[:, None, :])
                Rdelta, delta = new, back * d1
        return Ra[-1][..., 0].T


# ---------------------------------------------------------------------- the convex model: Newton's run
class NewtonRun:
    """The logistic regression's damped Newton run (``estimators.newton.newton_fit``) replayed in torch.

    Unnormalised objective ``F(θ) = Σ w_i BCE(x̃_i·θ, y_i) + ||θ||² / (2C)`` (``x̃ = [x, 1]`` with an
    intercept). Each iteration stops when ``max|∇F| / Σw < tol``, else steps ``θ ← θ − t (∇²F)⁻¹ ∇F``
    with the Armijo step ``t`` chosen exactly as the fit chooses it (``t`` is piecewise constant in
    ``w``). The whole run (a few iterations) is differentiated by autograd; at convergence the
    metagradient is the exact influence function ``−∇f_tᵀ H⁻¹ ∇ℓ_i``.
    """

    def __init__(self, C: float, tol: float, max_iter: int, intercept: bool = True, theta0=None) -> None:
        self.C, self.tol, self.max_iter, self.intercept = float(C), float(tol), int(max_iter), intercept
        self.theta0 = theta0

    def _design(self, X) -> torch.Tensor:
        X = torch.as_tensor(np.asarray(X, dtype=np.float64))
        return torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], 1) if self.intercept else X

    def _objective(self, Xd, y, w, theta) -> torch.Tensor:
        z = Xd @ theta
        return (w * (torch.nn.functional.softplus(z) - y * z)).sum() + theta @ theta / (2 * self.C)

    def run(self, X, y, w) -> tuple[torch.Tensor, int]:
        """The final parameters (a graph in ``w`` when ``w`` requires grad) and the iteration count."""
        Xd = self._design(X)
        y = torch.as_tensor(np.asarray(y, dtype=np.float64))
        p_dim = Xd.shape[1]
        theta = torch.zeros(p_dim, dtype=torch.float64) if self.theta0 is None else self.theta0.clone()
        W = float(w.detach().sum())
        eye = torch.eye(p_dim, dtype=torch.float64) / self.C
        it = 0
        for it in range(1, self.max_iter + 1):
            p = torch.sigmoid(Xd @ theta)
            G = Xd.T @ (w * (p - y)) + theta / self.C
            if float(G.detach().abs().max()) / W < self.tol:
                it -= 1
                break
            S = Xd.T @ (Xd * (w * p * (1 - p))[:, None])
            step = torch.linalg.solve(S + eye, G)
            theta = theta - self._armijo(Xd, y, w.detach(), theta.detach(), G.detach(), step.detach()) * step
        return theta, it

    def _armijo(self, Xd, y, w, theta, G, step) -> float:
        with torch.no_grad():
            F = float(self._objective(Xd, y, w, theta))
            t, slope = 1.0, float(G @ step)
            while True:
                F1 = float(self._objective(Xd, y, w, theta - t * step))
                if F1 <= F - 1e-4 * t * slope + 1e-12 * abs(F) or t <= 1e-12:
                    return t
                t *= 0.5

    def replay(self, X, y, w, X_test) -> ReplayResult:
        """``∂ logit_t / ∂ w_i`` through the whole Newton run (one batched reverse pass)."""
        t0 = time.perf_counter()
        w = torch.as_tensor(np.asarray(w, dtype=np.float64)).requires_grad_(True)
        theta, _ = self.run(X, y, w)
        out = self._design(X_test) @ theta
        eye = torch.eye(len(out), dtype=out.dtype)
        if theta.requires_grad:
            (S,) = torch.autograd.grad(out, w, grad_outputs=eye, is_grads_batched=True)
        else:  # no step taken (warm start at the optimum): nothing depends on w along the run
            S = torch.zeros(len(out), len(w), dtype=torch.float64)
        P = theta.numel()
        nbytes = 8 * (len(w) * P * 2 + S.numel())
        return ReplayResult(S.numpy(), out.detach().numpy(), 0, nbytes, {"reverse": time.perf_counter() - t0})


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


# ---------------------------------------------------------------------- a user's own loop
_ACT_OF_MODULE = {torch.nn.ReLU: "relu", torch.nn.Softplus: "softplus", torch.nn.Tanh: "tanh"}


def mlp_spec(model: torch.nn.Module) -> tuple[list[torch.Size], str]:
    """``(parameter shapes, activation)`` of a model replay can rebuild: ``Linear`` layers (with biases)
    and one kind of ``ReLU`` / ``Softplus`` (default ``beta``) / ``Tanh`` between them, one output."""
    leaves = [m for m in model.modules() if not list(m.children())]
    acts = {_ACT_OF_MODULE.get(type(m)) for m in leaves if not isinstance(m, torch.nn.Linear)}
    linears = [m for m in leaves if isinstance(m, torch.nn.Linear)]
    bad = [
        type(m).__name__
        for m in leaves
        if not isinstance(m, torch.nn.Linear) and type(m) not in _ACT_OF_MODULE
    ]
    soft = [m for m in leaves if isinstance(m, torch.nn.Softplus) and (m.beta != 1 or m.threshold != 20)]
    if bad or soft or len(acts) > 1 or not linears or any(m.bias is None for m in linears):
        raise ReplayError(
            "replay rebuilds the model as Linear layers (with biases) and one activation among ReLU, "
            f"Softplus, Tanh; this model has {bad or soft or sorted(map(str, acts)) or 'no Linear layer'}"
        )
    if linears[-1].out_features != 1:
        raise ReplayError("replay needs one output per sample (a logit); the last Linear has more")
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    want = [s for m in linears for s in (m.weight.shape, m.bias.shape)]
    if shapes != want:
        raise ReplayError(f"the model's parameters {names} are not those of its Linear layers in order")
    return shapes, (acts.pop() if acts else "relu")


def optimizer_spec(optimizer) -> Adam | SGD:
    """:class:`Adam` / :class:`SGD` with a torch optimizer's settings, or a ReplayError naming the gap."""
    if optimizer is None:
        raise ReplayError(
            "replay needs the update rule: pass the optimizer, TrainingContext(..., optimizer=opt) "
            "(torch.optim.Adam or torch.optim.SGD)"
        )
    if len(optimizer.param_groups) != 1:
        raise ReplayError("replay supports one parameter group (one lr for all parameters)")
    g = optimizer.param_groups[0]
    if isinstance(optimizer, torch.optim.Adam):
        unsupported = {k: g.get(k) for k in ("weight_decay", "amsgrad", "maximize") if g.get(k)}
        if not unsupported:
            return Adam(float(g["lr"]), float(g["betas"][0]), float(g["betas"][1]), float(g["eps"]))
    elif isinstance(optimizer, torch.optim.SGD):
        unsupported = {k: g.get(k) for k in ("weight_decay", "dampening", "nesterov", "maximize") if g.get(k)}
        if not unsupported:
            return SGD(float(g["lr"]), float(g.get("momentum", 0.0)))
    else:
        raise ReplayError(
            f"replay knows torch.optim.Adam and torch.optim.SGD, not {type(optimizer).__name__}"
        )
    raise ReplayError(f"replay does not model these optimizer settings: {unsupported}")


@dataclass
class LoopRecord:
    """What a :class:`TrainingContext` records of a loop for replay: the initial parameters, each step's
    batch (row indices), the learning rate seen at each step, and the final parameters."""

    theta0: torch.Tensor
    batches: list = field(default_factory=list)
    lrs: list = field(default_factory=list)
    final: torch.Tensor | None = None


def replay_loop(
    model, optimizer, record: LoopRecord, X, y, X_test, segment: int | None = None
) -> ReplayResult:
    """Replay a recorded loop (mean BCE-with-logits per batch, no penalty) and check it reproduces the
    trained parameters before trusting its derivative."""
    shapes, activation = mlp_spec(model)
    opt = optimizer_spec(optimizer)
    if not record.batches:
        raise ReplayError("no training step was recorded: call ctx.backward(loss, batch_idx=...) in the loop")
    if len(set(record.lrs)) > 1:
        raise ReplayError(
            "the learning rate changed during training (a scheduler?): replay needs a constant lr"
        )
    dtype = torch.float64
    run = MLPRun(
        shapes, record.theta0.to(dtype), activation, 0.0, opt, [np.asarray(b) for b in record.batches]
    )
    res = replay_scores(run, X, y, np.ones(len(X)), X_test, segment)
    gap = float((res.final[: run.n_params] - record.final.to(dtype)).abs().max())
    scale = float(record.final.abs().max()) + 1e-12
    if gap > 1e-3 * scale:
        raise ReplayError(
            f"the replayed run does not reproduce the trained parameters (max difference {gap:.3g}): the "
            "loop does something the context cannot record — a loss other than the batch mean of "
            "BCE-with-logits on the model's output, gradient clipping, dropout, a changed lr or data order"
        )
    return res
