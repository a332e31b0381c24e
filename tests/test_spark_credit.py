"""The credit-risk SQL ETL on Spark, on DuckDB and in pandas: the same source rows for every applicant.

Oracle: for applicant k the training row depends on exactly their application row, the bureau rows with
SK_ID_CURR = k and the previous-application rows with SK_ID_CURR = k (read from the raw files with pandas).
The Spark-written training table is then read by the pandas layer and feeds a GradientStore whose
``samples_from_source`` must name the applicant's training sample.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import traceprop_frames as tpf
from traceprop_frames.attribution import GradientStore, TrainingContext
from traceprop_frames.datasets import make_credit_risk
from traceprop_frames.estimators.mlp import MLPLogit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "credit_risk"))
from etl import load, traced_etl  # noqa: E402

AGGS = {
    "bureau_agg": "SELECT SK_ID_CURR, count(AMT_CREDIT_SUM) AS n_loans, sum(AMT_CREDIT_SUM_DEBT) AS debt "
    "FROM bureau GROUP BY SK_ID_CURR",
    "prev_agg": "SELECT SK_ID_CURR, count(AMT_APPLICATION) AS n_prev FROM previous_application GROUP BY SK_ID_CURR",
}
TRAIN = (
    "SELECT a.SK_ID_CURR, a.AMT_INCOME_TOTAL, a.AMT_CREDIT, b.n_loans, b.debt, p.n_prev, "
    "a.AMT_CREDIT / a.AMT_INCOME_TOTAL AS ratio FROM application a LEFT JOIN bureau_agg b USING (SK_ID_CURR) "
    "LEFT JOIN prev_agg p USING (SK_ID_CURR) WHERE a.AMT_INCOME_TOTAL > 0"
)


@pytest.fixture(scope="module")
def credit(spark, tmp_path_factory):
    paths = make_credit_risk(tmp_path_factory.mktemp("credit"), applicants=400, seed=3)
    p = {k: str(v) for k, v in paths.items()}
    scon = tpf.spark.connect(spark)
    scon.read_csv(p["application"], "application").read_csv(p["bureau"], "bureau")
    scon.read_parquet(p["previous_application"], "previous_application")
    dcon = tpf.connect()
    dcon.read_csv(p["application"], "application").read_csv(p["bureau"], "bureau")
    dcon.read_parquet(p["previous_application"], "previous_application")
    for name, q in AGGS.items():
        scon.sql(f"CREATE OR REPLACE TEMP VIEW {name} AS {q}")
        dcon.sql(f"CREATE OR REPLACE TABLE {name} AS {q}")
    res = scon.sql(TRAIN)
    return p, res, res.to_pandas(), dcon.sql(TRAIN), traced_etl(*load(paths))


def _per_applicant(df: pd.DataFrame) -> dict[int, dict[str, set[int]]]:
    ids = df["SK_ID_CURR"].to_numpy()
    return {
        int(ids[i]): {p: set(r.tolist()) for p, r in df.tp.sources(rows=[i]).items()} for i in range(len(df))
    }


def test_same_lineage_for_every_applicant_on_spark_duckdb_pandas(credit):
    paths, _, spark_df, duck_df, pandas_df = credit
    on_spark = _per_applicant(spark_df)
    assert on_spark == _per_applicant(duck_df) == _per_applicant(pandas_df)
    app = pd.read_csv(paths["application"])
    bur = pd.read_csv(paths["bureau"])
    k = int(spark_df["SK_ID_CURR"].iloc[5])
    assert on_spark[k][paths["application"]] == set(np.flatnonzero(app["SK_ID_CURR"] == k).tolist())
    assert on_spark[k].get(paths["bureau"], set()) == set(np.flatnonzero(bur["SK_ID_CURR"] == k).tolist())


def test_spark_jobs_answer_backward_and_forward(credit):
    paths, res, spark_df, _, _ = credit
    i = int(np.flatnonzero(spark_df["n_loans"].fillna(0).to_numpy() > 0)[2])  # an applicant with loans
    want = {p: r.tolist() for p, r in spark_df.tp.sources(rows=[i]).items()}
    assert {p: r.tolist() for p, r in res.sources(rows=[i]).items()} == want
    assert [(s.path, s.row) for s in res.trace(i)] == [(s.path, s.row) for s in spark_df.tp.trace(i)]
    bur = pd.read_csv(paths["bureau"])
    row = int(np.flatnonzero(bur["SK_ID_CURR"] == spark_df["SK_ID_CURR"].iloc[i])[0])
    got = res.rows_from_source(paths["bureau"], [row])
    np.testing.assert_array_equal(got, spark_df.tp.rows_from_source(paths["bureau"], [row]))
    assert got.tolist() == [i]


def test_spark_table_feeds_pandas_and_gradient_store(credit, tmp_path):
    paths, res, spark_df, _, _ = credit
    res.write_parquet(tmp_path / "train")
    train = tpf.read_traced(tmp_path / "train")
    pd.testing.assert_frame_equal(train.reset_index(drop=True), spark_df.reset_index(drop=True))
    assert _per_applicant(train) == _per_applicant(spark_df)
    X = torch.tensor(np.log1p(train[["AMT_INCOME_TOTAL", "AMT_CREDIT"]].to_numpy()), dtype=torch.float32)
    y = torch.tensor((train["ratio"] > train["ratio"].median()).to_numpy(), dtype=torch.float32)
    model = MLPLogit(2, (4,))
    store = GradientStore(k=8, path=str(tmp_path / "store"), variant="LL")
    with TrainingContext(model, store, lineage=train) as ctx:
        ctx.backward(torch.nn.BCEWithLogitsLoss()(model(X), y), batch_idx=np.arange(len(train)))
        ctx.checkpoint()
    app = pd.read_csv(paths["application"])
    sample = 7
    row = int(np.flatnonzero(app["SK_ID_CURR"] == train["SK_ID_CURR"].iloc[sample])[0])
    reopened = GradientStore.open(str(tmp_path / "store"))
    assert reopened.samples_from_source(paths["application"], [row]).tolist() == [sample]
