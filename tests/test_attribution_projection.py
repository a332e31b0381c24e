"""Sparse JL projection: seed-regenerated, Achlioptas entries, inner products preserved."""

import math

import numpy as np
import pytest
import torch

from traceprop_frames.attribution import GaussianProjector, SparseJLProjector, make_projector


def test_entries_are_achlioptas_and_regenerated_from_seed():
    P = SparseJLProjector(d=300, k=512, seed=7)
    R = P.matrix().numpy()
    s = math.sqrt(3 / 512)
    vals, counts = np.unique(np.round(R / s).astype(int), return_counts=True)
    assert set(vals.tolist()) <= {-1, 0, 1}
    freq = dict(zip(vals.tolist(), (counts / R.size).tolist()))
    assert abs(freq[1] - 1 / 6) < 0.005 and abs(freq[-1] - 1 / 6) < 0.005 and abs(freq[0] - 2 / 3) < 0.005
    assert np.array_equal(R, SparseJLProjector(d=300, k=512, seed=7).matrix().numpy())
    assert not np.array_equal(R, SparseJLProjector(d=300, k=512, seed=8).matrix().numpy())


def test_blockwise_projection_equals_full_matrix_product():
    G = torch.randn(5, 70)
    small = SparseJLProjector(d=70, k=64, seed=3, block_rows=16, cache_bytes=0)  # streamed block by block
    full = SparseJLProjector(d=70, k=64, seed=3, block_rows=16)
    assert torch.allclose(small.project(G), G @ full.matrix(), atol=1e-5)
    assert small._cache is None


@pytest.mark.parametrize("cls", [SparseJLProjector, GaussianProjector])
def test_inner_products_preserved_within_jl_tolerance(cls):
    rng = np.random.default_rng(0)
    G = torch.as_tensor(rng.normal(size=(20, 500)), dtype=torch.float32)
    G /= G.norm(dim=1, keepdim=True)
    k = 4096
    Z = cls(d=500, k=k, seed=1).project(G)
    exact, approx = (G @ G.T).numpy(), (Z @ Z.T).numpy()
    # JL: |<Px, Py> - <x, y>| <= eps with eps ~ c * sqrt(log(n) / k); 6/sqrt(k) ~ 0.094
    assert np.max(np.abs(approx - exact)) < 6 / math.sqrt(k)
    assert np.max(np.abs(np.diag(approx) - 1)) < 6 / math.sqrt(k)


def test_identity_and_errors():
    P = make_projector("identity", 4, None)
    G = torch.randn(2, 4)
    assert torch.equal(P.project(G), G)
    with pytest.raises(ValueError, match="coordinates"):
        make_projector("sparse", 4, 8).project(torch.randn(2, 5))
    with pytest.raises(ValueError, match="unknown projection"):
        make_projector("nope", 4, 8)
