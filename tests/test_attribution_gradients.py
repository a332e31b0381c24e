"""Per-sample gradients (vmap(grad)) against a Python loop of autograd calls."""

import numpy as np
import torch

from traceprop_frames.attribution import TrainingContext
from traceprop_frames.attribution.gradients import (
    batch_mean_loss_grads,
    param_names,
    per_sample_output_grads,
)
from traceprop_frames.attribution.store import GradientStore
from traceprop_frames.estimators.mlp import MLPLogit


def _loop_grads(model, X, names):
    params = dict(model.named_parameters())
    rows = []
    for x in X:
        out = model(x.unsqueeze(0))[0]
        gs = torch.autograd.grad(out, [params[n] for n in names])
        rows.append(torch.cat([g.reshape(-1) for g in gs]))
    return torch.stack(rows)


def test_full_and_last_layer_grads_match_loop():
    torch.manual_seed(0)
    model = MLPLogit(5, (7, 3))
    X = torch.randn(6, 5)
    for variant in ("TRAK", "LL"):
        names = param_names(model, variant)
        out, G = per_sample_output_grads(model, X, names=names, batch_size=4)
        assert torch.allclose(out, model(X).detach(), atol=1e-6)
        assert torch.allclose(G, _loop_grads(model, X, names), atol=1e-6)
    assert param_names(model, "LL") == ["net.4.weight", "net.4.bias"]


def test_batch_mean_grads_match_loop():
    torch.manual_seed(1)
    model = MLPLogit(4, (5,))
    X, y = torch.randn(10, 4), (torch.rand(10) > 0.5).float()
    batches = [np.arange(0, 4), np.arange(4, 10)]

    def bce(o, t):
        return torch.nn.functional.binary_cross_entropy_with_logits(o, t, reduction="none")

    G = batch_mean_loss_grads(model, bce, X, y, batches)
    for b, row in zip(batches, G):
        loss = bce(model(X[b]), y[b]).mean()
        ref = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(model.parameters()))])
        assert torch.allclose(row, ref, atol=1e-6)


def test_training_context_last_layer_fast_path_equals_vmap_features():
    torch.manual_seed(2)
    model = MLPLogit(4, (6,))
    X, y = torch.randn(12, 4), (torch.rand(12) > 0.5).float()
    store = GradientStore(k=None, variant="LL", dtype="float32")
    crit = torch.nn.BCEWithLogitsLoss()
    with TrainingContext(model, store, n_samples=12) as ctx:
        for idx in (np.arange(0, 5), np.arange(5, 12)):
            ctx.backward(crit(model(X[idx]), y[idx]), batch_idx=idx)
    out, G = per_sample_output_grads(model, X, names=param_names(model, "LL"))
    np.testing.assert_allclose(store.features(0), G.numpy(), atol=1e-6)
    p = torch.sigmoid(out)
    ck = store.checkpoints[0]
    np.testing.assert_allclose(ck.derivs[:, 0], (p - y).numpy(), atol=1e-6)  # dl/df, recovered from the mean
    np.testing.assert_allclose(ck.derivs[:, 1], (p * (1 - p)).numpy(), atol=1e-6)


def test_training_context_options_agree():
    """Buffered vs per-step projection, closed-form vs autograd output Hessian: same store."""
    torch.manual_seed(3)
    X, y = torch.randn(20, 3), (torch.rand(20) > 0.5).float()
    stores = []
    for buffer_bytes, hess in ((256 << 20, "bce"), (0, "autograd")):
        torch.manual_seed(4)
        model = MLPLogit(3, (5,))
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        store = GradientStore(k=16, variant="LL", dtype="float32")
        crit = torch.nn.BCEWithLogitsLoss(reduction="sum")
        with TrainingContext(
            model, store, n_samples=20, reduction="sum", buffer_bytes=buffer_bytes, output_hessian=hess
        ) as ctx:
            for _ in range(2):
                for idx in (np.arange(0, 8), np.arange(8, 20)):
                    opt.zero_grad()
                    ctx.backward(crit(model(X[idx]), y[idx]), batch_idx=idx)
                    opt.step()
        stores.append(store)
    a, b = stores
    np.testing.assert_allclose(a.features(0), b.features(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.checkpoints[0].derivs, b.checkpoints[0].derivs, rtol=1e-5, atol=1e-6)
