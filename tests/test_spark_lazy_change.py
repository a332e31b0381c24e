"""Spark lazy capture when what the query read changes before the lineage question.

A lazily captured result answers by a backward job run when asked. If, in between, a temporary view the
query read is replaced (``createOrReplaceTempView`` with other data, or another definition; directly or
under a view the query reads) or a source file is rewritten, the answer must be the one eager capture
gave before the change, or a :class:`~traceprop_frames.errors.SourceChangedError` saying what to do —
never a different answer. Oracle: brute force in pandas over the original data (a group's rows).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import traceprop_frames as tpf
from traceprop_frames.errors import SourceChangedError

DATA = pd.DataFrame({"k": ["a", "b", "a", "c", "b", "a", "c", "b"], "v": [5, -1, 9, 2, 7, 8, 1, 10]})
OTHER = pd.DataFrame({"k": ["c", "c", "a", "b", "a", "b", "c", "a"], "v": [1, 2, 3, 4, 5, 6, 7, 8]})
QUERY = "SELECT k, count(*) AS n FROM t WHERE v > 0 GROUP BY k ORDER BY k"
ORACLE = {k: sorted(g.index) for k, g in DATA[DATA.v > 0].groupby("k")}


@pytest.fixture
def files(tmp_path):
    DATA.to_parquet(tmp_path / "t.parquet", index=False)
    OTHER.to_parquet(tmp_path / "other.parquet", index=False)
    return tmp_path / "t.parquet", tmp_path / "other.parquet"


def _answer(res, path) -> dict[str, list[int]]:
    """{group key: its source rows}, or the error a lineage question raised."""
    keys = [r["k"] for r in res.pinned().orderBy("__tp_pos").select("k").collect()]
    got = {}
    for i, k in enumerate(keys):
        ans = res.sources(rows=[i])
        assert set(ans) <= {str(path)}
        got[k] = sorted(np.asarray(ans.get(str(path), [])).tolist())
    return got


def _same_or_named_error(res, path, pinned_first: bool):
    """The lazy answer equals the oracle, or a SourceChangedError is raised (and names what to do)."""
    try:
        got = _answer(res, path)
    except SourceChangedError as e:
        assert "capture='eager'" in str(e) or "rerun" in str(e).lower()
        return "error"
    assert got == ORACLE
    return "answer"


def _replace_view_with_other_data(con, spark, files):
    spark.read.parquet(str(files[1])).createOrReplaceTempView("t")


def _replace_view_through_connection(con, spark, files):
    con.read_parquet(files[1], "t")


def _replace_view_definition(con, spark, files):
    con.sql("CREATE OR REPLACE TEMP VIEW t AS SELECT k, v - 3 AS v FROM src")


CHANGES = {
    "spark view, other data": _replace_view_with_other_data,
    "connection view, other file": _replace_view_through_connection,
    "view, other definition": _replace_view_definition,
}


@pytest.mark.parametrize("pinned_first", [True, False])
@pytest.mark.parametrize("change", list(CHANGES))
def test_lazy_after_a_view_is_replaced(spark, files, change, pinned_first):
    con = tpf.spark.connect(spark, capture="lazy").read_parquet(files[0], "src")
    con.sql("CREATE OR REPLACE TEMP VIEW t AS SELECT k, v FROM src")
    eager = tpf.spark.connect(spark, capture="eager")
    eager.read_parquet(files[0], "src").sql("CREATE OR REPLACE TEMP VIEW t AS SELECT k, v FROM src")
    want = eager.sql(QUERY)
    assert _answer(want, files[0]) == ORACLE  # eager, before the change: the oracle's answer
    res = con.sql(QUERY)
    if pinned_first:
        len(res)
    CHANGES[change](con, spark, files)
    _same_or_named_error(res, files[0], pinned_first)


def test_lazy_after_a_view_under_the_view_is_replaced(spark, files):
    """The query reads view ``t`` (SQL text over ``src``); ``src`` is replaced: ``t`` now reads other data."""
    con = tpf.spark.connect(spark, capture="lazy").read_parquet(files[0], "src")
    con.sql("CREATE OR REPLACE TEMP VIEW t AS SELECT k, v FROM src")
    res = con.sql(QUERY)
    len(res)
    con.read_parquet(files[1], "src")
    _same_or_named_error(res, files[0], True)


@pytest.mark.parametrize("pinned_first", [True, False])
def test_lazy_after_the_source_file_changes(spark, tmp_path, pinned_first):
    path = tmp_path / "t.parquet"
    DATA.to_parquet(path, index=False)
    con = tpf.spark.connect(spark, capture="lazy").read_parquet(path, "t")
    res = con.sql(QUERY)
    if pinned_first:
        len(res)
    OTHER.to_parquet(path, index=False)  # same size class, other rows: row numbers mean other records
    assert _same_or_named_error(res, path, pinned_first) == "error"


def test_lazy_unchanged_still_answers(spark, files):
    """No change: no error (the check does not fire on its own), and a touched but equal file is fine."""
    con = tpf.spark.connect(spark, capture="lazy").read_parquet(files[0], "t")
    res = con.sql(QUERY)
    len(res)
    spark.createDataFrame(OTHER).createOrReplaceTempView("unrelated")  # a view the query does not read
    files[0].touch()
    assert _answer(res, files[0]) == ORACLE


def test_lazy_after_an_untraced_file_changes(spark, files, tmp_path):
    """``u`` is the user's own Spark view (no lineage) over a file the join reads; it is rewritten after
    the rows were pinned: the join would pair other rows. Oracle: eager lineage taken before the change."""
    upath = tmp_path / "u.parquet"
    pd.DataFrame({"k": ["a", "b"]}).to_parquet(upath, index=False)
    spark.read.parquet(str(upath)).createOrReplaceTempView("u")
    query = "SELECT t.k, count(*) AS n FROM t JOIN u ON t.k = u.k GROUP BY t.k ORDER BY t.k"
    want = _answer(tpf.spark.connect(spark, capture="eager").read_parquet(files[0], "t").sql(query), files[0])
    assert want == {k: sorted(DATA.index[DATA.k == k]) for k in ("a", "b")}
    res = tpf.spark.connect(spark, capture="lazy").read_parquet(files[0], "t").sql(query)
    len(res)
    pd.DataFrame({"k": ["c", "c", "c"]}).to_parquet(upath, index=False)
    with pytest.raises(SourceChangedError, match="u.parquet"):
        _answer(res, files[0])


class _ConnectLike:
    """A session without the JVM handle (as on Spark Connect): only the public DataFrame surface."""

    def __init__(self, spark):
        self.table = spark.table


def test_view_check_without_the_jvm_catalog(spark, files):
    """Spark Connect's path: each view's DataFrame, compared with ``sameSemantics`` when asked."""
    from traceprop_frames.spark.changes import ReadState

    spark.read.parquet(str(files[0])).createOrReplaceTempView("cv")
    state = ReadState(_ConnectLike(spark), ["cv", "cv_absent"])
    state.check(None)  # unchanged: no error
    spark.read.parquet(str(files[1])).createOrReplaceTempView("cv")
    with pytest.raises(SourceChangedError, match="'cv'.*replaced"):
        state.check(None)
    spark.read.parquet(str(files[0])).createOrReplaceTempView("cv")
    spark.read.parquet(str(files[0])).createOrReplaceTempView("cv_absent")
    with pytest.raises(SourceChangedError, match="'cv_absent'.*created"):
        state.check(None)
