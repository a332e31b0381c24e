"""Eager capture's decoding of a result's hidden lineage columns (Arrow -> CSR -> RowLineage).

Oracle: the ids written out row by row as Python lists (``to_pylist``), NULLs dropped, compared with the
CSR rows; and, for marker ids, the shared set each marker names, built by hand. The tests reach the
paths the decoder takes for speed (one chunk read in place; no marker found by one ``max()``) as well
as the general ones (several chunks, NULLs; markers present), so neither can hide behind the other.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import traceprop_frames as tpf
from traceprop_frames.lineage import RowLineage
from traceprop_frames.lineage.sources import ROW_BITS, ROW_MASK
from traceprop_frames.sql.connection import lineage_from_arrow
from traceprop_frames.sql.shared import marker_base, resolve_markers
from traceprop_frames.sql.sources import MARKER_SID


def _rows(off, ids) -> list[list[int]]:
    return [ids[off[i] : off[i + 1]].tolist() for i in range(len(off) - 1)]


def _oracle(lists) -> list[list[int]]:
    return [[x for x in (row or []) if x is not None] for row in lists]


LISTS = [[1, 2, 3], [], None, [4, None, 5], [6], [7, 8]]


@pytest.mark.parametrize("chunks", [1, 2, 3])
@pytest.mark.parametrize("with_nulls", [False, True])
def test_list_column_rows_equal_python_lists(chunks, with_nulls):
    lists = LISTS if with_nulls else [[1, 2, 3], [], [4, 5], [6], [7, 8], [9]]
    bounds = np.linspace(0, len(lists), chunks + 1).astype(int)
    parts = [pa.array(lists[a:b], type=pa.list_(pa.int64())) for a, b in zip(bounds[:-1], bounds[1:])]
    col = pa.chunked_array(parts)
    assert col.num_chunks == chunks
    off, ids = lineage_from_arrow(col)
    assert _rows(off, ids) == _oracle(lists)
    assert ids.dtype == np.int64 and off.dtype == np.int64


def test_sliced_single_chunk_is_read_from_its_own_offsets():
    """A chunk that is a slice of a longer array: its offsets do not start at 0 (read in place)."""
    full = pa.array([[10, 11], [12], [13, 14, 15], [16]], type=pa.list_(pa.int64()))
    col = pa.chunked_array([full.slice(1, 2)])
    off, ids = lineage_from_arrow(col)
    assert _rows(off, ids) == [[12], [13, 14, 15]]


@pytest.mark.parametrize("chunks", [1, 2])
def test_scalar_column_rows_equal_python_values(chunks):
    values = [5, None, 7, 8]
    col = pa.chunked_array(
        [pa.array(values[:2]), pa.array(values[2:])] if chunks == 2 else [pa.array(values)]
    )
    off, ids = lineage_from_arrow(col)
    assert _rows(off, ids) == [[5], [], [7], [8]]


def test_no_marker_even_at_the_largest_source_id():
    """The largest id that is not a marker stays a plain id (the one-``max()`` test must not see a marker)."""
    top = ((MARKER_SID - 1) << ROW_BITS) | ROW_MASK
    off, ids = np.array([0, 2, 3]), np.array([top, 3, 0])
    lin = resolve_markers(off, ids, [], lambda x: x)
    assert lin.row_ids(0).tolist() == sorted([top, 3]) and lin.row_ids(1).tolist() == [0]
    assert not lin.has_context


def test_markers_resolve_to_their_sets():
    """A marker id (witness 0, key 0) becomes a reference to the witness set; other ids stay."""
    witness = RowLineage(np.array([0, 2]), np.array([100, 101])).shared_sets([0], [0], [1], "scalar")
    m = marker_base(0)
    off, ids = np.array([0, 2, 3, 3]), np.array([7, m, 8])
    lin = resolve_markers(off, ids, [(witness, np.array([0]))], lambda x: x)
    assert lin.row_ids(0).tolist() == [7, 100, 101]
    assert lin.row_ids(1).tolist() == [8]
    assert lin.row_ids(2).tolist() == []


def test_ids_beyond_float_precision_survive_null_neighbours():
    """A list holding a NULL id beside ids above 2**53 (a marker id): every id comes back exact (a float64
    detour through ``to_numpy`` of a column with NULLs would round them)."""
    m = marker_base(1) | 12345
    big = ((1 << 20) << ROW_BITS) | 7  # a large source id
    lists = [[m, None, big], None, [None], [big + 1, m + 2]]
    off, ids = lineage_from_arrow(pa.chunked_array([pa.array(lists, type=pa.list_(pa.int64()))]))
    assert _rows(off, ids) == _oracle(lists)
    off, ids = lineage_from_arrow(pa.array([m, None, big]))
    assert _rows(off, ids) == [[m], [], [big]]


def test_null_list_spanning_values_lists_none_of_them():
    """Arrow lets a NULL list entry span child values: they are not its members."""
    arr = pa.ListArray.from_arrays(
        pa.array([0, 2, 4, 5], type=pa.int32()),
        pa.array([1, 2, 3, 4, None]),
        mask=pa.array([False, True, False]),
    )
    assert arr.to_pylist() == [[1, 2], None, [None]]
    off, ids = lineage_from_arrow(arr)
    assert _rows(off, ids) == [[1, 2], [], []]


def test_in_witness_beside_an_unmatched_outer_join_row(tmp_path):
    """End to end: a group's list holds a NULL id (LEFT JOIN, no match) and a keyed IN-witness marker (an id
    above 2**53). Oracle, by hand: group x is a's row 1 (k=2; no b row has k=2) plus the IN witness of
    k=2, c's rows 1 and 2; group y is a's row 3 (k=4) plus c's rows 4 and 5. (Before, the marker was
    rounded on its way through float64 and the witness rows were silently missing.)"""
    pd.DataFrame({"k": [1, 2, 3, 4], "g": ["x", "x", "y", "y"]}).to_csv(tmp_path / "a.csv", index=False)
    pd.DataFrame({"k": [1, 3], "v": [10, 30]}).to_csv(tmp_path / "b.csv", index=False)
    pd.DataFrame({"k": [1, 2, 2, 3, 4, 4]}).to_csv(tmp_path / "c.csv", index=False)
    con = tpf.connect(capture="eager")
    for t in "abc":
        con.read_csv(tmp_path / f"{t}.csv", name=t)
    q = (
        "SELECT a.g, count(b.v) AS n FROM a LEFT JOIN b ON a.k = b.k "
        "WHERE a.k IN (SELECT k FROM c GROUP BY k HAVING count(*) > 1) GROUP BY a.g ORDER BY a.g"
    )
    assert "__tp_present" not in con.rewrite(q) and "HASH(" in con.rewrite(q).upper()  # a keyed marker
    df = con.sql(q)
    assert df["g"].tolist() == ["x", "y"] and df["n"].tolist() == [0, 0]
    want = {("a", 1), ("c", 1), ("c", 2)}, {("a", 3), ("c", 4), ("c", 5)}
    for i, rows in enumerate(want):
        src = df.tp.sources(rows=[i])  # {path: row numbers}
        assert {(Path(p).stem, int(r)) for p, rs in src.items() for r in rs} == rows
