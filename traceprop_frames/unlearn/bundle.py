"""Save a fitted model (estimator or Pipeline) with its training lineage, so erasure requests can be
served later, in another process (``traceprop erase``), and survive crashes.

Layout of a model folder::

    model.pkl        the estimator / Pipeline, pickled without its lineage, gradient store and training
                     matrices (trusted input: only :func:`load_model` opens it; :func:`load_lineage` never does)
    data/            the final estimator's ``X_train_`` / ``y_train_`` as ``.npy`` files named by content,
                     written once and never by an erasure (:mod:`.datafiles`; absent in format-1 folders)
    lineage.parquet  the training rows' lineage (source records + op DAG; remapped on load)
    parameters.pt    the final estimator's state_dict (tensors only: read without unpickling code)
    bundle.json      {"format": 2, "store": path of the on-disk GradientStore or null, "estimator": ...,
                     "data": {"X_train_": {"file", "sha256", "dtype", "shape"}, ...}}
    ledger/          the erasure certificates issued for this model, chained (:mod:`.ledger`)
    .lock            taken by every writer and reader of the folder (``filelock``)
    journal.json     only while a write is in progress, or after a crash interrupted one

Crash safety: every write of the folder (:func:`save_model`, :func:`.folder.erase_in_folder`) stages its files
and commits them through a two-phase journal (:class:`traceprop_frames._durable.Journal`), under the
folder's lock. An erasure changes the model files, the gradient store's ``removed`` marks and the
ledger in one commit: after a crash the folder holds the state before or the state after the erasure.
Recovery is automatic when the folder is next opened for writing or by :func:`load_model` (holding the
lock proves the writer is gone, and the journal alone decides: roll back before the commit point, roll
forward after it); ``load_model(recover=False)`` (``traceprop verify``) leaves the folder untouched and
raises :class:`~traceprop_frames.errors.InterruptedWriteError` instead; ``traceprop recover MODEL``
recovers explicitly and says which way it went.
"""

from __future__ import annotations

import json
import os
import pickle
from contextlib import contextmanager
from pathlib import Path

import torch

from traceprop_frames._durable import Journal, pending_journal, recover_journal
from traceprop_frames.errors import FolderLockedError, InterruptedWriteError, ModelFolderError
from traceprop_frames.unlearn import datafiles

FORMAT = 2  # 2: training matrices in data/*.npy; format-1 folders (all in model.pkl) still load
_LOCKS: dict[tuple[int, str], object] = {}


def final_estimator(model):
    """The last step of a Pipeline, or the model itself."""
    return model.steps[-1][1] if hasattr(model, "steps") else model


@contextmanager
def locked(folder, timeout: float | None = None):
    """Hold the model folder's lock (re-entrant within a process); ``timeout`` seconds, None = wait.

    Raises :class:`FolderLockedError` when another process holds it past ``timeout``.
    """
    import filelock

    folder = Path(folder)
    key = (os.getpid(), os.path.abspath(folder))  # a forked child needs its own lock object
    lk = _LOCKS.get(key)
    if lk is None:
        lk = _LOCKS[key] = filelock.FileLock(os.path.join(key[1], ".lock"))
    try:
        lk.acquire(timeout=-1 if timeout is None else timeout)
    except filelock.Timeout:
        raise FolderLockedError(
            f"another process is writing {folder} (lock {folder / '.lock'} held for more than {timeout} s); "
            "retry when it has finished, or wait longer (--wait SECONDS)"
        ) from None
    try:
        yield
    finally:
        lk.release()


def recover(folder, timeout: float | None = None) -> str:
    """Roll an interrupted write of ``folder`` forward or back; returns what was done.

    ``"clean"``, ``"rolled back"`` (the crash came before the commit point: the folder is as before the
    write) or ``"rolled forward"`` (after it: the write is complete).
    """
    with locked(folder, timeout):
        return recover_journal(folder)


def _targets(folder: Path, est, writes: dict) -> list[Path]:
    """The files :func:`_stage_model` writes for ``est`` (``writes``: the data files of :func:`datafiles.plan`)."""
    out = [folder / "model.pkl", folder / "bundle.json", *(folder / f for f in writes)]
    if getattr(est, "module_", None) is not None:
        out.append(folder / "parameters.pt")
    if getattr(est, "lineage_", None) is not None:
        out.append(folder / "lineage.parquet")
    return out


def interrupted(folder) -> InterruptedWriteError:
    return InterruptedWriteError(
        f"{folder}: a crash interrupted a write of this model folder; run `traceprop recover {folder}` to "
        "finish or undo it (the journal decides which)"
    )


def _stage_model(model, folder: Path, journal: Journal, data: tuple[dict, dict]) -> None:
    """Stage ``model``'s files; ``data``: :func:`datafiles.plan` ``(entries, writes)``."""
    from traceprop_frames.lineage import persist

    est = final_estimator(model)
    entries, writes = data
    for rel, arr in writes.items():
        datafiles.write(journal.staged(folder / rel), arr)
    lineage, store = getattr(est, "lineage_", None), getattr(est, "store_", None)
    cache = est.__dict__.pop("_unlearn_hessian_", None)
    try:
        est.lineage_, est.store_ = None, None
        with datafiles.detached(est, entries), open(journal.staged(folder / "model.pkl"), "wb") as f:
            pickle.dump(model, f, protocol=pickle.HIGHEST_PROTOCOL)
    finally:
        est.lineage_, est.store_ = lineage, store
        if cache is not None:
            est._unlearn_hessian_ = cache
    module = getattr(est, "module_", None)
    if module is not None:  # the weights alone, readable without unpickling (load_parameters)
        state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
        torch.save(state, journal.staged(folder / "parameters.pt"))
    if lineage is not None:
        persist.save(lineage, str(journal.staged(folder / "lineage.parquet")), atomic=False)
    store_path = getattr(store, "path", None) if store is not None else None
    meta = {
        "format": FORMAT,
        "estimator": f"{type(est).__module__}.{type(est).__qualname__}",
        "lineage": lineage is not None,
        "store": None if store_path is None else os.path.abspath(store_path),
        "parameters": None if module is None else "parameters.pt",
        "data": entries,
    }
    journal.staged(folder / "bundle.json").write_text(json.dumps(meta, indent=2) + "\n")


def _commit(folder: Path, targets, stage) -> None:
    journal = Journal(folder, targets)
    try:
        stage(journal)
        journal.commit()
    except BaseException:
        if journal.state() == "prepare":  # past the commit point, recovery rolls forward instead
            journal.abort()
        raise


def save_model(model, folder, *, timeout: float | None = None) -> Path:
    """Write ``model`` (fitted estimator or Pipeline ending in one) into ``folder``, atomically.

    The folder holds the old model or the new one after a crash, never a mix. ``timeout``: seconds to
    wait for another process writing the folder (None: wait).
    """
    folder = Path(folder)
    est = final_estimator(model)
    folder.mkdir(parents=True, exist_ok=True)
    with locked(folder, timeout):
        recover_journal(folder)
        data = datafiles.plan(folder, est)
        _commit(folder, _targets(folder, est, data[1]), lambda j: _stage_model(model, folder, j, data))
        datafiles.prune(folder, data[0])
    return folder


def load_model(folder, *, recover: bool = True, timeout: float | None = None):
    """Read a model folder written by :func:`save_model`.

    **Trusted input only**: ``model.pkl`` is a pickle, and unpickling runs code named in the file. Load
    model folders you (or your pipeline) wrote; to inspect a folder someone sent you, use
    :func:`load_lineage` (``traceprop trace``), which never opens ``model.pkl``.

    An erasure a crash interrupted is rolled forward or back first (``recover=False``: raise
    :class:`InterruptedWriteError` and leave the folder untouched).
    """
    from traceprop_frames.lineage import persist

    folder = Path(folder)
    if pending_journal(folder) is None:
        read_meta(folder)  # a named error before anything touches the folder
    with locked(folder, timeout):
        if pending_journal(folder) is not None:
            if not recover:
                raise interrupted(folder)
            recover_journal(folder)
        meta = read_meta(folder)
        model = _unpickle(folder / "model.pkl")
        est = final_estimator(model)
        kind = f"{type(est).__module__}.{type(est).__qualname__}"
        if meta.get("estimator") is not None and kind != meta["estimator"]:
            raise ModelFolderError(
                f"{folder}: model.pkl holds a {kind}, bundle.json says {meta['estimator']}"
            )
        datafiles.attach(folder, est, meta["data"])
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
    if pending_journal(folder) is not None:
        raise interrupted(folder)
    meta = read_meta(folder)
    return persist.load(str(folder / "lineage.parquet")) if meta.get("lineage") else None


def verify_data(folder) -> int:
    """Check every training data file ``bundle.json`` records (sha256, dtype, shape), without unpickling
    anything; returns how many (0 for a format-1 folder). Raises :class:`ModelFolderError` naming a bad
    file. ``traceprop verify MODEL`` runs it."""
    folder = Path(folder)
    if pending_journal(folder) is not None:
        raise interrupted(folder)
    with locked(folder):  # a save into the folder replaces the files and bundle.json together
        entries = read_meta(folder)["data"]
        for attr, entry in entries.items():
            datafiles.open_checked(folder, attr, entry)
    return len(entries)


def load_parameters(folder) -> dict:
    """The final estimator's weights (``state_dict``) from ``parameters.pt``, without unpickling the
    model: ``torch.load(weights_only=True)`` reads tensors and containers only. For checks such as
    fingerprinting the model on disk from a folder you did not write."""
    folder = Path(folder)
    if pending_journal(folder) is not None:
        raise interrupted(folder)
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
    if fmt not in (1, FORMAT):
        raise ModelFolderError(f"{folder}: unsupported model folder format {fmt!r}")
    if not isinstance(meta.get("store"), (str, type(None))) or not isinstance(
        meta.get("lineage", False), bool
    ):
        raise ModelFolderError(f"{folder}/bundle.json is malformed (store/lineage fields): it was edited")
    meta["data"] = datafiles.check_entries(folder, meta.get("data"))
    return meta


def _unpickle(path: Path):
    if not path.exists():
        raise ModelFolderError(f"{path} is missing: the model folder is incomplete")
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except (EOFError, pickle.UnpicklingError, ValueError, ImportError, AttributeError) as e:
        raise ModelFolderError(f"{path} is truncated or corrupt ({type(e).__name__}: {e})") from None
