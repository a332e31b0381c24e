"""The ``df.tp`` accessor: lineage queries and the row-rebuilding operations that keep lineage."""

from __future__ import annotations

import numpy as np
import pandas as pd

from traceprop_frames.errors import UnknownRowError
from traceprop_frames.frames import ops
from traceprop_frames.frames.carrier import lineage_keys, resolve
from traceprop_frames.lineage import LineageDAG, RowLineage, SourceRow


@pd.api.extensions.register_dataframe_accessor("tp")
class TraceAccessor:
    """Row-level lineage of a DataFrame: ``df.tp.sources()``, ``trace(i)``, ``rows_from_source`` ...

    Lineage is resolved lazily and cached per index object (see :func:`carrier.resolve`).
    """

    def __init__(self, df: pd.DataFrame) -> None:
        self._obj = df

    # ------------------------------------------------------------------ lineage of this frame
    def lineage(self) -> RowLineage:
        """The :class:`RowLineage` of this frame's rows, in row order (a standalone snapshot)."""
        return resolve(self._obj)

    @property
    def is_traced(self) -> bool:
        """True if the frame carries lineage keys."""
        return lineage_keys(self._obj) is not None

    def _positions(self, rows) -> np.ndarray:
        n = len(self._obj)
        pos = np.atleast_1d(np.asarray(rows))
        if pos.size and not np.issubdtype(pos.dtype, np.integer):
            raise UnknownRowError(f"row positions must be integers, got dtype {pos.dtype}")
        pos = pos.astype(np.int64)
        bad = pos[(pos < -n) | (pos >= n)]
        if bad.size:
            raise UnknownRowError(
                f"row positions {bad[:10].tolist()} outside a frame of {n} rows (0..{n - 1})"
            )
        return pos % max(n, 1)

    # ------------------------------------------------------------------ backward
    def sources(self, rows=None, direct: bool = False) -> dict[str, np.ndarray]:
        """``{source path: sorted int64 0-based row numbers}`` behind all rows, or behind ``rows``
        (positions, like ``iloc``).

        Includes the rows that cross-row calls read (``shift``, ``cumsum``, ``rolling``, group transforms:
        shared sets); ``direct=True`` gives only the rows whose values the rows carry."""
        if rows is None:
            return self.lineage().sources(direct=direct)
        return resolve(self._obj, self._positions(rows)).sources(direct=direct)

    def trace(self, i: int, strict: bool = True, direct: bool = False) -> list[SourceRow]:
        """The source rows behind row ``i`` (a position, like ``iloc``), each hash-checked.

        A changed or missing source file raises :class:`SourceChangedError` /
        :class:`SourceMissingError`; ``strict=False`` returns its rows flagged ``sha256_ok=False`` with a
        warning instead. ``direct=True`` leaves out shared sets (see :meth:`sources`).
        """
        pos = self._positions([i])
        return resolve(self._obj, pos).trace(0, strict=strict, direct=direct)

    def lineage_frame(self, rows=None) -> pd.DataFrame:
        """Long format: one line per (frame position, source path, source row)."""
        lin = self.lineage() if rows is None else resolve(self._obj, self._positions(rows))
        positions = np.arange(len(self._obj)) if rows is None else self._positions(rows)
        from traceprop_frames.lineage import REGISTRY, decode

        sids, rownums = decode(lin.ids)
        which = np.repeat(positions, np.diff(lin.offsets))
        paths = np.array([REGISTRY.get(s).path for s in range(len(REGISTRY))], dtype=object)
        out = pd.DataFrame(
            {"position": which, "source": paths[sids] if sids.size else [], "source_row": rownums}
        )
        return out.drop_duplicates().reset_index(drop=True)

    # ------------------------------------------------------------------ forward
    def rows_from_source(self, path, rows, direct: bool = False) -> np.ndarray:
        """Sorted positions (``iloc``) of the rows that depend on any of ``rows`` of source ``path``
        (through shared sets too, unless ``direct=True``)."""
        return self.lineage().rows_from_source(path, rows, direct=direct)

    # ------------------------------------------------------------------ graph
    def ops(self) -> list[str]:
        """Op names from the sources to this frame, parents before children."""
        return self.lineage().ops()

    def ancestors(self) -> LineageDAG:
        """The op DAG behind this frame."""
        return self.lineage().ancestors()

    def verify(self) -> None:
        """Raise if any source file behind this frame changed or disappeared since loading."""
        self.lineage().verify_sources()

    # ------------------------------------------------------------------ row-rebuilding operations
    def merge(self, right, how="inner", on=None, left_on=None, right_on=None, left_index=False,
              right_index=False, sort=False, suffixes=("_x", "_y"), indicator=False, validate=None):  # fmt: skip
        """``pd.merge(df, right, ...)`` keeping lineage (same arguments as :func:`pandas.merge`)."""
        return ops.merge(self._obj, right, how=how, on=on, left_on=left_on, right_on=right_on,
                         left_index=left_index, right_index=right_index, sort=sort, suffixes=suffixes,
                         indicator=indicator, validate=validate)  # fmt: skip

    def groupby(self, by=None, **kwargs) -> ops.TracedGroupBy:
        """``df.groupby(by, ...)`` whose aggregations keep lineage (keys come back as columns)."""
        return ops.TracedGroupBy(self._obj, by, **kwargs)

    def pivot_table(self, values=None, index=None, columns=None, aggfunc="mean", **kwargs) -> pd.DataFrame:
        """``pd.pivot_table(df, ...)`` keeping lineage: a row depends on the rows with its ``index`` keys
        (which come back as columns)."""
        from traceprop_frames.frames.reshape import pivot_table

        return pivot_table(self._obj, values=values, index=index, columns=columns, aggfunc=aggfunc, **kwargs)

    def crosstab(self, index, columns, values=None, aggfunc=None, **kwargs) -> pd.DataFrame:
        """``pd.crosstab`` of this frame's columns (by name), keeping lineage like :meth:`pivot_table`."""
        from traceprop_frames.frames.reshape import crosstab

        return crosstab(self._obj, index, columns, values=values, aggfunc=aggfunc, **kwargs)

    def melt(
        self, id_vars=None, value_vars=None, var_name=None, value_name="value", **kwargs
    ) -> pd.DataFrame:
        """``df.melt(...)`` whose rows keep their source row."""
        from traceprop_frames.frames.reshape import melt

        return melt(self._obj, id_vars, value_vars, var_name, value_name, **kwargs)

    # ------------------------------------------------------------------ persistence
    def to_parquet(self, path, **kwargs) -> None:
        """Write data and lineage to one Parquet file (read back with ``tpf.read_traced``)."""
        from traceprop_frames.frames.persist import write_traced

        write_traced(self._obj, path, **kwargs)

    def __repr__(self) -> str:
        if not self.is_traced:
            return "<df.tp: no lineage>"
        lin = self.lineage()
        return f"<df.tp: {len(lin)} rows, {lin.n_ids} source-row refs, ops {lin.ops()[-5:]}>"
