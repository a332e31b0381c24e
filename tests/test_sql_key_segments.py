"""Witness side queries' sets: ``shared.key_segments`` (keys already in order are not sorted again) and
``RowLineage.shared_sets`` in row order (the ids are the pool, no gather), against loops over the rows."""

from __future__ import annotations

import numpy as np
import pytest

from traceprop_frames.lineage import RowLineage
from traceprop_frames.sql.shared import key_segments


@pytest.mark.parametrize("kind", ["sorted", "constant", "shuffled", "one", "runs_then_drop"])
def test_key_segments_against_a_loop(kind):
    rng = np.random.default_rng(3)
    keys = {
        "sorted": np.sort(rng.integers(-5, 40, 200)),
        "constant": np.zeros(150, dtype=np.int64),
        "shuffled": rng.integers(0, 9, 120),
        "one": np.array([7]),
        "runs_then_drop": np.array([1, 1, 2, 2, 3, 0, 0]),
    }[kind].astype(np.int64)
    order, uk, starts, ends = key_segments(keys)
    want: dict[int, list[int]] = {}
    for i, k in enumerate(keys.tolist()):
        want.setdefault(k, []).append(i)
    assert uk.tolist() == sorted(want)
    for k, a, b in zip(uk.tolist(), starts.tolist(), ends.tolist()):
        assert order[a:b].tolist() == want[k]


def _set_ids(block, m: int) -> list[list[int]]:
    """Each set's ids (with those of the sets it refers to), read through rows that refer to it."""
    probe = RowLineage(np.zeros(m + 1, dtype=np.int64), np.zeros(0, dtype=np.int64))
    out = probe.with_context(np.arange(m, dtype=np.int64), block)
    return [sorted(out.row_ids(j).tolist()) for j in range(m)]


@pytest.mark.parametrize("context", [False, True])
@pytest.mark.parametrize("width", [1, 3])
def test_shared_sets_in_row_order_against_a_loop(context, width):
    rng = np.random.default_rng(5)
    n = 60
    off = np.arange(n + 1, dtype=np.int64) * width
    ids = rng.integers(0, 10_000, n * width).astype(np.int64)
    lin = RowLineage(off, ids)
    if context:  # rows also referring to sets of another block (a witness built on a witness)
        inner = RowLineage(np.arange(4, dtype=np.int64), np.array([90_001, 90_002, 90_003], dtype=np.int64))
        inner_block = inner.shared_sets(np.arange(3), [0, 1], [2, 3], "inner")
        lin = lin.with_context(rng.integers(-1, 2, n), inner_block)
    starts, ends = np.array([0, 10, 0, 59]), np.array([n, 25, 0, 60])
    block = lin.shared_sets(np.arange(n), starts, ends, "row order")
    want = [sorted({i for r in range(a, b) for i in lin.row_ids(r).tolist()}) for a, b in zip(starts, ends)]
    assert _set_ids(block, len(starts)) == want
    shuffled = rng.permutation(n)  # the general path (a gather) gives the same sets for the same rows
    again = lin.shared_sets(shuffled, [0], [n], "shuffled")
    assert _set_ids(again, 1) == [want[0]]
