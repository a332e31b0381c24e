"""Save a fitted model (estimator or Pipeline) with its training lineage, so erasure requests can be
served later, in another process (``traceprop erase``).

Layout of a model folder::

    model.pkl        the estimator / Pipeline, pickled without its lineage and gradient store
    lineage.parquet  the training rows' lineage (source records + op DAG; remapped on load)
    bundle.json      {"format": 1, "store": path of the on-disk GradientStore or null, "estimator": ...}
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

from traceprop_frames.errors import UnlearningError

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
    if lineage is not None:
        persist.save(lineage, str(folder / "lineage.parquet"))
    store_path = getattr(store, "path", None) if store is not None else None
    meta = {
        "format": FORMAT,
        "estimator": f"{type(est).__module__}.{type(est).__qualname__}",
        "lineage": lineage is not None,
        "store": None if store_path is None else os.path.abspath(store_path),
    }
    (folder / "bundle.json").write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def load_model(folder):
    """Read a model folder written by :func:`save_model` (trusted input: it unpickles)."""
    from traceprop_frames.lineage import persist

    folder = Path(folder)
    try:
        meta = json.loads((folder / "bundle.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UnlearningError(f"{folder} is not a model folder written by save_model ({e})") from None
    if meta.get("format") != FORMAT:
        raise UnlearningError(f"{folder}: unsupported model folder format {meta.get('format')!r}")
    with open(folder / "model.pkl", "rb") as f:
        model = pickle.load(f)
    est = final_estimator(model)
    est.lineage_ = persist.load(str(folder / "lineage.parquet")) if meta.get("lineage") else None
    est.store_ = None
    if meta.get("store") and os.path.exists(meta["store"]):
        from traceprop_frames.attribution import GradientStore

        est.store_ = GradientStore.open(meta["store"], mode="r+")
        est.store_.lineage = est.lineage_
    return model
