"""Torch tensors whose rows know their training samples: batches carry lineage through a DataLoader.

:class:`RowTensor` is a ``torch.Tensor`` subclass that remembers, for each of its rows, the position of
that row in its *root* tensor (the tensor given to ``TensorDataset``) and the root's lineage. Only the
operations that move rows are intercepted (``__torch_function__``): indexing (``dataset[i]``) and
``torch.stack`` / ``torch.cat`` (``default_collate``). Every other op (the model's layers) runs on the
plain tensor and returns a plain tensor, so the model pays for one interception per batch, not per op,
and lineage is resolved per batch: an int64 array of root positions, turned into source rows only
when asked (``batch.sources()``).

Examples
--------
>>> import numpy as np, torch, traceprop_frames as tpf
>>> from torch.utils.data import DataLoader, TensorDataset
>>> X = tpf.tensor(np.arange(12.0).reshape(6, 2), source="rows_demo").to_torch()
>>> loader = DataLoader(TensorDataset(X, torch.zeros(6)), batch_size=4, shuffle=True,
...                     generator=torch.Generator().manual_seed(0))
>>> xb, yb = next(iter(loader))
>>> sorted(xb.samples.tolist()) == sorted(xb.sources()["rows_demo"].tolist())
True
>>> type(torch.nn.Linear(2, 1)(xb)) is torch.Tensor          # the model sees a plain tensor
True
"""

from __future__ import annotations

import numpy as np
import torch

from traceprop_frames.errors import LineageLostError
from traceprop_frames.lineage import RowLineage

_GETITEM = torch.Tensor.__getitem__
_STACKS = (torch.stack, torch.cat, torch.concat)


class RowTensor(torch.Tensor):
    """A tensor whose rows are rows ``samples`` of a root tensor with lineage ``root_lineage``."""

    _tp_samples: np.ndarray | None
    _tp_root: RowLineage | None

    @staticmethod
    def wrap(data: torch.Tensor, samples: np.ndarray, root: RowLineage) -> RowTensor:
        out = data.as_subclass(RowTensor)
        out._tp_samples = samples if type(samples) is np.ndarray else np.asarray(samples, dtype=np.int64)
        out._tp_root = root
        return out

    @property
    def samples(self) -> np.ndarray:
        """Positions of these rows in the root tensor (= training sample indices)."""
        return self._tp_samples

    @property
    def root_lineage(self) -> RowLineage:
        return self._tp_root

    @property
    def lineage(self) -> RowLineage:
        """The rows' lineage (resolved now, from the root's)."""
        return self._tp_root.take(self._tp_samples)

    def sources(self, rows=None, direct: bool = False) -> dict[str, np.ndarray]:
        lin = self.lineage
        return lin.sources(None if rows is None else np.atleast_1d(rows), direct=direct)

    def trace(self, i: int, strict: bool = True, direct: bool = False):
        return self.lineage.trace(int(i), strict=strict, direct=direct)

    def ops(self) -> list[str]:
        return self._tp_root.ops()

    def as_plain(self) -> torch.Tensor:
        return self.as_subclass(torch.Tensor)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        with torch._C.DisableTorchFunctionSubclass():  # wrapping below must not dispatch here again
            out = func(*args, **kwargs)
            if func is _GETITEM:
                return _index(args[0], args[1], out)
            if func in _STACKS:
                return _stack(func, args, kwargs, out)
        return out  # any other op: a plain tensor (lineage stays with the batch, not with activations)


def _index(src: RowTensor, key, out):
    if not isinstance(out, torch.Tensor) or getattr(src, "_tp_samples", None) is None:
        return out
    rows = key[0] if isinstance(key, tuple) else key
    n = src.shape[0]
    if type(rows) is int:  # dataset[i], once per sample: a view of one position, no new array
        i = rows % n
        return RowTensor.wrap(out, src._tp_samples[i : i + 1], src._tp_root)
    if isinstance(rows, torch.Tensor):
        rows = rows.detach().cpu().numpy()
    if isinstance(rows, (int, np.integer)):
        pos = np.array([int(rows) % n], dtype=np.int64)  # one sample: the row axis is gone, lineage is 1
    elif isinstance(rows, slice):
        pos = np.arange(n, dtype=np.int64)[rows]
    elif rows is Ellipsis:
        pos = np.arange(n, dtype=np.int64)
    else:
        arr = np.asarray(rows)
        pos = np.flatnonzero(arr) if arr.dtype == bool else arr.astype(np.int64).reshape(-1) % max(n, 1)
    return RowTensor.wrap(out, src._tp_samples[pos], src._tp_root)


def _stack(func, args, kwargs, out):
    parts = args[0] if args else kwargs.get("tensors")
    dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
    if dim != 0:
        return out
    roots = {id(getattr(p, "_tp_root", None)) for p in parts}
    if any(getattr(p, "_tp_samples", None) is None for p in parts) or len(roots) != 1:
        if any(getattr(p, "_tp_samples", None) is not None for p in parts):
            raise LineageLostError(
                f"torch.{func.__name__} of rows from different root tensors (or with plain tensors): a batch's "
                "rows must come from one dataset tensor. Build the dataset from one tpf.tensor(...).to_torch()."
            )
        return out
    samples = np.concatenate([p._tp_samples for p in parts])
    return RowTensor.wrap(out, samples, parts[0]._tp_root)


def batch_samples(x) -> np.ndarray | None:
    """The training-sample positions a batch carries, or None for a plain tensor."""
    return getattr(x, "_tp_samples", None)
