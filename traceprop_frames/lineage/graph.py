"""The operation DAG behind every lineage table.

Each :class:`OpNode` is immutable: an op name, JSON-able parameters, and parent nodes. A node's
topological list of ancestors is computed once, on first use, from its parents' cached lists, so
``ancestors()`` of a long chain costs one pass the first time and nothing after.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field

_ids = itertools.count()
EAGER_DEPTH = 2048


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return repr(v)


@dataclass(eq=False)
class OpNode:
    """One operation: ``op`` (e.g. ``"read_csv"``, ``"merge"``), parameters, parent nodes."""

    op: str
    params: dict = field(default_factory=dict)
    parents: tuple[OpNode, ...] = ()
    id: int = field(default_factory=lambda: next(_ids))
    _anc: tuple[OpNode, ...] | None = field(default=None, repr=False)  # ancestors, not itself: no cycle

    def __post_init__(self) -> None:
        self.params = _jsonable(self.params)
        self._link()

    @classmethod
    def trusted(cls, op: str, params: dict, parents: tuple[OpNode, ...] = ()) -> OpNode:
        """An OpNode from ``params`` the caller guarantees JSON-able (str keys; str, number, bool, None,
        list or dict values): skips the conversion, for ops recorded at numpy speed (tensor ops)."""
        node = cls.__new__(cls)
        node.op, node.params, node.parents, node.id, node._anc = op, params, tuple(parents), next(_ids), None
        node._link()
        return node

    def _link(self) -> None:
        # Build the ancestor list when the op is created (a tuple copy of the parent's, microseconds,
        # paid once per op) so ancestors() is a look-up. Deep chains (> EAGER_DEPTH) fall back to the
        # lazy walk in topo(), keeping memory linear for pathological 10k-op chains.
        # The node itself is not kept in its own list (a reference cycle would leave every node to the
        # garbage collector): topo() adds it.
        if len(self.parents) == 1:
            parent = self.parents[0]
            if parent._anc is not None and len(parent._anc) < EAGER_DEPTH:
                self._anc = parent._anc + (parent,)
        elif not self.parents:
            self._anc = ()

    def __repr__(self) -> str:
        return f"OpNode({self.op!r}, id={self.id}, parents={[p.id for p in self.parents]})"

    def topo(self) -> tuple[OpNode, ...]:
        """This node and all its ancestors, parents before children (sources first). Cached."""
        if self._anc is not None:
            return self._anc + (self,)
        # Fast path: walk a chain of single-parent nodes up to a cached node or a source.
        chain = []
        node = self
        while node._anc is None and len(node.parents) == 1:
            chain.append(node)
            node = node.parents[0]
        if node._anc is None:
            node._anc = node._topo_general()[:-1]
        if chain:  # (node is then an ancestor; chain's first, reversed last, is self)
            chain.reverse()
            self._anc = node._anc + (node,) + tuple(chain[:-1])
        return self._anc + (self,)

    def _topo_general(self) -> tuple[OpNode, ...]:
        """Iterative depth-first post-order over the DAG; each node once, parents first."""
        out: list[OpNode] = []
        seen: set[int] = set()
        stack: list[tuple[OpNode, bool]] = [(self, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                out.append(node)
                continue
            if node.id in seen:
                continue
            seen.add(node.id)
            if node._anc is not None:
                for a in node._anc + (node,):
                    if a.id not in seen or a is node:
                        seen.add(a.id)
                        out.append(a)
                continue
            stack.append((node, True))
            stack.extend((p, False) for p in reversed(node.parents) if p.id not in seen)
        return tuple(out)


class LineageDAG:
    """The ancestors of a lineage table, as a DAG. Iterating yields nodes sources-first."""

    def __init__(self, head: OpNode) -> None:
        self.head = head
        self.nodes = head.topo()

    def __iter__(self):
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def __getitem__(self, i):
        return self.nodes[i]

    def ops(self) -> list[str]:
        return [n.op for n in self.nodes]

    def edges(self) -> list[tuple[int, int]]:
        """(parent id, child id) pairs."""
        return [(p.id, n.id) for n in self.nodes for p in n.parents]

    def sources(self) -> list[OpNode]:
        return [n for n in self.nodes if not n.parents]

    def to_records(self) -> list[dict]:
        """JSON-able list; parents refer to positions in this list (so it round-trips)."""
        pos = {n.id: i for i, n in enumerate(self.nodes)}
        return [
            {"op": n.op, "params": n.params, "parents": [pos[p.id] for p in n.parents]} for n in self.nodes
        ]

    @staticmethod
    def from_records(records: list[dict]) -> OpNode:
        """Rebuild the nodes; returns the head (last record)."""
        nodes: list[OpNode] = []
        for r in records:
            nodes.append(OpNode(r["op"], r.get("params", {}), tuple(nodes[i] for i in r.get("parents", []))))
        return nodes[-1]

    def to_dot(self) -> str:
        """Graphviz text of the DAG."""
        lines = ["digraph lineage {", "  rankdir=LR;"]
        for n in self.nodes:
            label = n.op
            if "path" in n.params:
                label += f"\\n{n.params['path']}"
            lines.append(f'  n{n.id} [label="{label}"];')
        lines += [f"  n{a} -> n{b};" for a, b in self.edges()]
        lines.append("}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"LineageDAG({len(self.nodes)} ops: {json.dumps(self.ops()[-8:])}{' …' if len(self) > 8 else ''})"
        )
