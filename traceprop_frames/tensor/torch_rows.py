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

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import TensorDataset, get_worker_info
from torch.utils.data._utils.collate import collate, default_collate_fn_map

from traceprop_frames.errors import LineageLostError
from traceprop_frames.lineage import RowLineage
from traceprop_frames.tensor.queries import one_row, row_index

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
        """``{source path: sorted row numbers}`` behind these rows (or rows ``rows`` of them)."""
        samples = self._tp_samples
        if rows is not None:
            i = one_row(rows, len(samples))
            if i is not None:  # one row: microseconds after the first query
                return row_index(self._tp_root).sources(int(samples[i]), direct)
            rows = np.atleast_1d(np.asarray(rows))
            rows = np.flatnonzero(rows) if rows.dtype == bool else rows
            return self._tp_root.sources(samples[rows], direct=direct)
        return self._tp_root.sources(samples, direct=direct)

    def trace(self, i: int, strict: bool = True, direct: bool = False):
        """The source rows behind row ``i`` of these rows, each checked against its file's sha256."""
        i = one_row(int(i), len(self._tp_samples))
        return row_index(self._tp_root).trace(int(self._tp_samples[i]), strict, direct)

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
    """``src[key]`` as torch computed it (``out``), with the samples of its rows.

    The result keeps row lineage when its axis 0 holds rows of ``src`` (each entry of axis 0 comes from
    one row) or when all of it comes from one row (``X[i]``, ``X[i, j]``, ``X[i][None]``); otherwise its
    rows mix samples (``X[None]`` of a batch, ``X[mask2d]``) and it is a plain tensor, like the result
    of any other op on the batch.
    """
    samples = getattr(src, "_tp_samples", None)
    if not isinstance(out, torch.Tensor) or samples is None:
        return out
    picked = _fast_rows(src, samples, key)
    if picked is None:
        picked = _probe_rows(src, samples, key, out)
        if picked is None:
            return out
    return RowTensor.wrap(out, picked, src._tp_root)


_BASIC = (slice, int, type(Ellipsis))


def _fast_rows(src, samples: np.ndarray, key):
    """The samples of ``src[key]`` for the common keys (one row key, then basic indices), else None."""
    if len(samples) == 1 and (src.ndim == 0 or src.shape[0] != 1):
        return None  # one sample without a row axis: the probe decides (empty results have none)
    rows, rest = (key[0], key[1:]) if type(key) is tuple and key else (key, ())
    if any(type(k) not in _BASIC or k is Ellipsis for k in rest):
        return None
    if type(rows) is int:
        return samples[rows : rows + 1] if rows != -1 else samples[-1:]
    if type(rows) is slice:
        return samples[rows]
    if type(rows) is list and rows and all(type(k) is int for k in rows):
        return samples[np.asarray(rows, dtype=np.int64)]  # torch reads a list of ints as an index tensor
    if isinstance(rows, np.ndarray) and rows.ndim == 1 and rows.dtype.kind in "iub":
        if rows.dtype.kind == "b":
            return samples[rows] if len(rows) == len(samples) else None
        return samples[rows]
    if isinstance(rows, torch.Tensor) and rows.ndim == 1:
        if rows.dtype == torch.bool:
            return samples[rows.cpu().numpy()] if len(rows) == len(samples) else None
        if not rows.is_floating_point():
            return samples[rows.cpu().numpy()]
    return None


def _probe_rows(src, samples: np.ndarray, key, out) -> np.ndarray | None:
    """Index a stand-in of ``src`` that holds each element's flat position the same way, and read off
    which rows the result's entries come from (any key torch accepts; O(result) extra work)."""
    if len(samples) == 1 and (src.ndim == 0 or src.shape[0] != 1):  # one sample: all of it is that sample
        return samples if out.numel() else samples[:0]
    n = src.shape[0]
    width = max(src.numel() // max(n, 1), 1)
    uid = torch.arange(src.numel(), device=src.device).reshape(src.shape)
    with torch._C.DisableTorchFunctionSubclass():
        hit = uid[key]
    if hit.numel() == 0:
        return samples[:0] if hit.ndim and hit.shape[0] == 0 else None
    if hit.ndim == 0:
        return samples[[int(hit) // width]]
    flat = hit.reshape(hit.shape[0], -1)
    rows, cols = flat // width, flat % width
    if bool((rows == rows[:, :1]).all()):  # each entry of axis 0 comes from one row
        first = rows[:, 0]
        if bool((first != first[0]).any()) or bool((cols == cols[:1]).all()):
            return samples[first.cpu().numpy()]  # ... and axis 0 runs over rows
    if bool((rows == rows.reshape(-1)[0]).all()):
        return samples[[int(rows.reshape(-1)[0])]]  # all of it from one row: one sample
    return None


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


# ---------------------------------------------------------------------------- batch-wise DataLoader fetch
class _Sample(Sequence):
    """Sample ``k`` of a batch fetched at once: indexes like the ``(x, y, ...)`` tuple ``dataset[i]``
    gives (each item computed when read); the default collate turns the whole batch into its tensors
    without looking at the samples one by one."""

    __slots__ = ("_batch", "_k")

    def __init__(self, batch: _Batch, k: int) -> None:
        self._batch, self._k = batch, k

    def __len__(self) -> int:
        return len(self._batch.tensors)

    def __getitem__(self, j):
        if isinstance(j, slice):
            return tuple(self)[j]
        return self._batch.tensors[j][self._batch.indices[self._k]]

    def __repr__(self) -> str:
        return repr(tuple(self))


class _Batch(list):
    """The list of :class:`_Sample` that ``TensorDataset.__getitems__`` returns for row-carrying tensors."""

    __slots__ = ("tensors", "indices")


def _getitems(self, indices):
    """``TensorDataset.__getitems__``: batch-wise for datasets holding a :class:`RowTensor`, else exactly
    what the DataLoader does without it (``[dataset[i] for i in indices]``)."""
    if type(self).__getitem__ is not TensorDataset.__getitem__ or not any(
        type(t) is RowTensor for t in self.tensors
    ):
        if _PREVIOUS_GETITEMS is not None:
            return _PREVIOUS_GETITEMS(self, indices)
        return [self[i] for i in indices]
    batch = _Batch()
    batch.tensors, batch.indices = self.tensors, list(indices)
    batch.extend([_Sample(batch, k) for k in range(len(batch.indices))])
    return batch


def _collate_samples(batch, *, collate_fn_map=None):
    """default_collate of a fetched batch: one index op per tensor (rows keep their samples)."""
    first = batch[0]._batch
    if batch is not first or get_worker_info() is not None:  # re-listed samples, or a worker: one by one
        return collate([tuple(s) for s in batch], collate_fn_map=collate_fn_map)
    idx = torch.as_tensor(first.indices, dtype=torch.long)
    out = []
    for t in first.tensors:
        if type(t) is RowTensor:
            with torch._C.DisableTorchFunctionSubclass():
                picked = _GETITEM(t, idx.to(t.device))
            out.append(RowTensor.wrap(picked, t._tp_samples[idx.numpy()], t._tp_root))
        else:
            out.append(t[idx.to(t.device)])
    return out


_PREVIOUS_GETITEMS = getattr(TensorDataset, "__getitems__", None)
TensorDataset.__getitems__ = _getitems
default_collate_fn_map[_Sample] = _collate_samples
