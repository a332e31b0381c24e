"""Oracle: for random small pipelines (filters, merges, group-bys, statistics), erasing random rows with
``rebuild=`` equals fitting on the same pipeline run over files with those rows deleted.

The oracle never looks at the implementation's lineage: it writes the files a regulator would have
(rows deleted with plain pandas), runs the pipeline on them and fits from scratch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import traceprop_frames as tpf
from traceprop_frames.estimators import TorchLogisticRegression

FEATURES = ["x1", "x2"]


def _tables(seed: int, n_a: int, n_b: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    a = pd.DataFrame({"k": rng.integers(0, 8, n_a), "x1": rng.normal(size=n_a).round(3),
                      "x2": rng.normal(size=n_a).round(3), "label": rng.integers(0, 2, n_a)})  # fmt: skip
    b = pd.DataFrame({"k": rng.integers(0, 10, n_b), "v": rng.normal(size=n_b).round(3)})
    return a, b


def pipeline(a_path, b_path, spec: dict):
    """The pipeline under test: an optional filter (on a constant, and on a statistic), an optional merge
    with a group-by aggregate of ``b``, an optional z-score (statistics over all remaining rows)."""
    a = tpf.read_csv(a_path)
    cols = list(FEATURES)
    if spec["filter"]:
        a = a[a["x1"] > -1.0]
    if spec["stat_filter"]:  # membership depends on a statistic: erasing rows can admit other rows
        a = a[a["x2"] > a["x2"].mean() - 0.5]
    if spec["merge"]:
        b = tpf.read_csv(b_path)
        g = b.tp.groupby("k").agg(s=("v", "sum"), c=("v", "count"))
        a = a.tp.merge(g, on="k", how="left")
        a["s"] = a["s"].fillna(0.0)
        a["c"] = a["c"].fillna(0.0)
        cols += ["s", "c"]
    X = a[cols]
    if spec["zscore"]:
        X = (X - X.mean()) / X.std()
    return X, a["label"]


@settings(max_examples=16)
@given(
    seed=st.integers(0, 10_000),
    spec=st.fixed_dictionaries(
        {
            "filter": st.booleans(),
            "stat_filter": st.booleans(),
            "merge": st.booleans(),
            "zscore": st.booleans(),
        }
    ),
    erase_a=st.lists(st.integers(0, 39), max_size=4, unique=True),
    erase_b=st.lists(st.integers(0, 29), max_size=4, unique=True),
)
def test_rebuild_equals_fit_on_files_without_the_rows(tmp_path_factory, seed, spec, erase_a, erase_b):
    a, b = _tables(seed, 40, 30)
    if not spec["merge"]:
        erase_b = []
    assume(erase_a or erase_b)
    d = tmp_path_factory.mktemp("oracle")
    a_path, b_path = d / "a.csv", d / "b.csv"
    a.to_csv(a_path, index=False)
    b.to_csv(b_path, index=False)
    (d / "deleted").mkdir()
    a_del, b_del = d / "deleted" / "a.csv", d / "deleted" / "b.csv"
    a.drop(index=erase_a).to_csv(a_del, index=False)
    b.drop(index=erase_b).to_csv(b_del, index=False)
    ref_X, ref_y = pipeline(a_del, b_del, spec)
    assume(ref_y.nunique() == 2 and np.isfinite(ref_X.to_numpy()).all())
    X, y = pipeline(a_path, b_path, spec)
    assume(np.isfinite(X.to_numpy()).all())
    clf = TorchLogisticRegression().fit(X, y)
    request = {str(a_path): erase_a, str(b_path): erase_b}
    try:
        cert = clf.unlearn(
            source={k: v for k, v in request.items() if v}, rebuild=lambda: pipeline(a_path, b_path, spec)
        )
    except tpf.errors.UnknownRowError:  # a filtered-out row feeds no sample and no statistic: not traced
        assume(False)
    ref = TorchLogisticRegression().fit(ref_X, ref_y)
    grid = np.vstack([ref_X.to_numpy(), X.to_numpy()])
    gap = np.abs(clf.predict_proba(grid)[:, 1] - ref.predict_proba(grid)[:, 1]).max()
    assert gap <= 1e-6, (spec, erase_a, erase_b, gap)
    assert cert.body["evidence"]["certified_bound"] <= 1e-6
    active = clf.sample_weight_ > 0
    assert int(active.sum()) == len(ref_X)  # as many active samples as rows of the reference table


def test_rows_a_statistic_now_admits_are_appended(tmp_path):
    """Erasing the largest x2 lowers the filter's mean: rows the model never had enter the table."""
    a, b = _tables(0, 40, 30)
    a_path, b_path = tmp_path / "a.csv", tmp_path / "b.csv"
    a.to_csv(a_path, index=False)
    b.to_csv(b_path, index=False)
    spec = {"filter": False, "stat_filter": True, "merge": False, "zscore": True}
    top = a["x2"].nlargest(6).index.tolist()
    X, y = pipeline(a_path, b_path, spec)
    clf = TorchLogisticRegression().fit(X, y)
    cert = clf.unlearn(source=str(a_path), rows=top, rebuild=lambda: pipeline(a_path, b_path, spec))
    (tmp_path / "del").mkdir()
    a.drop(index=top).to_csv(tmp_path / "del" / "a.csv", index=False)
    ref_X, ref_y = pipeline(tmp_path / "del" / "a.csv", b_path, spec)
    ref = TorchLogisticRegression().fit(ref_X, ref_y)
    kept = a.drop(index=top)
    admitted = kept[kept["x2"] > kept["x2"].mean() - 0.5].index
    before = a[a["x2"] > a["x2"].mean() - 0.5].index
    assert cert.body["rebuild"]["samples_new"] == len(admitted.difference(before)) > 0
    assert len(clf.sample_weight_) == len(X) + cert.body["rebuild"]["samples_new"]
    assert int((clf.sample_weight_ > 0).sum()) == len(ref_X)
    assert np.abs(clf.predict_proba(ref_X)[:, 1] - ref.predict_proba(ref_X)[:, 1]).max() <= 1e-6


def sql_pipeline(a_path, b_path, spec: dict):
    """The same kinds of steps in DuckDB SQL (replayed by ``sql.replay.rerun``)."""
    con = tpf.connect()
    con.read_csv(a_path, "a")
    con.read_csv(b_path, "b")
    x1 = "a.x1 / (SELECT avg(abs(x1)) FROM a)" if spec["zscore"] else "a.x1"  # a scalar subquery
    where = "WHERE a.x1 > -1.0" if spec["filter"] else ""
    if spec["merge"]:
        df = con.execute(
            f"SELECT {x1} AS x1, a.x2, coalesce(g.s, 0) AS s, coalesce(g.c, 0) AS c, a.label FROM a "
            "LEFT JOIN (SELECT k, sum(v) AS s, count(*) AS c FROM b GROUP BY k) g ON a.k = g.k "
            f"{where} ORDER BY a.x2"
        )
    else:
        df = con.execute(f"SELECT {x1} AS x1, a.x2, a.label FROM a {where} ORDER BY a.x2")
    return df.drop(columns="label"), df["label"]


@settings(max_examples=8)
@given(
    seed=st.integers(0, 10_000),
    spec=st.fixed_dictionaries({"filter": st.booleans(), "merge": st.booleans(), "zscore": st.booleans()}),
    erase_a=st.lists(st.integers(0, 39), max_size=3, unique=True),
    erase_b=st.lists(st.integers(0, 29), max_size=3, unique=True),
)
def test_sql_rebuild_equals_fit_on_files_without_the_rows(tmp_path_factory, seed, spec, erase_a, erase_b):
    from traceprop_frames.sql.replay import rerun

    a, b = _tables(seed, 40, 30)
    if not spec["merge"]:
        erase_b = []
    assume(erase_a or erase_b)
    d = tmp_path_factory.mktemp("oracle_sql")
    a_path, b_path = d / "a.csv", d / "b.csv"
    a.to_csv(a_path, index=False)
    b.to_csv(b_path, index=False)
    (d / "deleted").mkdir()
    a.drop(index=erase_a).to_csv(d / "deleted" / "a.csv", index=False)
    b.drop(index=erase_b).to_csv(d / "deleted" / "b.csv", index=False)
    ref_X, ref_y = sql_pipeline(d / "deleted" / "a.csv", d / "deleted" / "b.csv", spec)
    assume(ref_y.nunique() == 2)
    X, y = sql_pipeline(a_path, b_path, spec)
    clf = TorchLogisticRegression().fit(X, y)
    request = {str(a_path): erase_a, str(b_path): erase_b}
    to_xy = lambda df: (df.drop(columns="label"), df["label"])  # noqa: E731
    try:
        clf.unlearn(source={k: v for k, v in request.items() if v}, rebuild=rerun(clf.lineage_, to_xy))
    except tpf.errors.UnknownSourceError:  # b feeds nothing (every key missing from a): not in lineage
        assume(False)
    ref = TorchLogisticRegression().fit(ref_X, ref_y)
    grid = np.vstack([ref_X.to_numpy(), X.to_numpy()])
    assert np.abs(clf.predict_proba(grid)[:, 1] - ref.predict_proba(grid)[:, 1]).max() <= 1e-6
    assert int((clf.sample_weight_ > 0).sum()) == len(ref_X)
