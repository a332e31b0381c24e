"""Erasure requests by source rows, through a traced ETL and a scikit-learn Pipeline (real estimators)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.compose import make_column_transformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import traceprop_frames as tpf
from traceprop_frames.datasets import make_credit_risk
from traceprop_frames.errors import UnknownRowError, UnknownSourceError, UnlearningError
from traceprop_frames.estimators import TorchLogisticRegression
from traceprop_frames.unlearn import approximate_unlearn, export_compliance, generate_key

NUM = ["AMT_INCOME_TOTAL", "AMT_CREDIT", "n_loans", "debt", "n_prev", "ratio"]


def etl(paths):
    app, bur = tpf.read_csv(paths["application"]), tpf.read_csv(paths["bureau"])
    prev = tpf.read_parquet(paths["previous_application"])
    b = bur.tp.groupby("SK_ID_CURR").agg(
        n_loans=("AMT_CREDIT_SUM", "count"), debt=("AMT_CREDIT_SUM_DEBT", "sum")
    )
    p = prev.tp.groupby("SK_ID_CURR").agg(n_prev=("AMT_APPLICATION", "count"))
    train = app.tp.merge(b, on="SK_ID_CURR", how="left").tp.merge(p, on="SK_ID_CURR", how="left")
    train = train[train["AMT_INCOME_TOTAL"] > 0]
    train["ratio"] = train["AMT_CREDIT"] / train["AMT_INCOME_TOTAL"]
    return train


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    paths = make_credit_risk(tmp_path_factory.mktemp("credit"), applicants=400, seed=3)
    train = etl(paths)
    held_out = train.iloc[300:]  # applicants 300.. are not trained on: their bureau rows feed no sample
    train = train.iloc[:300]
    pre = make_column_transformer((make_pipeline(SimpleImputer(), StandardScaler()), NUM))
    pipe = make_pipeline(pre, TorchLogisticRegression(C=1.0, store=True, k=64)).set_output(transform="pandas")
    pipe.fit(train[NUM], train["TARGET"])
    bureau = pd.read_csv(paths["bureau"])
    return paths, train, held_out, pipe, bureau, generate_key()


def bureau_rows_of(bureau, applicant):
    return np.flatnonzero(bureau["SK_ID_CURR"].to_numpy() == applicant)


def flat(m):
    return torch.cat([p.detach().reshape(-1).double() for p in m.parameters()])


def test_erase_bureau_rows_end_to_end(world):
    paths, train, held_out, pipe, bureau, key = world
    est = pipe[-1]
    assert est.lineage_ is not None
    target = 17
    applicant = int(train["SK_ID_CURR"].iloc[target])
    rows = bureau_rows_of(bureau, applicant)
    assert rows.size  # this applicant has bureau rows
    before = flat(est.module_)
    holdout = (pipe[:-1].transform(held_out[NUM]), held_out["TARGET"].to_numpy())
    # the oracle: retrain without that applicant's training row
    w = est.sample_weight_.copy()
    w[target] = 0
    est.sample_weight_, saved = w, est.sample_weight_
    ref = est._fit_module(est.X_train_, est.y_train_, w)
    est.sample_weight_ = saved

    cert = est.unlearn(source=str(paths["bureau"]), rows=rows[:2].tolist(), holdout=holdout, key=key)
    b = cert.body
    assert b["status"] == "erased" and b["forget_set"]["training_indices"] == [target]
    src = b["request"]["sources"][0]
    assert src["rows"] == sorted(rows[:2].tolist()) and src["rows_without_samples"] == []
    assert src["sha256_at_load"] == src["sha256_now"] and src["file_unchanged"] is True
    assert sorted(b["forget_set"]["source_rows"][str(paths["bureau"])]) == sorted(rows.tolist())
    assert b["method"]["name"] == "newton" and b["evidence"]["holdout"]["n"] == len(held_out)
    assert b["evidence"]["certified_bound"] is not None
    # the store's checkpoints saw the erased sample: the certificate says so and names the remedy
    store_note = [s for s in b["not_guaranteed"] if s.startswith("The gradient store's")]
    assert len(store_note) == 1 and f"{est.store_.n_checkpoints} checkpoint(s)" in store_note[0]
    assert "refresh the store" in store_note[0]
    dist = float((flat(est.module_) - flat(ref)).norm())
    assert dist < 1e-5 and float((before - flat(ref)).norm()) > 10 * dist
    # in place: weights, store, lineage
    assert est.sample_weight_[target] == 0 and est.store_.removed[target]
    assert est.lineage_.ops()[-1] == "erase" and b["lineage"]["ops"][-1] == "erase"
    infl = est.influence(pipe[:-1].transform(train[NUM].iloc[:3]), top_k=10)
    assert target not in set(infl["train_row"])
    # the same request again is a no-op that points at the first certificate
    again = est.unlearn(source=str(paths["bureau"]), rows=rows[:2].tolist(), key=key)
    assert again.status == "no-op" and again.body["forget_set"]["count"] == 0
    assert again.body["forget_set"]["already_removed"] == [target]
    assert again.body["previous_certificates"] == [cert.id]
    assert again.body["model"]["fingerprint_before"] == again.body["model"]["fingerprint_after"]
    assert est.lineage_.ops().count("erase") == 1


def test_rows_feeding_no_sample_are_reported(world):
    paths, train, held_out, pipe, bureau, key = world
    est = pipe[-1]
    outsider = int(held_out["SK_ID_CURR"].iloc[0])
    rows = bureau_rows_of(bureau, outsider)
    inside = bureau_rows_of(bureau, int(train["SK_ID_CURR"].iloc[5]))
    cert = est.unlearn(source={str(paths["bureau"]): np.r_[rows, inside[:1]].tolist()}, key=key)
    src = cert.body["request"]["sources"][0]
    assert src["rows_without_samples"] == sorted(rows.tolist())
    assert cert.body["forget_set"]["training_indices"] == [5]


def test_unknown_rows_and_sources_change_nothing(world):
    paths, train, held_out, pipe, bureau, key = world
    est = pipe[-1]
    fp = flat(est.module_).clone()
    with pytest.raises(UnknownRowError, match=r"erasure request refused.*\[10000000\]"):
        est.unlearn(source=str(paths["bureau"]), rows=[0, 10_000_000], key=key)
    with pytest.raises(UnknownSourceError, match="no lineage refers to source 'nope.csv'"):
        est.unlearn(source="nope.csv", rows=[1], key=key)
    with pytest.raises(UnlearningError, match="rows="):
        est.unlearn(source=str(paths["bureau"]), key=key)
    with pytest.raises(UnlearningError, match="nothing to erase"):
        est.unlearn(key=key)
    assert torch.equal(flat(est.module_), fp)


def test_functional_api_with_store(world):
    paths, train, held_out, pipe, bureau, key = world
    est = pipe[-1]
    app_row = int(train.tp.sources(rows=[40])[str(paths["application"])][0])
    forget = est.store_.samples_from_source(str(paths["application"]), rows=[app_row])
    assert forget.tolist() == [40]
    after = approximate_unlearn(est, forget, method="newton")
    assert est.sample_weight_[40] == 1 and not est.store_.removed[40]  # the functional call is pure
    cert = export_compliance(model_before=est, model_after=after, forget_set=forget, store=est.store_,
                             regulation="EU_AI_ACT_ART26", request={str(paths["application"]): [app_row]},
                             key=key)  # fmt: skip
    assert cert.body["regulations"] == ["EU_AI_ACT_ART26"]
    assert cert.body["request"]["sources"][0]["rows"] == [app_row]
    assert est.store_.removed[40] and after.lineage_.ops()[-1] == "erase"
    with pytest.raises(UnlearningError, match="forget_set differs"):
        export_compliance(model_before=est, model_after=after, forget_set=[1], key=key)


def test_mlp_erasure_and_changed_source_file(tmp_path):
    from traceprop_frames.estimators import TorchMLPClassifier

    paths = make_credit_risk(tmp_path, applicants=150, seed=4)
    train = etl(paths)
    pre = make_column_transformer((make_pipeline(SimpleImputer(), StandardScaler()), NUM))
    mlp = TorchMLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0)
    make_pipeline(pre, mlp).set_output(transform="pandas").fit(train[NUM], train["TARGET"])
    with open(paths["application"], "a") as f:  # the file changes after loading
        f.write("\n")
    cert = mlp.unlearn(source=str(paths["application"]), rows=[3], key=generate_key())
    b = cert.body
    assert b["method"]["name"] == "gradient" and b["evidence"]["certified_bound"] is None
    assert not any(s.startswith("The gradient store's") for s in b["not_guaranteed"])  # no store here
    assert b["model"]["convex"] is False and "No certified bound" in b["evidence"]["bound_statement"]
    src = b["request"]["sources"][0]
    assert src["file_unchanged"] is False and src["sha256_now"] != src["sha256_at_load"]
    assert b["forget_set"]["count"] == 1 and mlp.sample_weight_[b["forget_set"]["training_indices"][0]] == 0
