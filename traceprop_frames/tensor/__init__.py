"""ProvenanceTensor: numpy arrays (and torch tensors) whose rows keep their source rows.

numpy operations are tracked through numpy's protocols, so plain numpy code runs unchanged:

>>> import numpy as np, pandas as pd, traceprop_frames as tpf
>>> X = tpf.tensor(np.array([[1.0, 5.0], [2.0, -1.0], [3.0, 4.0], [6.0, 0.0]]), source="scores")
>>> X_norm = (X - X.mean(axis=0)) / X.std(axis=0)
>>> X_filt = X_norm[X_norm[:, 1] > 0]
>>> {k: v.tolist() for k, v in X_filt.sources(direct=True).items()}   # the rows that passed
{'scores': [0, 2]}
>>> {k: v.tolist() for k, v in X_filt.sources().items()}   # sufficient: mean/std read every row
{'scores': [0, 1, 2, 3]}
>>> X_filt.ops()
['track', 'tensor', 'mean(axis=0)', 'std(axis=0)', 'elementwise', 'row_filter']
"""

from __future__ import annotations

import math
from functools import lru_cache, partial

import numpy as np
import pandas as pd

from traceprop_frames.errors import UnsupportedOperationError
from traceprop_frames.lineage import OpNode
from traceprop_frames.tensor import tracking as _tr
from traceprop_frames.tensor.core import GRANULARITIES, ProvenanceTensor, _make
from traceprop_frames.tensor.tracking import op_group, step

__all__ = [
    "GRANULARITIES",
    "ProvenanceTensor",
    "load_csv",
    "load_parquet",
    "op_group",
    "step",
    "tensor",
    "tensor_from_csv",
    "tensor_from_parquet",
]


def tensor(data, columns=None, dtype="float32", backend: str = "numpy", *, source: str | None = None,
           granularity: str = "row") -> ProvenanceTensor:  # fmt: skip
    """A ProvenanceTensor from a traced DataFrame (``frame[columns]``) or a plain array (``source=`` names it).

    Parameters
    ----------
    data : traced DataFrame or array-like (rows on axis 0)
    columns : list of column names (frames only); default all
    dtype : numpy dtype of the values
    backend : ``"numpy"`` or ``"torch"``
    source : name of an in-memory source for a plain array (required then)
    granularity : ``"op"``, ``"row"`` (default) or ``"cell"``

    Notes
    -----
    From an array, making the tensor costs O(1) in its size: the values are the array itself when it
    already has ``dtype`` (shared, as ``np.asarray`` shares; otherwise converted), the row lineage
    is composed on the first lineage query, and the source's content sha256 is computed when first
    asked for (saving lineage, a certificate, ``trace()``), from the array as it is then. The in-memory
    source is registered with the first lineage query; with ``granularity="op"`` it is never registered
    (no row ids point into it); its name is in the op DAG (``source_files()``, ``ops()``).
    """
    if granularity not in GRANULARITIES:
        raise UnsupportedOperationError(f"granularity must be one of {GRANULARITIES}, not {granularity!r}")
    if backend not in ("numpy", "torch"):
        raise UnsupportedOperationError(f"backend must be 'numpy' or 'torch', not {backend!r}")
    if not isinstance(data, pd.DataFrame):
        if source is None:
            raise UnsupportedOperationError(
                "a plain array has no lineage: pass source='name' to start lineage for it, or build the "
                "tensor from a traced frame (tpf.read_csv(...) then tpf.tensor(df))"
            )
        return _from_array(data, source, dtype, backend, granularity)
    from traceprop_frames.frames import resolve

    _check_numeric(data, columns)
    values = (data if columns is None else data[columns]).to_numpy(dtype=dtype)
    lin = resolve(data)
    names = list(data.columns if columns is None else columns)
    if backend == "torch":
        import torch

        values = torch.tensor(values)  # a copy: pandas may hand out a read-only view
    node = OpNode("tensor", {"columns": names, "backend": backend, "granularity": granularity}, (lin.node,))
    lin = lin.with_node(node) if granularity != "op" else _op_only(lin, node)
    cols = [frozenset([str(c)]) for c in names] if granularity == "cell" else None
    if cols is not None and np.ndim(values) == 1:
        cols = cols[0]
    return ProvenanceTensor(values, lin, granularity, columns=cols)


def _from_array(data, source: str, dtype, backend: str, granularity: str) -> ProvenanceTensor:
    """An in-memory source of ``len(data)`` rows, registered in O(1) (hashed lazily), and its tensor.

    The source is registered when the rows' lineage is first composed (the first lineage query, pickling,
    ``rows_from_source``). Granularity ``"op"`` registers nothing: it keeps no row ids, so nothing would
    look the source up; its name is in the DAG's ``track`` node (:meth:`ProvenanceTensor.source_files`)."""
    if type(source) is not str or not source:
        raise UnsupportedOperationError("source= needs a non-empty name, e.g. tp.tensor(a, source='scores')")
    arr = data if type(data) is np.ndarray else np.asarray(data)
    if arr.ndim == 0:
        raise UnsupportedOperationError("a 0-d value has no rows")
    n = len(arr)
    width = math.prod(arr.shape[1:])
    want = _DTYPES.get(dtype) if type(dtype) is str else None
    values = arr if arr.dtype is want or arr.dtype == (want or dtype) else arr.astype(dtype)
    track = OpNode.trusted("track", {"name": source})
    node = OpNode.trusted(
        "tensor", {"n_columns": width, "backend": backend, "granularity": granularity}, (track,)
    )
    lin = None if granularity == "op" else _tr.memory_rows(source, n, partial(_array_sha256, arr), node)
    if backend == "torch":
        import torch

        values = torch.from_numpy(values) if values.flags.writeable else torch.tensor(values)
    cols = None
    if granularity == "cell":
        cols = _array_columns(width)
        cols = cols[0] if values.ndim == 1 else cols
    return _make(values, lin, node, granularity, False, cols)


_DTYPES = {name: np.dtype(name) for name in ("float32", "float64", "float16", "int64", "int32", "bool")}


@lru_cache(maxsize=64)
def _array_columns(width: int) -> list[frozenset]:
    """Column ``j`` of an array reads source column ``"j"``; one shared list per width (never mutated:
    operations build new lists, ``columns_lineage()`` returns a copy)."""
    return [frozenset([str(j)]) for j in range(width)]


def _array_sha256(arr: np.ndarray) -> str:
    """The content sha256 ``tp.track`` gives the same values as a frame (column ``j`` named ``"j"``)."""
    from traceprop_frames.frames.readers import _content_sha256

    frame = pd.DataFrame(arr.reshape(len(arr), -1))
    frame.columns = [str(c) for c in frame.columns]
    return _content_sha256(frame)


def _op_only(lin, node):
    from traceprop_frames.lineage import RowLineage

    return RowLineage.empty(len(lin), node)


def _check_numeric(df: pd.DataFrame, columns) -> None:
    sub = df if columns is None else df[columns]
    bad = [
        c
        for c in sub.columns
        if not (pd.api.types.is_numeric_dtype(sub[c]) or pd.api.types.is_bool_dtype(sub[c]))
    ]
    if bad:
        raise UnsupportedOperationError(
            f"non-numeric columns {bad} cannot go into a numeric tensor. Pick numeric columns with "
            "columns=[...], or load with tpf.read_csv and encode them (e.g. pd.get_dummies) before tpf.tensor(df)."
        )


def tensor_from_csv(
    path, columns=None, granularity: str = "row", dtype="float32", **kwargs
) -> ProvenanceTensor:
    """A 2-D numeric ProvenanceTensor of a CSV file's rows (``tpf.read_csv`` + :func:`tensor`).

    Node ``load_csv`` heads the op DAG; row ``i`` is data row ``i`` of the file (sha256 recorded).
    Also available under its earlier name ``load_csv``.
    """
    from traceprop_frames.frames import read_csv

    df = read_csv(path, **kwargs)
    return _loaded(df, "load_csv", columns, granularity, dtype)


def tensor_from_parquet(
    path, columns=None, granularity: str = "row", dtype="float32", **kwargs
) -> ProvenanceTensor:
    """A 2-D numeric ProvenanceTensor of a Parquet file's rows (``tpf.read_parquet`` + :func:`tensor`).

    Also available under its earlier name ``load_parquet``.
    """
    from traceprop_frames.frames import read_parquet

    df = read_parquet(path, **kwargs)
    return _loaded(df, "load_parquet", columns, granularity, dtype)


load_csv = tensor_from_csv  # the earlier names, kept: code written against them keeps working
load_parquet = tensor_from_parquet


def _loaded(df, op: str, columns, granularity: str, dtype) -> ProvenanceTensor:
    pt = tensor(df, columns=columns, dtype=dtype, granularity=granularity)
    read_node = pt.lineage.node.parents[0]
    node = OpNode(op, dict(read_node.params), read_node.parents)
    pt.lineage = pt.lineage.with_node(node)
    return pt
