"""``shared.unique_pairs`` (the distinct (row, set) references of marker ids) against a set of tuples,
and resolve_markers' references per row against a loop over the marker ids."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from traceprop_frames.lineage import RowLineage
from traceprop_frames.sql.shared import marker_base, resolve_markers, unique_pairs

_PAIRS = st.lists(st.tuples(st.integers(0, 40), st.integers(0, 9)), max_size=60)


@given(_PAIRS)
def test_unique_pairs_equal_the_sorted_set_of_tuples(pairs):
    rows = np.array([r for r, _ in pairs], dtype=np.int64)
    sets = np.array([s for _, s in pairs], dtype=np.int64)
    out = unique_pairs(rows, sets)
    assert out.dtype == np.int64 and out.shape == (len(set(pairs)), 2)
    assert [tuple(p) for p in out.tolist()] == sorted(set(pairs))


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2**40)), min_size=1, max_size=20))
def test_unique_pairs_where_row_times_sets_would_overflow(pairs):
    rows = np.array([r for r, _ in pairs], dtype=np.int64) * np.int64(2**30)  # row * m past 2**62
    sets = np.array([s for _, s in pairs], dtype=np.int64)
    expected = sorted({(r * 2**30, s) for r, s in pairs})
    assert [tuple(p) for p in unique_pairs(rows, sets).tolist()] == expected


@given(st.lists(st.lists(st.sampled_from(["a", "b", 1, 2, 3]), max_size=8), min_size=1, max_size=12))
def test_resolve_markers_refers_each_row_to_its_markers_sets_once(rows):
    """Rows of direct ids (1, 2, 3) and markers of two witness queries ("a": key 0 of query 0, "b": key
    0 of query 1); each row's lineage is its direct ids plus every row of each set it refers to."""
    sets = {"a": [100, 101], "b": [200]}
    code = {"a": marker_base(0), "b": marker_base(1)}
    off = np.cumsum([0] + [len(r) for r in rows])
    ids = np.array([code.get(x, x) for r in rows for x in r], dtype=np.int64)
    blocks = []
    for name in ("a", "b"):
        w = RowLineage(np.array([0, len(sets[name])]), np.array(sets[name]))
        blocks.append((w.shared_sets([0], [0], [1], name), np.array([0])))
    lin = resolve_markers(off, ids, blocks, lambda x: x)
    for i, r in enumerate(rows):
        expected = {x for x in r if isinstance(x, int)}
        for name in ("a", "b"):
            if name in r:
                expected |= set(sets[name])
        assert set(lin.row_ids(i).tolist()) == expected
