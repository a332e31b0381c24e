"""Replayable runs of the package's models: :class:`MLPRun` (mini-batch Adam/SGD of an MLP or logistic
regression, with its step's adjoint written out) and :class:`NewtonRun` (the logistic regression's damped
Newton fit, differentiated by autograd). See :mod:`.replay` for the engine."""

from __future__ import annotations

import time

import numpy as np
import torch

from traceprop_frames.attribution.replay import ReplayableRun, ReplayResult
from traceprop_frames.errors import ReplayError


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
