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

:class:`ModelFolder` is the folder as one object, in the order a writer uses it: ``open`` → ``lock`` →
``recover`` → ``load`` → ``stage`` → ``commit``; the module's functions (:func:`save_model`,
:func:`load_model`, ...) are its shortcuts, and the erasures of :mod:`.folder`, the CLI and the fault
harness call its methods.

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


class ModelFolder:
    """One model folder, in the order a writer uses it: open → lock → recover → load → stage → commit.

    ``open`` checks the folder (a named error before anything touches it), ``lock`` holds its lock
    (re-entrant within a process), ``recover`` rolls an interrupted write forward or back, ``load``
    reads the model, and ``commit`` stages the model's files with any others (a ledger entry, the
    store's manifest) and commits them through one journal. Readers that never unpickle (``lineage``,
    ``parameters``, ``verify_data``) refuse a folder with an interrupted write instead of recovering it.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from traceprop_frames.estimators import TorchLogisticRegression
    >>> X = np.random.default_rng(0).normal(size=(50, 2))
    >>> folder = ModelFolder(tempfile.mkdtemp()).save(TorchLogisticRegression().fit(X, X[:, 0] > 0))
    >>> with folder.lock():
    ...     model = folder.load()
    ...     folder.commit(model)      # what an erasure does, with its ledger entry and store marks
    >>> ModelFolder.open(folder.path).meta()["format"]
    2
    """

    def __init__(self, path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"ModelFolder({os.fspath(self.path)!r})"

    # ------------------------------------------------------------------ open, lock, recover
    @classmethod
    def open(cls, path) -> ModelFolder:
        """The folder at ``path``, checked to be a model folder (unless a crash left a journal there)."""
        folder = cls(path)
        if not folder.pending():
            read_meta(folder.path)
        return folder

    def lock(self, timeout: float | None = None):
        """Context manager holding the folder's lock (:func:`locked`)."""
        return locked(self.path, timeout)

    def pending(self) -> bool:
        """True while a write is in progress, or after a crash interrupted one."""
        return pending_journal(self.path) is not None

    def recover(self, timeout: float | None = None) -> str:
        """Roll an interrupted write forward or back (under the lock); returns what was done.

        ``"clean"``, ``"rolled back"`` (the crash came before the commit point: the folder is as before
        the write) or ``"rolled forward"`` (after it: the write is complete).
        """
        with self.lock(timeout):
            return recover_journal(self.path)

    def meta(self) -> dict:
        """``bundle.json``, checked (:func:`read_meta`)."""
        return read_meta(self.path)

    # ------------------------------------------------------------------ load
    def load(self, *, recover: bool = True, timeout: float | None = None):
        """The model (:func:`load_model`: trusted input only; an interrupted write is recovered first,
        or with ``recover=False`` raises :class:`InterruptedWriteError`)."""
        if not self.pending():
            self.meta()  # a named error before anything touches the folder
        with self.lock(timeout):
            if self.pending():
                if not recover:
                    raise interrupted(self.path)
                recover_journal(self.path)
            meta = self.meta()
            model = _unpickle(self.path / "model.pkl")
            _attach(self.path, final_estimator(model), meta)
        return model

    def lineage(self):
        """The training rows' lineage without unpickling the model (None: trained without lineage)."""
        from traceprop_frames.lineage import persist

        self._refuse_interrupted()
        meta = self.meta()
        return persist.load(str(self.path / "lineage.parquet")) if meta.get("lineage") else None

    def parameters(self) -> dict:
        """The final estimator's weights from ``parameters.pt`` (:func:`load_parameters`)."""
        self._refuse_interrupted()
        if not self.meta().get("parameters"):
            raise ModelFolderError(
                f"{self.path} has no parameters.pt (written by an older version, or no torch model)"
            )
        return _read_parameters(self.path / "parameters.pt")

    def verify_data(self) -> int:
        """Check every training data file ``bundle.json`` records; returns how many (:func:`verify_data`)."""
        self._refuse_interrupted()
        with self.lock():  # a save into the folder replaces the files and bundle.json together
            entries = self.meta()["data"]
            for attr, entry in entries.items():
                datafiles.open_checked(self.path, attr, entry)
        return len(entries)

    def _refuse_interrupted(self) -> None:
        if self.pending():
            raise interrupted(self.path)

    # ------------------------------------------------------------------ stage, commit
    def stage(self, model, journal: Journal, data: tuple[dict, dict]) -> None:
        """Stage ``model``'s files in ``journal`` (``data``: :func:`datafiles.plan`)."""
        _stage_model(model, self.path, journal, data)

    def commit(self, model, files: dict | None = None) -> None:
        """Write ``model``'s files and ``files`` (``{path: write(staged_path)}``) in one journal commit.

        The caller holds the lock (and has recovered the folder): after a crash the folder holds every
        file before or every file after, never a mix. Data files the new model no longer names are
        removed after the commit.
        """
        files = dict(files or {})
        est = final_estimator(model)
        data = datafiles.plan(self.path, est)  # files a load mapped from this folder: not written again

        def stage(journal: Journal) -> None:
            self.stage(model, journal, data)
            for path, write in files.items():
                write(journal.staged(path))

        _commit(self.path, [*_targets(self.path, est, data[1]), *files], stage)
        datafiles.prune(self.path, data[0])

    def save(self, model, *, timeout: float | None = None) -> ModelFolder:
        """Write ``model`` into the folder, atomically (lock, recover, commit); returns ``self``."""
        self.path.mkdir(parents=True, exist_ok=True)
        with self.lock(timeout):
            recover_journal(self.path)
            self.commit(model)
        return self


def recover(folder, timeout: float | None = None) -> str:
    """Roll an interrupted write of ``folder`` forward or back; returns what was done
    (:meth:`ModelFolder.recover`)."""
    return ModelFolder(folder).recover(timeout)


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
    _pickle_detached(model, est, entries, journal.staged(folder / "model.pkl"))
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


def _pickle_detached(model, est, entries: dict, path: Path) -> None:
    """Pickle ``model`` without its lineage, store, training matrices and unlearning caches."""
    lineage, store = getattr(est, "lineage_", None), getattr(est, "store_", None)
    cache = est.__dict__.pop("_unlearn_hessian_", None)
    try:
        est.lineage_, est.store_ = None, None
        with datafiles.detached(est, entries), open(path, "wb") as f:
            pickle.dump(model, f, protocol=pickle.HIGHEST_PROTOCOL)
    finally:
        est.lineage_, est.store_ = lineage, store
        if cache is not None:
            est._unlearn_hessian_ = cache


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
    wait for another process writing the folder (None: wait). :meth:`ModelFolder.save`.
    """
    return ModelFolder(folder).save(model, timeout=timeout).path


def load_model(folder, *, recover: bool = True, timeout: float | None = None):
    """Read a model folder written by :func:`save_model` (:meth:`ModelFolder.load`).

    **Trusted input only**: ``model.pkl`` is a pickle, and unpickling runs code named in the file. Load
    model folders you (or your pipeline) wrote; to inspect a folder someone sent you, use
    :func:`load_lineage` (``traceprop trace``), which never opens ``model.pkl``.

    An erasure a crash interrupted is rolled forward or back first (``recover=False``: raise
    :class:`InterruptedWriteError` and leave the folder untouched).
    """
    return ModelFolder(folder).load(recover=recover, timeout=timeout)


def _attach(folder: Path, est, meta: dict) -> None:
    """Give a freshly unpickled estimator its data files, lineage and store; check its weights."""
    from traceprop_frames.lineage import persist

    kind = f"{type(est).__module__}.{type(est).__qualname__}"
    if meta.get("estimator") is not None and kind != meta["estimator"]:
        raise ModelFolderError(f"{folder}: model.pkl holds a {kind}, bundle.json says {meta['estimator']}")
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


def load_lineage(folder):
    """The training rows' lineage of a model folder, without unpickling the model (safe on any folder).

    Returns None when the model was trained without lineage. :meth:`ModelFolder.lineage`.
    """
    return ModelFolder(folder).lineage()


def verify_data(folder) -> int:
    """Check every training data file ``bundle.json`` records (sha256, dtype, shape), without unpickling
    anything; returns how many (0 for a format-1 folder). Raises :class:`ModelFolderError` naming a bad
    file. ``traceprop verify MODEL`` runs it. :meth:`ModelFolder.verify_data`."""
    return ModelFolder(folder).verify_data()


def load_parameters(folder) -> dict:
    """The final estimator's weights (``state_dict``) from ``parameters.pt``, without unpickling the
    model: ``torch.load(weights_only=True)`` reads tensors and containers only. For checks such as
    fingerprinting the model on disk from a folder you did not write. :meth:`ModelFolder.parameters`."""
    return ModelFolder(folder).parameters()


def _read_parameters(path: Path) -> dict:
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
