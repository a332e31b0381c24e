"""Erasure requests: source rows → training samples (through lineage), and the certificate record."""

from __future__ import annotations

import os

import numpy as np

from traceprop_frames.errors import UnlearningError
from traceprop_frames.lineage.refs import setdiff_ids, sorted_unique
from traceprop_frames.unlearn.objective import is_convex
from traceprop_frames.unlearn.record import new_body


def forget_from_request(
    lineage, source, rows=None, cache: dict | None = None, ids: np.ndarray | None = None
) -> tuple[np.ndarray, list[dict]]:
    """Training samples whose lineage contains any requested source row, and a record per source.

    The forget set is the samples that *carry* a requested row (direct lineage). Samples that depend on
    it only through a shared statistic computed over many rows (a column mean used for scaling) stay
    trained; their number is recorded as ``samples_via_shared_context`` so the certificate says so.

    ``source`` is a path (with ``rows``) or a mapping ``{path: rows}``. Unknown sources or row numbers
    raise :class:`UnknownSourceError` / :class:`UnknownRowError` listing them; rows that feed no
    training sample are listed in the record's ``rows_without_samples``. ``cache`` (a dict kept across
    the requests of one batch) keeps, per source, the rows that feed samples and the file's current hash;
    ``ids`` (with a single ``source`` path) are the rows' global ids, looked up already
    (:func:`ids_by_request`).
    """
    from traceprop_frames.errors import UnknownRowError, UnknownSourceError
    from traceprop_frames.lineage import REGISTRY

    if lineage is None:
        raise UnlearningError(
            "this model was trained without lineage, so source rows cannot be mapped to training samples; "
            "train on a traced frame (tpf.read_csv ...) or pass samples=[training indices]."
        )
    requests = split_request(source, rows)
    cand = None if cache is None else cache.get("_source_ids")
    if cand is None:
        cand = lineage.source_ids()
        if cache is not None:
            cache["_source_ids"] = cand
    forget, records = [], []
    entries = {} if cache is None else cache  # one lineage.sources() per call at most
    for path, r in requests:
        if ids is None:
            try:
                ids = REGISTRY.ids_for_rows(path, r, candidates=cand)
            except (UnknownSourceError, UnknownRowError) as e:
                raise type(e)(f"erasure request refused, nothing was changed: {e}") from None
        direct = lineage.rows_from_ids(ids, direct=True)
        forget.append(direct)
        # samples that read these rows only through a shared statistic (a column mean, a partition total)
        via_context = setdiff_ids(lineage.rows_from_ids(ids), direct) if lineage.has_context else direct[:0]
        base, fed = _source_entry(lineage, path, cand, entries)
        req = sorted_unique(np.atleast_1d(np.asarray(r, dtype=np.int64)))
        records.append(
            {
                **base,
                "rows": req.tolist(),
                "rows_without_samples": req[~_contains(fed, req)].tolist(),
                "samples_via_shared_context": int(via_context.size),
            }
        )
        ids = None
    out = sorted_unique(np.concatenate(forget)) if forget else np.zeros(0, np.int64)
    return out, records


def split_request(source, rows) -> list:
    """``[(path, rows), ...]`` of an erasure request given as ``source={path: rows}`` or ``source=path,
    rows=[...]``."""
    if isinstance(source, dict):
        if rows is not None:
            raise UnlearningError("pass either source={path: rows} or source=path with rows=, not both")
        return list(source.items())
    if rows is None:
        raise UnlearningError(f"which rows of {os.fspath(source)!r}? pass rows=[...] (0-based data rows)")
    return [(source, rows)]


def _source_entry(lineage, path, cand, cache: dict) -> tuple[dict, np.ndarray]:
    """(the request record's fields about source file ``path``, the sorted rows of it that feed samples),
    computed once per path and kept in ``cache``."""
    from traceprop_frames.lineage import REGISTRY

    key = os.fspath(path)
    if key not in cache:
        hits = REGISTRY.find(path, cand)
        if "_behind" not in cache:
            cache["_behind"] = lineage.sources()
        behind = cache["_behind"]
        parts = [behind.get(s.path, np.zeros(0, np.int64)) for s in hits]  # each sorted and distinct
        fed = parts[0] if len(parts) == 1 else sorted_unique(np.concatenate(parts))
        src = hits[0]
        now = src.current_sha256()
        unchanged = None if src.abspath is None else (now is not None and now == src.sha256)
        base = {
            "path": src.path,
            "abspath": src.abspath,
            "format": src.format,
            "n_rows": src.n_rows,
            "sha256_at_load": src.sha256,
            "sha256_now": now,
            "file_unchanged": unchanged,
        }
        cache[key] = (base, fed)
    return cache[key]


def forget_from_requests(lineage, requests, cache: dict) -> list[tuple[np.ndarray, list[dict]]]:
    """:func:`forget_from_request` for every request of a batch (``{"source", "rows"}`` each) at once.

    The rows are looked up once per source file (:func:`ids_by_request`, which refuses the whole batch
    on an unknown source or row) and mapped to training samples by one search over the lineage for all
    requests; returns ``(forget, [record])`` per request, as :func:`forget_from_request` does.
    """
    if lineage is None:
        return [forget_from_request(lineage, r["source"], r["rows"]) for r in requests]  # raises
    ids = ids_by_request(lineage, requests, cache)
    counts = [len(i) for i in ids]
    flat = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    direct = lineage.rows_from_ids_grouped(flat, counts, direct=True)
    if lineage.has_context:
        every = lineage.rows_from_ids_grouped(flat, counts)
        via = [int(setdiff_ids(e, f).size) for e, f in zip(every, direct)]
    else:
        via = [0] * len(requests)
    wanted = [sorted({int(x) for x in np.atleast_1d(r["rows"]).tolist()}) for r in requests]
    entries = [_source_entry(lineage, r["source"], cache["_source_ids"], cache) for r in requests]
    # rows that feed no sample, for the whole batch in one search per source file
    starts = np.cumsum([0] + [len(w) for w in wanted])
    by_path: dict[str, list[int]] = {}
    for i, r in enumerate(requests):
        by_path.setdefault(os.fspath(r["source"]), []).append(i)
    fed_rows = np.zeros(int(starts[-1]), bool)
    for at in by_path.values():
        pos = np.concatenate([np.arange(starts[i], starts[i + 1]) for i in at])
        rows = np.array([x for i in at for x in wanted[i]], dtype=np.int64)
        fed_rows[pos] = _contains(entries[at[0]][1], rows)
    out = []
    for i, (w, (base, _)) in enumerate(zip(wanted, entries)):
        fed = fed_rows[starts[i] : starts[i + 1]].tolist()
        record = {**base, "rows": w, "rows_without_samples": [x for x, f in zip(w, fed) if not f],
                  "samples_via_shared_context": via[i]}  # fmt: skip
        out.append((direct[i], [record]))
    return out


def ids_by_request(lineage, requests, cache: dict) -> list[np.ndarray]:
    """The global row ids of each batch request's rows, looked up once per source file.

    ``requests``: ``{"source", "rows"}`` each. A source or row the lineage does not know refuses the whole
    batch (:class:`UnknownSourceError` / :class:`UnknownRowError`) before anything changes.
    """
    from traceprop_frames.errors import UnknownRowError, UnknownSourceError
    from traceprop_frames.lineage import REGISTRY

    if lineage is None:
        return [None] * len(requests)
    if "_source_ids" not in cache:
        cache["_source_ids"] = lineage.source_ids()
    cand = cache["_source_ids"]
    by_path: dict[str, list[int]] = {}
    for i, r in enumerate(requests):
        by_path.setdefault(os.fspath(r["source"]), []).append(i)
    out: list = [None] * len(requests)
    for path, at in by_path.items():
        rows = [np.atleast_1d(np.asarray(requests[i]["rows"], dtype=np.int64)) for i in at]
        try:
            ids = REGISTRY.ids_for_rows(path, np.concatenate(rows), candidates=cand)
        except (UnknownSourceError, UnknownRowError) as e:
            raise type(e)(f"erasure request refused, nothing was changed: {e}") from None
        # one block of ids per source the path names (the same file read twice), each in request order
        ids = ids.reshape(-1, sum(len(r) for r in rows))
        for i, part in zip(at, np.split(ids, np.cumsum([len(r) for r in rows])[:-1], axis=1)):
            out[i] = part.reshape(-1)
    return out


def _contains(sorted_unique: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``np.isin(values, sorted_unique)`` by binary search (``O(k log n)``, not ``O(n)``)."""
    if sorted_unique.size == 0:
        return np.zeros(len(values), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_unique, values), len(sorted_unique) - 1)
    return sorted_unique[pos] == values


def certificate_body(est, result, *, lineage=None, request_sources=(), samples=None,
                     regulations=("EU_AI_ACT_ART26", "GDPR_ART17"), previous=(),
                     store_refreshed: bool = False, shared_hits=None) -> dict:  # fmt: skip
    """The certificate record of one unlearning run (unsigned); ``store_refreshed``: the gradient store
    was refilled without the erased samples before signing (:mod:`.refresh`); ``shared_hits``: the
    analysis of the shared statistics that read the request's rows, when the caller made it already
    (:class:`~.shared_effects.SharedHits`)."""
    forget = result.forget
    source_rows = {}
    if lineage is not None and forget.size:
        # the rows the samples carry; statistics they also read are listed in ``shared_statistics``
        source_rows = {k: v.tolist() for k, v in lineage.sources(rows=forget, direct=True).items()}
    body = new_body(
        status="erased" if forget.size else "no-op",
        regulations=list(regulations),
        request={"sources": list(request_sources), "samples": None if samples is None else list(samples)},
        forget_set={
            "training_indices": forget.tolist(),
            "count": int(forget.size),
            "share": float(forget.size / max(result.n_train, 1)),
            "already_removed": result.already_removed.tolist(),
            "n_train": result.n_train,
            "n_active_before": result.n_active_before,
            "n_active_after": result.n_active_after,
            "source_rows": source_rows,
        },
        method={
            "name": result.method,
            "parameters": result.params,
            "iterations": int(result.iterations),
            "seconds": float(result.seconds),
        },
        model={
            "estimator": f"{type(est).__module__}.{type(est).__qualname__}",
            "convex": is_convex(est),
            "n_parameters": int(result.n_parameters),
            "fingerprint_before": result.fingerprint_before,
            "fingerprint_after": result.fingerprint_after,
        },
        evidence=_evidence_section(result),
        lineage={"erase_op": None, "ops": []},
        previous_certificates=list(previous),
    )
    _add_store_section(body, est, store_refreshed, int(forget.size))
    missed = bound_missed_statement(result)
    if missed:
        body["not_guaranteed"].append(missed)
    if forget.size:
        from traceprop_frames.unlearn.shared_effects import attach_section

        attach_section(body, lineage, request_sources, forget, hits=shared_hits)
    return body


def _evidence_section(result) -> dict:
    """The certificate's ``evidence``: what was measured, and the bound statement it supports."""
    return {
        "forget_loss_before": result.forget_loss_before,
        "forget_loss_after": result.forget_loss_after,
        "holdout": result.holdout,
        "residual_grad_norm": result.residual_grad_norm,
        "strong_convexity": result.strong_convexity,
        "certified_bound": result.certified_bound,
        "bound_statement": bound_statement(result),
    }


def bound_statement(result) -> str:
    """What the measured evidence proves about the parameters after erasure, in one sentence."""
    ball = (result.params or {}).get("bound_terms", {}).get("ball_radius")
    if result.certified_bound is not None and ball is not None:
        return (
            f"The objective is {result.strong_convexity:.3e}-strongly convex on the ball of radius "
            f"{ball:.3e} around the parameters after erasure, a ball that holds the exact optimum on the "
            "remaining data (by the penalty's global modulus), so the parameters are within "
            f"{result.certified_bound:.3e} (Euclidean norm, float64 rounding of the measured gradient "
            "included) of that optimum, i.e. of retraining from scratch to convergence."
        )
    if result.certified_bound is not None:
        return (
            f"The objective is {result.strong_convexity:.3e}-strongly convex, so the parameters after "
            f"erasure are within {result.certified_bound:.3e} (Euclidean norm) of the exact optimum on the "
            "remaining data, i.e. of retraining from scratch to convergence."
        )
    if result.method == "none":
        return "No-op: every requested sample had been erased before; the model was not changed."
    return "No certified bound: the objective is not convex; see the measured evidence."


def bound_missed_statement(result) -> str | None:
    """The ``not_guaranteed`` line of a certified bound above the requested ``bound`` (None when met,
    or when nothing was requested or certified).

    The certificate states the bound it reached either way; this line says that it is not the one asked
    for, by how much, why the solve stopped, and what the user can do about it.
    """
    params = result.params or {}
    want, got = params.get("bound"), result.certified_bound
    if want is None or got is None or float(got) <= float(want):  # NaN falls through: not met
        return None
    want, got = float(want), float(got)
    max_iter = params.get("max_iter")
    refit = (
        "fit the estimator on the re-run pipeline's output" if params.get("rebuild") else "method='retrain'"
    )
    retrain = f"retrain from scratch on the remaining data ({refit})"
    head = (
        f"The certified bound was not met: the parameters are certified within {got:.3e} of the exact "
        f"optimum, above the requested bound={want:.3e} (by {got - want:.3e}, {got / want:.3g} times); "
    )
    if max_iter is not None and int(result.iterations) >= int(max_iter):
        return head + (
            f"the solve stopped at max_iter={int(max_iter)} Newton step(s), so more steps may lower "
            "it. To meet it, repeat this erasure on a copy "
            f"of the model saved before it with a larger max_iter, or {retrain}; or accept the stated bound."
        )
    return head + (
        f"the solve stopped after {int(result.iterations)} Newton step(s), before max_iter, because the "
        "residual gradient stopped decreasing at its float64 rounding level: more steps cannot lower the "
        f"bound (the float64 rounding of the gradient at this data size dominates it). To be rid of the erased "
        f"rows without a correction bound, {retrain}; or accept the stated bound."
    )


def _add_store_section(body: dict, est, store_refreshed: bool, n_forgotten: int) -> None:
    """The ``store`` section, and the not-guaranteed note of a store that still carries erased samples."""
    from traceprop_frames.unlearn.refresh import store_section

    section = store_section(est, store_refreshed)
    if section is not None:
        body["store"] = section
    note = None if store_refreshed else store_statement(getattr(est, "store_", None), n_forgotten)
    if note:
        body["not_guaranteed"].append(note)


def store_statement(store, n_forgotten: int) -> str | None:
    """What an erasure leaves in the gradient store, said in the certificate (None without a store).

    The store's checkpoints (every ensemble member's too) were saved while training on every sample:
    the erased samples' rows are marked removed and never returned, but the checkpoints' parameters
    and the other samples' stored gradients were computed by models that saw them.
    """
    if store is None or not n_forgotten:
        return None
    n_ckpt = int(store.n_checkpoints)
    return (
        f"The gradient store's {n_ckpt} checkpoint(s) (ensemble members included) were saved during "
        "training, before this erasure: the erased samples' gradients are marked removed and are never "
        "returned by influence, but those checkpoints' parameters and the other samples' stored gradients "
        "were computed by models trained with the erased samples. To remove that too, refresh the store "
        "(est.unlearn(..., refresh=True), traceprop_frames.unlearn.refresh.refresh_store(est), or "
        "`traceprop refresh MODEL`)."
    )


def _record_erasure(est_or_none, lineage, body: dict):
    """Append an ``erase`` op to the lineage chain; returns the new lineage (or None)."""
    from traceprop_frames.lineage import OpNode

    if lineage is None or not body["forget_set"]["count"]:
        return lineage
    node = OpNode(
        "erase",
        {
            "certificate_id": body["certificate_id"],
            "n_samples": body["forget_set"]["count"],
            "method": body["method"]["name"],
        },
        (lineage.node,),
    )
    out = lineage.with_node(node)
    body["lineage"] = {"erase_op": "erase", "ops": out.ops()}
    return out
