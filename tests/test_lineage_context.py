"""Shared lineage parts (context sets): every reader against Python sets carried by brute force.

The oracle keeps, per row, the frozenset of direct ids and the frozenset of all ids (direct plus
whatever statistics read); each operation is applied to both the RowLineage and the oracle lists.
"""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

import traceprop_frames as tpf
from traceprop_frames.lineage import OpNode, RowLineage
from traceprop_frames.lineage import persist as lpersist
from traceprop_frames.lineage.context import Context
from traceprop_frames.lineage.refs import AllRefs, CodeRefs, CsrRefs, EachRefs


def _fresh(n: int):
    df = tpf.track(pd.DataFrame({"x": np.arange(n)}), name=f"ctx_src_{n}")
    lin = df.tp.lineage()
    direct = [frozenset([int(i)]) for i in lin.ids]
    return lin, direct, list(direct)


def _check(lin: RowLineage, direct, full) -> None:
    assert len(lin) == len(direct)
    for i in range(len(lin)):
        assert set(lin.row_ids(i).tolist()) == full[i], i
        assert set(lin.row_ids(i, direct=True).tolist()) == direct[i], i
    flat = lin.flattened()
    for i in range(len(lin)):
        assert set(flat.row_ids(i, direct=True).tolist()) == full[i]
    all_ids = sorted(set().union(*full)) if full else []
    if all_ids:
        probe = np.array(all_ids[:: max(1, len(all_ids) // 4)], dtype=np.int64)
        want_full = [i for i, s in enumerate(full) if s & set(probe.tolist())]
        want_direct = [i for i, s in enumerate(direct) if s & set(probe.tolist())]
        assert lin.rows_from_ids(probe).tolist() == want_full
        assert lin.rows_from_ids(probe, direct=True).tolist() == want_direct


def _broadcast(lin, direct, full, kind: str, rng):
    """A statistic over the rows broadcast back into them: 'total' (one set), 'prefix', 'window'."""
    n = len(lin)
    order = rng.permutation(n)
    if kind == "total":
        block = lin.shared_sets(order, [0], [n], "total")
        set_of_row = np.zeros(n, dtype=np.int64)
        members = [list(range(n))]
    elif kind == "prefix":
        block = lin.shared_sets(order, np.zeros(n, dtype=np.int64), np.arange(1, n + 1), "cumsum")
        set_of_row = np.empty(n, dtype=np.int64)
        set_of_row[order] = np.arange(n)
        members = [order[: j + 1].tolist() for j in range(n)]
    else:
        starts = np.maximum(np.arange(n) - 2, 0)
        block = lin.shared_sets(order, starts, np.arange(1, n + 1), "rolling(3)")
        set_of_row = np.empty(n, dtype=np.int64)
        set_of_row[order] = np.arange(n)
        members = [order[max(j - 2, 0) : j + 1].tolist() for j in range(n)]
    out = lin.with_context(set_of_row, block, node=OpNode(kind, {}, (lin.node,)))
    sets = [frozenset().union(*(full[r] for r in mem)) for mem in members]
    new_full = [full[i] | sets[set_of_row[i]] for i in range(n)]
    return out, list(direct), new_full


def _compact(lin, direct, full, kind: str, rng):
    """The compact parts (:mod:`traceprop_frames.lineage.refs`) with deferred sets, as the pandas calls
    record them: 'offset' (row i reads rows i-p..i), 'each' (row i reads a random prefix of a random order
    ending at i's place), 'group' (a row reads its group), 'all' (one statistic in every row)."""
    n = len(lin)
    if kind == "offset":
        p = int(rng.integers(-n - 1, n + 2))
        lo, hi = min(max(p, 0), n), max(min(n + p, n), 0)
        k = np.arange(n)
        starts, ends = np.minimum(k, k - p).clip(0, n), np.maximum(k, k - p).clip(-1, n - 1) + 1
        valid = (k >= lo) & (k < hi)
        starts, ends = np.where(valid, starts, 0), np.where(valid, ends, 0)
        block = lin.deferred_sets(n, lambda: (k, starts, ends), "shift")
        layer = EachRefs(n, block.base, lo, hi)
        members = [list(range(starts[i], ends[i])) if valid[i] else [] for i in range(n)]
        set_of_row = np.where(valid, k, -1)
    elif kind == "each":
        order = rng.permutation(n)
        place = np.empty(n, dtype=np.int64)
        place[order] = np.arange(n)
        starts = np.zeros(n, dtype=np.int64)
        block = lin.deferred_sets(n, lambda: (order, starts, place + 1), "cumsum")
        layer = EachRefs(n, block.base)
        members = [order[: place[i] + 1].tolist() for i in range(n)]
        set_of_row = np.arange(n)
    elif kind == "group":
        codes = rng.integers(-1, 3, size=n)
        order = np.argsort(codes, kind="stable")
        order = order[codes[order] >= 0]
        counts = np.bincount(codes[codes >= 0], minlength=3)
        g_end = np.cumsum(counts)
        block = lin.deferred_sets(3, lambda: (order, g_end - counts, g_end), "transform")
        layer = CodeRefs(block.base, codes, 3)
        members = [np.flatnonzero(codes == g).tolist() for g in range(3)]
        set_of_row = codes
    else:
        block = lin.deferred_sets(1, lambda: (rng.permutation(n), [0], [n]), "sum")
        layer = AllRefs(n, [block.base])
        members = [list(range(n))]
        set_of_row = np.zeros(n, dtype=np.int64)
    assert not block.is_laid_out  # recording laid nothing out
    out = lin.with_refs(layer, [block], node=OpNode(kind, {}, (lin.node,)))
    sets = [frozenset().union(*(full[r] for r in mem)) for mem in members]
    new_full = [full[i] | (sets[set_of_row[i]] if set_of_row[i] >= 0 else frozenset()) for i in range(n)]
    return out, list(direct), new_full


def pick(xs, ys, i, j):
    return (xs[i] if i >= 0 else frozenset()) | (ys[j] if j >= 0 else frozenset())


OPS = ["total", "prefix", "window", "filter", "join", "group", "concat"]
COMPACT = ["c_offset", "c_each", "c_group", "c_all"]


@given(
    n=st.integers(1, 12),
    ops=st.lists(st.sampled_from(OPS + COMPACT), min_size=1, max_size=5),
    seed=st.integers(0, 99),
)
def test_context_chains_match_brute_force(n, ops, seed):
    rng = np.random.default_rng(seed)
    lin, direct, full = _fresh(n)
    other, o_direct, o_full = _broadcast(*_fresh(n + 1), "total", rng)
    for op in ops:
        m = len(lin)
        if op in ("total", "prefix", "window") and m:
            lin, direct, full = _broadcast(lin, direct, full, op, rng)
        elif op in COMPACT and m:
            lin, direct, full = _compact(lin, direct, full, op[2:], rng)
        elif op == "filter":
            rows = (
                np.sort(rng.choice(m, size=rng.integers(0, m + 1), replace=False)) if m else np.zeros(0, int)
            )
            lin = lin.take(rows)
            direct, full = [direct[r] for r in rows], [full[r] for r in rows]
        elif op == "join" and m:
            ia = rng.integers(-1, m, size=m + 2)
            ib = rng.integers(-1, len(other), size=m + 2)
            lin = RowLineage.union_rows(lin, ia, other, ib)
            direct = [pick(direct, o_direct, i, j) for i, j in zip(ia, ib)]
            full = [pick(full, o_full, i, j) for i, j in zip(ia, ib)]
        elif op == "group" and m:
            codes = rng.integers(-1, 3, size=m)
            lin = lin.group_union(codes, 3)
            direct = [frozenset().union(*(direct[r] for r in np.flatnonzero(codes == g))) for g in range(3)]
            full = [frozenset().union(*(full[r] for r in np.flatnonzero(codes == g))) for g in range(3)]
        elif op == "concat":
            lin = RowLineage.concat([lin, other])
            direct, full = direct + o_direct, full + o_full
    _check(lin, direct, full)


def test_total_is_stored_once_and_direct_is_the_row():
    lin, direct, full = _fresh(1000)
    out, d2, f2 = _broadcast(lin, direct, full, "total", np.random.default_rng(0))
    assert out.context.n_sets == 1
    assert len(out.context.refs) == 1000  # one reference per row, not 1000 ids per row
    ids = out.sources()
    assert list(ids.values())[0].tolist() == list(range(1000))
    assert list(out.sources(rows=[5], direct=True).values())[0].tolist() == [5]
    assert list(out.sources(rows=[5]).values())[0].size == 1000
    assert out.context_labels(5) == ["total"]


def test_prefix_sets_cost_linear_storage():
    n = 20_000
    lin, _, _ = _fresh(n)
    block = lin.shared_sets(np.arange(n), np.zeros(n, dtype=np.int64), np.arange(1, n + 1), "cumsum")
    out = lin.with_context(np.arange(n), block)
    assert len(block.pool) == n and block.m == n  # 20k prefix sets over one pool of 20k ids
    assert out.row_ids(n - 1).size == n and out.row_ids(9).tolist() == lin.ids[:10].tolist()
    assert out.rows_from_ids(lin.ids[[n - 5]]).tolist() == list(range(n - 5, n))


def test_prefix_over_rows_with_their_own_windows_stays_linear():
    """cumsum of a rolling mean: every row refers to its own window set, and prefix j reads windows
    0..j. The references are stored once in row order (O(n)), not per prefix (O(n^2))."""
    n = 5_000
    lin, _, _ = _fresh(n)
    every = np.arange(n)
    windows = lin.shared_sets(every, np.maximum(every - 2, 0), every + 1, "rolling(3)")
    rolled = lin.with_context(every, windows)
    prefix = rolled.shared_sets(every, np.zeros(n, dtype=np.int64), every + 1, "cumsum")
    out = rolled.with_context(every, prefix)
    assert len(prefix.ref_pool) == n  # one reference per member row, shared by all n prefixes
    for i in (0, 1, 777, n - 1):  # oracle: prefix i reads rows 0..i (their windows add nothing earlier)
        assert out.row_ids(i).tolist() == lin.ids[: i + 1].tolist()
        assert out.row_ids(i, direct=True).tolist() == [int(lin.ids[i])]
    assert out.rows_from_ids(lin.ids[[n - 3]]).tolist() == list(range(n - 3, n))


def test_nested_statistic_reaches_the_inner_sets_rows():
    rng = np.random.default_rng(2)
    lin, direct, full = _fresh(6)
    a, d, f = _broadcast(lin, direct, full, "window", rng)
    b, d, f = _broadcast(a.take(np.array([0, 2, 4])), [d[0], d[2], d[4]], [f[0], f[2], f[4]], "total", rng)
    _check(b, d, f)
    # the total over rows {0,2,4} read their windows: rows outside {0,2,4} are reachable
    assert set(b.row_ids(0).tolist()) == f[0] and len(f[0]) > 3


def test_persist_and_pickle_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    lin, direct, full = _fresh(30)
    out, d, f = _broadcast(lin, direct, full, "prefix", rng)
    out, d, f = _broadcast(out, d, f, "total", rng)
    path = str(tmp_path / "lin.parquet")
    lpersist.save(out, path)
    _check(lpersist.load(path), d, f)
    _check(pickle.loads(pickle.dumps(out)), d, f)


def test_traced_frame_parquet_keeps_context(tmp_path):
    df = tpf.track(pd.DataFrame({"x": np.arange(10.0)}), name="ctx_frame")
    lin = df.tp.lineage()
    block = lin.shared_sets(np.arange(10), [0], [10], "mean")
    from traceprop_frames.frames.carrier import attach

    out = attach(df.copy(), lin.with_context(np.zeros(10, dtype=np.int64), block))
    path = tmp_path / "f.parquet"
    out.tp.to_parquet(path)
    back = tpf.read_traced(path)
    assert back.tp.sources(rows=[3])["ctx_frame"].tolist() == list(range(10))
    assert back.tp.lineage().sources(rows=[3], direct=True)["ctx_frame"].tolist() == [3]


def test_bad_segments_raise():
    lin, _, _ = _fresh(4)
    with pytest.raises(ValueError, match="inside"):
        lin.shared_sets(np.arange(4), [0], [5], "x")
    block = lin.shared_sets(np.arange(4), [0], [4], "x")
    with pytest.raises(ValueError, match="set index"):
        lin.with_context(np.array([0, 1, 0, 0]), block)


def _layer(kind: str, n: int, rng):
    """A random reference layer over n rows and its rows' reference lists (the brute-force form)."""
    base = 1000
    if kind == "each":
        lo, hi = sorted(rng.integers(-2, n + 3, size=2).tolist())
        return EachRefs(n, base, lo, hi), [
            [base + i] if max(lo, 0) <= i < min(hi, n) else [] for i in range(n)
        ]
    if kind == "code":
        codes = rng.integers(-1, 4, size=n)
        return CodeRefs(base, codes, 4), [[base + int(c)] if c >= 0 else [] for c in codes]
    if kind == "all":
        ids = rng.integers(base, base + 5, size=int(rng.integers(0, 4)))
        return AllRefs(n, ids), [sorted(set(ids.tolist())) for _ in range(n)]
    lists = [rng.integers(base, base + 6, size=int(rng.integers(0, 3))).tolist() for _ in range(n)]
    off = np.zeros(n + 1, dtype=np.int64)
    np.cumsum([len(x) for x in lists], out=off[1:])
    return CsrRefs(off, np.array(sum(lists, []), dtype=np.int64)), lists


@given(
    n=st.integers(0, 9),
    kinds=st.lists(st.sampled_from(["each", "code", "all", "csr"]), min_size=1, max_size=10),
    seed=st.integers(0, 999),
)
def test_reference_layers_answer_like_their_expanded_lists(n, kinds, seed):
    """Each compact layer, and a context of several, against per-row Python lists: the expanded CSR,
    row_refs, take, rows_referring and distinct_refs."""
    rng = np.random.default_rng(seed)
    made = [_layer(k, n, rng) for k in kinds]
    ctx = Context.layered([m[0] for m in made], {})
    want = [sorted(x for m in made for x in m[1][i]) for i in range(n)]
    off, refs = ctx.ref_offsets, ctx.refs
    assert [sorted(refs[off[i] : off[i + 1]].tolist()) for i in range(n)] == want
    assert ctx.has_refs() == any(want)
    rows = rng.integers(0, n, size=int(rng.integers(0, 2 * n + 1))) if n else np.zeros(0, dtype=np.int64)
    assert sorted(ctx.row_refs(rows).tolist()) == sorted(x for r in rows for x in want[r])
    taken = ctx.take(rows)
    assert [
        sorted(taken.refs[taken.ref_offsets[j] : taken.ref_offsets[j + 1]].tolist()) for j in range(len(rows))
    ] == [want[r] for r in rows]
    probe = rng.integers(997, 1008, size=3)
    assert ctx.rows_referring(probe).tolist() == [i for i in range(n) if set(want[i]) & set(probe.tolist())]
    assert sorted(set(ctx.distinct_refs().tolist())) == sorted({x for w in want for x in w})


def test_deferred_sets_are_the_eager_sets_and_lay_out_once():
    rng = np.random.default_rng(5)
    lin, direct, full = _fresh(40)
    lin, direct, full = _broadcast(lin, direct, full, "window", rng)  # rows with context of their own
    order = rng.permutation(40)
    starts = rng.integers(0, 20, size=15)
    ends = starts + rng.integers(0, 20, size=15)
    calls = []
    lazy = lin.deferred_sets(15, lambda: calls.append(1) or (order, starts, ends), "x")
    eager = lin.shared_sets(order, starts, ends, "x")
    assert not calls and lazy.nbytes == 0 and "not laid out" in repr(lazy)
    for name in ("pool", "starts", "ends", "ref_pool", "ref_starts", "ref_ends"):
        np.testing.assert_array_equal(getattr(lazy, name), getattr(eager, name))
    assert calls == [1] and lazy.is_laid_out and lazy.nbytes == eager.nbytes


def test_compact_parts_keep_storage_constant_until_asked():
    """A shift, a cumsum and two statistics over a million rows store no per-row array at record time."""
    n = 1_000_000
    lin = RowLineage(np.arange(n + 1), np.arange(n))
    k = np.arange(n)
    prefixes = (lambda: (k, np.zeros(n, dtype=np.int64), k + 1), n)
    whole = (lambda: (k, [0], [n]), 1)
    parts = [
        ("shift", prefixes, lambda b: EachRefs(n, b, 1, n)),  # row i reads rows 0..i: a stand-in layout
        ("cumsum", prefixes, lambda b: EachRefs(n, b)),
        ("sum", whole, lambda b: AllRefs(n, [b])),
        ("std", whole, lambda b: AllRefs(n, [b])),
    ]
    for label, (layout, m), layer_of in parts:
        block = lin.deferred_sets(m, layout, label)
        lin = lin.with_refs(layer_of(block.base), [block])
    assert lin.context.nbytes < 1000  # compact layers (the two statistics merged into one), nothing laid out
    assert len(lin.context.layers) == 3
    assert lin.row_ids(5).tolist() == list(range(n))  # ... until a row is asked about
    assert lin.row_ids(5, direct=True).tolist() == [5]


@given(
    segs=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 12), st.integers(0, 12)), max_size=25),
)
def test_merged_segments_cover_each_owners_union_once(segs):
    from traceprop_frames.lineage.context import merge_segments

    o = np.array([s[0] for s in segs], dtype=np.int64)
    a = np.array([s[1] for s in segs], dtype=np.int64)
    b = np.array([s[2] for s in segs], dtype=np.int64)
    mo, lo, hi = merge_segments(o, a, b)
    got = sorted((int(w), p) for w, x, y in zip(mo, lo, hi) for p in range(x, y))
    want = sorted({(w, p) for w, x, y in segs for p in range(x, y)})
    assert got == want  # the union, and no position twice
