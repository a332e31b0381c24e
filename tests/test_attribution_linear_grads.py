"""Per-sample gradients by the outer-product rule (Linear layers, one backward) against a per-row loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from traceprop_frames.attribution.gradients import param_names, per_sample_output_grads
from traceprop_frames.estimators.mlp import MLPLogit


def _loop_grads(module, X, names, params):
    """One autograd call per row: the definition, no vmap and no outer products."""
    module = type(module)(*module._args)
    module.load_state_dict(params)
    rows = []
    for x in X:
        out = module(x[None]).reshape(-1)[0]
        p = dict(module.named_parameters())
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(out, [p[n] for n in names])]))
    return torch.stack(rows)


class Shared(torch.nn.Module):
    """A Linear used twice (shared weights): the fast path must step aside for vmap."""

    per_sample_independent = True

    def __init__(self, d):
        super().__init__()
        self._args = (d,)
        self.lin = torch.nn.Linear(d, d)
        self.out = torch.nn.Linear(d, 1)

    def forward(self, x):
        return self.out(torch.tanh(self.lin(torch.relu(self.lin(x))))).squeeze(-1)


@pytest.mark.parametrize("variant", ["TRAK", "LL"])
def test_linear_rule_matches_per_row_autograd(variant):
    torch.manual_seed(0)
    model = MLPLogit(5, (7, 3))
    model._args = (5, (7, 3))
    X = torch.randn(40, 5)
    names = param_names(model, variant)
    params = {n: p.detach() + 0.1 for n, p in model.named_parameters()}  # a checkpoint, not the live weights
    out, G = per_sample_output_grads(model, X, names=names, params=params)
    expect = _loop_grads(model, X, names, params)
    assert G.shape == expect.shape and torch.allclose(G, expect, atol=1e-6)
    model.load_state_dict(params)
    assert torch.allclose(out, model(X).detach(), atol=1e-6)
    assert all(p.grad is None for p in model.parameters())  # the model's own parameters are untouched


def test_shared_weights_fall_back_to_vmap():
    torch.manual_seed(1)
    model = Shared(4)
    X = torch.randn(12, 4)
    params = {n: p.detach() for n, p in model.named_parameters()}
    _, G = per_sample_output_grads(model, X, params=params)
    assert np.allclose(G.numpy(), _loop_grads(model, X, list(params), params).numpy(), atol=1e-6)
