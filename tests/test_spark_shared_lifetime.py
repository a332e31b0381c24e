"""Spark shared sets live as long as the results and views that can carry their markers.

A long-running session that runs many queries with scalar subqueries must not keep every query's set (a
Spark DataFrame) for the life of the process: dropped results release theirs and their marker numbers are
handed out again; a result or view still alive keeps answering. Oracle for the lineage: brute force in
pandas (the rows of the group plus every row the ``avg()`` subquery read), as in test_spark_shared.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest
from _spark_small import DATA, SCALAR_QUERY, rows, scalar_oracle

from traceprop_frames.errors import LineageFormatError, UnsupportedOperationError
from traceprop_frames.spark import shared
from traceprop_frames.spark.shared import SharedSets, expand, live_markers, marker_ids


class _Side:
    """Stands in for a marker's Spark DataFrame (the registry never looks inside until asked)."""


def test_dropped_owners_release_their_sets_and_numbers():
    gc.collect()
    base, start = live_markers(), shared._next[0]
    kept = SharedSets()
    m_kept = kept.new_marker(_Side())
    for _ in range(200):
        owner = SharedSets([kept])
        owner.new_marker(_Side())
        owner.new_marker(_Side())
        assert live_markers() == base + 3
        del owner
        gc.collect()
        assert live_markers() == base + 1
    assert shared._next[0] <= start + 3  # numbers handed out again, not 401 new ones
    assert m_kept in shared._LIVE and shared._LIVE[m_kept] is kept


def test_a_child_keeps_its_parents_sets_alive():
    gc.collect()
    base = live_markers()
    parent = SharedSets()
    m = parent.new_marker(_Side())
    child = SharedSets([parent])
    del parent
    gc.collect()
    assert live_markers() == base + 1 and m in shared._LIVE
    del child
    gc.collect()
    assert live_markers() == base
    with pytest.raises(LineageFormatError, match="has released"):
        expand(np.array([1, m]))


def test_too_many_live_sets_raise_a_project_error(monkeypatch):
    gc.collect()
    monkeypatch.setattr(shared, "_free", [])
    monkeypatch.setattr(shared, "_KEY_MASK", shared._next[0] + 1)  # room for two more numbers
    owners = [SharedSets(), SharedSets()]
    owners[0].new_marker(_Side())
    owners[1].new_marker(_Side())
    with pytest.raises(UnsupportedOperationError, match="alive at once"):
        SharedSets().new_marker(_Side())
    owners.pop()
    gc.collect()
    SharedSets().new_marker(_Side())  # a released number makes room again


@pytest.mark.parametrize("capture", ["eager", "lazy"])
def test_many_queries_in_one_session_do_not_grow_the_registry(spark, small_table, capture):
    import traceprop_frames as tpf

    con = tpf.spark.connect(spark, capture=capture).read_parquet(small_table, "t")
    want = scalar_oracle()
    gc.collect()
    base, start = live_markers(), shared._next[0]
    kept = con.sql(SCALAR_QUERY)
    kept_keys = [r["k"] for r in kept.pinned().orderBy("__tp_pos").select("k").collect()]
    assert rows(kept.sources(rows=[0]), small_table) == want[kept_keys[0]]  # (lazy: its backward job's set)
    assert live_markers() == base + 1
    for _ in range(5):
        res = con.sql(SCALAR_QUERY)
        res.sources()  # the set is made (lazy: at the first question) and run
        assert live_markers() == base + 2
        del res
        gc.collect()
        assert live_markers() == base + 1
    assert shared._next[0] <= start + 2
    for i, k in enumerate(kept_keys):  # the result kept alive still answers, through its own set
        assert rows(kept.sources(rows=[i]), small_table) == want[k]
    con.register("r", kept)  # a view over the result keeps its set once the result is dropped
    marker = next(iter(kept._owner.sides))
    del kept
    gc.collect()
    assert marker in shared._LIVE
    again = con.sql("SELECT k FROM r WHERE n > 2")
    assert [rows(again.sources(rows=[i]), small_table) for i in range(len(again))] == [want["a"]]
    assert marker_ids(marker).size == len(DATA[DATA.k != "a"])
    del again
    con.register("r", DATA)  # the view replaced by a plain frame: nothing carries the marker any more
    gc.collect()
    assert marker not in shared._LIVE and live_markers() == base
