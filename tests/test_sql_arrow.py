"""Arrow lineage columns -> CSR: NULL ids and NULL lists are empty; parts concatenate; markers expand."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from traceprop_frames.lineage import encode
from traceprop_frames.sql.connection import _concat_csr, expand_markers, lineage_from_arrow
from traceprop_frames.sql.sources import MARKER_SID


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


def test_markers_expand_once_per_row():
    m0, m1 = encode(MARKER_SID, np.array([0, 1])).tolist()
    off = np.array([0, 3, 4, 5])
    ids = np.array([10, m0, m0, 11, m1])
    consts = [(np.array([0, 2]), np.array([100, 101])), (np.array([0, 0]), np.zeros(0, dtype=np.int64))]
    assert rows(*expand_markers(off, ids, consts)) == [[10, 100, 101], [11], []]
