"""Save a fitted model (estimator or Pipeline) with its training lineage, so erasure requests can be
served later, in another process (``traceprop erase``).

Layout of a model folder::

    model.pkl        the estimator / Pipeline, pickled without its lineage and gradient store (trusted
                     input: only :func:`load_model` opens it; :func:`load_lineage` never does)
    lineage.parquet  the training rows' lineage (source records + op DAG; remapped on load)
    parameters.pt    the final estimator's state_dict (tensors only: read without unpickling code)
    bundle.json      {"format": 1, "store": path of the on-disk GradientStore or null, "estimator": ...}
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import torch

from traceprop_frames.errors import ModelFolderError

FORMAT = 1


def final_estimator(model):
    """The last step of a Pipeline, or the model itself."""
    return model.steps[-1][1] if hasattr(model, "steps") else model


def save_model(model, folder) -> Path:
    """Write ``model`` (fitted estimator or Pipeline ending in one) into ``folder``."""
    from traceprop_frames.lineage import persist

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    est = final_estimator(model)
    lineage, store = getattr(est, "lineage_", None), getattr(est, "store_", None)
    cache = est.__dict__.pop("_unlearn_hessian_", None)
    try:
        est.lineage_, est.store_ = None, None
        with open(folder / "model.pkl", "wb") as f:
            pickle.dump(model, f, protocol=pickle.HIGHEST_PROTOCOL)
    finally:
        est.lineage_, est.store_ = lineage, store
        if cache is not None:
            est._unlearn_hessian_ = cache
    module = getattr(est, "module_", None)
    if module is not None:  # the weights alone, readable without unpickling (load_parameters)
        torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, folder / "parameters.pt")
    if lineage is not None:
        persist.save(lineage, str(folder / "lineage.parquet"))
    store_path = getattr(store, "path", None) if store is not None else None
    meta = {
        "format": FORMAT,
        "estimator": f"{type(est).__module__}.{type(est).__qualname__}",
        "lineage": lineage is not None,
        "store": None if store_path is None else os.path.abspath(store_path),
        "parameters": None if module is None else "parameters.pt",
    }
    (folder / "bundle.json").write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def load_model(folder):
    """Read a model folder written by :func:`save_model`.

    **Trusted input only**: ``model.pkl`` is a pickle, and unpickling runs code named in the file. Load
    model folders you (or your pipeline) wrote; to inspect a folder someone sent you, use
    :func:`load_lineage` (``traceprop trace``), which never opens ``model.pkl``.
    """
    from traceprop_frames.lineage import persist

    folder = Path(folder)
    meta = read_meta(folder)
    model = _unpickle(folder / "model.pkl")
    est = final_estimator(model)
    kind = f"{type(est).__module__}.{type(est).__qualname__}"
    if meta.get("estimator") is not None and kind != meta["estimator"]:
        raise ModelFolderError(f"{folder}: model.pkl holds a {kind}, bundle.json says {meta['estimator']}")
    if meta.get("parameters"):
        from traceprop_frames.unlearn.objective import parameter_fingerprint, state_fingerprint

        if parameter_fingerprint(est.module_) != state_fingerprint(load_parameters(folder)):
            raise ModelFolderError(
                f"{folder}: model.pkl and parameters.pt hold different weights (one was replaced or edited)"
            )
    est.lineage_ = persist.load(str(folder / "lineage.parquet")) if meta.get("lineage") else None
    est.store_ = None
    if meta.get("store") and os.path.exists(meta["store"]):
        from traceprop_frames.attribution import GradientStore

        est.store_ = GradientStore.open(meta["store"], mode="r+")
        est.store_.lineage = est.lineage_
    return model


def load_lineage(folder):
    """The training rows' lineage of a model folder, without unpickling the model (safe on any folder).

    Returns None when the model was trained without lineage.
    """
    from traceprop_frames.lineage import persist

    folder = Path(folder)
    meta = read_meta(folder)
    return persist.load(str(folder / "lineage.parquet")) if meta.get("lineage") else None


def load_parameters(folder) -> dict:
    """The final estimator's weights (``state_dict``) from ``parameters.pt``, without unpickling the
    model: ``torch.load(weights_only=True)`` reads tensors and containers only. For checks such as
    fingerprinting the model on disk from a folder you did not write."""
    folder = Path(folder)
    meta = read_meta(folder)
    if not meta.get("parameters"):
        raise ModelFolderError(
            f"{folder} has no parameters.pt (written by an older version, or no torch model)"
        )
    path = folder / "parameters.pt"
    try:
        state = torch.load(path, weights_only=True)
    except FileNotFoundError:
        raise ModelFolderError(f"{path} is missing: the model folder is incomplete") from None
    except Exception as e:  # truncated or garbled: torch and its restricted unpickler raise many kinds
        raise ModelFolderError(f"{path} is truncated or corrupt ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFolderError(f"{path} does not hold a state dict of tensors")
    return state


def read_meta(folder: Path) -> dict:
    """``bundle.json`` of a model folder, checked (format version, types); :class:`ModelFolderError`."""
    if not folder.is_dir():
        raise ModelFolderError(f"no model folder at {os.fspath(folder)!r} (see save_model / traceprop demo)")
    try:
        meta = json.loads((folder / "bundle.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFolderError(
            f"{folder} is not a model folder written by save_model (no bundle.json)"
        ) from None
    except (OSError, ValueError) as e:
        raise ModelFolderError(
            f"{folder}/bundle.json is unreadable or not JSON ({e}): truncated or edited"
        ) from None
    fmt = meta.get("format") if isinstance(meta, dict) else None
    if isinstance(fmt, int) and fmt > FORMAT:
        raise ModelFolderError(
            f"{folder} was written by a newer traceprop-frames (model folder format {fmt}; this version "
            f"reads {FORMAT}): upgrade traceprop-frames to load it."
        )
    if fmt != FORMAT:
        raise ModelFolderError(f"{folder}: unsupported model folder format {fmt!r}")
    if not isinstance(meta.get("store"), (str, type(None))) or not isinstance(
        meta.get("lineage", False), bool
    ):
        raise ModelFolderError(f"{folder}/bundle.json is malformed (store/lineage fields): it was edited")
    return meta


def _unpickle(path: Path):
    if not path.exists():
        raise ModelFolderError(f"{path} is missing: the model folder is incomplete")
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except (EOFError, pickle.UnpicklingError, ValueError, ImportError, AttributeError) as e:
        raise ModelFolderError(f"{path} is truncated or corrupt ({type(e).__name__}: {e})") from None
