"""The id set operations of ``lineage.refs`` against numpy's: ``sorted_unique`` (sorted input: the one-pass
path, and unsorted input), ``setdiff_ids``, ``union_ids``, ``intersect_ids`` and ``isin_ids`` (a handful of
members, many members, few and many values: each of its paths)."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from traceprop_frames.lineage.refs import intersect_ids, isin_ids, setdiff_ids, sorted_unique, union_ids

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


small = st.lists(st.integers(min_value=-50, max_value=50), max_size=60)  # small range: many overlaps


@given(st.one_of(ids, small), st.one_of(ids, small))
def test_set_operations_equal_numpy(a, b):
    a, b = np.array(a, dtype=np.int64), np.array(b, dtype=np.int64)
    for ours, theirs in [
        (setdiff_ids, np.setdiff1d),
        (union_ids, np.union1d),
        (intersect_ids, np.intersect1d),
    ]:
        got = ours(a, b)
        np.testing.assert_array_equal(got, theirs(a, b))
        assert got.dtype == np.int64


@given(st.sampled_from([0, 5, 33, 200]), st.sampled_from([0, 7, 300, 5000]), st.integers(0, 2**31))
def test_isin_ids_equals_np_isin_on_each_path(n_members, n_values, seed):
    # <= 32 members: one by one; more: sorted and searched, over 4096 values by sorted needles
    rng = np.random.default_rng(seed)
    members = rng.integers(0, 400, n_members).astype(np.int64)
    values = rng.integers(-10, 410, n_values).astype(np.int64)
    np.testing.assert_array_equal(isin_ids(values, members), np.isin(values, members))


def test_isin_ids_keeps_the_shape_of_a_2d_values_array():
    values = np.arange(5000, dtype=np.int64).reshape(50, 100)[::-1]
    members = np.arange(0, 5000, 7, dtype=np.int64)
    got = isin_ids(values, members)
    assert got.shape == (50, 100)
    np.testing.assert_array_equal(got, np.isin(values, members))


runs = st.lists(
    st.lists(st.integers(min_value=-(2**40), max_value=2**40), max_size=30), min_size=1, max_size=4
)


@given(runs, st.integers(min_value=0, max_value=20))
def test_few_ascending_runs_equal_np_unique(parts, repeat):
    """A few ascending runs (the timsort path), repeats inside a run and across runs."""
    a = np.concatenate([np.sort(np.array(p, dtype=np.int64)) for p in parts] + [np.full(repeat, 5, np.int64)])
    np.testing.assert_array_equal(sorted_unique(a), np.unique(a))


def test_two_large_runs_and_random_order():
    rng = np.random.default_rng(3)
    left = np.sort(rng.integers(0, 1 << 40, 5000))
    right = rng.integers(0, 1 << 40, 5000)  # table by table: one sorted table, one in random order
    for a in (np.concatenate([left, np.sort(right), left[:100]]), np.concatenate([left, right]), right):
        np.testing.assert_array_equal(sorted_unique(a), np.unique(a))
