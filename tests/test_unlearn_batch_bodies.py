"""A batch's certificates, built from one shared template, say what each request alone would; the lineage
is queried for all requests at once; one Signer per key."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch

import traceprop_frames as tpf
from traceprop_frames.estimators import TorchLogisticRegression
from traceprop_frames.unlearn import Certificate, generate_key, verify_certificate
from traceprop_frames.unlearn.batch import erase_requests
from traceprop_frames.unlearn.certificate import Signer, key_id, public_key_pem, validate
from traceprop_frames.unlearn.request import forget_from_request


def _losses(est, module, samples):
    with torch.no_grad():
        return est.per_sample_loss(module, est.X_train_[samples], est.y_train_[samples]).double().numpy()


def test_batch_certificates_match_the_pipeline_structure_and_the_per_request_path(tmp_path):
    rng = np.random.default_rng(11)
    X = rng.standard_normal((160, 3)).astype(np.float32)
    y = (X[:, 0] + 0.3 * rng.standard_normal(160) > 0).astype(int)
    src = tmp_path / "clients.csv"
    pd.DataFrame(X, columns=list("abc")).assign(label=y).to_csv(src, index=False)
    df = tpf.read_csv(src)
    sub = df[df["a"] > -0.5]
    both = tpf.concat([sub, sub], ignore_index=True)  # kept data row r -> samples k and m + k
    est = TorchLogisticRegression().fit(both[list("abc")], both["label"])
    kept = np.flatnonzero(X[:, 0] > -0.5)
    m = len(kept)

    def samples_of(rows):  # the structure's oracle
        k = np.flatnonzero(np.isin(kept, rows))
        return sorted(np.concatenate([k, k + m]).tolist())

    dropped = int(np.flatnonzero(X[:, 0] <= -0.5)[0])
    r0, r1, r2, r3 = (int(r) for r in kept[[0, 5, 9, 20]])
    first = est.unlearn(source=str(src), rows=[r0], key=generate_key())  # erased before the batch
    requests = [
        {"request_id": "again", "source": str(src), "rows": [r0], "received": "2026-12-01"},
        {"request_id": "one", "source": str(src), "rows": [r1], "received": "2026-12-01"},
        {"request_id": "two", "source": str(src), "rows": [r3, r2, dropped], "received": "2026-12-02"},
        {"request_id": "repeat", "source": str(src), "rows": [r1], "received": "2026-12-02"},
        {"request_id": "none", "source": str(src), "rows": [dropped], "received": "2026-12-02"},
    ]
    lineage, module = est.lineage_, copy.deepcopy(est.module_)
    key = generate_key()
    certs = erase_requests(est, requests, key=key)
    assert [c.status for c in certs] == ["no-op", "erased", "erased", "erased", "no-op"]
    for req, cert in zip(requests, certs):
        b = cert.body
        rows = sorted(set(req["rows"]))
        own = [] if req["request_id"] == "again" else samples_of(rows)
        assert b["forget_set"]["training_indices"] == own and b["forget_set"]["count"] == len(own)
        assert b["forget_set"]["already_removed"] == (
            samples_of([r0]) if req["request_id"] == "again" else []
        )
        assert b["forget_set"]["source_rows"] == (
            {str(src): [r for r in rows if r != dropped]} if own else {}
        )
        # the request record is what the single-request path writes
        assert b["request"]["sources"] == forget_from_request(lineage, str(src), req["rows"])[1]
        assert b["request"]["sources"][0]["rows_without_samples"] == ([dropped] if dropped in rows else [])
        if own:
            assert b["evidence"]["forget_loss_before"] == pytest.approx(_losses(est, module, own).mean())
            assert b["evidence"]["forget_loss_after"] == pytest.approx(_losses(est, est.module_, own).mean())
            assert b["method"]["name"] == "newton" and b["evidence"]["certified_bound"] <= 1e-6
        else:
            assert b["method"]["name"] == "none" and b["evidence"]["forget_loss_before"] is None
        assert b["previous_certificates"] == ([first.id] if req["request_id"] == "again" else [])
        # signed over its canonical JSON and written in the one file form, shared sections included
        doc = cert.to_dict()
        assert cert.to_json() == json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=True) + "\n"
        verify_certificate(cert.save(tmp_path / f"{req['request_id']}.json"), key.public_key())
    assert len({c.id for c in certs}) == len(certs)


def test_signers_of_two_keys_in_one_process_each_sign_with_their_own_key(tmp_path):
    k1, k2 = generate_key(), generate_key()
    s1, s2 = Signer(k1), Signer(k2)
    assert (s1.key_id, s2.key_id) == (key_id(k1), key_id(k2)) and s1.key_id != s2.key_id
    assert (s1.public_key_pem, s2.public_key_pem) == (public_key_pem(k1), public_key_pem(k2))
    cert = Certificate.sign(json.loads(json.dumps(_body())), k2)  # after both signers: still k2's own
    assert cert.signature["key_id"] == key_id(k2)
    method = {"name": "none", "parameters": {"x": np.float64(0.5), "nan": float("nan")}, "iterations": 0}
    shared = s1.share({**method, "seconds": np.float32(0.25)})
    assert shared["parameters"] == {"x": 0.5, "nan": None} and type(shared["seconds"]) is float  # cleaned
    for i, signer in enumerate((s1, s2, s1)):
        body = _body()
        body["method"] = shared if signer is s1 else dict(shared)
        c = signer.sign(body)
        assert c.to_json() == json.dumps(c.to_dict(), sort_keys=True, indent=2, ensure_ascii=True) + "\n"
        path = c.save(tmp_path / f"{i}.json")
        verify_certificate(path, (k1 if signer is s1 else k2).public_key())
        with pytest.raises(Exception, match="signed by key"):
            verify_certificate(path, (k2 if signer is s1 else k1).public_key())


def _body() -> dict:
    """A valid unsigned record, from a tiny real erasure."""
    rng = np.random.default_rng(0)
    est = TorchLogisticRegression().fit(rng.standard_normal((60, 2)), rng.integers(0, 2, 60))
    return copy.deepcopy(est.unlearn(samples=[1], key=generate_key()).body)


@pytest.mark.parametrize("with_context", [False, True])
def test_grouped_lineage_queries_equal_one_query_per_group(tmp_path, with_context):
    rng = np.random.default_rng(5)
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    pd.DataFrame({"k": rng.integers(0, 30, 90), "v": rng.standard_normal(90)}).to_csv(a, index=False)
    pd.DataFrame({"k": np.arange(30), "w": rng.standard_normal(30)}).to_csv(b, index=False)
    agg = tpf.read_csv(a).tp.groupby("k").agg(s=("v", "sum")).reset_index()  # several rows of a per row
    out = agg.tp.merge(tpf.read_csv(b), on="k")
    if with_context:
        out = out.assign(w=out["w"] - out["w"].mean())  # every row reads all of b's rows (shared context)
    lin = out.tp.lineage()
    assert lin.has_context == with_context
    groups = [rng.choice(len(lin), size=s, replace=False) for s in (1, 3, 0, 2, 5)]
    counts = [len(g) for g in groups]
    flat = np.concatenate(groups)
    for want, got in zip(
        (lin.sources(rows=g) if len(g) else {} for g in groups), lin.sources_grouped(flat, counts)
    ):
        assert {k: v.tolist() for k, v in want.items()} == {k: v.tolist() for k, v in got.items()}
    ids = [lin.ids[lin.offsets[g[0]] : lin.offsets[g[0] + 1]] if len(g) else lin.ids[:0] for g in groups]
    for direct in (True, False):
        got = lin.rows_from_ids_grouped(np.concatenate(ids), [len(i) for i in ids], direct=direct)
        assert [x.tolist() for x in got] == [lin.rows_from_ids(i, direct=direct).tolist() for i in ids]


def test_batch_certificates_name_the_shared_statistics_of_each_request(tmp_path):
    """A batch of one request says what the single erasure says about shared statistics; in a larger
    batch each request's section names the statistics its own rows fed, counted against the samples the
    whole batch leaves (the z-score's mean and std read every row; a cumsum's prefixes from the row on)."""
    rng = np.random.default_rng(3)
    src = tmp_path / "a.csv"
    pd.DataFrame({"x": rng.normal(size=60), "y": rng.integers(0, 2, 60)}).to_csv(src, index=False)

    def fitted():
        a = tpf.read_csv(src)
        a["z"] = (a["x"] - a["x"].mean()) / a["x"].std()
        a["cs"] = a["x"].cumsum()
        return TorchLogisticRegression().fit(a[["z", "cs"]], a["y"])

    single = fitted().unlearn(source=str(src), rows=[50], key=generate_key()).body
    (one,) = erase_requests(fitted(), [{"request_id": "r", "source": str(src), "rows": [50], "received": ""}],
                            key=generate_key())  # fmt: skip
    assert one.body["shared_statistics"] == single["shared_statistics"]
    assert single["shared_statistics"]["effect_removed"] is False
    assert [n for n in one.body["not_guaranteed"] if n.startswith("Shared statistics")] == [
        n for n in single["not_guaranteed"] if n.startswith("Shared statistics")
    ]
    reqs = [{"request_id": str(r), "source": str(src), "rows": [r], "received": ""} for r in (10, 50)]
    certs = erase_requests(fitted(), reqs, key=generate_key())
    for r, cert in zip((10, 50), certs):
        sets = {s["op"]: s for s in cert.body["shared_statistics"]["sets"]}
        assert sets["cumsum"]["sets_hit"] == 60 - r  # prefixes r..59 read row r
        # remaining samples (58) computed from a hit set: mean/std feed all; the prefixes feed rows r..59
        assert sets["mean"]["samples_affected"] == 58 and sets["cumsum"]["samples_affected"] == 60 - r - (
            2 if r == 10 else 1
        )
        validate(cert.to_dict())  # the schema holds the section
