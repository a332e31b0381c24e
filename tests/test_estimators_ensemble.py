"""Model ensembling in the gradient store: ``n_models`` independently trained MLPs kept as checkpoints."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification

from traceprop_frames.estimators import TorchMLPClassifier


@pytest.fixture(scope="module")
def data():
    return make_classification(n_samples=240, n_features=6, random_state=0)


def test_store_keeps_n_models_times_n_checkpoints(data):
    X, y = data
    kw = dict(hidden_layer_sizes=(8,), max_iter=6, random_state=3, store=True, k=32)
    est = TorchMLPClassifier(**kw, n_models=3, n_checkpoints=2, ensemble_fraction=1.0).fit(X, y)
    cks = est.store_.checkpoints
    assert len(cks) == 6 and est.store_.extra["n_models"] == 3
    finals = [cks[1].params, cks[3].params, cks[5].params]
    # member 0 is the estimator's own model; members 1, 2 are the models trained with seeds 4 and 5
    assert all(torch.equal(finals[0][n], p) for n, p in est.module_.named_parameters())
    for m, seed in ((1, 4), (2, 5)):
        alone = TorchMLPClassifier(**{**kw, "store": None, "random_state": seed}).fit(X, y)
        assert all(torch.equal(finals[m][n], p) for n, p in alone.module_.named_parameters())
    assert not torch.equal(finals[1]["net.0.weight"], finals[2]["net.0.weight"])
    # the predictions are the first model's: ensembling changes attribution only
    single = TorchMLPClassifier(**kw).fit(X, y)
    assert np.array_equal(single.predict_proba(X), est.predict_proba(X))
    S = est.influence_scores(X[:4])
    assert S.shape == (4, len(X)) and np.isfinite(S).all()
    assert not np.allclose(S, single.influence_scores(X[:4]))


def test_extra_models_train_on_random_subsets(data):
    X, y = data
    kw = dict(hidden_layer_sizes=(8,), max_iter=6, random_state=3, store=True, k=32)
    est = TorchMLPClassifier(**kw, n_models=3, ensemble_fraction=0.5).fit(X, y)
    cks = est.store_.checkpoints
    assert len(cks) == 3 and est.store_.extra["ensemble_fraction"] == 0.5
    assert all(torch.equal(cks[0].params[n], p) for n, p in est.module_.named_parameters())
    for m, seed in ((1, 4), (2, 5)):  # the documented draw: default_rng(seed).choice(rows, n/2)
        rows = np.sort(np.random.default_rng(seed).choice(len(X), len(X) // 2, replace=False))
        alone = TorchMLPClassifier(**{**kw, "store": None, "random_state": seed}).fit(X[rows], y[rows])
        assert all(torch.equal(cks[m].params[n], p) for n, p in alone.module_.named_parameters())


def _output_grads(module, params, X):
    """Per-sample gradients of the logit, one autograd call per row (independent of the vmap path)."""
    module.load_state_dict(params)
    rows, outs = [], []
    for x in torch.as_tensor(X, dtype=torch.float32):
        out = module(x[None])[0]
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(out, list(module.parameters()))]))
        outs.append(float(out.detach()))
    return np.array(outs), torch.stack(rows).double().numpy()


def test_ensemble_scores_are_the_average_over_models_and_checkpoints(data):
    X, y = data
    X = X[:60, :3]
    y = y[:60]
    est = TorchMLPClassifier(
        hidden_layer_sizes=(4,), max_iter=8, random_state=1, store=True, k=None, store_dtype="float32",
        n_models=2, n_checkpoints=2, ensemble_fraction=0.5, rel_damping=0.5,
    ).fit(X, y)  # fmt: skip
    assert est.store_.n_checkpoints == 4
    Xte = X[:5] + 0.1
    module = copy.deepcopy(est.module_)
    parts = []
    for ck in est.store_.checkpoints:  # TRAK by hand: -phi_t (Phi' H Phi + lam I)^-1 phi_i g_i
        f, Phi = _output_grads(module, ck.params, X)
        _, Phi_t = _output_grads(module, ck.params, Xte)
        p = 1 / (1 + np.exp(-f))
        K = Phi.T @ (Phi * (p * (1 - p))[:, None])
        K += (1e-4 + 0.5 * K.diagonal().mean()) * np.eye(len(K))
        parts.append(-(Phi_t @ np.linalg.solve(K, Phi.T)) * (p - y)[None, :])
    expect = np.mean(parts, axis=0)
    got = est.influence_scores(Xte)
    assert np.allclose(got, expect, rtol=1e-4, atol=1e-5 * np.abs(expect).max())
    for part in parts:  # every checkpoint counts: the average is none of its terms
        assert not np.allclose(got, part, rtol=1e-2, atol=1e-3 * np.abs(expect).max())


def test_n_models_and_fraction_must_be_valid(data):
    X, y = data
    with pytest.raises(ValueError, match="n_models"):
        TorchMLPClassifier(hidden_layer_sizes=(4,), max_iter=2, store=True, k=8, n_models=0).fit(X, y)
    with pytest.raises(ValueError, match="ensemble_fraction"):
        TorchMLPClassifier(hidden_layer_sizes=(4,), max_iter=2, store=True, k=8, ensemble_fraction=0).fit(
            X, y
        )
