"""Erasure from a saved model folder as one crash-safe commit (``traceprop erase``).

Kept apart from :mod:`.bundle` (which only reads and writes folders) so that the erasure, the ledger and
the folder format import one another downward only: ``folder`` → ``correction`` → ``ledger`` → ``bundle``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from traceprop_frames._durable import Journal
from traceprop_frames.unlearn import datafiles, ledger
from traceprop_frames.unlearn.bundle import (
    _commit,
    _stage_model,
    _targets,
    final_estimator,
    load_model,
    locked,
)
from traceprop_frames.unlearn.correction import unlearn_estimator


def erase_in_folder(folder, *, timeout: float | None = None, dry_run: bool = False, **request):
    """Erase from the model saved in ``folder`` and record it, as one crash-safe commit; returns the Certificate.

    ``request``: the arguments of :func:`~traceprop_frames.unlearn.unlearn_estimator` (``source``,
    ``rows``, ``samples``, ``method``, ``key``, ``regulations``...). Under the folder's lock (a second
    process waits up to ``timeout`` seconds, then gets :class:`FolderLockedError`), the new parameters and
    lineage, the gradient store's ``removed`` marks and the certificate (appended to the ledger) are
    committed together. ``dry_run``: the certificate is returned, nothing on disk changes.
    """
    return _erase(
        folder, timeout, dry_run, lambda est, link: [unlearn_estimator(est, chain=link, **request)]
    )[0]


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
        folder, timeout, dry_run, lambda est, link: erase_requests(est, requests, chain=link, **options)
    )


def _erase(folder, timeout, dry_run, run) -> list:
    """Load, erase by ``run(est, ledger_link) -> certificates``, and commit everything in one journal."""
    folder = Path(folder)
    with locked(folder, timeout):
        model = load_model(folder)
        est = final_estimator(model)
        store = est.store_
        est.store_ = None  # the store's marks are staged below, not written directly
        certs = run(est, ledger.next_link(folder))
        est.store_ = store
        if dry_run:
            return certs
        texts = [c.to_json() for c in certs]
        entries = [ledger.entry_path(folder, c.body["chain"]["sequence"]) for c in certs]
        manifest = None if store is None or store.path is None else Path(store.path) / "manifest.json"
        if manifest is not None:
            forgotten = [c.body["forget_set"]["training_indices"] for c in certs]
            store.mark_removed(
                np.concatenate([np.asarray(f, dtype=np.int64) for f in forgotten]), persist=False
            )

        data = datafiles.plan(folder, est)  # files a load mapped from this folder: not written again

        def stage(j: Journal) -> None:
            _stage_model(model, folder, j, data)
            for entry, text in zip(entries, texts):
                with open(j.staged(entry), "w", encoding="ascii") as f:
                    f.write(text)
            if manifest is not None:
                j.staged(manifest).write_text(store.manifest_json())

        targets = [*_targets(folder, est, data[1]), *entries, *([manifest] if manifest else [])]
        _commit(folder, targets, stage)
        datafiles.prune(folder, data[0])
    return certs


def refresh_in_folder(folder, *, timeout: float | None = None) -> dict:
    """Refill the gradient store of the model saved in ``folder`` without the samples erased so far.

    Under the folder's lock; the store (on disk, named in ``bundle.json``) commits a new generation with
    one atomic manifest write, so a crash leaves the old store or the new one. Returns
    :func:`.refresh.refresh_store`'s summary. Raises :class:`ModelFolderError` when the model keeps no
    on-disk store.
    """
    from traceprop_frames.errors import ModelFolderError
    from traceprop_frames.unlearn.refresh import refresh_store

    folder = Path(folder)
    with locked(folder, timeout):
        est = final_estimator(load_model(folder))
        if est.store_ is None or est.store_.path is None:
            raise ModelFolderError(f"{folder}: the model keeps no gradient store on disk: nothing to refresh")
        return refresh_store(est)
