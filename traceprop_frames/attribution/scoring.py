"""Influence scores: TRAK's weighted kernel over a GradientStore, and the exact influence function.

Sign convention (everywhere in this package): ``scores[t, i]`` estimates how much *including* training
sample ``i`` (with weight 1) changes the model's output on test point ``t`` — the logit of the positive
class, i.e. ``decision_function``. Positive means sample ``i`` pushes the test logit up.

**Exact influence** (convex models). With the unnormalised objective ``J(θ) = Σ_j w_j ℓ_j(θ) + W·Ω(θ)``
(``W = Σ w``) and its Hessian ``H`` at the optimum, dropping sample ``i`` moves the parameters by
``H⁻¹ ∇ℓ_i`` to first order, so ``score[t, i] = −∇f_t(θ)ᵀ H⁻¹ ∇ℓ_i(θ)``.

**TRAK** (any model). With projected output gradients ``φ_i = Pᵀ∇f_i`` and the loss derivatives
``g_i = ∂ℓ_i/∂f``, ``h_i = ∂²ℓ_i/∂f²`` stored at each checkpoint::

    score[t, i] = −(1/C) Σ_c  φ_{t,c}ᵀ (Φ_cᵀ diag(h_c) Φ_c + λ I)⁻¹ φ_{i,c} g_{i,c}

The ``h = p(1 − p)`` weighting makes the kernel the Gauss-Newton Hessian, so for logistic regression
with ``λ`` = the model's L2 strength (``1/C``) this converges to the exact influence as ``k`` grows;
``g = p − y`` is TRAK's ``(1 − p)`` output weighting with the sign of the label. ``weighted=False``
gives the plain ``(ΦᵀΦ + λI)⁻¹`` kernel. The "BM" variant stores one row per batch (the batch's mean
loss gradient, ``g = h = 1``) and gives every sample of a batch its batch's score.
"""

from __future__ import annotations

import numpy as np
import torch

from traceprop_frames.attribution.gradients import (
    batch_mean_loss_grads,
    bce_derivatives,
    per_sample_output_grads,
)
from traceprop_frames.attribution.store import GradientStore, StoreError


def _bce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.binary_cross_entropy_with_logits(out, y, reduction="none")


# ---------------------------------------------------------------------- filling
def fill_checkpoint(
    store: GradientStore,
    module: torch.nn.Module,
    X,
    y,
    params: dict | None = None,
    batches: list[np.ndarray] | None = None,
    chunk: int = 1024,
) -> int:
    """Add a checkpoint to ``store``: features of every training sample at ``params`` (default: now).

    ``y`` holds 0/1 targets of a binary model trained with BCE-with-logits. For the "BM" variant,
    ``batches`` lists the sample indices of each batch.
    """
    params = params if params is not None else {n: p.detach().clone() for n, p in module.named_parameters()}
    dtype = next(module.parameters()).dtype
    X = torch.as_tensor(np.asarray(X)).to(dtype)
    y = torch.as_tensor(np.asarray(y)).to(dtype)
    names = store.param_names
    if store.variant == "BM":
        if batches is None:
            raise ValueError("the BM variant needs the batches (lists of sample indices)")
        c = store.add_checkpoint(params, n_rows=0)
        G = batch_mean_loss_grads(module, _bce, X, y, batches, names=names, params=params)
        Z = store.projector.project(G)
        for b, z in zip(batches, Z):
            store.append_batch(c, b, z)
        return c
    c = store.add_checkpoint(params)
    for lo in range(0, X.shape[0], chunk):
        sl = slice(lo, lo + chunk)
        out, G = per_sample_output_grads(module, X[sl], names=names, params=params)
        g, h = bce_derivatives(out, y[sl])
        store.write(c, np.arange(lo, lo + len(out)), store.projector.project(G), g, h)
    return c


# ---------------------------------------------------------------------- TRAK
class TRAKScorer:
    """Scores test points against a filled :class:`GradientStore` (kernel factorised once, cached).

    Parameters
    ----------
    store : GradientStore
    damping : float or None
        ``λ``; default: the store's recorded model L2 strength (``store.damping``) plus
        ``store.extra["rel_damping"]`` (default ``1e-6``) times the mean diagonal of the kernel.
    weighted : bool, default=True
        Use ``diag(h) = p(1 − p)`` in the kernel (False: TRAK's plain ``ΦᵀΦ``).
    max_cache_bytes, block_rows
        Feature matrices up to ``max_cache_bytes`` (as float32) are cached in memory; larger ones are
        streamed from the memmap in blocks of ``block_rows`` rows for the kernel and for every scoring.
    """

    def __init__(
        self,
        store: GradientStore,
        damping: float | None = None,
        weighted: bool = True,
        max_cache_bytes: int = 1 << 30,
        block_rows: int = 65536,
    ) -> None:
        if not store.checkpoints:
            raise StoreError("the gradient store is empty: fit the model with a store (or fill it) first")
        self.store, self.damping, self.weighted = store, damping, weighted
        self.max_cache_bytes, self.block_rows = max_cache_bytes, block_rows

    def _blocks(self, c: int):
        """Feature rows of checkpoint ``c`` as float32 tensors: one cached block when it fits in
        ``max_cache_bytes``, else streamed from the memmap in ``block_rows`` blocks (stores larger than RAM)."""
        feats = self.store.features(c)
        n, k = feats.shape
        if n * k * 4 <= self.max_cache_bytes:
            key = ("phi", c)
            if key not in self.store._cache:
                self.store._cache[key] = torch.from_numpy(np.asarray(feats, dtype=np.float32))
            yield 0, self.store._cache[key]
            return
        for lo in range(0, n, self.block_rows):
            yield lo, torch.from_numpy(np.asarray(feats[lo : lo + self.block_rows], dtype=np.float32))

    def _kernel(self, c: int) -> torch.Tensor:
        key = ("kernel", c, self.damping, self.weighted)
        hit = self.store._cache.get(key)
        if hit is not None:
            return hit
        ck = self.store.checkpoints[c]
        rows_active = np.zeros(ck.n_rows, dtype=bool)
        act = self.store.active
        rows_active[ck.rows[act & (ck.rows >= 0)]] = True
        h_all = ck.derivs[: ck.n_rows, 1].astype(np.float64) if self.weighted else np.ones(ck.n_rows)
        h_all = h_all * rows_active
        K = torch.zeros(self.store.k, self.store.k, dtype=torch.float64)
        for lo, Phi in self._blocks(c):
            P64 = Phi.to(torch.float64)
            h = torch.from_numpy(h_all[lo : lo + len(Phi)])
            K += P64.T @ (P64 * h[:, None])
        lam = self.damping
        if lam is None:
            rel = float(self.store.extra.get("rel_damping", 1e-6))
            lam = self.store.damping + rel * float(K.diagonal().mean()) + 1e-12
        K.diagonal().add_(lam)
        L = torch.linalg.cholesky(K)
        self.store._cache[key] = L
        return L

    def _raw_test_grads(self, module: torch.nn.Module, X) -> list[torch.Tensor]:
        self.store.check_model(module)
        dtype = next(module.parameters()).dtype
        X = torch.as_tensor(np.asarray(X)).to(dtype)
        names = None if self.store.variant == "BM" else self.store.param_names
        return [
            per_sample_output_grads(module, X, names=names, params=ck.params)[1]
            for ck in self.store.checkpoints
        ]

    def test_features(self, module: torch.nn.Module, X) -> list[torch.Tensor]:
        """Projected output gradients of the test points, one ``(n_test, k)`` tensor per checkpoint."""
        return [self.store.projector.project(G) for G in self._raw_test_grads(module, X)]

    def _sample_map(self, c: int, S_rows: np.ndarray) -> np.ndarray:
        """Row scores ``(m, n_rows)`` -> sample scores ``(m, n_samples)``: ``-S[:, row(i)] * g_row(i)``."""
        ck = self.store.checkpoints[c]
        g = ck.derivs[: ck.n_rows, 0]
        rows = ck.rows
        S = np.zeros((S_rows.shape[0], self.store.n_samples), dtype=np.float64)
        ok = rows >= 0
        S[:, ok] = -S_rows[:, rows[ok]] * g[rows[ok]]
        return S

    def _folded(self, c: int) -> torch.Tensor | None:
        """When gradients are narrower than ``k`` (``d <= k``), the whole scorer folds into one ``(d, n)``
        matrix ``B = R K⁻¹ Φᵀ`` (sample-mapped), so scoring is ``G_test @ B`` — the same numbers as
        projecting the test gradients, at ``d/k`` of the cost."""
        P = self.store.projector
        if P.d > P.k or P.d * self.store.n_samples * 8 > self.max_cache_bytes:
            return None
        key = ("folded", c, self.damping, self.weighted)
        hit = self.store._cache.get(key)
        if hit is not None:
            return hit
        L = self._kernel(c)
        R = P.matrix().to(torch.float64)  # (d, k)
        parts = []
        for _, Phi in self._blocks(c):
            parts.append((R @ torch.cholesky_solve(Phi.to(torch.float64).T, L)).numpy())  # (d, block)
        B = torch.from_numpy(self._sample_map(c, np.concatenate(parts, axis=1)))  # float64: see scores()
        self.store._cache[key] = B
        return B

    def scores(self, module: torch.nn.Module, X) -> np.ndarray:
        """``(n_test, n_samples)`` influence on the test logits; removed samples are NaN."""
        # Every product after the kernel solve stays float64: with few feature rows and a small damping
        # the kernel is ill-conditioned (cond ~1e7 in the batch-mean test), A = K⁻¹T has entries ~1e7
        # while scores are ~1, and a float32 product cancels catastrophically (5 % error, and a
        # different error per BLAS block shape, which is why streamed and full scores disagreed).
        grads = self._raw_test_grads(module, X)
        total = None
        for c, G in enumerate(grads):
            B = self._folded(c)
            if B is not None:
                S = (G.to(torch.float64) @ B).numpy()
            else:
                T = self.store.projector.project(G)
                L = self._kernel(c)
                A = torch.cholesky_solve(T.to(torch.float64).T, L).T  # (n_test, k)
                S_rows = np.concatenate(
                    [(A @ Phi.to(torch.float64).T).numpy() for _, Phi in self._blocks(c)], 1
                )
                S = self._sample_map(c, S_rows)
            total = S if total is None else total + S
        total /= len(grads)
        total[:, self.store.removed] = np.nan
        return total

    def top_k(self, module: torch.nn.Module, X, k: int, block_samples: int = 65536) -> TopK:
        """The ``k`` highest-scoring training samples per test point, streaming the samples in blocks.

        Same result as ``top_k_scores(self.scores(module, X), k)`` but never materialises the
        ``(n_test, n_samples)`` matrix: memory is ``O(n_test × (block_samples + k))`` — for stores with
        millions of samples. Removed samples never appear.
        """
        grads = self._raw_test_grads(module, X)
        n_test = grads[0].shape[0]
        plans = []
        for c, G in enumerate(grads):
            B = self._folded(c)
            if B is not None:
                plans.append(("folded", G.to(torch.float64), B))
            else:
                T = self.store.projector.project(G)
                A = torch.cholesky_solve(T.to(torch.float64).T, self._kernel(c)).T
                plans.append(("rows", A, c))
        best_i = np.zeros((n_test, 0), dtype=np.int64)
        best_s = np.zeros((n_test, 0))
        removed = self.store.removed
        for lo in range(0, self.store.n_samples, block_samples):
            hi = min(lo + block_samples, self.store.n_samples)
            S = np.zeros((n_test, hi - lo))
            for kind, A, ref in plans:
                if kind == "folded":
                    S += (A @ ref[:, lo:hi]).numpy()
                    continue
                ck = self.store.checkpoints[ref]
                rows = ck.rows[lo:hi]
                ok = np.flatnonzero(rows >= 0)
                uniq, inv = np.unique(rows[ok], return_inverse=True)
                Phi = torch.from_numpy(np.asarray(self.store.features(ref)[uniq], dtype=np.float64))
                S_rows = (A @ Phi.T).numpy()
                S[:, ok] -= S_rows[:, inv] * ck.derivs[uniq, 0][inv]
            S /= len(plans)
            S[:, removed[lo:hi]] = np.nan
            part = top_k_scores(np.concatenate([best_s, S], axis=1), k)
            cand = np.concatenate([best_i, np.broadcast_to(np.arange(lo, hi), (n_test, hi - lo))], axis=1)
            best_i = np.take_along_axis(cand, part.indices, axis=1)
            best_s = part.scores
        return TopK(best_i, best_s)


# ---------------------------------------------------------------------- exact
def hessian(module: torch.nn.Module, objective) -> torch.Tensor:
    """Full ``(p, p)`` Hessian of ``objective(module) -> scalar`` in the module's parameters."""
    params = [p for p in module.parameters() if p.requires_grad]
    obj = objective(module)
    g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(obj, params, create_graph=True)])
    eye = torch.eye(g.numel(), dtype=g.dtype)
    rows = torch.autograd.grad(g, params, grad_outputs=eye, is_grads_batched=True)
    return torch.cat([r.reshape(g.numel(), -1) for r in rows], dim=1).detach()


def exact_influence_scores(module, objective, X_train, y_train, X_test, removed=None) -> np.ndarray:
    """Exact influence ``−∇f_tᵀ H⁻¹ ∇ℓ_i`` for a binary BCE model (full Hessian; convex models).

    ``objective(module)`` must be the *unnormalised* training objective ``Σ w ℓ + W·Ω``.
    Returns ``(n_test, n_train)``; ``removed`` samples (bool mask) are NaN.
    """
    H = hessian(module, objective)
    dtype = H.dtype
    out, Gtr = per_sample_output_grads(module, torch.as_tensor(np.asarray(X_train)))
    g, _ = bce_derivatives(out, torch.as_tensor(np.asarray(y_train)).to(out.dtype))
    _, Gte = per_sample_output_grads(module, torch.as_tensor(np.asarray(X_test)))
    A = torch.linalg.solve(H, Gte.to(dtype).T)  # (p, n_test)
    S = -(A.T @ Gtr.to(dtype).T) * g.to(dtype)[None, :]
    S = S.numpy().astype(np.float64)
    if removed is not None:
        S[:, np.asarray(removed, dtype=bool)] = np.nan
    return S


# ---------------------------------------------------------------------- top-k
class TopK:
    """Top-k training samples per test point: ``indices`` and ``scores``, shape ``(n_test, top_k)``
    (``(top_k,)`` for a single 1-D test sample).

    Iterating a single test point's result (a 1-D sample, or a batch of one row) gives
    ``(training sample, score)`` pairs, best first; for several test points it gives one list of such
    pairs per test point. ``len`` counts what iterating gives.

    Examples
    --------
    >>> top = TopK(np.array([4, 1]), np.array([0.9, 0.2]))
    >>> [(i, round(s, 1)) for i, s in top]
    [(4, 0.9), (1, 0.2)]
    >>> [(i, round(s, 1)) for i, s in TopK(np.array([[4, 1]]), np.array([[0.9, 0.2]]))]  # one test row
    [(4, 0.9), (1, 0.2)]
    """

    __slots__ = ("indices", "scores")

    def __init__(self, indices: np.ndarray, scores: np.ndarray) -> None:
        self.indices, self.scores = indices, scores

    def __iter__(self):
        if np.ndim(self.indices) == 1 or len(self.indices) == 1:
            return iter(zip(np.ravel(self.indices).tolist(), np.ravel(self.scores).tolist()))
        return iter([list(zip(i.tolist(), s.tolist())) for i, s in zip(self.indices, self.scores)])

    def __len__(self) -> int:
        return np.size(self.indices) if len(self.indices) == 1 else len(self.indices)

    def __repr__(self) -> str:
        return f"TopK(indices={self.indices!r}, scores={self.scores!r})"


def top_k_scores(S: np.ndarray, k: int, by_abs: bool = False) -> TopK:
    """The ``k`` largest scores per row (NaN = removed, never returned); ``by_abs`` ranks by |score|."""
    S = np.atleast_2d(S)
    key = np.abs(S) if by_abs else S.copy()
    key = np.where(np.isnan(key), -np.inf, key)
    k = int(min(k, int(np.isfinite(key).sum(axis=1).min(initial=S.shape[1]))))
    if k <= 0:
        return TopK(np.zeros((S.shape[0], 0), dtype=np.int64), np.zeros((S.shape[0], 0)))
    part = np.argpartition(-key, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(key, part, axis=1), axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1)
    return TopK(idx.astype(np.int64), np.take_along_axis(S, idx, axis=1))


def compute_influence_scores(model, store: GradientStore, test_input, top_k: int = 10, **kw) -> TopK:
    """Top-``top_k`` most influential (largest positive score) training samples for each test input.

    Parameters
    ----------
    model : torch.nn.Module or fitted traceprop estimator
        The trained model (scalar output per sample); an estimator's ``module_`` is used.
    store : GradientStore
        Filled during or after training (:class:`TrainingContext` or ``fit`` with ``store=``).
    test_input : array-like or torch.Tensor
        ``(n_test, ...)``, or one sample without the batch axis (then the results are 1-D). A row of a
        row-carrying tensor (``X_t[0]``) works as it is. For one test row (1-D, or ``(1, d)``) iterating
        the result gives ``(sample, score)`` pairs; for several, one list of pairs per row.
    top_k : int, default=10
    **kw
        ``damping`` and ``weighted`` for :class:`TRAKScorer`.

    Returns
    -------
    TopK
        ``(indices, scores)``; ``store.get_provenance(indices[t, r])`` traces a sample to its source rows.
        Removed (erased) samples never appear.
    """
    module = getattr(model, "module_", model)
    X = test_input if isinstance(test_input, torch.Tensor) else np.asarray(test_input)
    single = X.ndim == 1
    if single:
        X = X[None]
    if hasattr(model, "module_") and hasattr(model, "_validate_test"):
        X = model._validate_test(X)
    X = torch.as_tensor(X)
    res = TRAKScorer(store, **kw).top_k(module, X, top_k)
    if single:
        return TopK(res.indices[0], res.scores[0])
    return res
