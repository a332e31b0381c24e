"""The certificate's shared-statistics analysis (:class:`SharedHits`) against a brute force over Python sets.

Random contexts: blocks of overlapping sets (prefixes, windows, totals) over random pools of global row
ids from two sources, each set referring to random sets of earlier blocks, rows referring to random sets.
The oracle follows the definitions literally: a set's rows are its own segment plus, recursively, the rows
of the sets it refers to; an operation is reported when one of its sets' *own* ids is erased; its
``rows_read`` is the distinct rows of those sets; a sample is affected when one of its references reaches
(refers to, transitively) one of those sets, unless excluded.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from traceprop_frames.lineage.context import Context, SetBlock
from traceprop_frames.lineage.rowsets import RowLineage, count_distinct
from traceprop_frames.unlearn.shared_effects import SharedHits

SRC = [3, 7]  # two source ids: row ids from both, as a merge's statistics read them


def _random_lineage(rng, n_rows: int, n_blocks: int):
    ids_pool = np.concatenate([(np.int64(s) << np.int64(40)) | np.arange(12, dtype=np.int64) for s in SRC])
    blocks: list[SetBlock] = []
    for k in range(n_blocks):
        pool = rng.choice(ids_pool, size=int(rng.integers(1, 20)))  # repeats allowed, as after a join
        m = int(rng.integers(1, 5))
        starts = rng.integers(0, len(pool), m)
        ends = np.minimum(starts + rng.integers(0, len(pool) + 1, m), len(pool))
        earlier = [b.base + j for b in blocks for j in range(b.m)]
        if earlier and rng.random() < 0.7:
            ref_pool = rng.choice(earlier, size=int(rng.integers(1, 6)))
            rs = rng.integers(0, len(ref_pool), m)
            re = np.minimum(rs + rng.integers(0, 3, m), len(ref_pool))
            blocks.append(SetBlock(pool, starts, ends, f"op{k}", ref_pool, rs, re, tuple(blocks)))
        else:
            blocks.append(SetBlock(pool, starts, ends, f"op{k}"))
    every = [b.base + j for b in blocks for j in range(b.m)]
    counts = rng.integers(0, 3, n_rows)
    counts[0] = max(counts[0], 1)  # a lineage without any reference has no context at all
    refs = rng.choice(every, size=int(counts.sum()))
    roff = np.concatenate([[0], np.cumsum(counts)])
    counts = rng.integers(1, 3, n_rows)  # direct ids (not read by the analysis, but a real lineage)
    lin = RowLineage(np.concatenate([[0], np.cumsum(counts)]), rng.choice(ids_pool, int(counts.sum())),
                     context=Context(roff, refs, blocks))  # fmt: skip
    return lin, blocks, ids_pool


def _oracle(lin, blocks, erased: set, exclude: set):
    own, refs, block_of = {}, {}, {}
    for b in blocks:
        for j in range(b.m):
            g = b.base + j
            own[g] = set(b.pool[b.starts[j] : b.ends[j]].tolist())
            refs[g] = set(b.ref_pool[b.ref_starts[j] : b.ref_ends[j]].tolist())
            block_of[g] = b

    def full(g):
        return own[g].union(*[full(r) for r in refs[g]])

    def reaches(g, targets):
        return g in targets or any(reaches(r, targets) for r in refs[g])

    ctx = lin.context
    row_refs = [set(ctx.refs[ctx.ref_offsets[i] : ctx.ref_offsets[i + 1]].tolist()) for i in range(len(lin))]
    out, total = [], set()
    for b in blocks:
        direct = {b.base + j for j in range(b.m) if own[b.base + j] & erased}
        if not direct:
            continue
        read = set().union(*[full(g) for g in direct])
        rows = {
            i for i in range(len(lin)) if i not in exclude and any(reaches(g, direct) for g in row_refs[i])
        }
        total |= rows
        out.append({"op": b.label, "sets_hit": len(direct), "sets_in_op": b.m, "rows_read": len(read),
                    "samples_affected": len(rows)})  # fmt: skip
    return out, len(total)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 100_000), n_rows=st.integers(1, 15), n_blocks=st.integers(1, 5))
def test_shared_hits_match_brute_force(seed, n_rows, n_blocks):
    rng = np.random.default_rng(seed)
    lin, blocks, ids_pool = _random_lineage(rng, n_rows, n_blocks)
    erased = rng.choice(ids_pool, size=int(rng.integers(1, 6)), replace=False)
    exclude = rng.choice(n_rows, size=int(rng.integers(0, n_rows + 1)), replace=False)
    got = SharedHits(lin, erased).touched(exclude)
    assert got == _oracle(lin, blocks, set(erased.tolist()), set(exclude.tolist()))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 100_000), n=st.integers(0, 60), sparse=st.booleans())
def test_count_distinct_matches_unique(seed, n, sparse):
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, 10**12 if sparse else 30, n)
    ids = (rng.choice(np.array([0, 5, 900], dtype=np.int64), n) << np.int64(40)) | rows
    assert count_distinct(ids) == len(set(ids.tolist()))


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 100_000), n=st.integers(1, 80), n_layers=st.integers(1, 4))
def test_rows_referring_over_layers_matches_brute_force(seed, n, n_layers):
    """``Context.rows_referring`` over several layers (the union of their rows: sorted, a mask, or every
    row) against the rows' reference sets written out in Python."""
    from traceprop_frames.lineage.refs import AllRefs, CodeRefs, CsrRefs, EachRefs

    rng = np.random.default_rng(seed)
    m = 30  # global set ids 0..29
    layers, row_sets = [], [set() for _ in range(n)]
    for _ in range(n_layers):
        kind = rng.integers(0, 4)
        if kind == 0:  # general CSR, rows referring to 0..3 random sets
            counts = rng.integers(0, 4, n)
            refs = rng.integers(0, m, int(counts.sum()))
            off = np.concatenate([[0], np.cumsum(counts)])
            layers.append(CsrRefs(off, refs))
            for i in range(n):
                row_sets[i] |= set(refs[off[i] : off[i + 1]].tolist())
        elif kind == 1:  # group codes (-1: no set)
            codes = rng.integers(-1, 5, n)
            layers.append(CodeRefs(10, codes, 5))
            for i in range(n):
                if codes[i] >= 0:
                    row_sets[i].add(10 + int(codes[i]))
        elif kind == 2:  # a statistic broadcast into every row
            sids = rng.choice(m, size=int(rng.integers(1, 3)), replace=False)
            layers.append(AllRefs(n, sids))
            for i in range(n):
                row_sets[i] |= set(sids.tolist())
        else:  # row i refers to set base + i on lo..hi
            lo = int(rng.integers(0, n))
            hi = int(rng.integers(lo, n + 1))
            layers.append(EachRefs(n, 0, lo, hi))
            for i in range(lo, hi):
                row_sets[i].add(i)
    ctx = Context.layered(layers, [])
    for _ in range(3):
        want = set(rng.choice(max(m, n), size=int(rng.integers(1, 6)), replace=False).tolist())
        got = ctx.rows_referring(np.array(sorted(want), dtype=np.int64))
        expected = [i for i in range(n) if row_sets[i] & want]
        assert got.tolist() == expected
