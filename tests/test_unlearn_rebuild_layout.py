"""The rebuilt training table's layout (issue 19): the slice-by-slice path for the usual re-run (the old
samples in order minus a few vanished ones) against the general gather/scatter path."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from traceprop_frames.unlearn import rebuild
from traceprop_frames.unlearn.sample_map import SampleMap


class _Est:
    def __init__(self, X, y, w):
        self.X_train_, self.y_train_, self.sample_weight_ = X, y, w


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 100_000), n=st.integers(1, 60), k=st.integers(1, 8), change=st.floats(0, 1))
def test_runs_layout_equals_general_layout(seed, n, k, change):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3)).astype(np.float32)
    y = (rng.random(n) > 0.5).astype(np.float32)
    w = np.where(rng.random(n) < 0.2, 0.0, 1.0).astype(np.float32)  # some removed earlier
    vanished = np.sort(rng.choice(n, min(k, n), replace=False))
    keep = np.setdiff1d(np.arange(n), vanished)
    Xn, yn = X[keep].copy(), y[keep].copy()
    touched = rng.random(len(keep)) < change
    Xn[touched, rng.integers(0, 3)] += 1.0  # some features changed
    flip = rng.random(len(keep)) < change / 4
    yn[flip] = 1.0 - yn[flip]  # some labels changed
    new_of_old = np.full(n, -1, dtype=np.int64)
    new_of_old[keep] = np.arange(len(keep))
    smap = SampleMap(new_of_old, np.zeros(0, dtype=np.int64))
    est = _Est(X, y, w)
    fast = rebuild.layout(est, Xn, yn, smap)
    saved = rebuild._RUNS
    rebuild._RUNS = 0  # the general path
    try:
        general = rebuild.layout(est, Xn, yn, smap)
    finally:
        rebuild._RUNS = saved
    for key in ("X", "y", "w", "changed", "forget", "already"):
        assert fast[key].dtype == general[key].dtype, key
        np.testing.assert_array_equal(fast[key], general[key], err_msg=key)
    assert fast["X"].flags.c_contiguous


@pytest.mark.parametrize("n_vanished", [0, rebuild._RUNS + 1])
def test_layout_outside_the_runs_path(n_vanished):
    """No vanished sample, or more than the runs path takes: the general path answers (and agrees on
    which samples changed)."""
    n = rebuild._RUNS + 10
    X = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    y = np.zeros(n, dtype=np.float32)
    vanished = np.arange(n_vanished)
    keep = np.setdiff1d(np.arange(n), vanished)
    Xn = X[keep].copy()
    Xn[-1, 0] += 1
    new_of_old = np.full(n, -1, dtype=np.int64)
    new_of_old[keep] = np.arange(len(keep))
    tab = rebuild.layout(
        _Est(X, y, np.ones(n, np.float32)), Xn, y[keep], SampleMap(new_of_old, np.zeros(0, np.int64))
    )
    assert tab["changed"].tolist() == [n - 1] and tab["w"][vanished].sum() == 0
