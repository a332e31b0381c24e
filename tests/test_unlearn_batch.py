"""Fast Newton erasure from the fit's kept Hessian, and batches of requests (`traceprop erase --requests`)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import traceprop_frames as tpf
from traceprop_frames.cli import main
from traceprop_frames.errors import RequestFileError, UnknownRowError
from traceprop_frames.estimators import TorchLogisticRegression
from traceprop_frames.estimators.newton import data_hessian
from traceprop_frames.unlearn import approximate_unlearn, generate_key, save_private_key, save_public_key
from traceprop_frames.unlearn.batch import erase_requests, read_requests
from traceprop_frames.unlearn.bundle import load_model, save_model


def data(n=600, d=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    y = (rng.random(n) < 1 / (1 + np.exp(-X @ rng.standard_normal(d)))).astype(int)
    return X, y


def proba(m, X):
    with torch.no_grad():
        return torch.sigmoid(m(torch.as_tensor(X, dtype=torch.float64))).numpy()


def test_fit_keeps_the_hessian_and_downdate_matches_refactor_and_retrain():
    X, y = data()
    est = TorchLogisticRegression(C=0.5, tol=1e-13).fit(X, y)
    st = est.newton_state_
    # oracle for the kept Hessian: formed from scratch at the point it claims
    assert np.allclose(st["S"], data_hessian(X, np.ones(len(X)), st["theta_h"]), rtol=1e-12, atol=1e-9)
    forget = np.array([3, 50, 51, 400])
    after = approximate_unlearn(est, forget)  # the fast path: downdate + corrections
    r = after.unlearn_result_
    assert r.extra["hessian_passes"] == 0 and r.certified_bound <= 1e-6
    # downdated Hessian == a full refactor on the remaining rows at the same point
    w = np.ones(len(X))
    w[forget] = 0
    S_full = data_hessian(X, w, after.newton_state_["theta_h"])
    assert np.allclose(after.newton_state_["S"], S_full, rtol=1e-10, atol=1e-8)
    # oracle: exact Newton retrained from scratch on the remaining rows only
    keep = np.setdiff1d(np.arange(len(X)), forget)
    retrain = TorchLogisticRegression(C=0.5, tol=1e-14).fit(X[keep], y[keep])
    # the certified distance bounds the prediction change: |Δp| ≤ ¼ ‖x̃‖ ‖θ′ − θ*‖
    reach = 0.25 * np.sqrt((X.astype(np.float64) ** 2).sum(1) + 1).max()
    assert (
        np.abs(proba(after.module_, X) - proba(retrain.module_, X)).max() <= reach * r.certified_bound + 1e-12
    )
    tight = approximate_unlearn(est, forget, bound=1e-11)
    assert np.abs(proba(tight.module_, X) - proba(retrain.module_, X)).max() < 1e-10
    # a second erasure continues from the updated state (no Hessian pass either)
    again = approximate_unlearn(after, [7, 8])
    assert (
        again.unlearn_result_.extra["hessian_passes"] == 0 and again.unlearn_result_.certified_bound <= 1e-6
    )
    # the original was not touched and still takes the fast path
    assert (
        est.newton_state_ is st and approximate_unlearn(est, [9]).unlearn_result_.extra["hessian_passes"] == 0
    )


def test_stale_state_falls_back_to_the_general_newton():
    X, y = data(seed=1)
    est = TorchLogisticRegression().fit(X, y)
    est.sample_weight_ = est.sample_weight_.copy()
    est.sample_weight_[0] = 0.0  # weights no longer those the kept Hessian was formed on
    r = approximate_unlearn(est, [5]).unlearn_result_
    assert "hessian_passes" not in r.extra and r.certified_bound <= 1e-6


@pytest.fixture()
def traced_model(tmp_path):
    X, y = data(n=300, d=4, seed=2)
    src = tmp_path / "clients.csv"
    pd.DataFrame(X, columns=list("abcd")).assign(label=y).to_csv(src, index=False)
    df = tpf.read_csv(src)
    est = TorchLogisticRegression().fit(df[list("abcd")], df["label"])
    return tmp_path, src, est, X, y


def test_erase_requests_one_solve_one_certificate_each(traced_model):
    tmp, src, est, X, y = traced_model
    requests = [
        {"request_id": "r1", "source": str(src), "rows": [4], "received": "2026-11-30"},
        {"request_id": "r2", "source": str(src), "rows": [10, 11], "received": "2026-12-01"},
        {"request_id": "r3", "source": str(src), "rows": [4, 12], "received": "2026-12-01"},
    ]
    certs = erase_requests(est, requests, key=generate_key())
    # oracle: the pipeline reads the CSV directly, so data row i is training sample i
    for req, cert in zip(requests, certs):
        b = cert.body
        assert b["batch"]["request_id"] == req["request_id"] and b["batch"]["received"] == req["received"]
        assert b["request"]["sources"][0]["rows"] == req["rows"]
        assert b["forget_set"]["training_indices"] == req["rows"]
        assert b["forget_set"]["source_rows"][str(src)] == req["rows"]
    assert len({c.body["batch"]["solve_id"] for c in certs}) == 1
    assert certs[0].body["batch"]["n_samples"] == 4 and len({c.id for c in certs}) == 3
    keep = np.setdiff1d(np.arange(len(X)), [4, 10, 11, 12])
    retrain = TorchLogisticRegression(tol=1e-14).fit(X[keep], y[keep])
    # the certified distance bounds the prediction change: |Δp| ≤ ¼ ‖x̃‖ ‖θ′ − θ*‖
    reach = 0.25 * np.sqrt((X.astype(np.float64) ** 2).sum(1) + 1).max()
    bound = certs[0].body["evidence"]["certified_bound"]
    assert np.abs(proba(est.module_, X) - proba(retrain.module_, X)).max() <= reach * bound + 1e-12
    assert est.lineage_.ops()[-1] == "erase"
    # the same request again: a no-op naming the certificate that erased its rows
    (again,) = erase_requests(est, requests[:1], key=generate_key())
    assert again.status == "no-op" and again.body["previous_certificates"] == [certs[0].id, certs[2].id]


def test_batch_refuses_unknown_rows_before_changing_anything(traced_model):
    tmp, src, est, X, y = traced_model
    before = est.module_.linear.weight.detach().clone()
    bad = [
        {"request_id": "ok", "source": str(src), "rows": [1], "received": ""},
        {"request_id": "bad", "source": str(src), "rows": [10_000], "received": ""},
    ]
    with pytest.raises(UnknownRowError):
        erase_requests(est, bad, key=generate_key())
    assert torch.equal(est.module_.linear.weight, before) and est.sample_weight_.min() == 1.0


def test_cli_requests_file(traced_model, capsys):
    tmp, src, est, X, y = traced_model
    save_model(est, tmp / "model")
    key = generate_key()
    save_private_key(key, tmp / "k.pem")
    save_public_key(key.public_key(), tmp / "k.pub.pem")
    (tmp / "req.csv").write_text(
        f"request_id,source,rows,received\na-1,{src},7,2026-12-01\na-2,{src},8;9 20,2026-12-02\n"
    )
    args = ["erase", str(tmp / "model"), "--requests", str(tmp / "req.csv"), "--key", str(tmp / "k.pem")]
    assert main([*args, "--out-dir", str(tmp / "certs")]) == 0
    assert "2 requests, 4 training samples erased in one solve" in capsys.readouterr().out
    for rid, rows in (("a-1", [7]), ("a-2", [8, 9, 20])):
        cert = tpf.verify_certificate(tmp / "certs" / f"{rid}.json", tmp / "k.pub.pem")
        assert cert.body["request"]["sources"][0]["rows"] == rows
        assert cert.body["batch"]["request_id"] == rid
    model = load_model(tmp / "model")  # the folder was updated, its kept Hessian with it
    assert (model.sample_weight_ == 0).sum() == 4 and model.newton_state_ is not None
    r = approximate_unlearn(model, [30]).unlearn_result_
    assert r.extra["hessian_passes"] == 0
    # malformed files: a named error, exit status 2, nothing written
    (tmp / "bad.csv").write_text("request_id,source,rows\nx,a.csv,1\n")
    assert (
        main(["erase", str(tmp / "model"), "--requests", str(tmp / "bad.csv"), "--key", str(tmp / "k.pem")])
        == 2
    )
    assert "RequestFileError" in capsys.readouterr().err
    with pytest.raises(RequestFileError, match="line 2"):
        (tmp / "bad2.csv").write_text("request_id,source,rows,received\nx,a.csv,1 -2,\n")
        read_requests(tmp / "bad2.csv")
    assert json.loads((tmp / "certs" / "a-1.json").read_text())["certificate"]["status"] == "erased"
