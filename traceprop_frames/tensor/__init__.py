"""ProvenanceTensor: a numpy array or torch tensor whose first axis carries row lineage.

For custom training loops that leave pandas: ``pt = tpf.tensor(frame)`` keeps, for every row of the
tensor, the source rows behind it. Row selection (``pt[idx]``, boolean masks, slices) keeps lineage;
``pt.data`` is the plain array/tensor for computation, so nothing in torch or numpy is intercepted.

Examples
--------
>>> import pandas as pd, traceprop_frames as tpf
>>> frame = tpf.track(pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [0.5, 0.1, 0.2]}), "demo_rows")
>>> pt = tpf.tensor(frame, columns=["x"])
>>> batch = pt[[2, 0]]
>>> batch.data.tolist()
[[3.0], [1.0]]
>>> {k: v.tolist() for k, v in batch.sources().items()}
{'demo_rows': [0, 2]}
>>> batch.trace(0)[0].trace_to_file()
'demo_rows row 2'
>>> batch.ops()
['track', 'tensor', 'select']
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from traceprop_frames.errors import UnknownRowError, UnsupportedOperationError
from traceprop_frames.frames import resolve
from traceprop_frames.lineage import LineageDAG, OpNode, RowLineage, SourceRow


class ProvenanceTensor:
    """``data`` (numpy array or torch tensor, rows on axis 0) + ``lineage`` (one entry per row)."""

    __slots__ = ("data", "lineage")

    def __init__(self, data, lineage: RowLineage) -> None:
        if len(data) != len(lineage):
            raise ValueError(f"{len(data)} rows of data but lineage for {len(lineage)}")
        self.data = data
        self.lineage = lineage

    def __len__(self) -> int:
        return len(self.data)

    @property
    def shape(self):
        return tuple(self.data.shape)

    def _row_positions(self, key) -> np.ndarray:
        n = len(self)
        if isinstance(key, slice):
            return np.arange(n, dtype=np.int64)[key]
        if hasattr(key, "detach"):  # a torch index tensor
            key = key.detach().cpu().numpy()
        pos = np.asarray(key)
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
        """Row selection keeps lineage; ``pt[rows, cols]`` selects columns too. A single integer row
        returns a one-row ProvenanceTensor (the lineage unit is a row)."""
        if key is Ellipsis:
            key = slice(None)
        rows, cols = key if isinstance(key, tuple) else (key, None)
        pos = self._row_positions(rows)
        index = pos if not hasattr(self.data, "detach") else _as_torch_index(self.data, pos)
        data = self.data[index]
        if cols is not None:
            data = data[:, cols]
        node = OpNode("select", {"rows_in": len(self), "rows_out": int(pos.size)}, (self.lineage.node,))
        return ProvenanceTensor(data, self.lineage.take(pos, node=node))

    def sources(self, rows=None) -> dict[str, np.ndarray]:
        """``{source path: sorted row numbers}`` behind all rows, or behind ``rows``."""
        return self.lineage.sources(None if rows is None else self._row_positions(rows))

    def trace(self, i: int, strict: bool = True) -> list[SourceRow]:
        return self.lineage.trace(int(self._row_positions([i])[0]), strict=strict)

    def rows_from_source(self, path, rows) -> np.ndarray:
        return self.lineage.rows_from_source(path, rows)

    def ops(self) -> list[str]:
        return self.lineage.ops()

    def ancestors(self) -> LineageDAG:
        return self.lineage.ancestors()

    def __repr__(self) -> str:
        return f"ProvenanceTensor(shape={self.shape}, {type(self.data).__module__.split('.')[0]}, {self.lineage!r})"


def _as_torch_index(data, pos: np.ndarray):
    import torch

    return torch.as_tensor(pos, dtype=torch.long, device=data.device)


def tensor(frame: pd.DataFrame, columns=None, dtype="float32", backend: str = "numpy") -> ProvenanceTensor:
    """A ProvenanceTensor of ``frame[columns]`` (all columns by default) as numpy or torch (``backend``)."""
    lin = resolve(frame)
    values = (frame if columns is None else frame[columns]).to_numpy(dtype=dtype)
    if backend == "torch":
        import torch

        values = torch.tensor(values)  # a copy: pandas may hand out a read-only view
    elif backend != "numpy":
        raise UnsupportedOperationError(f"backend must be 'numpy' or 'torch', not {backend!r}")
    node = OpNode(
        "tensor", {"columns": None if columns is None else list(columns), "backend": backend}, (lin.node,)
    )
    return ProvenanceTensor(values, lin.with_node(node))
