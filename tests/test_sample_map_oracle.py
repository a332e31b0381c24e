"""Old samples → rebuilt rows (:func:`match_samples`) against a brute force over Python sets.

Random old lineages (1-3 direct ids per sample, from two sources, repeats allowed), random erased rows and
a rebuilt table made the ways a re-run makes one: the same samples in the same order minus the erased ids
(the one-pass path), or reordered, some dropped by a filter and new rows added (the keyed path). The
oracle: old sample ``i`` pairs with the ``r``-th rebuilt row whose id *set* equals ``i``'s set minus the
erased ids, ``i`` being the ``r``-th old sample with that set; samples left with no ids vanish.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from traceprop_frames.lineage.rowsets import RowLineage
from traceprop_frames.unlearn import sample_map
from traceprop_frames.unlearn.sample_map import match_samples


def _csr(rows: list[list[int]]) -> RowLineage:
    off = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    ids = np.array([x for r in rows for x in r], dtype=np.int64)
    return RowLineage(off, ids)


def _oracle(old_rows, new_rows, erased: set) -> tuple[list[int], list[int]]:
    keys_new: dict[frozenset, list[int]] = {}
    for j, r in enumerate(new_rows):
        keys_new.setdefault(frozenset(r), []).append(j)
    used: dict[frozenset, int] = {}
    new_of_old = []
    for r in old_rows:
        k = frozenset(r) - erased
        cands = keys_new.get(k, []) if k else []
        n = used.get(k, 0)
        new_of_old.append(cands[n] if n < len(cands) else -1)
        if n < len(cands):
            used[k] = n + 1
    taken = {j for j in new_of_old if j >= 0}
    return new_of_old, [j for j in range(len(new_rows)) if j not in taken]


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 100_000), n=st.integers(1, 25), reorder=st.booleans(), extra=st.booleans(),
       regroup=st.booleans(), shuffle=st.booleans())  # fmt: skip
def test_match_samples_matches_brute_force(seed, n, reorder, extra, regroup, shuffle):
    rng = np.random.default_rng(seed)
    universe = np.concatenate([np.arange(8), (1 << 40) + np.arange(8)])
    old_rows = [rng.choice(universe, int(rng.integers(1, 4))).tolist() for _ in range(n)]
    erased = set(rng.choice(universe, int(rng.integers(0, 5)), replace=False).tolist())
    new_rows = [[x for x in r if x not in erased] for r in old_rows]
    new_rows = [r for r in new_rows if r]
    if reorder:  # a changed filter drops some rows, the order changes, ids within a row are reordered
        new_rows = [r[::-1] for r in new_rows if rng.random() < 0.8]
        new_rows = [new_rows[k] for k in rng.permutation(len(new_rows))]
    if shuffle:  # the same rows in the same order, ids in another order within rows (a parallel list())
        new_rows = [[r[k] for k in rng.permutation(len(r))] for r in new_rows]
    if regroup and new_rows:  # the same ids in the same order, cut into rows elsewhere (a re-run that
        flat = [x for r in new_rows for x in r]  # groups differently): only some samples match
        k = min(len(new_rows), len(flat)) - 1  # as many rows as before where the ids allow
        cuts = sorted(rng.choice(np.arange(1, len(flat)), k, replace=False).tolist()) + [len(flat)]
        new_rows = [flat[a:b] for a, b in zip([0, *cuts[:-1]], cuts)]
    if extra:  # rows no old sample maps to
        new_rows += [rng.choice(universe, int(rng.integers(1, 3))).tolist() for _ in range(2)]
    old, new = _csr(old_rows), _csr(new_rows)
    got = match_samples(old, new, np.array(sorted(erased), dtype=np.int64))
    want_map, want_new = _oracle(old_rows, new_rows, erased)
    assert got.new_of_old.tolist() == want_map
    assert got.new_rows.tolist() == want_new
    if not (
        reorder or extra or regroup
    ):  # (with or without the shuffle within rows)  # the one-pass path answers, and agrees with the keyed match
        fast = sample_map._in_order(old, new, np.array(sorted(erased), dtype=np.int64))
        assert fast is not None and fast.new_of_old.tolist() == want_map


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 100_000), far=st.booleans())
def test_rows_compared_regardless_of_order_within_them(seed, far):
    """The within-row comparison, on ids whose combined sort key fits and on ids too far apart for it."""
    rng = np.random.default_rng(seed)
    sources = np.array([0, (1 << 22) if far else 1], dtype=np.int64) << np.int64(40)
    rows_ = [rng.choice(sources, 3) | rng.integers(0, 1 << 39 if far else 20, 3) for _ in range(6)]
    a = np.concatenate(rows_)
    b = np.concatenate([r[rng.permutation(3)] for r in rows_])
    off = np.arange(0, 19, 3, dtype=np.int64)
    if not np.array_equal(a, b):
        assert sample_map._same_rows_unordered(a, b, off)
    c = b.copy()
    c[4] = c[4] ^ np.int64(1)  # one id changed in row 1
    if not np.array_equal(a, c):
        want = sorted(a[3:6].tolist()) == sorted(c[3:6].tolist())
        assert sample_map._same_rows_unordered(a, c, off) == want


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 100_000), change=st.sampled_from(["none", "swap_rows", "repeat", "outsider"]),
       one_source=st.booleans(), far=st.booleans())  # fmt: skip
def test_rows_compared_by_owner_table(seed, change, one_source, far):
    """Distinct, dense ids (the table path, no sort) against Python sets: an id moved to another row, an id
    listed twice or an id from outside makes rows differ; a shuffle within rows does not. ``far``: two
    source ids far apart (the table numbers only the sources present)."""
    rng = np.random.default_rng(seed)
    second = (1 << 20) if far else 1
    pool = (
        (5 << 40) + np.arange(60)
        if one_source
        else np.concatenate([np.arange(30), (second << 40) + np.arange(30)])
    )
    ids = rng.permutation(pool)[:36].astype(np.int64)
    sizes = rng.multinomial(36 - 6, np.ones(6) / 6) + 1
    off = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    a = ids.copy()
    rows_a = [a[off[k] : off[k + 1]] for k in range(6)]
    b = np.concatenate([r[rng.permutation(len(r))] for r in rows_a])
    if change == "swap_rows":  # the first id of row 0 and the last of row 5 trade places
        b[0], b[-1] = b[-1], b[0]
    elif change == "repeat":
        b[1] = b[0] if sizes[0] > 1 else b[1]
    elif change == "outsider":
        b[2] = (5 << 40) + 61 if one_source else (second << 40) + 45
    want = all(
        sorted(a[off[k] : off[k + 1]].tolist()) == sorted(b[off[k] : off[k + 1]].tolist()) for k in range(6)
    )
    rows = np.repeat(np.arange(6), np.diff(off))  # every entry, not only those that differ
    row_of = sample_map._same_rows_by_owner(a, b, rows)
    assert row_of is not None and row_of == want
    if not np.array_equal(a, b):
        assert sample_map._same_rows_unordered(a, b, off) == want
