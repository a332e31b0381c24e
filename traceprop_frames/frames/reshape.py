"""Reshaping with lineage: ``df.tp.pivot_table``, ``df.tp.crosstab``, ``df.tp.melt``.

A pivot-table row aggregates the input rows that share its ``index`` key values, so its lineage is their
union (each cell's group is a subset of it). ``melt`` rows keep their source row. ``pd.get_dummies``,
``stack`` and an ``unstack`` that leaves ``tp_lid`` in the index need no help: pandas keeps the keys.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from traceprop_frames.errors import UnsupportedOperationError
from traceprop_frames.frames.carrier import attach, resolve
from traceprop_frames.frames.ops import _strip_lid
from traceprop_frames.lineage import OpNode


def _as_list(x) -> list:
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _rows_by_index_keys(df: pd.DataFrame, data: pd.DataFrame, out: pd.DataFrame, keys: list, op: str, params):
    """Attach lineage to ``out`` (indexed by ``keys`` values): row r = input rows with r's key values."""
    lin = resolve(df)
    if len(keys) == 1:
        codes = out.index.get_indexer(data[keys[0]])
    else:
        codes = out.index.get_indexer(pd.MultiIndex.from_frame(data[keys]))
    codes = np.asarray(codes, dtype=np.int64)
    node = OpNode(op, {**params, "rows": len(out)}, (lin.node,))
    flat = out.reset_index()
    return attach(flat, lin.group_union(codes, len(out), node=node))


def pivot_table(df: pd.DataFrame, values=None, index=None, columns=None, aggfunc="mean", **kwargs):
    """``pd.pivot_table`` whose rows depend on the input rows with their ``index`` key values.

    ``index`` must name columns (the keys come back as columns, the index carries lineage); ``margins``
    is refused (its "All" row reads every row but is not a key of the input).

    Examples
    --------
    >>> import pandas as pd, traceprop_frames as tpf
    >>> raw = pd.DataFrame({"id": [1, 2, 1], "m": ["jan", "jan", "feb"], "x": [1.0, 2.0, 3.0]})
    >>> out = tpf.track(raw, "doc_pivot").tp.pivot_table(values="x", index="id", columns="m", aggfunc="sum")
    >>> out.columns.tolist(), out.tp.sources(rows=[0])["doc_pivot"].tolist()
    (['id', 'feb', 'jan'], [0, 2])
    """
    keys = _as_list(index)
    if not keys or not all(isinstance(k, str) for k in keys):
        raise UnsupportedOperationError("df.tp.pivot_table needs index= given as column name(s)")
    if kwargs.get("margins"):
        raise UnsupportedOperationError(
            "df.tp.pivot_table(margins=True) is not supported: compute the totals with df.tp.groupby(...)"
        )
    data = _strip_lid(df)
    out = pd.pivot_table(data, values=values, index=keys, columns=columns, aggfunc=aggfunc, **kwargs)
    if isinstance(out.columns, pd.MultiIndex):
        out.columns = ["_".join(str(p) for p in c if str(p)) for c in out.columns]
    return _rows_by_index_keys(
        df, data, out, keys, "pivot_table", {"index": keys, "columns": _as_list(columns)}
    )


def crosstab(df: pd.DataFrame, index, columns, values=None, aggfunc=None, **kwargs):
    """``pd.crosstab`` of columns of ``df`` (given by name); row r depends on the rows with r's ``index``
    values."""
    keys = _as_list(index)
    if not keys or not all(isinstance(k, str) for k in keys):
        raise UnsupportedOperationError("df.tp.crosstab needs index= given as column name(s)")
    if kwargs.get("margins"):
        raise UnsupportedOperationError("df.tp.crosstab(margins=True) is not supported")
    data = _strip_lid(df)
    out = pd.crosstab(
        [data[k] for k in keys],
        [data[c] for c in _as_list(columns)],
        values=None if values is None else data[values],
        aggfunc=aggfunc,
        **kwargs,
    )
    out.columns = [
        "_".join(str(p) for p in c) if isinstance(c, tuple) else str(c) for c in out.columns.to_flat_index()
    ]
    out.columns.name = None
    return _rows_by_index_keys(df, data, out, keys, "crosstab", {"index": keys, "columns": _as_list(columns)})


def melt(df: pd.DataFrame, id_vars=None, value_vars=None, var_name=None, value_name="value", **kwargs):
    """``DataFrame.melt`` keeping each output row's source row (``ignore_index`` is always False).

    Examples
    --------
    >>> import pandas as pd, traceprop_frames as tpf
    >>> df = tpf.track(pd.DataFrame({"id": [7, 8], "a": [1, 2], "b": [3, 4]}), "doc_melt")
    >>> long = df.tp.melt(id_vars="id")
    >>> len(long), long.tp.sources(rows=[3])["doc_melt"].tolist()
    (4, [1])
    """
    if kwargs.pop("ignore_index", False):
        raise UnsupportedOperationError("df.tp.melt keeps the index (it carries lineage): drop ignore_index")
    return df.melt(
        id_vars=id_vars, value_vars=value_vars, var_name=var_name, value_name=value_name, ignore_index=False,
        **kwargs,
    )  # fmt: skip
