"""A loader's source with a column named as one the traced connection uses itself (``__tp_rid``,
``__tp_lin``; ``file_row_number`` in Parquet; ``rowid`` in CSV) is refused with a project error that
says to rename it; other such names load, answer and trace correctly.

Before: a ``__tp_rid`` column in a file was read as the row ids (a silently wrong lineage) while the
loader's own id column came back as ``__tp_rid_1``; a registered frame's ``__tp_rid`` / ``__tp_lin``
vanished from ``SELECT *`` and its values were read as ids or lineage; a Parquet ``file_row_number``
column failed in DuckDB's binder. Oracle: row ``i`` of the source is the ``i``-th row of the frame
written to the file; a group's rows are the frame's rows with its key.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _sql_oracle import lineage_sets, rows_of

import traceprop_frames as tpf
from traceprop_frames.errors import UnsupportedOperationError, UnsupportedSQLError


def _frame(col: str) -> pd.DataFrame:
    return pd.DataFrame({"g": [1, 1, 2, 2, 3], col: [40, 30, 20, 10, 0], "v": [1.0, 2.0, 3.0, 4.0, 5.0]})


def _load(con, loader: str, df: pd.DataFrame, tmp) -> None:
    if loader == "read_parquet":
        df.to_parquet(tmp / "t.parquet", index=False)
        con.read_parquet(tmp / "t.parquet", name="t")
    elif loader == "read_csv":
        df.to_csv(tmp / "t.csv", index=False)
        con.read_csv(tmp / "t.csv", name="t")
    elif loader == "register":
        con.register("t", df)
    else:  # a traced frame (its lineage carries over)
        df.to_parquet(tmp / "t.parquet", index=False)
        con.register("t", tpf.read_parquet(tmp / "t.parquet"))


REFUSED = [
    ("read_parquet", "__tp_rid"),
    ("read_parquet", "__TP_RID"),
    ("read_parquet", "__tp_lin"),
    ("read_parquet", "file_row_number"),
    ("read_csv", "__tp_rid"),
    ("read_csv", "__tp_lin"),
    ("read_csv", "rowid"),
    ("register", "__tp_rid"),
    ("register", "__tp_lin"),
    ("register_traced", "__tp_rid"),
    ("register_traced", "__tp_lin"),
]
WORKS = [
    ("read_parquet", "rowid"),
    ("read_csv", "file_row_number"),
    ("register_traced", "rowid"),
    ("register_traced", "file_row_number"),
]


@pytest.mark.parametrize("capture", ["eager", "lazy"])
@pytest.mark.parametrize(("loader", "col"), REFUSED)
def test_refused_with_a_project_error(tmp_path, capture, loader, col):
    con = tpf.connect(capture=capture)
    con.execute("CREATE TABLE t AS SELECT 1 AS x")  # a table of that name stays as it was
    with pytest.raises(UnsupportedOperationError, match="rename"):
        _load(con, loader, _frame(col), tmp_path)
    assert con.sql("SELECT * FROM t")["x"].tolist() == [1]
    tables = {r[0] for r in con.raw.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert tables == {"t"}  # no staging table left behind


@pytest.mark.parametrize("capture", ["eager", "lazy"])
@pytest.mark.parametrize(("loader", "col"), WORKS)
def test_other_names_answer_and_trace(tmp_path, capture, loader, col):
    df = _frame(col)
    con = tpf.connect(capture=capture)
    _load(con, loader, df, tmp_path)
    out = con.sql("SELECT * FROM t")
    pd.testing.assert_frame_equal(out.reset_index(drop=True), df, check_dtype=False)
    assert lineage_sets(out) == [rows_of("t", [i]) for i in range(len(df))]
    g = con.sql(f"SELECT g, sum(v) AS s, max({col}) AS m FROM t GROUP BY g ORDER BY g")
    assert g["m"].tolist() == [40, 20, 0]
    assert lineage_sets(g) == [rows_of("t", np.flatnonzero(df.g == k)) for k in g.g]


@pytest.mark.parametrize("capture", ["eager", "lazy"])
def test_parquet_rowid_column_through_a_table_and_a_join(tmp_path, capture):
    """The readers that go by DuckDB's rowid (eager joins of derived tables) are not misled by a user
    column of that name (its values run backwards here)."""
    df = _frame("rowid")
    x = pd.DataFrame({"g": [1, 2, 3, 3]})
    x.to_parquet(tmp_path / "x.parquet", index=False)
    con = tpf.connect(capture=capture)
    _load(con, "read_parquet", df, tmp_path)
    con.read_parquet(tmp_path / "x.parquet", name="x")
    con.execute("CREATE OR REPLACE TABLE d AS SELECT g, rowid, v FROM t WHERE v > 1")
    q = "SELECT x.g, d.v, d.rowid FROM x LEFT JOIN d USING (g) ORDER BY x.g, d.v"
    for _ in range(2):  # planned, then from the kept plan
        out = con.sql(q)
    assert out["v"].tolist() == [2.0, 3.0, 4.0, 5.0, 5.0] and out["rowid"].tolist() == [30, 20, 10, 0, 0]
    want = []
    for xi, k in enumerate(x.g):
        for ti in np.flatnonzero((df.g == k) & (df.v > 1)):
            want.append(rows_of("x", [xi]) | rows_of("t", [ti]))
    assert sorted(map(sorted, lineage_sets(out))) == sorted(map(sorted, want))


@pytest.mark.parametrize("capture", ["eager", "lazy"])
@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TABLE u AS SELECT g, 7 AS __tp_rid FROM t",  # was read as u's row ids
        "CREATE TABLE u AS SELECT g, v AS __TP_LIN FROM t",
        "SELECT g AS __tp_k0, count(*) FROM t GROUP BY g",
        "CREATE TABLE u (__tp_side INTEGER)",
        "SELECT * FROM t AS __tp_gm",
    ],
)
def test_a_statement_naming_a_reserved_name_is_refused(tmp_path, capture, sql):
    con = tpf.connect(capture=capture)
    _load(con, "read_csv", _frame("w"), tmp_path)
    with pytest.raises(UnsupportedSQLError, match="reserved .* rename"):
        con.execute(sql)
    assert "u" not in set(con.execute("SELECT table_name FROM duckdb_tables()")["table_name"])


@pytest.mark.parametrize("capture", ["eager", "lazy"])
@pytest.mark.parametrize("loader", ["read_parquet", "read_csv", "register", "register_traced"])
def test_a_loaded_column_with_the_reserved_prefix_is_refused(tmp_path, capture, loader):
    con = tpf.connect(capture=capture)
    with pytest.raises(UnsupportedOperationError, match="__tp_k0.*rename"):
        _load(con, loader, _frame("__tp_k0"), tmp_path)
    assert "t" not in set(con.execute("SELECT table_name FROM duckdb_tables()")["table_name"])


@pytest.mark.parametrize("capture", ["eager", "lazy"])
def test_a_name_that_only_contains_tp_still_traces(tmp_path, capture):
    """Only the prefix is reserved: ``x__tp_rid`` is an ordinary name (oracle: the frame's rows)."""
    con = tpf.connect(capture=capture)
    df = _frame("w")
    _load(con, "read_csv", df, tmp_path)
    out = con.execute("SELECT g AS x__tp_rid, sum(v) AS s FROM t GROUP BY g ORDER BY g")
    assert list(out.columns) == ["x__tp_rid", "s"]
    want = [rows_of("t", np.flatnonzero(df["g"].to_numpy() == g)) for g in (1, 2, 3)]
    assert lineage_sets(out) == want
