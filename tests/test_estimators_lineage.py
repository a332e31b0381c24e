"""Estimators on traced frames: influence results carry source rows, through a Pipeline too."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.compose import make_column_transformer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import traceprop_frames as tpf
from traceprop_frames.estimators import TorchLogisticRegression, TorchMLPClassifier


@pytest.fixture()
def frames(tmp_path):
    rng = np.random.default_rng(1)
    n = 120
    df = pd.DataFrame(
        {
            "income": rng.normal(50, 10, n),
            "debt": rng.normal(20, 5, n),
            "region": rng.choice(["n", "s", "e"], n),
        }
    )
    df["TARGET"] = (df["debt"] / df["income"] + 0.1 * rng.normal(size=n) > 0.4).astype(int)
    path = tmp_path / "credit_scores.csv"
    df.to_csv(path, index=False)
    return tpf.read_csv(str(path)), str(path)


def _pipe(est):
    ct = make_column_transformer(
        (StandardScaler(), ["income", "debt"]), (OneHotEncoder(sparse_output=False), ["region"])
    )
    return make_pipeline(ct, est).set_output(transform="pandas")


def test_pipeline_influence_carries_source_rows(frames, tmp_path):
    data, path = frames
    train = data[data["income"] > 35]  # a filter keeps lineage
    X, y = train.drop(columns="TARGET"), train["TARGET"]
    pipe = _pipe(TorchLogisticRegression(C=1.0, store=str(tmp_path / "grad_store"), k=256)).fit(X, y)
    est = pipe[-1]
    assert est.lineage_ is not None and len(est.lineage_) == len(train)
    assert list(est.feature_names_in_)[:2] == ["standardscaler__income", "standardscaler__debt"]
    top = est.influence(pipe[:-1].transform(X.iloc[:3]), top_k=5)
    assert list(top.columns) == [
        "test_row",
        "rank",
        "train_row",
        "score",
        "source",
        "source_row",
        "sha256_ok",
        "shared",
    ]
    assert len(top) == 15 and (top["source"] == path).all() and top["sha256_ok"].all()
    # the source row behind each training row is the one lineage reports for that filtered row
    expected = [int(train.tp.sources(rows=[i])[path][0]) for i in top["train_row"]]
    assert top["source_row"].tolist() == expected
    assert (top.groupby("test_row")["score"].apply(lambda s: s.is_monotonic_decreasing)).all()
    store = est.store_
    i = int(top["train_row"].iloc[0])
    assert store.get_provenance(i).trace_to_file() == f"{path} row {expected[0]}"
    assert i in store.samples_from_source(path, [expected[0]])


def test_plain_arrays_have_no_lineage(frames):
    data, _ = frames
    X = data[["income", "debt"]].to_numpy()
    est = TorchLogisticRegression().fit(X, data["TARGET"].to_numpy())
    top = est.influence(X[:2], top_k=2)
    assert est.lineage_ is None and est.store_ is None
    assert top["source"].isna().all() and (top["source_row"] == -1).all()


def test_unlearning_contract_attributes_and_objective():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 3))
    y = np.where(X[:, 0] + 0.5 * rng.normal(size=80) > 0, "yes", "no")
    for est in (TorchLogisticRegression(C=2.0), TorchMLPClassifier(hidden_layer_sizes=(5,), random_state=0)):
        est.fit(X, y)
        assert est.X_train_.dtype == np.float32 and est.X_train_.shape == (80, 3)
        assert est.y_train_.dtype == np.float32 and set(np.unique(est.y_train_)) == {0.0, 1.0}
        np.testing.assert_array_equal(est.y_train_, (y == est.classes_[1]).astype(np.float32))
        assert est.sample_weight_.dtype == np.float32 and (est.sample_weight_ == 1).all()
        assert est.store_ is None and est.lineage_ is None and est.n_features_in_ == 3
        out = est.module_(torch.as_tensor(est.X_train_).to(next(est.module_.parameters()).dtype))
        assert out.shape == (80,)
        np.testing.assert_allclose(out.detach().numpy(), est.decision_function(X), rtol=1e-5, atol=1e-6)
        losses = est.per_sample_loss(est.module_, est.X_train_, est.y_train_)
        assert losses.shape == (80,)
        w = est.sample_weight_
        obj = est.objective(est.module_, est.X_train_, est.y_train_, w)
        assert torch.isclose(obj, losses.mean() + est.penalty(est.module_))
        again = est._fit_module(est.X_train_, est.y_train_, w)  # deterministic retrain
        for a, b in zip(again.parameters(), est.module_.parameters()):
            torch.testing.assert_close(a, b)


def test_logistic_penalty_includes_intercept_and_fit_is_stationary():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(60, 2))
    y = (X[:, 0] > 0.3).astype(int)
    est = TorchLogisticRegression(C=0.7).fit(X, y)
    sq = sum(float((p.detach() ** 2).sum()) for p in est.module_.parameters())
    assert float(est.penalty(est.module_).detach()) == pytest.approx(sq / (2 * 0.7 * 60))
    m = est.module_
    obj = est.objective(m, est.X_train_, est.y_train_, est.sample_weight_)
    grads = torch.autograd.grad(obj, list(m.parameters()))
    assert max(float(g.abs().max()) for g in grads) < 1e-10  # tight convergence (Newton)
    w = est.sample_weight_.copy()
    w[:10] = 0  # erased samples: the retrain equals fitting without them
    sub = est._fit_module(est.X_train_, est.y_train_, w)
    ref = clone(est).fit(X[10:], y[10:]).module_
    for a, b in zip(sub.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_mlp_store_variants_and_checkpoints(frames):
    data, path = frames
    X, y = data.drop(columns=["TARGET", "region"]), data["TARGET"]
    for variant in ("TRAK", "LL", "BM"):
        est = TorchMLPClassifier(
            hidden_layer_sizes=(6,),
            max_iter=4,
            random_state=0,
            store=True,
            store_variant=variant,
            k=64,
            n_checkpoints=2,
            batch_size=32,
        ).fit(X, y)
        assert est.store_.variant == variant and est.store_.n_checkpoints == 2
        S = est.influence_scores(X.iloc[:4])
        assert S.shape == (4, len(X)) and np.isfinite(S).all()
    assert est.store_.checkpoints[0].n_rows == 4  # BM: one row per batch of 32 over 120 samples
    assert est.influence(X.iloc[:1], top_k=1)["source"].iloc[0] == path


def test_pickled_estimator_keeps_store_and_lineage(frames):
    import pickle

    data, path = frames
    X, y = data[["income", "debt"]], data["TARGET"]
    est = TorchLogisticRegression(store=True, k=64).fit(X, y)
    before = est.influence_scores(X.iloc[:3])
    clone_ = pickle.loads(pickle.dumps(est))
    np.testing.assert_allclose(clone_.influence_scores(X.iloc[:3]), before)
    assert clone_.store_.get_provenance(5).trace_to_file() == f"{path} row 5"
