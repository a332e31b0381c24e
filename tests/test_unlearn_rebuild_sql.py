"""Erasure by replaying the recorded SQL with the erased rows filtered at the scan (issue 19)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import traceprop_frames as tpf
from traceprop_frames.datasets import make_credit_risk
from traceprop_frames.errors import UnsupportedOperationError
from traceprop_frames.estimators import TorchLogisticRegression
from traceprop_frames.sql.replay import rerun, sql_head

ETL = """
WITH b AS (SELECT SK_ID_CURR, count(*) AS n_loans, sum(AMT_CREDIT_SUM_DEBT) AS debt
           FROM bureau GROUP BY SK_ID_CURR)
SELECT a.AMT_INCOME_TOTAL / 1e5 AS income, coalesce(b.n_loans, 0) AS n_loans,
       coalesce(b.debt, 0) / 1e5 AS debt,
       a.AMT_CREDIT / (SELECT avg(AMT_CREDIT) FROM app) AS credit_rel, a.TARGET
FROM app a LEFT JOIN b ON a.SK_ID_CURR = b.SK_ID_CURR
WHERE a.AMT_INCOME_TOTAL > 0
ORDER BY a.SK_ID_CURR
"""


def to_xy(df):
    return df.drop(columns="TARGET"), df["TARGET"]


def etl(app, bureau):
    con = tpf.connect()
    con.read_csv(app, "app")
    con.read_csv(bureau, "bureau")
    return con.execute(ETL)


@pytest.fixture(scope="module")
def credit(tmp_path_factory):
    return make_credit_risk(tmp_path_factory.mktemp("credit"), applicants=600, seed=2)


def test_sql_rebuild_matches_retrain_on_files_without_the_rows(credit, tmp_path):
    X, y = to_xy(etl(credit["application"], credit["bureau"]))
    clf = TorchLogisticRegression().fit(X, y)
    bur = pd.read_csv(credit["bureau"])
    who = int(bur["SK_ID_CURR"].iloc[3])
    b_rows = np.flatnonzero(bur["SK_ID_CURR"].to_numpy() == who).tolist()  # one applicant's credits
    cert = clf.unlearn(source={str(credit["bureau"]): b_rows, str(credit["application"]): [7]},
                       rebuild=rerun(clf.lineage_, to_xy))  # fmt: skip
    b = cert.body
    # application row 7 vanishes; the bureau applicant stays with n_loans = 0; everyone's credit_rel moves
    assert b["rebuild"]["samples_vanished"] == 1 and b["forget_set"]["count"] == 1
    assert b["shared_statistics"]["effect_removed"] is True
    assert any(s["rows_read"] == 600 for s in b["shared_statistics"]["sets"])  # the scalar subquery's avg
    d = tmp_path / "deleted"
    d.mkdir()
    app2, bur2 = d / "application.csv", d / "bureau.csv"
    pd.read_csv(credit["application"]).drop(index=[7]).to_csv(app2, index=False)
    bur.drop(index=b_rows).to_csv(bur2, index=False)
    ref_X, ref_y = to_xy(etl(app2, bur2))
    ref = TorchLogisticRegression().fit(ref_X, ref_y)
    grid = ref_X.to_numpy()
    assert np.abs(clf.predict_proba(grid)[:, 1] - ref.predict_proba(grid)[:, 1]).max() <= 1e-6
    assert b["evidence"]["certified_bound"] <= 1e-6


def test_sql_head_refuses_a_pandas_pipeline(credit):
    app = tpf.read_csv(credit["application"])
    with pytest.raises(UnsupportedOperationError, match="not built by a query"):
        sql_head((app[["AMT_CREDIT"]] / app["AMT_CREDIT"].mean()).tp.lineage().node)


def test_sql_replay_reads_files_with_the_loader_options_used_at_training(tmp_path):
    """A semicolon-separated file with a decimal comma, loaded with sep=, decimal_separator= and types=:
    the replay loads it with the same options (recorded on the DAG), so the rebuilt model equals a fit on
    the file without the rows read the same way."""
    rng = np.random.default_rng(4)
    raw = pd.DataFrame(
        {"x": rng.normal(size=80).round(3), "g": rng.integers(0, 5, 80), "y": rng.integers(0, 2, 80)}
    )
    path, gone = tmp_path / "a.csv", tmp_path / "gone.csv"
    opts = {"sep": ";", "decimal_separator": ",", "types": {"g": "VARCHAR"}}
    raw.to_csv(path, sep=";", decimal=",", index=False)
    raw.drop(index=[3, 40]).to_csv(gone, sep=";", decimal=",", index=False)
    query = "SELECT x / (SELECT avg(abs(x)) FROM a) AS x, length(g) + x AS gx, y FROM a ORDER BY x"

    def build(p):
        con = tpf.connect()
        con.read_csv(p, "a", **opts)
        df = con.execute(query)
        return df.drop(columns="y"), df["y"]

    X, y = build(path)
    clf = TorchLogisticRegression().fit(X, y)
    assert sql_head(clf.lineage_.node).parents[0].params["options"] == opts
    cert = clf.unlearn(
        source=str(path),
        rows=[3, 40],
        rebuild=rerun(clf.lineage_, lambda df: (df.drop(columns="y"), df["y"])),
    )
    ref = TorchLogisticRegression().fit(*build(gone))
    grid = build(gone)[0].to_numpy()
    assert np.abs(clf.predict_proba(grid)[:, 1] - ref.predict_proba(grid)[:, 1]).max() <= 1e-6
    assert cert.body["rebuild"]["samples_vanished"] == 2
