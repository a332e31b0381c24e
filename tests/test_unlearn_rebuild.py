"""Erasure through the feature pipeline (issue 19), against the reference a regulator would compute:
delete the rows from the files, re-run the same pipeline on the new files, fit from scratch."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

import traceprop_frames as tpf
from traceprop_frames.datasets import make_credit_risk
from traceprop_frames.errors import UnlearningError
from traceprop_frames.estimators import TorchLogisticRegression, TorchMLPClassifier
from traceprop_frames.unlearn.certificate import validate

ERASE = [5, 17, 99, 512, 1024]


@pytest.fixture(scope="module")
def credit(tmp_path_factory):
    return make_credit_risk(tmp_path_factory.mktemp("credit"), applicants=2000, seed=0)


def zscore(app_path):
    app = tpf.read_csv(app_path)
    num = app.select_dtypes("number").drop(columns=["SK_ID_CURR", "TARGET"])
    return (num - num.mean()) / num.std(), app["TARGET"]


def bureau_features(paths):
    app, bur = tpf.read_csv(paths["application"]), tpf.read_csv(paths["bureau"])
    b = bur.tp.groupby("SK_ID_CURR").agg(
        n_loans=("AMT_CREDIT_SUM", "count"), debt=("AMT_CREDIT_SUM_DEBT", "sum")
    )
    t = app.tp.merge(b, on="SK_ID_CURR", how="left")
    t = t[t["AMT_INCOME_TOTAL"] > 0]
    X = t[["AMT_INCOME_TOTAL", "AMT_CREDIT", "n_loans", "debt"]].fillna(0.0)
    X = (X - X.mean()) / X.std()
    return X, t["TARGET"]


def _without_rows(src, rows, folder) -> str:
    """The file a regulator would have: ``src`` with the data rows deleted (same format)."""
    folder.mkdir(exist_ok=True)
    out = folder / src.name
    pd.read_csv(src).drop(index=list(rows)).to_csv(out, index=False)
    return str(out)


def _params(est) -> np.ndarray:
    return np.r_[est.coef_.ravel(), est.intercept_.ravel()].astype(np.float64)


def test_zscore_rebuild_matches_pipeline_retrain(credit, tmp_path):
    X, y = zscore(credit["application"])
    clf = TorchLogisticRegression().fit(X, y)
    plain = copy.deepcopy(clf)
    cert = clf.unlearn(
        source=credit["application"], rows=ERASE, rebuild=lambda: zscore(credit["application"])
    )
    ref_X, ref_y = zscore(_without_rows(credit["application"], ERASE, tmp_path / "deleted"))
    ref = TorchLogisticRegression().fit(ref_X, ref_y)
    grid = ref_X.to_numpy()
    gap = np.abs(clf.predict_proba(grid)[:, 1] - ref.predict_proba(grid)[:, 1]).max()
    assert gap <= 1e-6
    b = cert.body
    assert b["evidence"]["certified_bound"] <= 1e-6
    assert np.linalg.norm(_params(clf) - _params(ref)) <= b["evidence"]["certified_bound"] + 1e-8
    # the plain erasure (same features) is measurably further from that reference: the gap
    plain.unlearn(source=credit["application"], rows=ERASE)
    assert np.abs(plain.predict_proba(grid)[:, 1] - ref.predict_proba(grid)[:, 1]).max() > 100 * gap
    assert b["rebuild"]["samples_vanished"] == 5 and b["rebuild"]["samples_changed"] == 1995
    assert b["shared_statistics"]["effect_removed"] is True
    assert sorted(b["forget_set"]["training_indices"]) == ERASE  # no filter: sample i is file row i
    validate(cert.to_dict())
    # sample indices stay stable: the erased ones have weight 0, the others keep their index
    assert clf.sample_weight_[ERASE].sum() == 0 and len(clf.sample_weight_) == 2000


def test_plain_certificate_names_shared_statistics(credit):
    X, y = zscore(credit["application"])
    clf = TorchLogisticRegression().fit(X, y)
    b = clf.unlearn(source=credit["application"], rows=ERASE).body
    assert b["forget_set"]["source_rows"] == {str(credit["application"]): ERASE}  # direct rows only
    sec = b["shared_statistics"]
    assert sec["effect_removed"] is False and sec["samples_affected"] == 1995
    # the z-score pipeline's structure: one mean and one std over all 2000 rows, feeding every other row
    assert sorted(s["op"] for s in sec["sets"]) == ["mean", "std"]
    assert all(s["rows_read"] == 2000 and s["samples_affected"] == 1995 for s in sec["sets"])
    assert any("Shared statistics computed with the erased rows" in s for s in b["not_guaranteed"])


def test_influence_lists_direct_rows_with_context(credit):
    X, y = zscore(credit["application"])
    clf = TorchLogisticRegression().fit(X, y)
    top = clf.influence(X.iloc[[0, 1]], top_k=5)
    assert len(top) == 10
    assert (top["source_row"] == top["train_row"]).all()  # no filter: training row i is file row i
    assert (top["shared"] == "mean [2000 rows]; std [2000 rows]").all()
    assert len(clf.influence(X.iloc[[0]], top_k=5, direct=False)) == 5 * 2000


def test_group_aggregate_changes_instead_of_vanishing(credit, tmp_path):
    X, y = bureau_features(credit)
    clf = TorchLogisticRegression().fit(X, y)
    bur = pd.read_csv(credit["bureau"])
    who = int(bur["SK_ID_CURR"].iloc[0])
    rows = np.flatnonzero(bur["SK_ID_CURR"].to_numpy() == who).tolist()[:2]  # two of the applicant's credits
    cert = clf.unlearn(source=credit["bureau"], rows=rows, rebuild=lambda: bureau_features(credit))
    assert cert.body["rebuild"]["samples_vanished"] == 0  # the applicant stays, with new aggregates
    assert cert.body["status"] == "erased" and cert.body["rebuild"]["samples_changed"] >= 1
    assert cert.body["forget_set"]["count"] == 0
    deleted = {**credit, "bureau": _without_rows(credit["bureau"], rows, tmp_path / "deleted")}
    ref_X, ref_y = bureau_features(deleted)
    ref = TorchLogisticRegression().fit(ref_X, ref_y)
    grid = ref_X.to_numpy()
    assert np.abs(clf.predict_proba(grid)[:, 1] - ref.predict_proba(grid)[:, 1]).max() <= 1e-6
    assert cert.body["evidence"]["certified_bound"] <= 1e-6


def test_readers_skip_rows_keeping_numbers_and_hash(credit):
    from traceprop_frames.lineage import REGISTRY
    from traceprop_frames.unlearn.rebuild import skip_map

    full = tpf.read_csv(credit["application"])
    ids = REGISTRY.ids_for_rows(credit["application"], [0, 3])
    from traceprop_frames.lineage.erasure_scope import skipping_rows

    with skipping_rows(skip_map(ids)):
        part = tpf.read_csv(credit["application"])
    assert len(part) == len(full) - 2
    assert part.tp.sources()[str(credit["application"])][:3].tolist() == [1, 2, 4]
    pd.testing.assert_frame_equal(
        part.reset_index(drop=True), full.drop(index=full.index[[0, 3]]).reset_index(drop=True)
    )
    assert tpf.read_csv(credit["application"]).shape == full.shape  # outside the scope: every row


def test_rebuild_refuses_a_rerun_that_still_reads_erased_rows(credit):
    X, y = zscore(credit["application"])
    clf = TorchLogisticRegression().fit(X, y)
    before = _params(clf)
    with pytest.raises(UnlearningError, match="still read erased rows"):
        clf.unlearn(source=credit["application"], rows=ERASE, rebuild=lambda: (X, y))  # cached: no re-run
    assert np.array_equal(_params(clf), before) and clf.sample_weight_.sum() == 2000


def test_second_rebuild_keeps_first_rows_out(credit, tmp_path):
    X, y = zscore(credit["application"])
    clf = TorchLogisticRegression().fit(X, y)
    build = lambda: zscore(credit["application"])  # noqa: E731
    clf.unlearn(source=credit["application"], rows=ERASE[:2], rebuild=build)
    clf.unlearn(source=credit["application"], rows=ERASE[2:], rebuild=build)
    ref_X, ref_y = zscore(_without_rows(credit["application"], ERASE, tmp_path / "deleted"))
    ref = TorchLogisticRegression().fit(ref_X, ref_y)
    grid = ref_X.to_numpy()
    assert np.abs(clf.predict_proba(grid)[:, 1] - ref.predict_proba(grid)[:, 1]).max() <= 1e-6


def test_mlp_rebuild_uses_the_gradient_correction(credit, tmp_path):
    X, y = zscore(credit["application"])
    mlp = TorchMLPClassifier(random_state=0).fit(X, y)
    cert = mlp.unlearn(
        source=credit["application"], rows=ERASE, rebuild=lambda: zscore(credit["application"])
    )
    b = cert.body
    assert b["method"]["name"] == "gradient" and b["evidence"]["certified_bound"] is None
    assert b["rebuild"]["samples_changed"] == 1995 and mlp.sample_weight_[ERASE].sum() == 0
    validate(cert.to_dict())


def test_sklearn_pipeline_rebuild_refits_the_scaler(credit, tmp_path):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from traceprop_frames.unlearn.rebuild_pipeline import unlearn_pipeline

    def raw(path=credit["application"]):
        app = tpf.read_csv(path)
        return app.select_dtypes("number").drop(columns=["SK_ID_CURR", "TARGET"]), app["TARGET"]

    def pipe():
        return make_pipeline(StandardScaler(), TorchLogisticRegression()).set_output(transform="pandas")

    p = pipe().fit(*raw())
    mean_before = p[0].mean_.copy()
    cert = unlearn_pipeline(p, credit["application"], ERASE, rebuild=raw)
    ref_X, ref_y = raw(_without_rows(credit["application"], ERASE, tmp_path / "deleted"))
    ref = pipe().fit(ref_X, ref_y)
    np.testing.assert_allclose(p[0].mean_, ref[0].mean_, rtol=1e-12)  # the scaler refitted without the rows
    assert not np.allclose(p[0].mean_, mean_before)
    assert np.abs(p.predict_proba(ref_X)[:, 1] - ref.predict_proba(ref_X)[:, 1]).max() <= 1e-6
    assert cert.body["rebuild"]["samples_vanished"] == 5 and cert.body["evidence"]["certified_bound"] <= 1e-6


def test_shared_statistics_section_follows_the_pipeline_structure(tmp_path):
    """A running sum: counts from the known structure, not from the lineage."""
    rng = np.random.default_rng(1)
    raw = pd.DataFrame({"k": rng.integers(0, 4, 40), "x": rng.normal(size=40), "y": rng.integers(0, 2, 40)})
    path = tmp_path / "a.csv"
    raw.to_csv(path, index=False)
    a = tpf.read_csv(path)
    a["cs"] = a["x"].cumsum()  # row i read rows 0..i
    X = a[["x", "cs"]]
    clf = TorchLogisticRegression().fit(X, a["y"])
    sec = clf.unlearn(source=str(path), rows=[3]).body["shared_statistics"]
    (cs,) = [s for s in sec["sets"] if s["op"] == "cumsum"]
    # prefixes 3..39 contain row 3; together they read all 40 rows; rows 4..39 remain trained on them
    assert (cs["sets_hit"], cs["sets_in_op"], cs["rows_read"], cs["samples_affected"]) == (37, 40, 40, 36)
    assert sec["samples_affected"] == 36 and sec["effect_removed"] is False


def test_rebuild_with_other_columns_is_refused(credit):
    X, y = zscore(credit["application"])
    clf = TorchLogisticRegression().fit(X, y)
    with pytest.raises(UnlearningError, match="columns the model was fit on"):
        clf.unlearn(
            source=credit["application"],
            rows=ERASE,
            rebuild=lambda: (zscore(credit["application"])[0].iloc[:, :3], y),
        )


def test_rebuild_after_a_plain_erasure_leaves_both_out(credit, tmp_path):
    X, y = zscore(credit["application"])
    clf = TorchLogisticRegression().fit(X, y)
    clf.unlearn(source=credit["application"], rows=ERASE[:2])  # plain: the statistics keep these rows
    clf.unlearn(source=credit["application"], rows=ERASE[2:], rebuild=lambda: zscore(credit["application"]))
    ref_X, ref_y = zscore(_without_rows(credit["application"], ERASE, tmp_path / "deleted"))
    ref = TorchLogisticRegression().fit(ref_X, ref_y)
    grid = ref_X.to_numpy()
    assert np.abs(clf.predict_proba(grid)[:, 1] - ref.predict_proba(grid)[:, 1]).max() <= 1e-6


def test_rebuild_with_a_gradient_store(credit):
    X, y = zscore(credit["application"])
    clf = TorchLogisticRegression(store=True, k=64).fit(X, y)
    cert = clf.unlearn(
        source=credit["application"], rows=ERASE, rebuild=lambda: zscore(credit["application"])
    )
    assert clf.store_.removed[ERASE].all() and clf.store_.removed.sum() == 5
    assert any("1995 samples whose features the rebuild changed" in s for s in cert.body["not_guaranteed"])
    top = clf.influence(X.iloc[[0]], top_k=5)
    assert not set(top["train_row"]) & set(ERASE)


@pytest.mark.parametrize("case", ["same", "bool_int", "nan", "reordered", "extra", "nullable"])
def test_rebuilt_frame_values_match_scikit_learn_validation(case):
    """The direct path for the rebuilt frame's values answers exactly what scikit-learn's validation
    answers, and steps aside (None) wherever that validation could refuse or convert differently."""
    from traceprop_frames.unlearn.rebuild import _plain_frame

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=30), "b": rng.integers(0, 5, 30), "c": rng.normal(size=30) > 0})
    clf = TorchLogisticRegression().fit(X, rng.integers(0, 2, 30))
    Z = X.copy()
    if case == "bool_int":
        Z["b"] = Z["b"].astype(np.int8)
    elif case == "nan":
        Z.loc[3, "a"] = np.nan
    elif case == "reordered":
        Z = Z[["b", "a", "c"]]
    elif case == "extra":
        Z["d"] = 1.0
    elif case == "nullable":
        Z["b"] = Z["b"].astype("Int64")
    got = _plain_frame(clf, Z)
    if case in ("same", "bool_int"):
        np.testing.assert_array_equal(got, clf._validate_test(Z))
        assert got.dtype == np.float32
    else:
        assert got is None
