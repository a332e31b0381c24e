"""The tensor's fast paths give what the general ones give.

- Operators (``X - m``, ``2.0 * X``, ``X > 0``) go straight to the ufunc on the arrays; the general path is
  numpy's protocol (``np.subtract(X, m)`` -> ``__array_ufunc__``). Both must give the same values, the
  same op DAG and the same row lineage, in every granularity.
- Op nodes are built by a rewritten ``op_node``; the DAG must equal the one the earlier algorithm
  (copied below as the reference) builds for the same operations, inside ``op_group`` too.
- Granularity ``"op"`` keeps no lineage object per operation; what it answers (``ops()``, the DAG,
  ``source_files()``, an empty lineage of the right length) must equal what row mode answers.
- Row lineage through the fast paths is checked against row tags followed by brute force.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import traceprop_frames as tp
from traceprop_frames.errors import GranularityError
from traceprop_frames.lineage import OpNode
from traceprop_frames.tensor import tracking

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # empty or one-row tensors: nan statistics

SRC = "fast_path_src"
OPS = [
    "sub_stat",
    "div_stat",
    "rsub",
    "mul_np_scalar",
    "add_self",
    "gt_mask",
    "cols",
    "filter",
    "square",
    "mean_within",
]


def _reference_op_node(op: str, params: dict, parents: tuple) -> OpNode:
    """``tracking.op_node`` as it was before the fast paths (the reference for the DAG)."""
    st_ = tracking.current_step()
    if st_ is None:
        if len(parents) == 1:
            if op != "elementwise" or parents[0].op != "elementwise":
                return OpNode.trusted(op, {"ops": [str(params.get("fn", op))]}, parents)
        elif op != "elementwise" or all(p.op != "elementwise" for p in parents):
            return OpNode.trusted(op, {"ops": [str(params.get("fn", op))]}, tuple(dict.fromkeys(parents)))
    label, token = st_ if st_ is not None else (op, None)
    parents = tuple(dict.fromkeys(parents))
    mergeable = [
        p
        for p in parents
        if (token is not None and p.params.get("_step") == token)
        or (token is None and op == "elementwise" and p.op == "elementwise")
    ]
    ops_list = [params.get("fn", op)]
    new_parents: list = []
    for p in parents:
        if p in mergeable:
            ops_list = list(p.params.get("ops", [])) + ops_list
            new_parents.extend(p.parents)
        else:
            new_parents.append(p)
    out_params = {"ops": [str(o) for o in ops_list]}
    if token is not None:
        out_params["_step"] = int(token)
    return OpNode.trusted(label, out_params, tuple(dict.fromkeys(new_parents)))


def _dag(x) -> list:
    """The op DAG behind ``x`` without node ids: (op, params, parent positions) per node, step tokens
    renumbered in order of appearance."""
    nodes = list(x.lineage.node.topo())
    pos = {n.id: i for i, n in enumerate(nodes)}
    tokens: dict = {}
    out = []
    for n in nodes:
        params = dict(n.params)
        if "_step" in params:
            params["_step"] = tokens.setdefault(params["_step"], len(tokens))
        out.append((n.op, params, tuple(pos[p.id] for p in n.parents)))
    return out


def _step(op, X, fast: bool, arg: int):
    """One operation, written with operators (``fast``) or through numpy's protocol functions."""
    if op == "sub_stat":
        return X - X.mean(axis=0) if fast else np.subtract(X, np.mean(X, axis=0))
    if op == "div_stat":
        s = X.std(axis=0) + 1.0 if fast else np.add(np.std(X, axis=0), 1.0)
        return X / s if fast else np.true_divide(X, s)
    if op == "rsub":
        return 2.0 - X if fast else np.subtract(2.0, X)
    if op == "mul_np_scalar":
        return X * np.float32(1.5) if fast else np.multiply(X, np.float32(1.5))
    if op == "add_self":
        return X + X if fast else np.add(X, X)
    if op == "gt_mask":
        col = X[:, arg % X.shape[1]]
        return X[col > 0] if fast else X[np.greater(col, 0)]
    if op == "cols":
        return X[:, [0, (arg % (X.shape[1] - 1)) + 1]] if X.shape[1] > 2 else X
    if op == "filter":
        return X[:: 1 + arg % 2]
    if op == "square":
        return X * X + 1.0 if fast else np.add(np.multiply(X, X), 1.0)
    if op == "mean_within":
        return (
            X - X.mean(axis=1, keepdims=True) if fast else np.subtract(X, np.mean(X, axis=1, keepdims=True))
        )
    raise AssertionError(op)


def _run(data, ops, gran: str, fast: bool, group: str | None):
    X = tp.tensor(data, source=SRC, dtype="float64", granularity=gran)
    for op, arg in ops:
        if group is not None and arg % 3 == 0:
            with tp.op_group(group):
                X = _step(op, X, fast, arg)
        else:
            X = _step(op, X, fast, arg)
    return X


chains = st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 5)), max_size=7)


@given(n=st.integers(1, 9), ops=chains, seed=st.integers(0, 2**16), group=st.sampled_from([None, "prep"]))
def test_operators_equal_the_protocol_path_in_every_granularity(n, ops, seed, group):
    data = np.random.default_rng(seed).normal(size=(n, 4))
    answers = {}
    for gran in ("op", "row", "cell"):
        fast = _run(data, ops, gran, True, group)
        slow = _run(data, ops, gran, False, group)
        np.testing.assert_array_equal(np.asarray(fast), np.asarray(slow))
        assert _dag(fast) == _dag(slow)
        assert fast.ops() == slow.ops()
        assert fast.is_statistic == slow.is_statistic and len(fast.lineage) == len(slow.lineage)
        answers[gran] = (fast.ops(), _dag(fast), fast.source_files())
        if gran == "cell":
            assert fast.columns_lineage() == slow.columns_lineage()
        if gran == "op":
            with pytest.raises(GranularityError):
                fast.sources()
            assert fast.lineage.n_ids == 0 and fast.lineage.node is fast.lineage.node
            continue
        for i in range(len(fast)):
            for direct in (True, False):
                a = fast.sources(rows=[i], direct=direct).get(SRC, np.zeros(0)).tolist()
                assert a == slow.sources(rows=[i], direct=direct).get(SRC, np.zeros(0)).tolist()
    # granularity changes what is kept per row, never the op DAG or the sources named
    strip = [(o, {k: v for k, v in p.items() if k != "granularity"}, q) for o, p, q in answers["row"][1]]
    for gran in ("op", "cell"):
        assert answers[gran][0] == answers["row"][0]
        assert [
            (o, {k: v for k, v in p.items() if k != "granularity"}, q) for o, p, q in answers[gran][1]
        ] == strip
        assert answers[gran][2] == answers["row"][2]


@given(n=st.integers(1, 9), ops=chains, seed=st.integers(0, 2**16), group=st.sampled_from([None, "prep"]))
def test_op_nodes_equal_the_reference_algorithm(n, ops, seed, group):
    data = np.random.default_rng(seed).normal(size=(n, 4))
    got = _run(data, ops, "row", True, group)
    new = tracking.op_node
    tracking.op_node = lambda op, fn, parents: _reference_op_node(op, {"fn": fn}, parents)
    try:
        want = _run(data, ops, "row", True, group)
    finally:
        tracking.op_node = new
    assert _dag(got) == _dag(want)


def _tags_apply(op, X, data, direct, full, arg):
    """Row tags through one operation, by brute force (sets per row), beside the tensor's own step."""
    out = _step(op, X, True, arg)
    n = len(data)
    every = set().union(*full) if n else set()
    if op == "sub_stat" or op == "div_stat":
        return out, direct, [f | every for f in full]
    if op in ("rsub", "mul_np_scalar", "add_self", "square", "mean_within", "cols"):
        return out, direct, full
    if op == "gt_mask":
        keep = np.flatnonzero(np.asarray(X)[:, arg % data.shape[1]] > 0)
    elif op == "filter":
        keep = np.arange(n)[:: 1 + arg % 2]
    else:
        raise AssertionError(op)
    return out, [direct[i] for i in keep], [full[i] for i in keep]


@given(n=st.integers(1, 9), ops=chains, seed=st.integers(0, 2**16), gran=st.sampled_from(["row", "cell"]))
def test_fast_paths_match_row_tags(n, ops, seed, gran):
    data = np.random.default_rng(seed).normal(size=(n, 4))
    X = tp.tensor(data, source=SRC + "_tags", dtype="float64", granularity=gran)
    direct = [{i} for i in range(n)]
    full = [{i} for i in range(n)]
    for op, arg in ops:
        X, direct, full = _tags_apply(op, X, data, direct, full, arg)
        data = np.asarray(X)
    for i in range(len(X)):
        assert X.sources(rows=[i], direct=True).get(SRC + "_tags", np.zeros(0)).tolist() == sorted(direct[i])
        assert X.sources(rows=[i]).get(SRC + "_tags", np.zeros(0)).tolist() == sorted(full[i])
        assert [r.row for r in X.trace(i)] == sorted(full[i])


def test_operators_fall_back_to_the_protocol_for_other_operands():
    X = tp.tensor(np.arange(6.0).reshape(3, 2), source=SRC + "_other", dtype="float64")
    np.testing.assert_array_equal(np.asarray(X + [1.0, 2.0]), np.arange(6.0).reshape(3, 2) + [1.0, 2.0])
    assert (X + [1.0, 2.0]).sources(rows=[2], direct=True)[SRC + "_other"].tolist() == [2]
    m = np.ma.masked_array([1.0, 2.0])  # an ndarray subclass: numpy's own dispatch decides
    assert np.asarray(X * m).shape == (3, 2)
    with pytest.raises(TypeError):
        X - "a"


def test_array_sources_are_registered_on_the_first_lineage_query():
    from traceprop_frames.lineage import REGISTRY

    before = len(REGISTRY)
    X = tp.tensor(np.arange(8.0).reshape(4, 2), source=SRC + "_lazy_reg")
    F = X[X[:, 0] > 2]
    op = tp.tensor(np.arange(8.0).reshape(4, 2), source=SRC + "_op_reg", granularity="op")
    assert len(REGISTRY) == before  # nothing queried yet
    assert F.rows_from_source(SRC + "_lazy_reg", [3]).tolist() == [1]  # composing registers it
    assert len(REGISTRY) == before + 1
    assert [r.row for r in F.trace(0)] == [2] and F.trace(0)[0].path == SRC + "_lazy_reg"
    assert op.source_files() == [SRC + "_op_reg"] and len(op.lineage) == 4 and op.lineage.n_ids == 0
    assert len(REGISTRY) == before + 1  # op granularity: never registered
    Y = tp.tensor(np.arange(6.0).reshape(3, 2), source=SRC + "_lazy_torch").to_torch()
    assert Y.root_lineage.rows_from_source(SRC + "_lazy_torch", [2]).tolist() == [2]
