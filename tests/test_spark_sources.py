"""Spark sources: row numbers mean what they mean in pandas (CSV) and pyarrow (Parquet); sha256 recorded.

Oracle: ``pd.read_csv`` / ``pq.read_table`` of the same files — row ``r`` of the file as pandas numbers it
must hold exactly the values of the Spark row whose lineage says "row r".
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import traceprop_frames as tpf
from traceprop_frames.errors import UnsupportedOperationError, UnsupportedSQLError

# quoted newlines, doubled quotes, blank lines in the middle and at the end, a quoted empty field
CSV = (
    'id,name,note\n'
    '1,alice,"two\nlines"\n'
    '\n'
    '2,bob,"say ""hi"""\n'
    '3,"carol, jr",plain\n'
    '\n'
    '\n'
    '4,dave,"a\n\nblank line inside"\n'
    '5,erin,""\n'
    '6,frank,last\n'
    '\n'
)  # fmt: skip


def _blank(values: list) -> list:
    """An empty quoted field: "" or NaN or None depending on the reader; all mean "no value"."""
    return [None if v is None or v == "" or (isinstance(v, float) and np.isnan(v)) else v for v in values]


def _rows_of(res) -> tuple[pd.DataFrame, np.ndarray]:
    """The result as pandas, and each row's single source row number."""
    df = res.to_pandas()
    lin = df.tp.lineage()
    assert np.all(np.diff(lin.offsets) == 1), "a scan row has exactly one source row"
    return df, lin.ids & np.int64((1 << 40) - 1)


def test_csv_row_numbers_match_pandas(spark, tmp_path):
    path = tmp_path / "tricky.csv"
    path.write_text(CSV)
    con = tpf.spark.connect(spark).read_csv(path, "t")
    df, rows = _rows_of(con.sql("SELECT id, name, note FROM t"))
    want = pd.read_csv(path)
    assert len(df) == len(want) == 6
    for i, r in enumerate(rows.tolist()):
        got = [df["id"].iloc[i], df["name"].iloc[i], df["note"].iloc[i]]
        exp = [want["id"].iloc[r], want["name"].iloc[r], want["note"].iloc[r]]
        assert _blank(got) == _blank(exp), f"Spark row {i} says source row {r}"
    src = tpf.lineage.REGISTRY.find(str(path))[0]
    assert src.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() and src.n_rows == 6


def test_csv_and_parquet_folders_number_rows_per_file(spark, tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    tables = {}
    for k in range(2):
        t = pa.table({"k": np.arange(5) + 10 * k, "v": np.arange(5) * 1.5})
        pq.write_table(t, folder / f"part{k}.parquet", row_group_size=2)
        t.to_pandas().to_csv(folder / f"part{k}.csv", index=False)
        tables[k] = t.to_pandas()
    con = tpf.spark.connect(spark).read_parquet(folder, "p").read_csv(folder, "c")
    for view, ext in (("p", "parquet"), ("c", "csv")):
        res = con.sql(f"SELECT k, v FROM {view} WHERE k <> 3")
        srcs = res.sources()
        assert sorted(srcs) == [str(folder / f"part{k}.{ext}") for k in range(2)]
        df = res.to_pandas()
        for i in range(len(df)):
            ((path, r),) = ((p, int(rr[0])) for p, rr in df.tp.sources(rows=[i]).items())
            k = int(path.rsplit("part", 1)[1][0])
            assert df["k"].iloc[i] == tables[k]["k"].iloc[r] and df["v"].iloc[i] == tables[k]["v"].iloc[r]


def test_csv_options_that_drop_records_raise(spark, tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a\n1\n")
    with pytest.raises(UnsupportedOperationError, match="row numbers"):
        tpf.spark.connect(spark).read_csv(path, "x", mode="DROPMALFORMED")


def test_rewrite_is_spark_sql_and_hides_lineage(spark, tmp_path):
    path = tmp_path / "k.csv"
    path.write_text("k,v\n1,a\n2,b\n")
    con = tpf.spark.connect(spark).read_csv(path, "t").read_csv(path, "u")
    assert con.rewrite("SELECT * FROM t") == "SELECT * EXCEPT (__tp_rid), t.__tp_rid AS __tp_rid FROM t"
    assert con.rewrite("SELECT k, count(*) AS n FROM t GROUP BY k") == (
        "SELECT k, COUNT(*) AS n, COLLECT_LIST(t.__tp_rid) AS __tp_lin FROM t GROUP BY k"
    )
    join = "SELECT t.k, a.n FROM t LEFT JOIN (SELECT k, count(*) AS n FROM u GROUP BY k) a USING (k)"
    assert "CONCAT(COALESCE(ARRAY(t.__tp_rid)" in con.rewrite(join)  # a NULL list must not null the row
    res = con.sql(join)
    assert res.df.columns == ["k", "n"] and res.ops()[-1] == "spark_sql"
    with pytest.raises(UnsupportedSQLError, match="NATURAL JOIN"):
        con.sql("SELECT * FROM t NATURAL JOIN u")


def _two_views(spark, tmp_path, capture: str):
    """A connection with views ``t`` and ``u`` over the same two-row CSV file (k = 1, 2)."""
    path = tmp_path / "k.csv"
    path.write_text("k,v\n1,a\n2,b\n")
    return tpf.spark.connect(spark, capture=capture).read_csv(path, "t").read_csv(path, "u")


@pytest.mark.parametrize("capture", ["eager", "lazy"])
def test_a_statement_naming_a_reserved_name_is_refused(spark, tmp_path, capture):
    """``7 AS __tp_rid`` in a view would be read as its rows' ids: refused, and the view is not made."""
    con = _two_views(spark, tmp_path, capture)
    with pytest.raises(UnsupportedSQLError, match="reserved .* rename"):
        con.sql("CREATE OR REPLACE TEMP VIEW u8 AS SELECT k, 7 AS __tp_rid FROM t")
    assert not spark.catalog.tableExists("u8")
    with pytest.raises(UnsupportedSQLError, match="__tp_k0"):
        con.sql("SELECT k AS __tp_k0 FROM t")


@pytest.mark.parametrize("capture", ["eager", "lazy"])
def test_exists_over_an_aggregate(spark, tmp_path, capture):
    """One row comes back over no rows, so the EXISTS holds for every row: traced as always true (each
    row's lineage is its own row), as on DuckDB; a LIMIT 0 that can drop the row is refused."""
    con, path = _two_views(spark, tmp_path, capture), str(tmp_path / "k.csv")
    with pytest.raises(UnsupportedSQLError, match="aggregates without GROUP BY"):
        con.sql("SELECT k FROM t WHERE EXISTS (SELECT count(*) FROM u WHERE u.k = t.k + 5 LIMIT 0)")
    for cond in ("u.k = t.k + 5", "u.k = 2"):  # (no u row matches either; u's row 1 for both)
        df = con.sql(f"SELECT k FROM t WHERE EXISTS (SELECT count(*) FROM u WHERE {cond}) ORDER BY k")
        df = df.to_pandas()
        assert df.k.tolist() == [1, 2]  # both kept; lineage: the row itself (t and u read one file)
        assert [{p: list(r) for p, r in df.tp.sources(rows=[i]).items()} for i in range(2)] == [
            {path: [0]},
            {path: [1]},
        ]
    assert sorted(
        con.sql("SELECT k FROM t WHERE EXISTS (SELECT * FROM u WHERE u.k = t.k)").df.toPandas().k
    ) == [1, 2]
