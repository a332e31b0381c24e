"""The training matrices of a model folder, kept out of ``model.pkl`` (model folder format 2).

An erasure changes a model's parameters and sample weights, never its training matrix, yet a pickled
estimator carries ``X_train_`` (200,000 × 100 float32: 80 MB) into every rewrite of ``model.pkl``. So
:func:`~traceprop_frames.unlearn.bundle.save_model` writes the final estimator's ``X_train_`` and
``y_train_`` once, as plain ``.npy`` files named by their content (``data/X_train-<sha256[:16]>.npy``),
records each file's sha256, dtype and shape in ``bundle.json`` and pickles the estimator without them.
:func:`attach` reads them back memory-mapped, read-only, with ``allow_pickle=False`` (no code runs), after
checking the recorded sha256 against the bytes: a replaced or edited data file raises
:class:`~traceprop_frames.errors.ModelFolderError` instead of silently changing what later erasures
compute. A folder written again by the process that loaded it (``traceprop erase``) reuses the files: an
array :func:`attach` mapped read-only from that folder cannot have changed, so it is neither hashed nor
written again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import weakref
from pathlib import Path

import numpy as np

from traceprop_frames.errors import ModelFolderError

ATTRS = ("X_train_", "y_train_")
_NAME = re.compile(r"data/[A-Za-z]+(?:_[A-Za-z]+)*-[0-9a-f]{16}\.npy")
_LOADED: dict[int, tuple] = {}  # id(array) -> (weakref to it, folder, entry): arrays attach() mapped


def sha256(arr: np.ndarray) -> str:
    """sha256 of an array's bytes in C order (no copy for a contiguous array)."""
    return hashlib.sha256(memoryview(np.ascontiguousarray(arr)).cast("B")).hexdigest()


def plan(folder: Path, est) -> tuple[dict, dict]:
    """``(entries, writes)`` for saving ``est`` into ``folder``: the ``bundle.json`` record of each data
    attribute, and ``{relative path: array}`` of the files that must be (re)written."""
    entries, writes = {}, {}
    for attr in ATTRS:
        arr = est.__dict__.get(attr)
        if not isinstance(arr, np.ndarray) or arr.dtype.hasobject:
            continue  # kept in the pickle (not a plain numeric array)
        known = _LOADED.get(id(arr))
        if known is not None and known[0]() is arr and known[1] == os.path.abspath(folder):
            if (folder / known[2]["file"]).exists():
                entries[attr] = known[2]
                continue
        arr = np.ascontiguousarray(arr)
        digest = sha256(arr)
        entry = {
            "file": f"data/{attr.rstrip('_')}-{digest[:16]}.npy",
            "sha256": digest,
            "dtype": arr.dtype.str,
            "shape": list(arr.shape),
        }
        entries[attr], writes[entry["file"]] = entry, arr
    return entries, writes


def write(path: Path, arr: np.ndarray) -> None:
    """``arr`` as a plain ``.npy`` file (no pickle: loadable with ``allow_pickle=False``)."""
    with open(path, "wb") as f:
        np.save(f, arr, allow_pickle=False)


@contextlib.contextmanager
def detached(est, entries: dict):
    """``est`` without the attributes ``entries`` names (for pickling), restored on exit."""
    saved = {a: est.__dict__.pop(a) for a in entries if a in est.__dict__}
    try:
        yield
    finally:
        est.__dict__.update(saved)


def check_entries(folder: Path, data) -> dict:
    """``bundle.json``'s ``data`` record, validated (no file outside ``folder/data``, known attributes)."""
    if data is None:
        return {}
    ok = isinstance(data, dict) and all(
        a in ATTRS
        and isinstance(e, dict)
        and isinstance(e.get("file"), str)
        and _NAME.fullmatch(e["file"])
        and isinstance(e.get("sha256"), str)
        and isinstance(e.get("dtype"), str)
        and isinstance(e.get("shape"), list)
        for a, e in data.items()
    )
    if not ok:
        raise ModelFolderError(f"{folder}/bundle.json is malformed (data field): it was edited")
    return data


def attach(folder: Path, est, entries: dict) -> None:
    """Map each recorded data file into ``est`` (read-only), after checking its sha256, dtype and shape."""
    for attr, entry in entries.items():
        arr = open_checked(folder, attr, entry)
        setattr(est, attr, arr)
        _LOADED[id(arr)] = (weakref.ref(arr, _forget(id(arr))), os.path.abspath(folder), entry)


def open_checked(folder: Path, attr: str, entry: dict) -> np.ndarray:
    """The data file ``entry`` records, mapped read-only, after checking its sha256, dtype and shape."""
    path = folder / entry["file"]
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise ModelFolderError(
            f"{path} is missing: the model folder is incomplete (copy the whole folder, data/ included)"
        ) from None
    except (ValueError, OSError) as e:
        raise ModelFolderError(f"{path} is truncated or corrupt ({e})") from None
    wrong = (
        arr.dtype.str != entry["dtype"] or list(arr.shape) != entry["shape"] or sha256(arr) != entry["sha256"]
    )
    if wrong:
        raise ModelFolderError(
            f"{path} is not the {attr} this model was saved with (its sha256, dtype or shape differs "
            "from bundle.json): the file was replaced or edited. Restore the folder from a backup, or "
            "fit the model again and save it with save_model"
        )
    return arr


def _forget(key: int):
    return lambda _ref: _LOADED.pop(key, None)


def prune(folder: Path, entries: dict) -> None:
    """Delete data files of ``folder`` that ``entries`` (the committed ``bundle.json``) no longer names."""
    keep = {Path(e["file"]).name for e in entries.values()}
    for f in (folder / "data").glob("*.npy"):
        if f.name not in keep:
            with contextlib.suppress(OSError):
                f.unlink()
