"""Erasure from a saved model folder as one crash-safe commit (``traceprop erase``).

Kept apart from :mod:`.bundle` (which only reads and writes folders) so that the erasure, the ledger and
the folder format import one another downward only: ``folder`` → ``correction`` → ``ledger`` → ``bundle``.
"""

from __future__ import annotations

from pathlib import Path

from traceprop_frames._durable import Journal
from traceprop_frames.unlearn import ledger
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
    folder = Path(folder)
    with locked(folder, timeout):
        model = load_model(folder)
        est = final_estimator(model)
        store = est.store_
        est.store_ = None  # the store's marks are staged below, not written directly
        cert = unlearn_estimator(est, chain=ledger.next_link(folder), **request)
        est.store_ = store
        if dry_run:
            return cert
        entry = ledger.entry_path(folder, cert.body["chain"]["sequence"])
        manifest = None if store is None or store.path is None else Path(store.path) / "manifest.json"
        if manifest is not None:
            store.mark_removed(cert.body["forget_set"]["training_indices"], persist=False)

        def stage(j: Journal) -> None:
            _stage_model(model, folder, j)
            j.staged(entry).write_text(cert.to_json(), encoding="ascii")
            if manifest is not None:
                j.staged(manifest).write_text(store.manifest_json())

        targets = [*_targets(folder, est), entry, *([manifest] if manifest else [])]
        _commit(folder, targets, stage)
    return cert
