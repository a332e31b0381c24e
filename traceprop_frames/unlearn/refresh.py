"""Refresh the gradient store after erasure: retrain the ensemble members and recompute every checkpoint's
gradients without the erased samples, so the store no longer carries their influence.

An erasure corrects the model; the store's checkpoints (and its extra ensemble members) were saved while
training on every sample. :func:`refresh_store` replaces them: the main member's checkpoint is the
corrected model itself (with ``n_checkpoints > 1``, its earlier snapshots come from retraining on the
remaining samples), every extra member is retrained on the remaining samples with its own seed, and the
erased samples are marked removed before the new store is committed (an on-disk store commits a new
generation with one atomic manifest write; the old generation stays readable until then).

``est.unlearn(..., refresh=True)`` refreshes before signing, and the certificate records it
(``store.refreshed``); :func:`erased_influence` says how many erased samples a store still carries
(``traceprop verify MODEL`` reports it; ``traceprop refresh MODEL`` refreshes a model folder's store).
"""

from __future__ import annotations

import copy
import time

import numpy as np


def has_store(est) -> bool:
    """True if ``est`` keeps a gradient store (``store_``)."""
    return getattr(est, "store_", None) is not None


def refill(est, module, sample_weight):
    """A new store for ``module`` trained on the samples with ``sample_weight > 0`` (the others marked
    removed); ``est`` is not changed. Returns ``(store, seconds)``."""
    t0 = time.perf_counter()
    w = np.asarray(sample_weight, dtype=np.float32)
    tmp = copy.copy(est)  # the fill reads module_ and sample_weight_: the corrected ones
    tmp.module_, tmp.sample_weight_ = module, w
    old = getattr(est, "store_", None)
    if old is not None:  # where the store is now (an on-disk one: a new generation in the same folder)
        tmp.store = old.path if old.path is not None else True
    ckpts: list[dict] = []
    if tmp._wants_ckpts():  # the main member's earlier snapshots: a trajectory on the remaining samples
        tmp._fit_module(tmp.X_train_, tmp.y_train_, w, callback=ckpts.append)
    store = tmp._fill_store(ckpts, removed=np.flatnonzero(w == 0))
    return store, time.perf_counter() - t0


def refresh_store(est) -> dict:
    """Refill ``est``'s gradient store without the samples erased so far, in place.

    Parameters
    ----------
    est : fitted estimator with a gradient store (``store=`` at fit)

    Returns
    -------
    dict
        ``{"erased": samples the store no longer carries, "checkpoints": n, "seconds": s}``.

    Raises
    ------
    UnlearningError
        The estimator keeps no gradient store.

    Examples
    --------
    >>> import numpy as np
    >>> from traceprop_frames.estimators import TorchMLPClassifier
    >>> from traceprop_frames.unlearn import generate_key
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 3)).astype("float32"); y = (X[:, 0] > 0).astype(int)
    >>> est = TorchMLPClassifier(hidden_layer_sizes=(4,), max_iter=3, store=True, k=16, n_models=2,
    ...                          random_state=0).fit(X, y)
    >>> cert = est.unlearn(samples=[0, 1], key=generate_key())
    >>> erased_influence(est.store_)
    2
    >>> refresh_store(est)["erased"], erased_influence(est.store_)
    (2, 0)
    """
    from traceprop_frames.errors import UnlearningError

    if not has_store(est):
        raise UnlearningError(
            f"{type(est).__name__} keeps no gradient store: nothing to refresh (fit with store=True or a path)"
        )
    held = erased_influence(est.store_)
    est.store_, seconds = refill(est, est.module_, est.sample_weight_)
    return {"erased": held, "checkpoints": int(est.store_.n_checkpoints), "seconds": seconds}


def erased_influence(store) -> int:
    """How many erased samples ``store``'s checkpoints were computed with (0: none, or no store).

    A store filled at fit time saw every sample it later marks removed; a refreshed store records how
    many were already removed when it was filled (``extra["n_removed_at_fill"]``).
    """
    if store is None:
        return 0
    return int(np.count_nonzero(store.removed)) - int(store.extra.get("n_removed_at_fill", 0))


def store_section(est, refreshed: bool) -> dict | None:
    """The certificate's ``store`` section (None without a store)."""
    if not has_store(est):
        return None
    return {"refreshed": bool(refreshed), "checkpoints": int(est.store_.n_checkpoints)}
