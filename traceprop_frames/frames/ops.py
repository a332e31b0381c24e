"""Operations that rebuild rows — merge, group-by aggregation, concat — and the lineage they build.

Each runs the plain pandas operation with hidden row-position columns, reads back which input rows
made each output row, and composes the inputs' lineage with one vectorised call.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from traceprop_frames.errors import MissingLineageWarning, UnsupportedOperationError
from traceprop_frames.frames.carrier import ATTRS_KEY, LID, attach, lineage_keys, resolve
from traceprop_frames.lineage import OpNode, RowLineage
from traceprop_frames.lineage.events import lineage_step

_POS_L = "__tp_pos_left__"
_POS_R = "__tp_pos_right__"


def _lineage_or_empty(df: pd.DataFrame, role: str) -> RowLineage:
    if lineage_keys(df) is not None:
        return resolve(df)
    warnings.warn(
        f"the {role} frame carries no lineage; its rows contribute no source rows. Load it with "
        "tpf.read_csv/read_parquet or wrap it with tpf.track(df, name) to trace it.",
        MissingLineageWarning,
        stacklevel=4,
    )
    return RowLineage.empty(len(df), OpNode("untracked", {"role": role, "rows": len(df)}))


def _strip_lid(df: pd.DataFrame) -> pd.DataFrame:
    """The frame without its lineage keys (index reset to positions, tp_lid column dropped) nor its
    lineage handle: pandas' internal steps on it (and the result, which gets its own) see a plain frame."""
    original = df
    if df.index.name == LID:
        df = df.set_axis(pd.RangeIndex(len(df)), axis=0)
    elif isinstance(df.index, pd.MultiIndex) and LID in df.index.names:
        df = df.droplevel(LID)
    if LID in df.columns:
        df = df.drop(columns=LID)
    if ATTRS_KEY in df.attrs:
        df = df.copy(deep=False) if df is original else df
        df.attrs = {k: v for k, v in df.attrs.items() if k != ATTRS_KEY}
    return df


def _positions(col: pd.Series) -> np.ndarray:
    if col.hasnans:
        return col.fillna(-1).to_numpy(dtype=np.int64)
    return col.to_numpy(dtype=np.int64)


def _merge_with_rows(ldf: pd.DataFrame, rdf: pd.DataFrame, how_etc: dict):
    """``pd.merge(ldf, rdf, **how_etc)`` and, per output row, its left and right input row (-1: none).

    pandas computes the join's row indexers once and takes every column with them; reading those
    indexers costs nothing more. Where pandas' merge machinery is not the one expected (another
    version, a cross join), each side carries a position column through the merge instead (two extra
    columns taken and dropped: a few per cent of a merge)."""
    found = _pandas_join_rows(ldf, rdf, how_etc)
    if found is not None:
        return found
    ldf = ldf.assign(**{_POS_L: np.arange(len(ldf), dtype=np.int64)})
    rdf = rdf.assign(**{_POS_R: np.arange(len(rdf), dtype=np.int64)})
    out = pd.merge(ldf, rdf, **how_etc)
    pl, pr = _positions(out[_POS_L]), _positions(out[_POS_R])
    return out.drop(columns=[_POS_L, _POS_R]), pl, pr


def _pandas_join_rows(ldf: pd.DataFrame, rdf: pd.DataFrame, how_etc: dict):
    """pandas' own merge (``pd.merge`` runs exactly this: ``_MergeOperation(...).get_result()``) with its
    join indexers read as they are computed; None if that machinery is not there as expected."""
    if how_etc["how"] == "cross":
        return None
    try:
        from pandas.core.reshape.merge import _MergeOperation

        op = _MergeOperation(ldf, rdf, **how_etc)
        join_info = op._get_join_info
    except (ImportError, AttributeError, TypeError):
        return None
    seen = []

    def _get_join_info():
        info = join_info()
        seen.append(info)
        return info

    op._get_join_info = _get_join_info
    out = op.get_result()
    if len(seen) != 1 or len(seen[0]) != 3:
        return None
    rows = []
    for indexer, side in zip(seen[0][1:], (ldf, rdf)):
        if indexer is None:  # pandas took that side's rows as they are
            indexer = np.arange(len(side), dtype=np.int64)
        rows.append(np.asarray(indexer, dtype=np.int64))
    if any(len(r) != len(out) for r in rows):
        return None
    return out, rows[0], rows[1]


@lineage_step("pandas.merge")
def merge(
    left: pd.DataFrame,
    right: pd.DataFrame | pd.Series,
    how: str = "inner",
    on=None,
    left_on=None,
    right_on=None,
    left_index: bool = False,
    right_index: bool = False,
    sort: bool = False,
    suffixes=("_x", "_y"),
    indicator: str | bool = False,
    validate: str | None = None,
) -> pd.DataFrame:
    """``pd.merge`` with lineage: an output row depends on its matched left row ∪ matched right row."""
    if isinstance(right, pd.Series):
        if right.name is None:
            raise ValueError("Cannot merge a Series without a name")
        right = right.to_frame()
    llin = resolve(left)
    rlin = _lineage_or_empty(right, "right")
    lkeep = left.index if left_index else None
    rkeep = right.index if right_index else None
    ldf = _strip_lid(left)
    rdf = _strip_lid(right)
    if lkeep is not None:
        ldf.index = lkeep
    if rkeep is not None:
        rdf.index = rkeep
    how_etc = dict(how=how, on=on, left_on=left_on, right_on=right_on, left_index=left_index,
                   right_index=right_index, sort=sort, suffixes=suffixes, indicator=indicator,
                   validate=validate)  # fmt: skip
    out, pl, pr = _merge_with_rows(ldf, rdf, how_etc)
    if left_index or right_index:
        # pandas gave the result a meaningful index (the join key); keep it as columns
        idx = out.index
        out = out.reset_index(drop=idx.name == LID or (isinstance(idx, pd.RangeIndex) and idx.name is None))
        if LID in out.columns:
            out = out.drop(columns=LID)
    params = {"how": how, "on": on, "left_on": left_on, "right_on": right_on, "rows": len(out)}
    node = OpNode("merge", params, (llin.node, rlin.node))
    return attach(out, RowLineage.union_rows(llin, pl, rlin, pr, node=node))


@lineage_step("pandas.concat")
def concat(objs, axis=0, join="outer", ignore_index=False, keys=None, **kwargs) -> pd.DataFrame:
    """``pd.concat`` of traced frames along rows: each output row keeps its input row's lineage.

    ``keys`` becomes a column-free outer level in pandas; here the index is the lineage key, so the
    ``keys`` label of each row is returned in a column named ``"keys"`` (or the first ``names`` entry).
    """
    if axis not in (0, "index", "rows"):
        raise UnsupportedOperationError(
            "tpf.concat stacks rows (axis=0); to combine columns of rows use df.tp.merge(other, "
            "left_index=True, right_index=True) or plain df.assign / df.join on frames that share tp_lid."
        )
    objs = list(objs.values()) if isinstance(objs, dict) and keys is None else list(objs)
    if not objs:
        raise ValueError("No objects to concatenate")
    frames = [o.to_frame() if isinstance(o, pd.Series) else o for o in objs]
    lins = [_lineage_or_empty(f, f"#{i} concat input") for i, f in enumerate(frames)]
    plain = [_strip_lid(f) for f in frames]
    out = pd.concat(plain, axis=0, join=join, ignore_index=True, **kwargs)
    if keys is not None:
        names = kwargs.get("names") or ["keys"]
        out.insert(
            0, names[0] or "keys", np.repeat(np.asarray(list(keys), dtype=object), [len(f) for f in frames])
        )
    node = OpNode("concat", {"n_inputs": len(frames), "rows": len(out)}, tuple(lin.node for lin in lins))
    return attach(out, RowLineage.concat(lins, node=node))


def _group_codes(gb) -> np.ndarray:
    """Each row's group number in the output's order (-1: a dropped NaN key): ``gb.ngroup()``. The
    grouper's own codes are the same numbers unless a key is categorical (ngroup renumbers those); read
    them directly where pandas has them, saving a Series of n rows and a conversion."""
    grouper = getattr(gb, "_grouper", None)
    try:
        plain_keys = not any(g._passed_categorical for g in grouper.groupings)
        ids = grouper.ids if plain_keys else None
    except AttributeError:
        ids = None
    if isinstance(ids, np.ndarray) and ids.dtype.kind == "i" and len(ids) == len(gb.obj):
        return ids.astype(np.int64, copy=False)
    codes = gb.ngroup()
    return _positions(codes) if codes.dtype.kind == "f" else codes.to_numpy(dtype=np.int64)


class TracedGroupBy:
    """``df.tp.groupby(...)``: reducing aggregations whose rows depend on all members of their group.

    Results always have the group keys as columns (like ``as_index=False``) and a fresh ``tp_lid``
    index. Groups with NaN keys follow ``dropna`` exactly as pandas does.
    """

    _REDUCERS = (
        "sum",
        "mean",
        "median",
        "count",
        "size",
        "min",
        "max",
        "first",
        "last",
        "nunique",
        "std",
        "var",
        "prod",
        "any",
        "all",
    )

    def __init__(self, df: pd.DataFrame, by=None, *, selection=None, **kwargs) -> None:
        if kwargs.pop("as_index", False):
            raise UnsupportedOperationError(
                "df.tp.groupby always returns the keys as columns (as_index=False); the index carries lineage."
            )
        if kwargs.get("axis", 0) not in (0, "index"):
            raise UnsupportedOperationError("df.tp.groupby groups rows (axis=0) only")
        self._df = df
        self._by = by
        self._kwargs = kwargs
        self._selection = selection

    def __getitem__(self, cols) -> TracedGroupBy:
        return TracedGroupBy(self._df, self._by, selection=cols, **self._kwargs)

    @lineage_step("pandas.groupby")
    def _run(self, fn: str, *args, **kwargs) -> pd.DataFrame:
        lin = resolve(self._df)
        data = _strip_lid(self._df)
        gb = data.groupby(self._by, as_index=False, **self._kwargs)
        target = gb[self._selection] if self._selection is not None else gb
        out = getattr(target, fn)(*args, **kwargs)
        codes = _group_codes(gb)  # after the aggregation, which leaves them computed
        n_groups = max(int(codes.max()) + 1, 0) if codes.size else 0
        if isinstance(out, pd.Series):
            out = out.to_frame()
        if len(out) != n_groups and n_groups:
            codes = self._codes_by_output_row(data, codes, len(out))
            n_groups = len(out)
        if len(out) != n_groups:
            raise UnsupportedOperationError(
                f"groupby().{fn} returned {len(out)} rows for {n_groups} groups: only reducing aggregations "
                "(one row per group) have group lineage. For row-wise results use plain "
                "df.groupby(...).transform(...), which keeps lineage."
            )
        keys = self._by if isinstance(self._by, (list, tuple)) else [self._by]
        params = {"by": [k if isinstance(k, str) else repr(k) for k in keys], "fn": fn, "groups": n_groups}
        if fn == "agg":
            params["spec"] = {
                k: v if isinstance(v, (str, list)) else repr(v) for k, v in kwargs.items()
            } or repr(args)
        node = OpNode("groupby_agg", params, (lin.node,))
        out = out.reset_index(drop=True)
        return attach(out, lin.group_union(codes, n_groups, node=node))

    def _codes_by_output_row(self, data: pd.DataFrame, codes: np.ndarray, n_out: int) -> np.ndarray:
        """Group codes renumbered to output rows, when the output also lists empty groups (unused
        categories with ``observed=False``): the same grouping, reduced to each group's first row, lines
        up with the output; an output row no input row maps to is an empty group (empty lineage)."""
        first = data.assign(**{_POS_L: np.arange(len(data), dtype=np.int64)})
        first = first.groupby(self._by, as_index=False, **self._kwargs)[_POS_L].min()
        if len(first) != n_out:
            return codes  # not a one-row-per-group result: refused by the caller
        pos = first[_POS_L].to_numpy(dtype=np.float64)
        present = ~np.isnan(pos)
        to_row = np.full(int(codes.max()) + 1, -1, dtype=np.int64)
        to_row[codes[pos[present].astype(np.int64)]] = np.flatnonzero(present)
        return np.where(codes >= 0, to_row[np.maximum(codes, 0)], -1)

    def agg(self, func=None, *args, **kwargs) -> pd.DataFrame:
        """``GroupBy.agg``: named (``n=("col", "count")``), dict, list or single-function forms."""
        return self._run("agg", func, *args, **kwargs)

    aggregate = agg

    def __getattr__(self, name: str):
        if name in self._REDUCERS:
            return lambda *a, **k: self._run(name, *a, **k)
        raise AttributeError(
            f"df.tp.groupby(...).{name} is not supported: use .agg(...) or one of {list(self._REDUCERS)}"
        )
