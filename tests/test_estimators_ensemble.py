"""Model ensembling in the gradient store: ``n_models`` independently trained MLPs kept as checkpoints."""

from __future__ import annotations

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
    est = TorchMLPClassifier(**kw, n_models=3, n_checkpoints=2).fit(X, y)
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


def test_n_models_must_be_positive(data):
    X, y = data
    with pytest.raises(ValueError, match="n_models"):
        TorchMLPClassifier(hidden_layer_sizes=(4,), max_iter=2, store=True, k=8, n_models=0).fit(X, y)
