"""RowLineage algebra against brute-force Python sets (hypothesis), and deep deferred chains."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from traceprop_frames.lineage import OpNode, RowLineage
from traceprop_frames.lineage.graph import LineageDAG

row_sets = st.lists(st.lists(st.integers(0, 30), max_size=4), max_size=8)


def csr(sets) -> RowLineage:
    off = np.concatenate([[0], np.cumsum([len(s) for s in sets])]).astype(np.int64)
    ids = np.array([x for s in sets for x in s], dtype=np.int64)
    return RowLineage(off, ids)


def as_sets(lin: RowLineage) -> list[set]:
    return [set(lin.ids[lin.offsets[i] : lin.offsets[i + 1]].tolist()) for i in range(len(lin))]


@given(row_sets, st.data())
def test_take(sets, data):
    rows = data.draw(st.lists(st.integers(0, max(len(sets) - 1, 0)), max_size=10)) if sets else []
    assert as_sets(csr(sets).take(rows)) == [set(sets[r]) for r in rows]


@given(row_sets, st.data())
def test_group_union(sets, data):
    n_groups = data.draw(st.integers(1, 4))
    codes = data.draw(st.lists(st.integers(-1, n_groups - 1), min_size=len(sets), max_size=len(sets)))
    got = as_sets(csr(sets).group_union(np.array(codes, dtype=np.int64), n_groups))
    expect = [set().union(*[set(s) for s, c in zip(sets, codes) if c == g]) for g in range(n_groups)]
    assert got == expect


@given(row_sets, row_sets, st.data())
def test_union_rows_and_concat(a, b, data):
    k = data.draw(st.integers(0, 8))
    ia = data.draw(st.lists(st.integers(-1, len(a) - 1), min_size=k, max_size=k))
    ib = data.draw(st.lists(st.integers(-1, len(b) - 1), min_size=k, max_size=k))
    got = as_sets(RowLineage.union_rows(csr(a), ia, csr(b), ib))
    expect = [(set(a[i]) if i >= 0 else set()) | (set(b[j]) if j >= 0 else set()) for i, j in zip(ia, ib)]
    assert got == expect
    assert as_sets(RowLineage.concat([csr(a), csr(b)])) == [set(s) for s in a + b]


@given(row_sets, st.data())
def test_forward_index_inverts_backward(sets, data):
    lin = csr(sets)
    q = data.draw(st.lists(st.integers(0, 30), min_size=1, max_size=3))
    expect = [i for i, s in enumerate(sets) if set(s) & set(q)]
    assert lin.rows_from_ids(q).tolist() == expect


def test_large_group_counts_use_both_radix_digits():
    rng = np.random.default_rng(0)
    n_groups = 70_000  # > 2**16: two 16-bit passes
    codes = rng.integers(0, n_groups, 200_000)
    lin = RowLineage(np.arange(200_001), np.arange(200_000)).group_union(codes, n_groups)
    order = np.argsort(codes, kind="stable")
    np.testing.assert_array_equal(lin.ids, order)
    np.testing.assert_array_equal(np.diff(lin.offsets), np.bincount(codes, minlength=n_groups))


def test_deep_deferred_chain_materializes_without_recursion():
    lin = RowLineage(np.arange(4), np.array([10, 11, 12]))
    for _ in range(5000):
        lin = RowLineage.union_rows(lin, np.array([0, 1, 2]), lin, np.array([2, -1, 0]))
    assert not lin.is_materialized
    assert as_sets(lin) == [{10, 12}, {11}, {10, 12}]


def test_op_dag_topological_order_and_depth():
    a, b = OpNode("read_csv"), OpNode("read_parquet")
    g = OpNode("groupby_agg", {}, (b,))
    m = OpNode("merge", {}, (a, g))
    m2 = OpNode("merge", {}, (m, g))
    dag = LineageDAG(m2)
    pos = {n.id: i for i, n in enumerate(dag)}
    assert len(dag) == 5 and all(pos[p] < pos[c] for p, c in dag.edges())
    node = a
    for _ in range(20_000):
        node = OpNode("select", {}, (node,))
    assert len(LineageDAG(node)) == 20_001


def test_deferred_lineage_pickles_across_processes(tmp_path):
    import pickle
    import subprocess
    import sys

    import pandas as pd

    import traceprop_frames as tpf

    a = tpf.track(pd.DataFrame({"k": [1, 2, 3, 1], "x": [1.0, 2.0, 3.0, 4.0]}), "pickled_src")
    m = a.tp.merge(a.tp.groupby("k").agg(s=("x", "sum")), on="k")
    lin = m.tp.lineage()
    assert not lin.is_materialized  # a merge result is composed lazily; pickling must compose it
    path = tmp_path / "lin.pkl"
    path.write_bytes(pickle.dumps(lin))
    code = (
        "import pickle, sys\n"
        "from traceprop_frames.lineage import REGISTRY\n"
        "REGISTRY.register('another', sha256='0', format='memory', n_rows=1)  # shift source ids\n"
        f"lin = pickle.loads(open({str(path)!r}, 'rb').read())\n"
        "print([sorted(lin.sources(rows=[i])['pickled_src'].tolist()) for i in range(len(lin))], lin.ops())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    expect = [sorted(m.tp.sources(rows=[i])["pickled_src"].tolist()) for i in range(len(m))]
    assert out.strip() == f"{expect} {['track', 'groupby_agg', 'merge']}"
