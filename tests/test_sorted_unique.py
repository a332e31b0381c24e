"""``refs.sorted_unique`` against ``np.unique``: sorted input (the one-pass path) and unsorted input."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from traceprop_frames.lineage.refs import sorted_unique

ids = st.lists(st.integers(min_value=-(2**62), max_value=2**62), max_size=40)


@given(ids, st.booleans())
def test_equals_np_unique(values, presort):
    a = np.array(sorted(values) if presort else values, dtype=np.int64)
    got = sorted_unique(a)
    np.testing.assert_array_equal(got, np.unique(a))
    assert got.dtype == np.int64


def test_strictly_increasing_input_is_returned_as_a_copy():
    a = np.arange(0, 30, 3, dtype=np.int64)
    got = sorted_unique(a)
    np.testing.assert_array_equal(got, a)
    got[0] = 99  # the caller's array is not the answer
    assert a[0] == 0


def test_a_repeat_at_the_end_is_removed():
    np.testing.assert_array_equal(sorted_unique(np.array([1, 2, 5, 5], dtype=np.int64)), [1, 2, 5])
    np.testing.assert_array_equal(sorted_unique(np.array([4, 1, 2], dtype=np.int64)), [1, 2, 4])
