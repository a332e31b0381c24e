"""One name per thing: the renamed functions keep their earlier names, and DuckDB and Spark connections
load files with the same signature and answer lineage questions under the same names as pandas frames."""

from __future__ import annotations

import inspect

import numpy as np
import pandas as pd
import pytest

import traceprop_frames as tpf
from traceprop_frames.lineage import events
from traceprop_frames.spark.connection import SparkConnection
from traceprop_frames.sql import TracedConnection


def test_renamed_functions_keep_their_earlier_names():
    assert tpf.load_csv is tpf.tensor_from_csv and tpf.load_parquet is tpf.tensor_from_parquet
    assert tpf.step is tpf.op_group
    assert events.step is events.lineage_step


def test_tensor_from_csv_reads_the_files_rows(tmp_path):
    path = tmp_path / "x.csv"
    pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [4.0, 5.0, 6.0]}).to_csv(path, index=False)
    X = tpf.tensor_from_csv(path)
    np.testing.assert_array_equal(np.asarray(X), [[1, 4], [2, 5], [3, 6]])
    assert X[np.asarray(X)[:, 0] > 1].sources(direct=True)[str(path)].tolist() == [1, 2]


def test_op_group_labels_tensor_operations():
    X = tpf.tensor(np.arange(6.0).reshape(3, 2), source="op_group_names")
    with tpf.op_group("normalize"):
        Z = (X - X.mean(axis=0)) / X.std(axis=0)
    assert Z.ops()[-1] == "normalize"


@pytest.mark.parametrize("method", ["read_csv", "read_parquet"])
def test_duckdb_and_spark_readers_take_the_same_arguments(method):
    def named(cls):
        params = inspect.signature(getattr(cls, method)).parameters.values()
        return [(p.name, p.kind) for p in params if p.kind is not p.VAR_KEYWORD]

    assert (
        named(TracedConnection)
        == named(SparkConnection)
        == [
            ("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            ("path", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            ("name", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        ]
    )


def test_spark_reader_by_keyword_and_result_tp_answers_as_pandas(spark, tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"k": [1, 2, 1, 3], "v": [10, 20, 30, 40]}).to_csv(path, index=False)
    con = tpf.spark.connect(spark).read_csv(path, name="t_kw")
    con.read_csv(path, "t_pos")  # the positional form keeps working
    res = con.sql("SELECT k, sum(v) AS s FROM t_kw GROUP BY k ORDER BY k")
    assert res.tp is res
    assert res.tp.sources(rows=[0])[str(path)].tolist() == [0, 2]  # k = 1 is file rows 0 and 2
    assert res.tp.rows_from_source(path, [3]).tolist() == [2]  # file row 3 (k = 3) feeds result row 2
    assert con.sql("SELECT * FROM t_pos").tp.sources()[str(path)].tolist() == [0, 1, 2, 3]
