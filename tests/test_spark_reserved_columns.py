"""Spark loaders refuse a source column named as one the traced connection uses itself, as DuckDB's do.

``__tp_rid``, ``__tp_lin`` and any ``__tp_...`` name (the hidden id / lineage columns and the lazy keys
``__tp_k0``, ``__tp_pos``), and in Parquet ``_metadata`` (it hides Spark's file metadata column, whose
``row_index`` numbers the rows): :class:`UnsupportedOperationError` saying to rename, from
``read_parquet`` / ``read_csv`` / ``register``, and the view of that name is left as it was.

Before (5195a27): a file's ``__tp_rid`` failed at query time with "the lineage-carrying rewrite ...
failed in Spark ... report it" (AMBIGUOUS_REFERENCE), ``__tp_lin`` with a raw ``KeyError``, a Parquet
``_metadata`` with Spark's raw ``INVALID_EXTRACT_BASE_FIELD_TYPE``, a ``__tp_k0`` file under lazy
capture with a raw ``AMBIGUOUS_REFERENCE``; a registered frame's ``__tp_rid`` loaded (DuckDB's
``register`` refuses it). Other such names (``rowid``, ``file_row_number``, ``_metadata`` in CSV) load and
trace correctly. Oracle: row ``i`` of the source is row ``i`` of the frame written to it; a group's rows
are the frame's rows with its key.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import traceprop_frames as tpf
from traceprop_frames.errors import UnsupportedOperationError
from traceprop_frames.lineage import REGISTRY


def _frame(col: str) -> pd.DataFrame:
    return pd.DataFrame({"g": [1, 1, 2, 2, 3], col: [40, 30, 20, 10, 0], "v": [1.0, 2.0, 3.0, 4.0, 5.0]})


def _load(con, spark, loader: str, df: pd.DataFrame, tmp) -> str | None:
    """Load ``df`` as view ``t`` with ``loader``; the file written, if any."""
    path = tmp / ("t.csv" if loader == "read_csv" else "t.parquet")  # (a name Spark does not skip)
    if loader == "read_parquet":
        df.to_parquet(path, index=False)
        con.read_parquet(path, "t")
    elif loader == "read_csv":
        df.to_csv(path, index=False)
        con.read_csv(path, "t")
    elif loader == "register_pandas":
        con.register("t", df)
    elif loader == "register_spark":
        con.register("t", spark.createDataFrame(df))
    else:  # a traced pandas frame
        df.to_parquet(path, index=False)
        con.register("t", tpf.read_parquet(path))
    return str(path)


REFUSED = [
    ("read_parquet", "__tp_rid"),
    ("read_parquet", "__TP_RID"),
    ("read_parquet", "__tp_lin"),
    ("read_parquet", "__tp_k0"),
    ("read_parquet", "_metadata"),
    ("read_parquet", "_Metadata"),
    ("read_csv", "__tp_rid"),
    ("read_csv", "__tp_lin"),
    ("read_csv", "__tp_pos"),
    ("register_pandas", "__tp_rid"),
    ("register_pandas", "__tp_lin"),
    ("register_spark", "__tp_rid"),
    ("register_spark", "__tp_k0"),
    ("register_traced", "__tp_rid"),
    ("register_traced", "__tp_lin"),
]
WORKS = [
    ("read_parquet", "rowid"),
    ("read_parquet", "file_row_number"),
    ("read_csv", "_metadata"),
    ("register_traced", "_metadata"),
]


@pytest.mark.parametrize(("loader", "col"), REFUSED)
def test_refused_with_a_project_error(spark, tmp_path, loader, col):
    """(The loaders do not depend on the capture mode.)"""
    con = tpf.spark.connect(spark, capture="eager")
    spark.createDataFrame(pd.DataFrame({"x": [1]})).createOrReplaceTempView("t")
    path = tmp_path / ("t.csv" if loader == "read_csv" else "t.parquet")
    with pytest.raises(UnsupportedOperationError, match="rename") as err:
        _load(con, spark, loader, _frame(col), tmp_path)
    assert repr(col) in str(err.value)
    assert [r.x for r in spark.sql("SELECT * FROM t").collect()] == [1]  # the view stays as it was
    if loader.startswith("read_"):
        assert REGISTRY.find(str(path)) == []  # refused before the file is registered


@pytest.mark.parametrize(
    "loader", ["read_parquet", "read_csv", "register_pandas", "register_spark", "register_traced"]
)
def test_message_is_duckdbs(spark, tmp_path, loader):
    """The same error and message as ``tpf.connect()``'s loader (DuckDB) for the same source; a file's
    message lists its engine's own row-number column (Spark Parquet ``_metadata``, DuckDB Parquet
    ``file_row_number``, DuckDB CSV ``rowid``; none for Spark CSV)."""
    df = _frame("__tp_lin")
    duck_loader = "register" if loader == "register_spark" else loader.replace("register_pandas", "register")
    with pytest.raises(UnsupportedOperationError) as duck:
        _load_duckdb(tpf.connect(), duck_loader, df, tmp_path)
    with pytest.raises(UnsupportedOperationError) as sp:
        _load(tpf.spark.connect(spark), spark, loader, df, tmp_path)
    own = ("_metadata, ", "file_row_number, ", "rowid, ")
    assert _without(str(sp.value), own) == _without(str(duck.value), own)
    assert str(sp.value).startswith(str(duck.value).split(":")[0] + ":")  # (the path or the call)


def _without(text: str, parts) -> str:
    for p in parts:
        text = text.replace(p, "")
    return text


def _load_duckdb(con, loader: str, df: pd.DataFrame, tmp) -> None:
    path = tmp / ("t.csv" if loader == "read_csv" else "t.parquet")
    if loader == "read_csv":
        df.to_csv(path, index=False)
        con.read_csv(path, name="t")
    elif loader == "read_parquet":
        df.to_parquet(path, index=False)
        con.read_parquet(path, name="t")
    elif loader == "register":
        con.register("t", df)
    else:
        df.to_parquet(path, index=False)
        con.register("t", tpf.read_parquet(path))


@pytest.mark.parametrize("capture", ["eager", "lazy"])
@pytest.mark.parametrize(("loader", "col"), WORKS)
def test_other_names_answer_and_trace(spark, tmp_path, capture, loader, col):
    df = _frame(col)
    con = tpf.spark.connect(spark, capture=capture)
    path = _load(con, spark, loader, df, tmp_path)
    res = con.sql(f"SELECT g, sum(v) AS s, max({col}) AS m FROM t GROUP BY g ORDER BY g")
    out = res.to_pandas()
    assert out["g"].tolist() == [1, 2, 3] and out["m"].tolist() == [40, 20, 0]
    for i, k in enumerate(out["g"]):
        got = np.sort(np.asarray(res.sources(rows=[i])[path]))
        np.testing.assert_array_equal(got, np.flatnonzero(df.g == k))
