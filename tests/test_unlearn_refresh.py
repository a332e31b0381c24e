"""Refreshing the gradient store after erasure: the ensemble members are retrained and every checkpoint
recomputed without the erased samples (checked against members trained here, independently, on the
remaining samples); certificates record it; ``traceprop verify`` reports a store that still carries erased
samples' influence, and ``traceprop refresh`` closes it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from traceprop_frames.cli import main
from traceprop_frames.errors import UnlearningError
from traceprop_frames.estimators import TorchLogisticRegression, TorchMLPClassifier
from traceprop_frames.estimators.base import _member_subset
from traceprop_frames.unlearn import generate_key, save_private_key, save_public_key
from traceprop_frames.unlearn.bundle import save_model
from traceprop_frames.unlearn.folder import erase_in_folder
from traceprop_frames.unlearn.refresh import erased_influence, refresh_store

FORGET = [0, 3, 7, 11]


def _data(n=240, d=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    return X, (X[:, 0] + 0.5 * rng.normal(size=n) > 0).astype(int)


def _mlp(**kw):
    return TorchMLPClassifier(hidden_layer_sizes=(6,), max_iter=4, store=True, k=32, n_models=3,
                              random_state=0, **kw)  # fmt: skip


def _flat(params: dict) -> torch.Tensor:
    return torch.cat([params[k].reshape(-1) for k in sorted(params)])


def test_unlearn_with_refresh_retrains_members_without_the_erased_samples():
    X, y = _data()
    est = _mlp().fit(X, y)
    old = [_flat(ck.params) for ck in est.store_.checkpoints]
    cert = est.unlearn(samples=FORGET, key=generate_key(), refresh=True)
    assert cert.body["store"] == {"refreshed": True, "checkpoints": 3}
    assert not any("gradient store" in s for s in cert.body["not_guaranteed"])
    store = est.store_
    assert sorted(np.flatnonzero(store.removed).tolist()) == FORGET and erased_influence(store) == 0
    w = est.sample_weight_
    assert np.all(w[FORGET] == 0) and np.all(np.delete(w, FORGET) == 1)
    # the oracle: each extra member trained here on the remaining samples, with its own seed
    for m, seed in enumerate(est._member_seeds(), start=1):
        keep = _member_subset(w, est.ensemble_fraction, seed) > 0  # a member fits on its rows alone
        ref = est._fit_module(est.X_train_[keep], est.y_train_[keep], w[keep], seed=seed)
        ref_flat = _flat({k: v.detach() for k, v in ref.named_parameters()})
        assert torch.allclose(_flat(store.checkpoints[m].params), ref_flat)
        assert not torch.allclose(old[m], ref_flat)  # the old member had seen the erased samples
    main_now = _flat({k: v.detach() for k, v in est.module_.named_parameters()})
    assert torch.equal(_flat(store.checkpoints[0].params), main_now)  # member 0: the corrected model
    store.check_model(est.module_)
    top = est.influence(X[:5], top_k=30)
    assert len(top) == 150 and not set(top["train_row"].tolist()) & set(FORGET)


def test_without_refresh_the_certificate_says_so_and_refresh_store_closes_it():
    X, y = _data()
    est = _mlp().fit(X, y)
    cert = est.unlearn(samples=FORGET, key=generate_key())
    assert cert.body["store"] == {"refreshed": False, "checkpoints": 3}
    assert any("refresh the store" in s for s in cert.body["not_guaranteed"])
    assert erased_influence(est.store_) == len(FORGET)
    info = refresh_store(est)
    assert info["erased"] == len(FORGET) and info["checkpoints"] == 3
    assert erased_influence(est.store_) == 0
    est.unlearn(samples=[20], key=generate_key())
    assert erased_influence(est.store_) == 1  # a later erasure: the refreshed store saw sample 20


def test_refresh_needs_a_store():
    X, y = _data()
    est = TorchLogisticRegression().fit(X, y)
    with pytest.raises(UnlearningError, match="no gradient store"):
        est.unlearn(samples=[1], key=generate_key(), refresh=True)
    with pytest.raises(UnlearningError, match="no gradient store"):
        refresh_store(est)
    assert est.sample_weight_[1] == 1  # nothing changed


def test_verify_reports_a_store_with_erased_influence_and_refresh_closes_it(tmp_path, capsys):
    X, y = _data()
    est = TorchLogisticRegression(store=str(tmp_path / "store"), k=16).fit(X, y)
    folder = save_model(est, tmp_path / "model")
    key = generate_key()
    save_private_key(key, tmp_path / "k.pem")
    save_public_key(key, tmp_path / "k.pub.pem")
    with pytest.raises(UnlearningError, match="traceprop refresh"):
        erase_in_folder(folder, samples=FORGET, key=key, refresh=True)
    cert = erase_in_folder(folder, samples=FORGET, key=key)
    assert cert.body["store"] == {"refreshed": False, "checkpoints": 1}  # a folder erasure sees the store
    assert any("refresh the store" in s for s in cert.body["not_guaranteed"])
    assert main(["verify", str(folder), "--public-key", str(tmp_path / "k.pub.pem")]) == 0
    out = capsys.readouterr().out
    assert f"still carries the influence of {len(FORGET)} erased sample(s)" in out
    assert main(["refresh", str(folder)]) == 0
    assert f"{len(FORGET)} erased sample(s) no longer carried" in capsys.readouterr().out
    assert main(["verify", str(folder), "--public-key", str(tmp_path / "k.pub.pem")]) == 0
    assert "carries no erased sample's influence" in capsys.readouterr().out
