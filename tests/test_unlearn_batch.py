"""Fast Newton erasure from the fit's kept Hessian, and batches of requests (`traceprop erase --requests`)."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

import traceprop_frames as tpf
from traceprop_frames.cli import main
from traceprop_frames.errors import CertificateError, RequestFileError, UnknownRowError
from traceprop_frames.estimators import TorchLogisticRegression
from traceprop_frames.estimators.newton import data_hessian
from traceprop_frames.unlearn import (
    Certificate,
    approximate_unlearn,
    generate_key,
    ledger,
    save_private_key,
    save_public_key,
)
from traceprop_frames.unlearn.batch import erase_requests, read_requests
from traceprop_frames.unlearn.bundle import load_model, save_model
from traceprop_frames.unlearn.folder import erase_in_folder, erase_requests_in_folder


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


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_batch_is_one_commit_in_the_ledger_and_verify_catches_a_removed_or_altered_entry(tmp_path, capsys):
    X, y = data(n=300, d=4, seed=5)
    src = tmp_path / "clients.csv"
    pd.DataFrame(X, columns=list("abcd")).assign(label=y).to_csv(src, index=False)
    df = tpf.read_csv(src)
    est = TorchLogisticRegression(store=str(tmp_path / "store"), k=16).fit(df[list("abcd")], df["label"])
    folder = save_model(est, tmp_path / "model")
    key = generate_key()
    save_private_key(key, tmp_path / "k.pem")
    save_public_key(key.public_key(), tmp_path / "k.pub.pem")
    first = erase_in_folder(folder, samples=[1], key=key)  # ledger entry 1
    rows = {"b-1": [7], "b-2": [8, 9, 20], "b-3": [7, 40], "b-4": [1]}  # b-4: erased before (entry 1)
    (tmp_path / "req.csv").write_text(
        "request_id,source,rows,received\n"
        + "".join(f"{r},{src},{' '.join(map(str, v))},2026-12-02\n" for r, v in rows.items())
    )
    erase = ["erase", str(folder), "--requests", str(tmp_path / "req.csv"), "--key", str(tmp_path / "k.pem")]
    assert main([*erase, "--out-dir", str(tmp_path / "certs"), "--dry-run"]) == 0
    assert len(ledger.entries(folder)) == 1  # a dry run changes nothing
    assert main([*erase, "--out-dir", str(tmp_path / "certs")]) == 0
    verify = ["verify", str(folder), "--public-key", str(tmp_path / "k.pub.pem")]
    capsys.readouterr()
    assert main(verify) == 0 and "5 erasure certificate(s), chain intact" in capsys.readouterr().out
    files = ledger.entries(folder)
    assert [f.name for f in files] == [f"{i:06d}.json" for i in range(1, 6)]
    docs = [json.loads(f.read_text())["certificate"] for f in files]
    for i in range(1, 5):  # oracle for the links: sha256 of the previous file's bytes, computed here
        assert docs[i]["chain"] == {"sequence": i + 1, "previous_sha256": _sha(files[i - 1])}
    # each request's own rows (the pipeline reads the CSV directly: row i is sample i), one shared solve
    for doc, (rid, want) in zip(docs[1:], rows.items()):
        assert doc["batch"]["request_id"] == rid and doc["request"]["sources"][0]["rows"] == want
        assert doc["forget_set"]["training_indices"] == ([] if rid == "b-4" else want)
        assert (tmp_path / "certs" / f"{rid}.json").read_text() == files[docs.index(doc)].read_text()
    assert docs[4]["status"] == "no-op" and docs[4]["previous_certificates"] == [first.id]
    assert len({d["batch"]["solve_id"] for d in docs[1:]}) == 1
    assert {d["model"]["fingerprint_before"] for d in docs[1:]} == {docs[0]["model"]["fingerprint_after"]}
    model = load_model(folder)
    erased = [1, 7, 8, 9, 20, 40]
    assert np.flatnonzero(model.store_.removed).tolist() == erased
    assert np.flatnonzero(model.sample_weight_ == 0).tolist() == erased
    keep = np.setdiff1d(np.arange(len(X)), erased)
    retrain = TorchLogisticRegression(tol=1e-14).fit(X[keep], y[keep])
    assert np.abs(proba(model.module_, X) - proba(retrain.module_, X)).max() < 1e-6
    # erasures after the batch chain on: a single one, then the same batch again (all no-op)
    erase_in_folder(folder, samples=[50], key=key)
    assert main([*erase, "--out-dir", str(tmp_path / "certs2")]) == 0
    assert len(ledger.verify_chain(folder, key.public_key())) == 10
    # tampering with the batch's entries: the last one removed, a middle one removed, one byte altered
    for name, damage, match in (
        ("last", lambda d: (d / "ledger" / "000005.json").unlink(), "3 of their certificates"),
        ("middle", lambda d: (d / "ledger" / "000003.json").unlink(), "000003.json is missing"),
        ("altered", lambda d: _flip(d / "ledger" / "000004.json"), "altered|canonical form|not valid"),
    ):
        copy = tmp_path / f"model-{name}"
        shutil.copytree(folder, copy)
        for f in sorted((copy / "ledger").iterdir())[5:] if name == "last" else ():
            f.unlink()  # removing entry 5 as the *last* batch entry: the later erasures go too
        damage(copy)
        with pytest.raises(CertificateError, match=match):
            ledger.verify_chain(
                copy, key.public_key(), model_fingerprint=docs[4]["model"]["fingerprint_after"]
            )
        capsys.readouterr()
        assert main(["verify", str(copy), "--public-key", str(tmp_path / "k.pub.pem")]) == 1


def _flip(path) -> None:
    data = bytearray(path.read_bytes())
    i = data.index(b'"received": "2026-12-02"') + len(b'"received": "2026-12-0')
    data[i] = ord("3")
    path.write_bytes(bytes(data))


def test_batch_maps_each_request_through_a_source_read_twice(tmp_path):
    X, y = data(n=120, d=3, seed=6)
    src = tmp_path / "clients.csv"
    pd.DataFrame(X, columns=list("abc")).assign(label=y).to_csv(src, index=False)
    both = tpf.concat([tpf.read_csv(src), tpf.read_csv(src)], ignore_index=True)  # two reads, one file
    est = TorchLogisticRegression().fit(both[list("abc")], both["label"])
    requests = [
        {"request_id": "a", "source": str(src), "rows": [3], "received": ""},
        {"request_id": "b", "source": str(src), "rows": [6, 5], "received": ""},
        {"request_id": "c", "source": str(src), "rows": [119], "received": ""},
    ]
    certs = erase_requests(est, requests, key=generate_key())
    # oracle: the concatenation puts data row r at samples r and 120 + r
    assert [c.body["forget_set"]["training_indices"] for c in certs] == [
        [3, 123],
        [5, 6, 125, 126],
        [119, 239],
    ]
    with pytest.raises(UnknownRowError, match="refused, nothing was changed"):
        erase_requests(est, [{"request_id": "d", "source": str(src), "rows": [120], "received": ""}])


def _rechain(folder, key, drop=None, edit=None) -> None:
    """Rewrite the ledger as someone holding the signing key could: drop entry ``drop`` and/or edit the
    body of entry ``edit[0]`` with ``edit[1]``, then renumber, relink and re-sign every entry."""
    files = ledger.entries(folder)
    bodies = [json.loads(f.read_text())["certificate"] for f in files]
    for f in files:
        f.unlink()
    if drop is not None:
        del bodies[drop - 1]
    if edit is not None:
        edit[1](bodies[edit[0] - 1])
    link = {"sequence": 1, "previous_sha256": None}
    for body in bodies:
        body["chain"] = link
        cert = Certificate.sign(body, key)
        ledger.entry_path(folder, link["sequence"]).write_text(cert.to_json())
        link = ledger.link_of(cert)


def test_batch_rules_hold_even_against_the_key_holder(tmp_path):
    X, y = data(n=200, d=3, seed=7)
    src = tmp_path / "clients.csv"
    pd.DataFrame(X, columns=list("abc")).assign(label=y).to_csv(src, index=False)
    df = tpf.read_csv(src)
    folder = save_model(TorchLogisticRegression().fit(df[list("abc")], df["label"]), tmp_path / "model")
    key = generate_key()
    requests = [{"request_id": f"q{i}", "source": str(src), "rows": [i], "received": ""} for i in range(4)]
    erase_requests_in_folder(folder, requests, key=key)
    erase_in_folder(folder, samples=[50], key=key)  # entry 5, after the batch (entries 1-4)
    assert len(ledger.verify_chain(folder, key.public_key())) == 5
    base = tmp_path / "base"
    shutil.copytree(folder, base)

    def other_fingerprint(b):
        b["model"]["fingerprint_before"] = "0" * 64

    for drop, edit, match in (
        (2, None, "served 4 requests, but 3"),  # one request's certificate removed, the chain rebuilt
        (None, (3, other_fingerprint), "differ from its batch solve"),
        (None, (3, lambda b: b["batch"].update(n_requests=3)), "disagrees with the rest"),
    ):
        shutil.rmtree(folder)
        shutil.copytree(base, folder)
        _rechain(folder, key, drop=drop, edit=edit)
        with pytest.raises(CertificateError, match=match):
            ledger.verify_chain(folder, key.public_key())
    shutil.rmtree(folder)
    shutil.copytree(base, folder)
    _rechain(folder, key)  # re-signing alone (no change) still verifies: the rules, not the key, decide
    assert len(ledger.verify_chain(folder, key.public_key())) == 5
