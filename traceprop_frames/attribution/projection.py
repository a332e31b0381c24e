"""Random projections of gradients to ``k`` dimensions, regenerated from a seed (never stored).

Two projectors, one interface (``project(G) -> G @ R`` for a batch ``G`` of shape ``(n, d)``):

- :class:`SparseJLProjector` — Achlioptas' database-friendly JL matrix: every entry of ``R`` (``d × k``)
  is ``+sqrt(3/k)`` with probability 1/6, ``-sqrt(3/k)`` with probability 1/6 and 0 with probability 2/3
  (the ``s = 3`` variant, not the sparser ``s = sqrt(d)`` one). ``E[R Rᵀ] = I``, so inner products are
  preserved in expectation and within ``O(sqrt(log(n) / k))`` relative error with high probability.
- :class:`GaussianProjector` — dense ``N(0, 1/k)`` entries.

``R`` is generated block by block (``block_rows`` rows of ``R`` per block) from ``(seed, block index)``
with a ``torch.Generator``, so the same seed gives the same matrix in every process and on every machine,
and a projection of a very wide gradient never needs all of ``R`` in memory at once. When ``R`` is small
(``d * k * 4`` bytes under ``cache_bytes``) it is kept in memory after first use. Projecting a batch is
one matrix product per block, never a Python loop over samples.
"""

from __future__ import annotations

import math

import numpy as np
import torch

_BLOCK_SEED_STRIDE = 1_000_003


class Projector:
    """Base class: a ``d × k`` random matrix defined by ``(kind, d, k, seed)``.

    Parameters
    ----------
    d : int
        Input dimension (number of gradient coordinates).
    k : int
        Output dimension.
    seed : int, default=0
        Seed the matrix is regenerated from.
    block_rows : int, default=4096
        Rows of ``R`` generated per block.
    cache_bytes : int, default=256 MiB
        Keep the whole ``R`` in memory when it is at most this large.
    """

    kind = "base"

    def __init__(
        self, d: int, k: int, seed: int = 0, block_rows: int = 4096, cache_bytes: int = 256 << 20
    ) -> None:
        if d < 1 or k < 1:
            raise ValueError(f"projection dimensions must be positive, got d={d}, k={k}")
        self.d, self.k, self.seed = int(d), int(k), int(seed)
        self.block_rows = int(block_rows)
        self._cache: torch.Tensor | None = None
        self._cacheable = self.d * self.k * 4 <= cache_bytes

    def _block(self, b: int) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _generator(self, b: int) -> torch.Generator:
        g = torch.Generator(device="cpu")
        g.manual_seed((self.seed * _BLOCK_SEED_STRIDE + b) % (2**63 - 1))
        return g

    def _rows(self, b: int) -> int:
        return min(self.block_rows, self.d - b * self.block_rows)

    @property
    def n_blocks(self) -> int:
        return math.ceil(self.d / self.block_rows)

    def matrix(self) -> torch.Tensor:
        """The whole ``d × k`` float32 matrix (cached when small)."""
        if self._cache is not None:
            return self._cache
        R = torch.cat([self._block(b) for b in range(self.n_blocks)], dim=0)
        if self._cacheable:
            self._cache = R
        return R

    def project(self, G: torch.Tensor | np.ndarray) -> torch.Tensor:
        """``G @ R`` for a batch ``G`` of shape ``(n, d)`` (float32 result, shape ``(n, k)``)."""
        G = torch.as_tensor(G)
        if G.shape[-1] != self.d:
            raise ValueError(f"gradient has {G.shape[-1]} coordinates, projector expects {self.d}")
        G = G.to(torch.float32)
        if self._cacheable:
            return G @ self.matrix()
        out = torch.zeros(G.shape[0], self.k, dtype=torch.float32)
        for b in range(self.n_blocks):
            lo = b * self.block_rows
            out += G[:, lo : lo + self._rows(b)] @ self._block(b)
        return out

    def to_record(self) -> dict:
        return {"kind": self.kind, "d": self.d, "k": self.k, "seed": self.seed, "block_rows": self.block_rows}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(d={self.d}, k={self.k}, seed={self.seed})"


class SparseJLProjector(Projector):
    """Achlioptas sparse JL: entries ``±sqrt(3/k)`` with probability 1/6 each, else 0.

    Examples
    --------
    >>> import torch
    >>> P = SparseJLProjector(d=50, k=2000, seed=1)
    >>> G = torch.randn(3, 50)
    >>> Z = P.project(G)
    >>> Z.shape
    torch.Size([3, 2000])
    >>> bool(torch.allclose(P.project(G), SparseJLProjector(50, 2000, seed=1).project(G)))
    True
    """

    kind = "sparse"

    def _block(self, b: int) -> torch.Tensor:
        u = torch.randint(0, 6, (self._rows(b), self.k), generator=self._generator(b), dtype=torch.int8)
        s = math.sqrt(3.0 / self.k)
        return (u == 0).to(torch.float32) * s - (u == 1).to(torch.float32) * s


class GaussianProjector(Projector):
    """Dense Gaussian JL: entries ``N(0, 1/k)``."""

    kind = "gaussian"

    def _block(self, b: int) -> torch.Tensor:
        g = self._generator(b)
        return torch.randn(self._rows(b), self.k, generator=g, dtype=torch.float32) / math.sqrt(self.k)


class IdentityProjector(Projector):
    """No projection (``k = d``): exact gradients, for small models and tests."""

    kind = "identity"

    def __init__(self, d: int, k: int | None = None, seed: int = 0, **_: object) -> None:
        super().__init__(d, d, seed)

    def matrix(self) -> torch.Tensor:
        return torch.eye(self.d)

    def project(self, G):
        G = torch.as_tensor(G)
        if G.shape[-1] != self.d:
            raise ValueError(f"gradient has {G.shape[-1]} coordinates, projector expects {self.d}")
        return G.to(torch.float32)


PROJECTORS = {"sparse": SparseJLProjector, "gaussian": GaussianProjector, "identity": IdentityProjector}


def make_projector(kind: str, d: int, k: int | None, seed: int = 0) -> Projector:
    """A projector by name: ``"sparse"`` (default everywhere), ``"gaussian"`` or ``"identity"``."""
    if kind not in PROJECTORS:
        raise ValueError(f"unknown projection {kind!r}; use one of {sorted(PROJECTORS)}")
    if kind == "identity" or k is None:
        return IdentityProjector(d)
    return PROJECTORS[kind](d, int(k), seed)


def projector_from_record(rec: dict) -> Projector:
    cls = PROJECTORS[rec["kind"]]
    if rec["kind"] == "identity":
        return IdentityProjector(rec["d"])
    return cls(rec["d"], rec["k"], rec["seed"], block_rows=rec.get("block_rows", 4096))
