"""How numpy operations map to row lineage (used by :class:`ProvenanceTensor`'s numpy protocols).

Every operand that is a ProvenanceTensor is one of two kinds:

- *rows*: axis 0 is rows, ``len(lineage) == shape[0]``;
- *statistic*: the result of a reduction over rows (``X.mean(axis=0)``): the whole value is one
  lineage row that refers to one shared set (the rows it was computed from, stored once).

An elementwise result's row ``i`` is the union of each operand's row ``i`` (a one-row operand or a
statistic broadcasts: every row refers to it, no ids are copied). Anything that moves rows off axis 0
(transpose, a reshape that mixes rows, broadcasting a 1-D column against a 2-D table) has no row lineage
and raises :class:`LineageLostError`.
"""

from __future__ import annotations

import contextlib
import itertools
import threading

import numpy as np

from traceprop_frames.errors import LineageLostError
from traceprop_frames.lineage import REGISTRY, OpNode, RowLineage
from traceprop_frames.lineage.sources import encode

_EMPTY = np.zeros(0, dtype=np.int64)


class _State(threading.local):
    step = None  # a class default: reading it never raises inside getattr (the hot path of every op)


_state = _State()
_step_ids = itertools.count(1)

ELEMENTWISE_FUNCS = {
    np.where,
    np.clip,
    np.round,
    np.around,
    np.nan_to_num,
    np.isnan,
    np.isfinite,
    np.abs,
    np.real,
    np.imag,
}
ROW_REDUCTIONS = {
    np.sum: "sum",
    np.mean: "mean",
    np.std: "std",
    np.var: "var",
    np.min: "min",
    np.max: "max",
    np.amin: "min",
    np.amax: "max",
    np.median: "median",
    np.quantile: "quantile",
    np.percentile: "percentile",
    np.nanmean: "nanmean",
    np.nanstd: "nanstd",
    np.nansum: "nansum",
    np.prod: "prod",
    np.any: "any",
    np.all: "all",
    np.argmax: "argmax",
    np.argmin: "argmin",
}
PREFIX_FUNCS = {np.cumsum: "cumsum", np.cumprod: "cumprod"}


@contextlib.contextmanager
def op_group(name: str):
    """Name a group of tensor operations: inside, every op node is labelled ``name`` and consecutive
    ones collapse into one node, so ``ops()`` reads ``['load_csv', 'normalize', 'row_filter']``.

    Examples
    --------
    >>> import numpy as np, traceprop_frames as tpf
    >>> X = tpf.tensor(np.arange(6.0).reshape(3, 2), source="step_demo")
    >>> with tpf.op_group("normalize"):
    ...     Z = (X - X.mean(axis=0)) / X.std(axis=0)
    >>> Z.ops()
    ['track', 'tensor', 'normalize']
    """
    prev = getattr(_state, "step", None)
    _state.step = (str(name), next(_step_ids))  # a fresh token: two `with` blocks never merge
    try:
        yield
    finally:
        _state.step = prev


step = op_group  # the earlier name, kept (``lineage.events.lineage_step`` is the other "step")


def current_step():
    return getattr(_state, "step", None)


def op_node(op: str, fn: str, parents: tuple[OpNode, ...]) -> OpNode:
    """A new op node for operation ``fn`` (listed in its ``params["ops"]``); inside :func:`step`, or for
    consecutive elementwise ops, one node absorbs the next.

    Absorbing keeps the DAG readable: a node whose parents include one node of the same step (or an
    elementwise node followed by another elementwise op) is replaced by a node with the union of the
    parents and the ops listed in ``params["ops"]``.
    """
    st = _state.step
    if st is None:
        if op != "elementwise":
            return OpNode.trusted(
                op, {"ops": [fn]}, parents if len(parents) < 2 else tuple(dict.fromkeys(parents))
            )
        ops, grand = [fn], []
        for p in parents if len(parents) < 2 else dict.fromkeys(parents):
            if p.op == "elementwise":  # (X - m) / s: one node lists both ops, on the parents' parents
                ops[:0] = [str(o) for o in p.params.get("ops", ())]
                grand.extend(p.parents)
            else:
                grand.append(p)
        return OpNode.trusted(
            op, {"ops": ops}, tuple(grand) if len(grand) < 2 else tuple(dict.fromkeys(grand))
        )
    label, token = st if st is not None else (op, None)
    parents = tuple(dict.fromkeys(parents))  # drop repeats, keep order
    ops_list = [fn]
    new_parents: list[OpNode] = []
    for p in parents:
        if (p.params.get("_step") == token) if token is not None else p.op == "elementwise":
            ops_list = list(p.params.get("ops", [])) + ops_list
            new_parents.extend(p.parents)
        else:
            new_parents.append(p)
    out_params = {"ops": [str(o) for o in ops_list]}
    if token is not None:
        out_params["_step"] = int(token)
    return OpNode.trusted(label, out_params, tuple(dict.fromkeys(new_parents)))


def op_rows(n: int, node: OpNode) -> RowLineage:
    """``n`` rows without row lineage (granularity ``"op"``): O(1), nothing is allocated until read."""
    return RowLineage.deferred(
        n, lambda: (np.zeros(n + 1, dtype=np.int64), _EMPTY), (), node, has_context=False
    )


def memory_rows(name: str, n: int, hasher, node: OpNode) -> RowLineage:
    """Row ``i`` is row ``i`` of an in-memory source named ``name``, registered (O(1), content hashed by
    ``hasher`` when first asked for) when the rows are first composed: a tensor nobody queries registers
    nothing."""

    def build():
        src = REGISTRY.register_memory(name, n, hasher)
        return np.arange(n + 1, dtype=np.int64), encode(src.id, np.arange(n, dtype=np.int64))

    return RowLineage.deferred(n, build, (), node, has_context=False)


def take_rows(lin: RowLineage, n_out: int, node: OpNode, *, positions=None, mask=None) -> RowLineage:
    """Rows ``positions`` (or the rows where ``mask`` holds) of ``lin``, composed on the first query.

    The caller passes arrays it owns (a copy of a user's mask), so later writes cannot change them.
    """

    def build():
        pos = np.flatnonzero(mask) if mask is not None else positions
        out = lin.take(pos)
        return out.offsets, out.ids, out._ctx

    return RowLineage.deferred(n_out, build, (lin,), node)


def statistic_lineage(lin: RowLineage, label: str, node: OpNode, granularity: str = "row") -> RowLineage:
    """One lineage row referring to one shared set: all rows of ``lin`` (stored once, built on the
    first query)."""
    if granularity == "op":
        return op_rows(1, node)

    def build():
        n = len(lin)
        block = lin.shared_sets(np.arange(n, dtype=np.int64), [0], [n], label)
        out = RowLineage.empty(1).with_context(np.zeros(1, dtype=np.int64), block)
        return out.offsets, out.ids, out._ctx

    return RowLineage.deferred(1, build, (lin,), node, has_context=True)


def prefix_lineage(lin: RowLineage, label: str, node: OpNode, granularity: str = "row") -> RowLineage:
    """Row i refers to the prefix set rows 0..i (one pool, n overlapping segments: O(n), on the first
    query)."""
    n = len(lin)
    if granularity == "op":
        return op_rows(n, node)

    def build():
        block = lin.shared_sets(
            np.arange(n, dtype=np.int64), np.zeros(n, dtype=np.int64), np.arange(1, n + 1), label
        )
        out = lin.with_context(np.arange(n, dtype=np.int64), block)
        return out.offsets, out.ids, out._ctx

    return RowLineage.deferred(n, build, (lin,), node, has_context=n > 0)


class _SameRows:
    """The build step of a relabelled lineage: ``lin``'s arrays as they are (no copy). ``root`` is the
    lineage whose rows these are, so :func:`combine_rows` unions them once."""

    __slots__ = ("lin", "root")

    def __init__(self, lin: RowLineage) -> None:
        self.lin = lin
        b = lin._build
        self.root = b.root if type(b) is _SameRows else lin

    def __call__(self):
        lin = self.lin
        return lin.offsets, lin.ids, lin._ctx


def relabel(lin: RowLineage, node: OpNode) -> RowLineage:
    """The same rows at another op node (no copy); remembered as the same rows for :func:`combine_rows`."""
    if lin._offsets is not None:  # composed already
        return lin.with_node(node)  # shares the arrays, which :func:`_same_rows` compares
    return RowLineage.deferred(lin._n, _SameRows(lin), (lin,), node, has_context=lin._has_ctx)


def combine_rows(operands, n_out: int, out_ndim: int, node: OpNode, granularity: str = "row") -> RowLineage:
    """Row-aligned union of the operands' lineages for an elementwise result of ``n_out`` rows.

    Only the shapes are checked now; the union is composed on the first query. Operands that share
    one lineage table are one operand; statistics (and one-row operands without direct ids) add their
    shared-set references to every row without copying ids.
    """
    if granularity == "op":
        return op_rows(n_out, node)
    rows: list[RowLineage] = []
    broadcast: list[RowLineage] = []
    for pt in operands:
        lin = pt._lin if pt._lin is not None else pt.lineage
        if pt.is_statistic or lin._n == 1 and n_out != 1:
            broadcast.append(lin)
            continue
        d = pt.data
        if (d.ndim if type(d) is np.ndarray else np.ndim(d)) != out_ndim or lin._n != n_out:
            raise LineageLostError(
                f"an operand with {len(lin)} rows and shape {np.shape(pt.data)} broadcast into a result "
                f"of shape with {n_out} rows and {out_ndim} axes would mix rows into columns, so the "
                "result rows have no row lineage. Align the shapes (e.g. X[:, [j]] keeps 2-D), or use "
                "np.asarray(...) to compute without lineage."
            )
        if not rows or not any(_same_rows(lin, r) for r in rows):
            rows.append(lin)
    if len(rows) == 1 and not broadcast:
        return relabel(rows[0], node)

    def build():
        out = _union_all(rows, broadcast, n_out)
        return out.offsets, out.ids, out._ctx

    return RowLineage.deferred(n_out, build, tuple(rows + broadcast), node)


def _union_all(rows: list[RowLineage], broadcast: list[RowLineage], n_out: int) -> RowLineage:
    every = np.arange(n_out, dtype=np.int64)
    if rows:
        out = rows[0]
        for lin in rows[1:]:
            out = RowLineage.union_rows(out, every, lin, every)
    else:
        out = RowLineage.empty(n_out)
    for lin in broadcast:
        if lin.n_ids:  # a one-row operand with its own ids: copy them into every row
            out = RowLineage.union_rows(out, every, lin, np.zeros(n_out, dtype=np.int64))
        else:
            out = out.with_refs_for_all(lin)
    return out.materialize()


def _root(lin: RowLineage) -> RowLineage:
    b = lin._build
    return b.root if type(b) is _SameRows else lin


def _same_rows(a: RowLineage, b: RowLineage) -> bool:
    if a is b or _root(a) is _root(b):
        return True
    if not (a.is_materialized and b.is_materialized) or a.has_context != b.has_context:
        return False
    same = a.offsets is b.offsets and a.ids is b.ids
    return same and (not a.has_context or a.context is b.context)
