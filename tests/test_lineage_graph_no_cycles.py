"""An OpNode is freed by reference counting alone: it keeps no reference to itself.

``OpNode`` caches its ancestors (``topo()``); the cache held the node itself too, a reference cycle per
node that only the garbage collector could free (6 objects per traced SQL run). The cache now holds the
ancestors only, ``topo()`` adds the node.
"""

from __future__ import annotations

import gc
import weakref

import pandas as pd

import traceprop_frames as tpf
from traceprop_frames.lineage import OpNode


def _freed_without_collector(make) -> None:
    """``make()`` returns the objects to drop; every OpNode reachable from them is freed at once."""
    gc.collect()
    gc.disable()
    try:
        keep = make()
        nodes = [weakref.ref(n) for n in _nodes(keep)]
        assert nodes
        del keep
        assert [r() for r in nodes if r() is not None] == []
    finally:
        gc.enable()


def _nodes(objs) -> list[OpNode]:
    out, stack, seen = [], list(objs), set()
    while stack:
        n = stack.pop()
        if isinstance(n, OpNode) and id(n) not in seen:
            seen.add(id(n))
            out.append(n)
            stack.extend(n.parents)
    return out


def test_nodes_and_their_topo_free_without_the_collector():
    def make():
        src = OpNode("read_csv", {"path": "x.csv"})
        mid = OpNode("filter", {}, (src,))
        other = OpNode("read_csv", {"path": "y.csv"})
        head = OpNode("join", {}, (mid, other))  # two parents: topo() walks the DAG
        tail = OpNode("project", {}, (head,))
        assert [n.op for n in tail.topo()] == ["read_csv", "filter", "read_csv", "join", "project"]
        assert [n.op for n in mid.topo()] == ["read_csv", "filter"]
        return [tail]

    _freed_without_collector(make)


def test_topo_unchanged_and_has_the_node_last():
    a = OpNode("read_csv", {"path": "a"})
    b = OpNode("f", {}, (a,))
    c = OpNode("g", {}, (b, a))
    d = OpNode("h", {}, (c,))
    assert d.topo() == (a, b, c, d) and d.topo() == (a, b, c, d)  # cached: the same again
    assert c.topo() == (a, b, c) and a.topo() == (a,)
    assert all(n not in n._anc for n in (a, b, c, d) if n._anc is not None)


def test_a_traced_sql_run_leaves_no_node_cycle(tmp_path):
    pd.DataFrame({"k": [1, 1, 2], "v": [1, 2, 3]}).to_csv(tmp_path / "t.csv", index=False)

    def make():
        con = tpf.connect(capture="eager")
        con.read_csv(tmp_path / "t.csv", name="t")
        df = con.sql("SELECT k, sum(v) AS s FROM t GROUP BY k ORDER BY k")
        assert sorted(df.tp.sources(rows=[0])[str(tmp_path / "t.csv")].tolist()) == [0, 1]
        node = df.tp.lineage().node
        node.topo()
        return [node]

    _freed_without_collector(make)
