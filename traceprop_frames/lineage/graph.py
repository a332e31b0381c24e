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
    _topo: tuple[OpNode, ...] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.params = _jsonable(self.params)

    def __repr__(self) -> str:
        return f"OpNode({self.op!r}, id={self.id}, parents={[p.id for p in self.parents]})"

    def topo(self) -> tuple[OpNode, ...]:
        """This node and all its ancestors, parents before children (sources first)."""
        if self._topo is not None:
            return self._topo
        # Iterative: walk up to the first ancestors whose lists are cached, then fill downward,
        # so a 100k-deep chain never recurses.
        stack = [self]
        order: list[OpNode] = []
        seen: set[int] = set()
        while stack:
            node = stack[-1]
            pending = [p for p in node.parents if p._topo is None and p.id not in seen]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            if node.id in seen:
                continue
            seen.add(node.id)
            order.append(node)
        for node in order:
            if node._topo is not None:
                continue
            if len(node.parents) == 1:
                node._topo = node.parents[0]._topo + (node,)
            else:
                merged: dict[int, OpNode] = {}
                for p in node.parents:
                    for a in p._topo:
                        merged.setdefault(a.id, a)
                node._topo = tuple(merged.values()) + (node,)
        return self._topo


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
