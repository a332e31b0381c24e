"""ProvenanceTensor: a numpy array (or torch tensor) whose rows carry their source rows.

numpy operations are tracked through numpy's own protocols (``__array_ufunc__``,
``__array_function__``), so plain numpy syntax works and returns ProvenanceTensors; see
:mod:`traceprop_frames.tensor.tracking` for the rules.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np

from traceprop_frames.errors import (
    GranularityError,
    LineageLostError,
    UnknownRowError,
    UnsupportedOperationError,
)
from traceprop_frames.lineage import LineageDAG, OpNode, RowLineage, SourceRow
from traceprop_frames.tensor import elide
from traceprop_frames.tensor import tracking as tr
from traceprop_frames.tensor.queries import one_row, row_index

GRANULARITIES = ("op", "row", "cell")


class ProvenanceTensor(np.lib.mixins.NDArrayOperatorsMixin):
    """``data`` (numpy array or torch tensor, rows on axis 0) + ``lineage`` (one entry per row).

    ``granularity``: ``"op"`` keeps only the op DAG and the sources, ``"row"`` (default) the source rows
    of every row, ``"cell"`` also which source columns feed each column (:meth:`columns_lineage`).
    A *statistic* (a reduction over rows, e.g. ``X.mean(axis=0)``) is one lineage row referring to the
    rows it read, stored once; broadcasting it into rows makes every row refer to that set.
    """

    __slots__ = ("data", "_lin", "_node", "granularity", "is_statistic", "_cols")
    __array_priority__ = 100

    def __init__(self, data, lineage: RowLineage, granularity: str = "row", *, statistic: bool = False,
                 columns=None) -> None:  # fmt: skip
        if granularity not in GRANULARITIES:
            raise UnsupportedOperationError(
                f"granularity must be one of {GRANULARITIES}, not {granularity!r}"
            )
        n_lin = 1 if statistic else len(data) if np.ndim(data) else 1
        if len(lineage) != n_lin:
            raise ValueError(f"{n_lin} rows of data but lineage for {len(lineage)}")
        self.data = data
        self._lin, self._node = lineage, lineage.node
        self.granularity = granularity
        self.is_statistic = statistic
        self._cols = columns

    @property
    def lineage(self) -> RowLineage:
        """One lineage row per row (one in all for a statistic). Granularity ``"op"`` keeps none: each
        operation records its op node only, and this is an empty lineage at that node, made on request."""
        lin = self._lin
        if lin is None:
            n = 1 if self.is_statistic or not np.ndim(self.data) else len(self.data)
            lin = self._lin = tr.op_rows(n, self._node)
        return lin

    @lineage.setter
    def lineage(self, lin: RowLineage) -> None:
        self._lin, self._node = lin, lin.node

    # ------------------------------------------------------------------ array basics
    def __len__(self) -> int:
        return len(self.data)

    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def dtype(self):
        return self.data.dtype

    def __array__(self, dtype=None, copy=None):
        if hasattr(self.data, "detach"):
            arr = self.data.detach().cpu().numpy()
        else:
            arr = self.data
        if dtype is not None:
            arr = arr.astype(dtype, copy=False)
        return np.array(arr, copy=True) if copy else arr

    def to_torch(self, dtype=None):
        """A ``torch.Tensor`` (a :class:`~traceprop_frames.tensor.torch_rows.RowTensor`) of these rows whose
        indexing and batching (``TensorDataset`` + ``DataLoader``) keep each row's lineage."""
        import torch

        from traceprop_frames.tensor.torch_rows import RowTensor

        if self.is_statistic:
            raise LineageLostError(
                "a statistic has no rows to batch; convert it with torch.as_tensor(np.asarray(s))"
            )
        self._need_rows("to_torch()")
        data = torch.tensor(np.asarray(self), dtype=dtype)
        return RowTensor.wrap(data, np.arange(len(self), dtype=np.int64), self.lineage)

    def numpy(self) -> np.ndarray:
        """The plain array (no lineage)."""
        return np.asarray(self)

    def _like(self, data, lin, node, *, statistic: bool = False, columns=None) -> ProvenanceTensor:
        """A tensor of this granularity (``lin`` None in granularity "op")."""
        return _make(data, lin, node, self.granularity, statistic, columns)

    # ------------------------------------------------------------------ row selection
    def _row_positions(self, key) -> np.ndarray:
        n = len(self)
        if isinstance(key, slice):
            return np.arange(n, dtype=np.int64)[key]
        pos = _plain_key(key)
        if pos.dtype == bool:
            if pos.shape != (n,):
                raise UnknownRowError(f"boolean row mask of shape {pos.shape} for {n} rows")
            return np.flatnonzero(pos)
        if not np.issubdtype(pos.dtype, np.integer):
            raise UnsupportedOperationError(
                f"rows are selected by integers, slices or masks, not {pos.dtype}"
            )
        pos = np.atleast_1d(pos).astype(np.int64)
        if pos.size and (pos.min() < -n or pos.max() >= n):
            raise UnknownRowError(f"row positions outside a tensor of {n} rows")
        return pos % max(n, 1)

    def __getitem__(self, key) -> ProvenanceTensor:
        """``X[mask]`` (``row_filter``), ``X[ints]``/``X[slice]`` (``row_select``), ``X[:, j]`` / ``X[:, [j, k]]``
        (columns: rows unchanged). A single integer row returns a one-row tensor (the lineage unit)."""
        if self.is_statistic:
            return self._like(np.asarray(self.data)[key] if not hasattr(self.data, "detach") else self.data[key],
                              self._lin, self._node, statistic=True, columns=_cols_take(self._cols, key))  # fmt: skip
        if key is Ellipsis:
            key = slice(None)
        rows, cols = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        if len(cols) > 1:
            raise UnsupportedOperationError("index rows and one column axis: X[rows, cols]")
        if isinstance(rows, slice) and rows == slice(None):
            if cols:
                return self._columns(cols[0])
            return self._like(self.data, self._lin, self._node, columns=self._cols)
        data, lin, node = self._select_rows(rows)
        out = self._like(data, lin, node, columns=self._cols)
        return out._columns(cols[0], node=False) if cols else out

    def _select_rows(self, rows):
        """(data, lineage, node) of the rows picked by ``rows`` (a mask, integers or a slice); the
        positions are computed now only where the data needs them, the lineage on the first query."""
        data = self.data
        n = len(data)
        torch_data = type(data) is not np.ndarray and hasattr(data, "detach")
        if isinstance(rows, slice):
            data = data[rows]
            op, mask, pos = "row_select", None, None
        else:
            key = _plain_key(rows)
            if key.dtype.kind == "b":
                if key.shape != (n,):
                    raise UnknownRowError(f"boolean row mask of shape {key.shape} for {n} rows")
                mask = key.copy() if self.granularity != "op" else None  # ours: later writes cannot change it
                data = data[_as_torch_index(data, key) if torch_data else key]
                op, pos = "row_filter", None
            else:
                pos = self._row_positions(key)
                data = data[_as_torch_index(data, pos) if torch_data else pos]
                op, mask = "row_select", None
        node = OpNode.trusted(op, {"rows_in": n, "rows_out": len(data)}, (self._node,))
        if self.granularity == "op":
            return data, None, node
        if isinstance(rows, slice):
            pos = np.arange(n, dtype=np.int64)[rows]
        return data, tr.take_rows(self._lin, len(data), node, positions=pos, mask=mask), node

    def _columns(self, c, node: bool = True) -> ProvenanceTensor:
        """Columns ``c`` of every row: rows (and their lineage) unchanged."""
        data = self.data[:, c]
        columns = None if self._cols is None else _cols_take(self._cols, c)
        if not node:
            return self._like(data, self._lin, self._node, columns=columns)
        n = tr.op_node("column_select", "column_select", (self._node,))
        lin = None if self._lin is None else tr.relabel(self._lin, n)
        return self._like(data, lin, n, columns=columns)

    @property
    def T(self):
        raise LineageLostError(
            "transposing puts rows on axis 1, where no row lineage exists. Compute on the plain array "
            "(np.asarray(X).T) if you need it; the result carries no lineage."
        )

    def transpose(self, *axes):
        return self.T

    def reshape(self, *shape):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], tuple) else shape
        if shape and shape[0] in (len(self), -1) and (shape[0] == len(self) or len(shape) > 1):
            out = np.asarray(self).reshape(shape)
            if out.shape[0] == len(self):
                return self._like(out, self._lin, self._node)
        raise LineageLostError(
            f"reshape to {shape} moves values between rows, so rows lose their lineage. Keep axis 0 "
            f"(reshape({len(self)}, -1)) or compute on np.asarray(X)."
        )

    def astype(self, dtype):
        return self._like(np.asarray(self).astype(dtype), self._lin, self._node, statistic=self.is_statistic,
                          columns=self._cols)  # fmt: skip

    # ------------------------------------------------------------------ numpy protocols
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if kwargs.get("out") is not None:
            raise UnsupportedOperationError("out= is not supported on ProvenanceTensors: assign the result")
        if method == "__call__" and ufunc is np.matmul:
            return _matmul(inputs[0], inputs[1], np.matmul)
        if method == "__call__":
            return self._elementwise(ufunc, kwargs, inputs, ufunc.__name__)
        if method == "reduce":
            fn = {np.add: np.sum, np.multiply: np.prod, np.maximum: np.max, np.minimum: np.min}.get(ufunc)
            if fn is not None:
                return _reduce(fn, ufunc.__name__ + ".reduce", inputs[0], kwargs)
        if method == "accumulate" and ufunc in (np.add, np.multiply):
            return _prefix(lambda a: ufunc.accumulate(a, **kwargs), f"{ufunc.__name__}.accumulate", inputs[0],
                           kwargs.get("axis", 0))  # fmt: skip
        raise LineageLostError(
            f"{ufunc.__name__}.{method} on a ProvenanceTensor is not tracked. Use np.asarray(X) to compute "
            "without lineage."
        )

    def __array_function__(self, func, types, args, kwargs):
        if func in tr.ELEMENTWISE_FUNCS:
            return self._elementwise(func, kwargs, args, func.__name__)
        if func in tr.ROW_REDUCTIONS:
            return _reduce(func, tr.ROW_REDUCTIONS[func], args[0], kwargs, extra=args[1:])
        if func in tr.PREFIX_FUNCS:
            axis = kwargs.get("axis", args[1] if len(args) > 1 else None)
            return _prefix(lambda a: func(a, *args[1:], **kwargs), tr.PREFIX_FUNCS[func], args[0], axis)
        if func in (np.concatenate, np.vstack, np.hstack, np.stack, np.column_stack, np.row_stack):
            return _stack(func, args, kwargs)
        if func is np.matmul or func is np.dot:
            return _matmul(args[0], args[1], func)
        if func in (np.shape, np.ndim, np.size, np.result_type):
            return func(*[np.asarray(a) if isinstance(a, ProvenanceTensor) else a for a in args], **kwargs)
        if func in (np.transpose, np.swapaxes, np.moveaxis, np.ravel, np.reshape):
            raise LineageLostError(
                f"np.{func.__name__} on a ProvenanceTensor moves values off the row axis, so rows lose their "
                "lineage. Compute on np.asarray(X) if the result needs no lineage."
            )
        raise LineageLostError(
            f"np.{func.__name__} is not tracked on ProvenanceTensors (its row lineage is not defined here). "
            "Use np.asarray(X) to compute without lineage, or select/combine rows with indexing, "
            "elementwise ops, reductions, np.concatenate or @."
        )

    def _elementwise(self, fn, kwargs: dict, inputs, name: str):
        pts = [a for a in inputs if isinstance(a, ProvenanceTensor)]
        data = fn(*[_plain(a) if isinstance(a, ProvenanceTensor) else a for a in inputs], **kwargs)
        return _elementwise_result(data, pts, name)

    # ------------------------------------------------------------------ reductions as methods
    # (straight to the tracked reduction: the same call numpy's dispatch would make, without the dispatch)
    def mean(self, axis=None, **kw):
        return _reduce_method(self, "mean", np.mean, axis, kw)

    def std(self, axis=None, **kw):
        return _reduce_method(self, "std", np.std, axis, kw)

    def var(self, axis=None, **kw):
        return _reduce_method(self, "var", np.var, axis, kw)

    def sum(self, axis=None, **kw):
        return _reduce_method(self, "sum", np.sum, axis, kw)

    def min(self, axis=None, **kw):
        return _reduce_method(self, "min", np.min, axis, kw)

    def max(self, axis=None, **kw):
        return _reduce_method(self, "max", np.max, axis, kw)

    def cumsum(self, axis=None):
        return np.cumsum(self, axis=axis)

    def clip(self, a_min=None, a_max=None):
        return np.clip(self, a_min, a_max)

    # ------------------------------------------------------------------ lineage queries
    def _need_rows(self, what: str) -> None:
        if self.granularity == "op":
            raise GranularityError(
                f"{what} needs row lineage, but this tensor was loaded with granularity='op' (op DAG and "
                "source files only). Load it with granularity='row' (or 'cell')."
            )

    def sources(self, rows=None, direct: bool = False) -> dict[str, np.ndarray]:
        """``{source path: sorted row numbers}`` behind all rows (or ``rows``). Sufficient by default:
        the rows a broadcast statistic read are included; ``direct=True`` gives only the rows whose
        values the rows carry."""
        if self.granularity == "op":
            self._need_rows("sources()")
        if rows is not None and not self.is_statistic:
            i = one_row(rows, len(self))
            if i is not None:  # one row: microseconds after the first query (tensor/queries.py)
                return row_index(self._lin).sources(i, direct)
        pos = None if rows is None or self.is_statistic else self._row_positions(rows)
        return self.lineage.sources(pos, direct=direct)

    def trace(self, i: int, strict: bool = True, direct: bool = False) -> list[SourceRow]:
        """The source rows behind row ``i`` (:meth:`RowLineage.trace`), each checked against its file."""
        if self.granularity == "op":
            self._need_rows("trace()")
        row = 0 if self.is_statistic else one_row(i, len(self))
        if row is None:
            row = int(self._row_positions([i])[0])
        return row_index(self._lin if self._lin is not None else self.lineage).trace(row, strict, direct)

    def rows_from_source(self, path, rows, direct: bool = False) -> np.ndarray:
        self._need_rows("rows_from_source()")
        return self.lineage.rows_from_source(path, rows, direct=direct)

    def source_files(self) -> list[str]:
        """The source files (or in-memory source names) behind this tensor, in every granularity."""
        return _paths(self.lineage)

    def context_labels(self, i: int = 0) -> list[str]:
        """What made the shared sets row ``i`` refers to (e.g. ``['mean', 'std']``)."""
        return self.lineage.context_labels(i)

    def columns_lineage(self) -> list[frozenset]:
        """For each column, the source columns that feed it (``granularity='cell'`` only)."""
        if self.granularity != "cell" or self._cols is None:
            raise GranularityError(
                "columns_lineage() needs granularity='cell' (column lineage is not tracked in "
                f"{self.granularity!r} mode). Load with tpf.tensor_from_csv(path, granularity='cell')."
            )
        return list(self._cols)

    def ops(self) -> list[str]:
        return self.lineage.ops()

    def ancestors(self) -> LineageDAG:
        return self.lineage.ancestors()

    def __repr__(self) -> str:
        kind = "statistic" if self.is_statistic else "rows"
        lib = type(self.data).__module__.split(".")[0]
        return f"ProvenanceTensor(shape={self.shape}, {lib}, {kind}, {self.lineage!r})"


# ---------------------------------------------------------------------- helpers
def _as_torch_index(data, pos: np.ndarray):
    import torch

    if pos.dtype == bool:
        return torch.as_tensor(pos, device=data.device)
    return torch.as_tensor(pos, dtype=torch.long, device=data.device)


def _plain(x: ProvenanceTensor):
    """The numpy values of ``x`` (its own array when it holds one: no conversion call)."""
    return x.data if type(x.data) is np.ndarray else np.asarray(x)


def _plain_key(key) -> np.ndarray:
    """A row key (ProvenanceTensor, torch tensor, list, array) as a numpy array."""
    if type(key) is ProvenanceTensor and type(key.data) is np.ndarray:  # X[X[:, 0] > 0]: its own array
        return key.data
    if isinstance(key, ProvenanceTensor):
        return np.asarray(_plain(key))
    if hasattr(key, "detach"):  # a torch index tensor
        return key.detach().cpu().numpy()
    return np.asarray(key)


def _paths(lin: RowLineage) -> list[str]:
    return sorted({n.params["path"] for n in lin.node.topo() if n.op.startswith(("read_", "load_")) and "path" in n.params}
                  | {n.params["name"] for n in lin.node.topo() if n.op == "track" and "name" in n.params})  # fmt: skip


def _calibration_tensor() -> ProvenanceTensor:
    """A tensor owning a fresh array just over the reuse threshold (for :func:`elide.temp_counts`)."""
    return _make(np.ones(elide.MIN_BYTES // 8 + 1), None, OpNode.trusted("elide_calibration", {}), "op", False,
                 None)  # fmt: skip


def _make(
    data, lin: RowLineage | None, node: OpNode, granularity: str, statistic: bool, columns
) -> ProvenanceTensor:
    """A ProvenanceTensor from parts the operations built consistent (no validation). ``lin`` is None in
    granularity "op" (the ``lineage`` property makes an empty one at ``node`` when asked)."""
    out = object.__new__(ProvenanceTensor)
    out.data, out._lin, out._node, out.granularity, out.is_statistic, out._cols = (
        data, lin, node, granularity, statistic, columns,
    )  # fmt: skip
    return out


def _elementwise_result(data, pts: list, name: str) -> ProvenanceTensor:
    """The tensor of an elementwise op's result ``data`` on the ProvenanceTensors ``pts``."""
    if type(data) is tuple:
        raise LineageLostError(f"{name} returns several arrays; call it on np.asarray(X)")
    if len(pts) == 1:
        p = pts[0]
        gran, stat = p.granularity, p.is_statistic
        node = tr.op_node("elementwise", name, (p._node,))
    elif len(pts) == 2:
        p, q = pts
        gran = p.granularity if p.granularity == q.granularity else _granularity(pts)
        stat = p.is_statistic and q.is_statistic
        node = tr.op_node("elementwise", name, (p._node, q._node))
    else:
        gran, stat = _granularity(pts), all(p.is_statistic for p in pts)
        node = tr.op_node("elementwise", name, tuple([p._node for p in pts]))
    ndim = data.ndim if type(data) is np.ndarray else np.ndim(data)
    cols = _cols_elementwise(pts, np.shape(data)) if gran == "cell" else None
    if stat:
        if gran == "op":
            lin = None
        elif len(pts) == 1:
            lin = tr.relabel(pts[0]._lin, node)
        else:
            lin = tr.combine_rows(pts, 1, ndim, node)
        return _make(data, lin, node, gran, True, cols)
    if ndim == 0:
        raise LineageLostError(f"{name} produced a scalar from rows; reduce with X.sum() etc. instead")
    lin = None if gran == "op" else tr.combine_rows(pts, len(data), ndim, node)
    return _make(data, lin, node, gran, False, cols)


def _operator(ufunc, name: str, reflected: bool = False):
    """``X <op> other`` (``other <op> X`` when ``reflected``): with numpy arrays, Python numbers or numpy
    scalars on both sides, the ufunc on the arrays and the lineage of :func:`_elementwise_result`, as
    ``__array_ufunc__`` would compute them, without numpy's override dispatch; anything else goes through
    the :class:`~numpy.lib.mixins.NDArrayOperatorsMixin` operator.

    A left operand referenced by nothing but the expression (a temporary) receives the result in its
    array, as numpy does for plain temporaries (:mod:`~traceprop_frames.tensor.elide`)."""
    fallback = getattr(np.lib.mixins.NDArrayOperatorsMixin, name)
    reuse = not reflected and ufunc in elide.UFUNCS
    fname = ufunc.__name__

    def op(self, other):
        a = self.data
        t = type(other)
        if type(a) is not np.ndarray:
            return fallback(self, other)
        if t is ProvenanceTensor:
            b = other.data
            if type(b) is not np.ndarray:
                return fallback(self, other)
            pts = [other, self] if reflected else [self, other]
        elif t is float or t is int or t is np.ndarray or t is bool or issubclass(t, np.generic):
            b, pts = other, [self]
        else:
            return fallback(self, other)
        if reflected:
            return _elementwise_result(ufunc(b, a), pts, fname)
        if reuse and a.nbytes >= elide.MIN_BYTES and not self.is_statistic:
            counts = (sys.getrefcount(self), sys.getrefcount(a))
            seen = elide.calibrating()
            if seen is not None:
                seen.append(counts)
            elif elide.temp_counts(_calibration_tensor) and elide.reusable(a, b, counts):
                return _elementwise_result(ufunc(a, b, out=a), pts, fname)  # as numpy reuses a temporary
        return _elementwise_result(ufunc(a, b), pts, fname)

    op.__name__ = op.__qualname__ = name
    return op


for _ufunc, _names in {
    np.add: ("__add__", "__radd__"), np.subtract: ("__sub__", "__rsub__"),
    np.multiply: ("__mul__", "__rmul__"), np.true_divide: ("__truediv__", "__rtruediv__"),
    np.greater: ("__gt__",), np.less: ("__lt__",), np.greater_equal: ("__ge__",), np.less_equal: ("__le__",),
}.items():  # fmt: skip
    for _i, _name in enumerate(_names):
        setattr(ProvenanceTensor, _name, _operator(_ufunc, _name, reflected=_i == 1))


def _granularity(pts) -> str:
    if len(pts) == 1:
        return pts[0].granularity
    g = {p.granularity for p in pts}
    return "op" if "op" in g else "row" if "row" in g else "cell"


def _cols_take(cols, key):
    if cols is None:
        return None
    if isinstance(cols, list) and isinstance(key, (int, slice)):
        return cols[key]
    picked = np.asarray(cols, dtype=object)[key]
    return list(picked) if isinstance(picked, np.ndarray) else picked


def _cols_elementwise(pts, shape) -> list | None:
    if not pts or any(p._cols is None for p in pts) or len(shape) < 1:
        return None
    first = pts[0]._cols
    if all(p._cols is first for p in pts) and isinstance(first, list) == (len(shape) > 1):
        if not isinstance(first, list) or len(first) == shape[-1]:
            return first  # every operand reads the same columns (X - X.mean(axis=0)): shared, no copy
    width = shape[-1] if len(shape) > 1 else 1
    out = [frozenset() for _ in range(width)]
    for p in pts:
        c = p._cols if isinstance(p._cols, list) else [p._cols]
        for j in range(width):
            out[j] = out[j] | c[j if len(c) == width else 0]
    return out if len(shape) > 1 else out[0]


def _axis0(axis, ndim: int) -> str:
    """'rows' (reduces over rows), 'within' (within each row), or 'all'."""
    if axis is None:
        return "all"
    if type(axis) is int:  # the usual X.mean(axis=0): no array calls
        a = axis % ndim
        return ("all" if ndim == 1 else "rows") if a == 0 else "within"
    axes = (axis,) if np.isscalar(axis) else tuple(axis)
    axes = tuple(a % ndim for a in axes)
    if 0 in axes:
        return "all" if len(axes) == ndim else "rows"
    return "within"


_LABELS: dict = {}


def _label(name: str, axis) -> str:
    """``"mean(axis=0)"``: made once per (reduction, int axis)."""
    if axis is not None and type(axis) is not int:
        return f"{name}(axis={axis})"
    label = _LABELS.get((name, axis))
    if label is None:
        label = _LABELS[(name, axis)] = f"{name}(axis={axis})"
    return label


def _reduce_method(x: ProvenanceTensor, name: str, func, axis, kw: dict) -> ProvenanceTensor:
    """``x.mean(axis=0)`` and the other reduction methods: what :func:`_reduce` makes of
    ``func(x, axis=axis, **kw)``; the usual case (a numpy row tensor reduced over its rows by an int
    axis) calls the array's own method and records the statistic directly."""
    d = x.data
    if (
        kw
        or type(axis) is not int
        or type(d) is not np.ndarray
        or x.is_statistic
        or d.ndim == 0
        or axis % d.ndim
    ):
        return _reduce(func, name, x, {"axis": axis, **kw})
    data = getattr(d, name)(axis=axis)  # what numpy's func calls for an ndarray
    label = _LABELS.get((name, axis)) or _label(name, axis)
    node = (
        OpNode.trusted(label, {"ops": [label]}, (x._node,))
        if tr._state.step is None
        else tr.op_node(label, label, (x._node,))
    )
    gran = x.granularity
    out = object.__new__(ProvenanceTensor)
    out.data, out._node, out.granularity, out.is_statistic = data, node, gran, True
    out._lin = None if gran == "op" else tr.statistic_lineage(x._lin, label, node)
    out._cols = x._cols if d.ndim > 1 else None
    return out


def _reduce(func, name: str, x, kwargs, extra=()):
    if not isinstance(x, ProvenanceTensor):
        raise LineageLostError(f"{name}: unexpected operand {type(x).__name__}")
    axis = kwargs.get("axis")
    data = func(_plain(x), *extra, **kwargs)
    if x.is_statistic:
        node = tr.op_node(name, name, (x._node,))
        return x._like(data, None if x._lin is None else tr.relabel(x._lin, node), node, statistic=True)
    kind = _axis0(axis, x.data.ndim)
    label = _label(name, axis)
    if kind == "within":
        node = tr.op_node("elementwise", label, (x._node,))
        cols = (
            None if x._cols is None else frozenset().union(*x._cols) if isinstance(x._cols, list) else x._cols
        )
        return x._like(data, None if x._lin is None else tr.relabel(x._lin, node), node, columns=cols)
    node = tr.op_node(label, label, (x._node,))
    cols = x._cols if kind == "rows" else None
    lin = None if x.granularity == "op" else tr.statistic_lineage(x._lin, label, node)
    return x._like(data, lin, node, statistic=True, columns=cols)


def _prefix(fn, name: str, x, axis):
    if not isinstance(x, ProvenanceTensor) or x.is_statistic:
        raise LineageLostError(f"{name} is tracked on row tensors only")
    if axis is None:
        raise LineageLostError(f"{name} without axis flattens rows; pass axis=0 (down rows) or axis=1")
    data = fn(_plain(x))
    if axis % x.ndim != 0:
        node = tr.op_node("elementwise", f"{name}(axis={axis})", (x._node,))
        return x._like(data, None if x._lin is None else tr.relabel(x._lin, node), node, columns=x._cols)
    label = f"{name}(axis=0)"
    node = tr.op_node(label, label, (x._node,))
    lin = None if x.granularity == "op" else tr.prefix_lineage(x._lin, label, node)
    return x._like(data, lin, node, columns=x._cols)


def _stack(func, args, kwargs):
    arrays = list(args[0])
    axis = kwargs.get("axis", 0)
    rows_axis = func in (np.concatenate, np.vstack, np.row_stack) and (
        axis == 0 or func is not np.concatenate
    )
    plain = [np.asarray(a) for a in arrays]
    data = func(plain, *args[1:], **kwargs)
    pts = [a for a in arrays if isinstance(a, ProvenanceTensor)]
    node = OpNode(func.__name__, {"axis": axis, "parts": len(arrays)}, tuple(p.lineage.node for p in pts))
    if rows_axis:
        lins = []
        for a in arrays:
            if isinstance(a, ProvenanceTensor) and not a.is_statistic:
                lins.append(a.lineage)
            else:
                n = 1 if np.ndim(a) < 2 and func is np.vstack else len(np.atleast_2d(np.asarray(a)))
                if isinstance(a, ProvenanceTensor):
                    lins.append(
                        tr.take_rows(a.lineage, n, a.lineage.node, positions=np.zeros(n, dtype=np.int64))
                    )
                    continue
                warnings.warn(
                    f"np.{func.__name__}: {n} rows come from a plain array without lineage and get none. "
                    "Wrap it with tpf.tensor(array, source=name) to trace it.",
                    stacklevel=3,
                )
                lins.append(RowLineage.empty(n))
        return ProvenanceTensor(data, RowLineage.concat(lins, node=node), _granularity(pts))
    if func is np.stack:
        raise LineageLostError("np.stack adds an axis in front of the rows; use np.concatenate / np.hstack")
    # side by side (hstack, column_stack, concatenate axis=1): rows align, lineage unions per row
    gran = _granularity(pts)
    return ProvenanceTensor(data, tr.combine_rows(pts, len(data), np.ndim(data), node, gran), gran)


def _matmul(a, b, func):
    data = func(np.asarray(a), np.asarray(b))
    if isinstance(a, ProvenanceTensor) and not a.is_statistic:
        parents = [a.lineage.node] + ([b.lineage.node] if isinstance(b, ProvenanceTensor) else [])
        node = tr.op_node("matmul", "matmul", tuple(parents))
        lin = tr.relabel(a.lineage, node)
        gran = _granularity([a] + ([b] if isinstance(b, ProvenanceTensor) else []))
        if gran == "op":
            lin = tr.op_rows(len(a), node)
        elif isinstance(b, ProvenanceTensor):
            # every output row reads all of b's rows (its rows are contracted away): one shared set
            stat = b.lineage if b.is_statistic else tr.statistic_lineage(b.lineage, "matmul operand", node)
            n = len(a)
            lin = RowLineage.union_rows(lin, np.arange(n), stat, np.zeros(n, dtype=np.int64), node=node)
        cols = None
        if a._cols is not None and np.ndim(data) > 1:
            cols = [frozenset().union(*a._cols)] * data.shape[1]  # X @ W mixes every column
        return ProvenanceTensor(data, lin, gran, columns=cols)
    raise LineageLostError(
        "only X @ W with the rows on the left keeps row lineage; a ProvenanceTensor on the right has its "
        "rows contracted away. Use np.asarray(...) to compute without lineage."
    )
