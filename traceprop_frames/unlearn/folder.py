"""Erasure from a saved model folder as one crash-safe commit (``traceprop erase``).

Kept apart from :mod:`.bundle` (which only reads and writes folders) so that the erasure, the ledger and
the folder format import one another downward only: ``folder`` → ``correction`` → ``ledger`` → ``bundle``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from traceprop_frames.errors import UnlearningError
from traceprop_frames.unlearn import ledger
from traceprop_frames.unlearn.bundle import ModelFolder, final_estimator
from traceprop_frames.unlearn.correction import unlearn_estimator


def erase_in_folder(folder, *, timeout: float | None = None, dry_run: bool = False, **request):
    """Erase from the model saved in ``folder`` and record it, as one crash-safe commit; returns the Certificate.

    ``request``: the arguments of :func:`~traceprop_frames.unlearn.unlearn_estimator` (``source``,
    ``rows``, ``samples``, ``method``, ``key``, ``regulations``...; not ``refresh``: refresh the store
    afterwards with :func:`refresh_in_folder`). Under the folder's lock (a second
    process waits up to ``timeout`` seconds, then gets :class:`FolderLockedError`), the new parameters and
    lineage, the gradient store's ``removed`` marks and the certificate (appended to the ledger) are
    committed together. ``dry_run``: the certificate is returned, nothing on disk changes.
    """
    if request.get("refresh"):
        raise UnlearningError(
            "refresh=True is not part of a folder erasure: erase, then refresh the store with "
            "refresh_in_folder(folder) (`traceprop refresh MODEL`)"
        )
    if request.get("rebuild") is not None:  # the pipeline re-run (unlearn/rebuild.py)
        fn = request.pop("rebuild")
        if request.pop("method", None) is not None:
            raise UnlearningError("rebuild= chooses its own method: leave method unset")
        return _erase(
            folder, timeout, dry_run, lambda est, link, model: [_rebuild(model, est, fn, link, request)]
        )[0]

    def plain(est, link, model):
        from traceprop_frames.unlearn.rebuild import note_erased_rows

        cert = unlearn_estimator(est, chain=link, **request)
        note_erased_rows(est, cert.body)  # a later --rebuild leaves these rows out too
        return [cert]

    return _erase(folder, timeout, dry_run, plain)[0]


def _rebuild(model, est, fn, link, request: dict):
    """A rebuild erasure of the saved model: through :func:`~.rebuild_pipeline.unlearn_pipeline` for a
    scikit-learn Pipeline (``fn`` returns the pipeline's input; its transformers are refitted and saved
    with the model), else :func:`~.rebuild.unlearn_with_rebuild`."""
    if hasattr(model, "steps") and len(model.steps) >= 2:
        from traceprop_frames.unlearn.rebuild_pipeline import unlearn_pipeline

        return unlearn_pipeline(model, rebuild=fn, chain=link, **request)
    from traceprop_frames.unlearn.rebuild import unlearn_with_rebuild

    return unlearn_with_rebuild(est, rebuild=fn, chain=link, **request)


def erase_requests_in_folder(folder, requests, *, timeout: float | None = None, dry_run: bool = False,
                             **options) -> list:  # fmt: skip
    """Serve a batch of erasure requests on the model saved in ``folder``, as one crash-safe commit.

    Parameters
    ----------
    folder : path
        A model folder (:func:`~traceprop_frames.unlearn.bundle.save_model`).
    requests : list of dict
        ``{"request_id", "source", "rows", "received"}`` each (:func:`.batch.read_requests`).
    timeout : float, optional
        Seconds to wait for another process erasing from the same folder (None: wait).
    dry_run : bool
        Return the certificates and change nothing on disk.
    **options
        ``method``, ``key``, ``regulations`` and method parameters, as for
        :func:`.batch.erase_requests`.

    Returns
    -------
    list of Certificate
        One per request, in order: consecutive entries of the folder's ledger. The model, its parameters
        and lineage, the gradient store's ``removed`` marks and every certificate are committed through
        one journal transaction: after a crash the folder holds all of them or none.

    Raises
    ------
    UnknownSourceError, UnknownRowError
        A request names a source or rows the model was not trained on (nothing changes).
    FolderLockedError
        Another process held the folder longer than ``timeout``.
    """
    from traceprop_frames.unlearn.batch import erase_requests

    return _erase(
        folder, timeout, dry_run, lambda est, link, _: erase_requests(est, requests, chain=link, **options)
    )


def _erase(folder, timeout, dry_run, run) -> list:
    """Load, erase by ``run(est, ledger_link, model) -> certificates``, and commit everything in one journal:
    the model's files, the certificates (ledger entries) and the gradient store's ``removed`` marks."""
    folder = ModelFolder(folder)
    with folder.lock(timeout):
        model = folder.load()
        est = final_estimator(model)
        store = est.store_
        if store is not None:  # the certificates see the store; its marks are staged below, not written
            est.store_ = _StagedStore(store)
        try:
            certs = run(est, ledger.next_link(folder.path), model)
        finally:
            est.store_ = store
        if not dry_run:
            folder.commit(model, _ledger_and_store_files(folder.path, certs, store))
    return certs


class _StagedStore:
    """The folder's gradient store as an erasure committed through the folder's journal sees it: every
    read passes through (the certificate's ``store`` section and note), but ``mark_removed`` only marks
    in memory: the manifest is staged with the rest of the erasure."""

    def __init__(self, store) -> None:
        self._store = store

    def __getattr__(self, name):
        return getattr(self._store, name)

    def mark_removed(self, indices, persist: bool = True) -> None:
        self._store.mark_removed(indices, persist=False)


def _ledger_and_store_files(folder: Path, certs: list, store) -> dict:
    """``{path: write(staged_path)}``: each certificate's ledger entry, and the store's manifest with the
    erased samples marked removed (an on-disk store)."""
    files = {}
    for c in certs:
        text = c.to_json()
        files[ledger.entry_path(folder, c.body["chain"]["sequence"])] = lambda p, t=text: _write_ascii(p, t)
    if store is not None and store.path is not None:
        forgotten = [np.asarray(c.body["forget_set"]["training_indices"], dtype=np.int64) for c in certs]
        store.mark_removed(np.concatenate(forgotten), persist=False)
        manifest = store.manifest_json()
        files[Path(store.path) / "manifest.json"] = lambda p: p.write_text(manifest)
    return files


def _write_ascii(path: Path, text: str) -> None:
    with open(path, "w", encoding="ascii") as f:
        f.write(text)


def refresh_in_folder(folder, *, timeout: float | None = None) -> dict:
    """Refill the gradient store of the model saved in ``folder`` without the samples erased so far.

    Under the folder's lock; the store (on disk, named in ``bundle.json``) commits a new generation with
    one atomic manifest write, so a crash leaves the old store or the new one. Returns
    :func:`.refresh.refresh_store`'s summary. Raises :class:`ModelFolderError` when the model keeps no
    on-disk store.
    """
    from traceprop_frames.errors import ModelFolderError
    from traceprop_frames.unlearn.refresh import refresh_store

    folder = ModelFolder(folder)
    with folder.lock(timeout):
        est = final_estimator(folder.load())
        if est.store_ is None or est.store_.path is None:
            raise ModelFolderError(
                f"{folder.path}: the model keeps no gradient store on disk: nothing to refresh"
            )
        return refresh_store(est)
