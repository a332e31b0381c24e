"""Arrow lineage columns -> CSR: NULL ids and NULL lists are empty; parts concatenate; markers expand."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from traceprop_frames.lineage import RowLineage
from traceprop_frames.sql.connection import _concat_csr, lineage_from_arrow
from traceprop_frames.sql.shared import marker_base, resolve_markers, witness_blocks


def rows(off, ids) -> list[list[int]]:
    return [ids[off[i] : off[i + 1]].tolist() for i in range(len(off) - 1)]


def test_list_column_with_nulls():
    arr = pa.array([[1, 2], None, [], [None, 3], [4]], pa.list_(pa.int64()))
    assert rows(*lineage_from_arrow(arr)) == [[1, 2], [], [], [3], [4]]
    sliced = pa.chunked_array([arr.slice(1, 3), arr.slice(4, 1)])
    assert rows(*lineage_from_arrow(sliced)) == [[], [], [3], [4]]


def test_scalar_column_with_nulls():
    assert rows(*lineage_from_arrow(pa.array([5, None, 7], pa.int64()))) == [[5], [], [7]]


def test_concat_parts():
    a = (np.array([0, 1, 1, 3]), np.array([1, 2, 3]))
    b = (np.array([0, 0, 2, 3]), np.array([7, 8, 9]))
    assert rows(*_concat_csr([a, b])) == [[1], [7, 8], [2, 3, 9]]


def test_markers_become_shared_sets_once_per_row():
    m0, m1 = marker_base(0), marker_base(1)
    off = np.array([0, 3, 4, 5])
    ids = np.array([10, m0, m0, 11, m1])
    w0 = RowLineage(np.array([0, 1, 2]), np.array([100, 101])).shared_sets([0, 1], [0], [2], "scalar")
    w1 = RowLineage(np.array([0]), np.zeros(0, dtype=np.int64)).shared_sets([], [0], [0], "empty")
    lin = resolve_markers(off, ids, [(w0, np.array([0])), (w1, np.array([0]))], lambda x: x)
    assert [lin.row_ids(i).tolist() for i in range(3)] == [[10, 100, 101], [11], []]
    assert lin.n_ids == 2 and lin.context.refs.tolist() == [w0.base, w1.base]  # stored once, referred to


def test_in_markers_pick_the_set_of_their_value():
    # witness rows with keys 7, 3, 7 -> sets {3: [201], 7: [200, 202]}; a key without rows refers to nothing
    table = pa.table({"k": pa.array([7, 3, 7], pa.int64()), "lin": pa.array([200, 201, 202], pa.int64())})
    blocks = witness_blocks([(table, "IN")], lineage_from_arrow, lambda x: x)
    ids = np.array([marker_base(0) | 7, marker_base(0) | 3, marker_base(0) | 5])
    lin = resolve_markers(np.arange(4), ids, blocks, lambda x: x)
    assert [lin.row_ids(i).tolist() for i in range(3)] == [[200, 202], [201], []]
