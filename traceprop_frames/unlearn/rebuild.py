"""Erasure as if the rows had never existed: re-run the feature pipeline without them, correct the model.

``est.unlearn(source, rows, rebuild=fn)``:

1. **select** - the requested rows' global ids (plus rows erased by earlier rebuilds, ``est.erased_rows_``);
2. **re-run** - ``fn()`` inside :func:`~traceprop_frames.lineage.erasure_scope.skipping_rows`: the traced
   readers (``tpf.read_csv`` / ``read_parquet``, ``con.read_csv`` / ``read_parquet``) drop those rows and
   keep every other row's original number and the file's sha256, so every statistic, aggregate and
   filter downstream is recomputed without them. ``fn`` returns ``(X, y)`` as it did for ``fit``;
3. **check** - the rebuilt table's lineage (shared statistics included) must not contain an erased row;
   otherwise the re-run read a source some other way and the erasure is refused, nothing changed;
4. **map** - old samples to rebuilt rows by their direct source rows (:mod:`.sample_map`): vanished,
   changed, unchanged, new. Sample indices stay stable (vanished samples keep their index with weight 0;
   new rows are appended), so earlier certificates and the gradient store still name the right samples;
5. **solve** - Newton from the current parameters to the rebuilt table's optimum (convex model, certified
   bound against that table) or the gradient correction (MLP) (:mod:`.rebuild_solve`);
6. **sign** - the certificate (``rebuild`` and ``shared_statistics`` sections) and adopt the new state.
"""

from __future__ import annotations

import time

import numpy as np

from traceprop_frames.errors import UnlearningError
from traceprop_frames.lineage.context import isin_ids, pool_hits
from traceprop_frames.lineage.refs import sorted_unique
from traceprop_frames.lineage.sources import ROW_BITS, ROW_MASK

_EMPTY = np.zeros(0, dtype=np.int64)


def skip_map(ids: np.ndarray) -> dict:
    """``{abspath: (sha256, rows)}`` for the global row ids ``ids`` (what the readers must drop)."""
    from traceprop_frames.lineage import REGISTRY

    ids = sorted_unique(np.asarray(ids, dtype=np.int64))
    sids = ids >> np.int64(ROW_BITS)
    out: dict = {}
    for sid in sorted_unique(sids).tolist():
        src = REGISTRY.get(int(sid))
        if src.abspath is None:
            raise UnlearningError(
                f"source {src.path!r} is in memory (tpf.track): a pipeline re-run cannot skip its rows. Read "
                "it from a file with tpf.read_csv / tpf.read_parquet inside the rebuild function."
            )
        rows = ids[sids == sid] & np.int64(ROW_MASK)
        sha, prev = out.get(src.abspath, (src.sha256, _EMPTY))
        if sha != src.sha256:
            raise UnlearningError(
                f"{src.abspath!r} was loaded in two versions (sha256 {sha[:12]}… and {src.sha256[:12]}…); "
                "erase from a model trained on one version of each file."
            )
        out[src.abspath] = (sha, sorted_unique(np.concatenate([prev, rows])))
    return out


def request_records(lineage, source, rows) -> tuple[np.ndarray, list[dict], object]:
    """The request's global row ids, its certificate records and the analysis of the shared statistics
    that read those rows (:class:`~.shared_effects.SharedHits`), from one scan of the lineage's direct ids
    (no inverted index: a rebuild maps samples by the re-run, not by a look-up of the rows).

    Same records as :func:`~.request.forget_from_request`; unknown sources or rows raise before anything
    changes.
    """
    from traceprop_frames.errors import UnknownRowError, UnknownSourceError
    from traceprop_frames.lineage import REGISTRY
    from traceprop_frames.unlearn.request import split_request
    from traceprop_frames.unlearn.shared_effects import SharedHits

    if lineage is None:
        raise UnlearningError("this model was trained without lineage: rebuild= needs source rows to skip")
    requests = split_request(source, rows)
    cand = lineage.source_ids()
    parts, records = [], []
    for path, r in requests:
        try:
            ids = REGISTRY.ids_for_rows(path, r, candidates=cand)
        except (UnknownSourceError, UnknownRowError) as e:
            raise type(e)(f"erasure request refused, nothing was changed: {e}") from None
        parts.append(ids)
        records.append(
            _record(REGISTRY.find(path, cand)[0], np.atleast_1d(np.asarray(r, dtype=np.int64)), ids)
        )
    erased = sorted_unique(np.concatenate(parts)) if parts else _EMPTY
    hits = SharedHits(lineage, erased)
    carried = isin_ids(lineage.ids, erased)  # entries of the direct ids that are requested rows
    hits.carried = carried  # the sample match needs the same mask when nothing else is erased
    fed = sorted_unique(lineage.ids[carried])  # requested rows some sample carries
    for rec, ids in zip(records, parts):
        rec["rows_without_samples"] = sorted(
            {int(x) for x in (ids[~isin_ids(ids, fed)] & np.int64(ROW_MASK))}
        )
        mine = carried if len(parts) == 1 else isin_ids(lineage.ids, ids)
        carriers = np.searchsorted(lineage.offsets, np.flatnonzero(mine), side="right") - 1  # their samples
        own = hits if len(parts) == 1 else SharedHits(lineage, ids)
        rec["samples_via_shared_context"] = own.touched(carriers)[1]
    return erased, records, hits


def _record(src, rows: np.ndarray, ids) -> dict:
    now = src.current_sha256()
    return {
        "path": src.path, "abspath": src.abspath, "format": src.format, "n_rows": src.n_rows,
        "sha256_at_load": src.sha256, "sha256_now": now,
        "file_unchanged": None if src.abspath is None else (now is not None and now == src.sha256),
        "rows": sorted({int(x) for x in rows.tolist()}), "rows_without_samples": [],
        "samples_via_shared_context": 0,
    }  # fmt: skip


def note_erased_rows(est, body: dict) -> None:
    """Remember the source rows a (plain) erasure was asked for, so a later ``rebuild=`` re-run leaves
    them out too: the reference then is the files without every row erased so far."""
    rows_by_file = dict(getattr(est, "erased_rows_", {}))
    for rec in body["request"]["sources"]:
        if rec.get("abspath") is None:
            continue
        sha, rows = rows_by_file.get(rec["abspath"], (rec["sha256_at_load"], []))
        if sha == rec["sha256_at_load"]:
            rows_by_file[rec["abspath"]] = (sha, sorted(set(rows) | set(rec["rows"])))
    est.erased_rows_ = rows_by_file


def earlier_ids(est, lineage) -> np.ndarray:
    """Global ids (this process) of the rows earlier rebuild erasures skipped (``est.erased_rows_``, kept
    as ``{abspath: (sha256, rows)}`` so a saved model means the same rows in another process)."""
    from traceprop_frames.lineage import REGISTRY, encode

    parts = [_EMPTY]
    for path, (sha, rows) in getattr(est, "erased_rows_", {}).items():
        for src in REGISTRY.find(path, lineage.source_ids()):
            if src.sha256 == sha:
                parts.append(encode(src.id, np.asarray(rows, dtype=np.int64)))
    return sorted_unique(np.concatenate(parts))


def _reads_any(lin, ids: np.ndarray) -> bool:
    """Whether any row of ``lin`` carries or (through a shared statistic) read one of ``ids``: one scan of
    the direct ids and of the shared sets' pools, no inverted index."""
    if not ids.size:
        return False
    if isin_ids(lin.ids, ids).any():
        return True
    if not lin.has_context:
        return False
    blocks = list(lin.context.blocks.values())
    return any(h.any() for h in pool_hits(blocks, ids)) and bool(lin.context.hit_sets(ids).size)


def run_rebuild(rebuild, erased: np.ndarray):
    """``rebuild()`` with the readers skipping ``erased``; returns ``(X, y, lineage, seconds)``."""
    from traceprop_frames.frames import has_lineage, resolve
    from traceprop_frames.lineage.erasure_scope import skipping_rows

    if not callable(rebuild):
        raise UnlearningError(f"rebuild= must be a callable returning (X, y), got {type(rebuild).__name__}")
    t0 = time.perf_counter()
    with skipping_rows(skip_map(erased)):
        out = rebuild()
    seconds = time.perf_counter() - t0
    if not (isinstance(out, tuple) and len(out) == 2):
        raise UnlearningError("the rebuild function must return (X, y): the features and labels it trains on")
    X, y = out
    if not has_lineage(X):
        raise UnlearningError(
            "the rebuilt features carry no lineage: build them from tpf.read_csv / tpf.read_parquet (or a "
            "traced connection) inside the rebuild function, as for fit."
        )
    lin = resolve(X)
    if _reads_any(lin, erased):
        still = lin.rows_from_ids(erased)
        sources = {k: v[:5].tolist() for k, v in lin.sources(rows=still[:1]).items()}
        raise UnlearningError(
            f"the re-run still read erased rows ({still.size} rebuilt rows depend on them, e.g. row "
            f"{int(still[0])} via {sources}): some source was not read through a traced reader. Nothing was "
            "changed; read every source with tpf.read_csv / tpf.read_parquet / con.read_csv inside it."
        )
    return X, y, lin, seconds


def _plain_frame(est, X) -> np.ndarray | None:
    """``X``'s values as float32 when scikit-learn's validation could only pass them through: a frame
    with exactly the fitted columns, in order, of numpy numeric dtypes, every value finite. None
    otherwise (validated by scikit-learn, which words the error)."""
    names = getattr(est, "feature_names_in_", None)
    columns = getattr(X, "columns", None)
    if names is None or columns is None or not hasattr(X, "dtypes") or columns.tolist() != names.tolist():
        return None
    if not all(isinstance(t, np.dtype) and t.kind in "biuf" for t in X.dtypes.tolist()):
        return None
    values = X.to_numpy(dtype=np.float64)
    return values.astype(np.float32) if np.isfinite(values).all() else None


def _features(est, X) -> np.ndarray:
    """The rebuilt features as the model validates test inputs (same columns, float32)."""
    plain = _plain_frame(est, X)
    if plain is not None:
        return plain
    try:
        return est._validate_test(X)
    except ValueError as e:
        raise UnlearningError(
            f"the rebuilt table does not have the columns the model was fit on ({e}). Return the training "
            "features exactly as for fit; for a scikit-learn Pipeline use unlearn_pipeline (it refits the "
            "transformers)."
        ) from None


def _labels(est, y) -> np.ndarray:
    y = np.asarray(y).reshape(-1)
    bad = ~np.isin(y, est.classes_)
    if bad.any():
        raise UnlearningError(
            f"the rebuilt labels include classes the model was not fit on: {np.unique(y[bad])[:5]}"
        )
    return (y == est.classes_[1]).astype(np.float32)


def _is_range(j: np.ndarray, n: int) -> bool:
    return len(j) == n and (n == 0 or (int(j[0]) == 0 and bool(np.all(np.diff(j) == 1))))


def layout(est, Xn: np.ndarray, yn: np.ndarray, smap) -> dict:
    """The corrected training table with stable sample indices: old index ``i`` holds its rebuilt row (or
    its old row with weight 0 if it vanished); rows no old sample maps to are appended with weight 1."""
    X_old, y_old, w_old = est.X_train_, est.y_train_, est.sample_weight_
    matched, vanished, new_rows = smap.matched, smap.vanished, smap.new_rows
    j = smap.new_of_old[matched]
    in_order = _is_range(j, len(Xn))
    if in_order and not len(new_rows) and 0 < len(vanished) <= _RUNS:
        return _layout_runs(X_old, y_old, w_old, Xn, yn, vanished)
    Xj, yj = (Xn, yn) if in_order else (Xn[j], yn[j])  # the matched samples' rebuilt rows
    every = len(matched) == len(X_old)
    Xm, ym = (X_old, y_old) if every else (X_old[matched], y_old[matched])
    changed = matched[(Xm != Xj).any(axis=1) | (ym != yj)]
    w = np.concatenate([w_old, np.ones(len(new_rows), dtype=np.float32)])
    w[vanished] = 0.0
    if every and not len(new_rows):  # nothing vanished or appeared: the rebuilt table is the table
        X, y = np.ascontiguousarray(Xj, dtype=np.float32), np.asarray(yj, dtype=np.float32)
    else:
        X = np.concatenate([X_old, Xn[new_rows]]).astype(np.float32, copy=False)
        y = np.concatenate([y_old, yn[new_rows]]).astype(np.float32, copy=False)
        X[matched], y[matched] = Xj, yj
    return {"X": np.ascontiguousarray(X), "y": y, "w": w, "changed": changed,
            "forget": vanished[w_old[vanished] > 0], "already": vanished[w_old[vanished] == 0]}  # fmt: skip


_RUNS = 256  # up to this many vanished samples, :func:`layout` copies the runs between them as slices


def _layout_runs(X_old, y_old, w_old, Xn, yn, vanished) -> dict:
    """:func:`layout` when the rebuilt rows are the old samples in order minus a few vanished ones: the
    runs between vanished samples are copied and compared slice by slice (no gather, no scatter)."""
    n = len(X_old)
    X, y = np.empty_like(X_old), np.empty_like(y_old)
    differ = np.zeros(n, dtype=bool)
    buf = np.empty(X_old.shape, dtype=bool)
    src = 0
    for a, b in zip(np.r_[0, vanished + 1].tolist(), np.r_[vanished, n].tolist()):
        k = b - a
        X[a:b], y[a:b] = Xn[src : src + k], yn[src : src + k]
        np.not_equal(X_old[a:b], X[a:b], out=buf[a:b])
        np.any(buf[a:b], axis=1, out=differ[a:b])
        differ[a:b] |= y_old[a:b] != y[a:b]
        src += k
    X[vanished], y[vanished] = X_old[vanished], y_old[vanished]
    differ[vanished] = False
    w = w_old.copy()
    w[vanished] = 0.0
    return {"X": X, "y": y, "w": w, "changed": np.flatnonzero(differ),
            "forget": vanished[w_old[vanished] > 0], "already": vanished[w_old[vanished] == 0]}  # fmt: skip


def layout_lineage(old, new, smap):
    """The lineage of :func:`layout`'s rows: rebuilt rows' lineage; vanished samples keep their direct rows."""
    from traceprop_frames.lineage import OpNode, RowLineage

    vanished = smap.vanished
    node = OpNode("rebuild", {"vanished": int(len(vanished)), "new": int(len(smap.new_rows))},
                  tuple(n for n in (new.node, old.node) if n is not None))  # fmt: skip
    if not len(vanished) and _is_range(smap.new_of_old, len(new)):
        return new.with_node(node)  # the rebuilt rows, in the old samples' order: no copy
    cat = RowLineage.concat([new, old.take(vanished).direct()]) if len(vanished) else new
    pos = np.empty(len(old), dtype=np.int64)
    pos[smap.matched] = smap.new_of_old[smap.matched]
    pos[vanished] = len(new) + np.arange(len(vanished))
    return cat.take(np.concatenate([pos, smap.new_rows]), node=node)


def _solve(est, tab: dict, params: dict):
    """``(module, method, info)``: Newton to the rebuilt table (convex) or the gradient correction."""
    from traceprop_frames.unlearn.objective import is_convex
    from traceprop_frames.unlearn.rebuild_solve import gradient_to_table, newton_to_table

    if is_convex(est) and hasattr(est, "C"):
        params.setdefault("bound", 1e-6)
        params.setdefault("max_iter", 25)
        bound, max_iter = float(params["bound"]), int(params["max_iter"])
        after, info = newton_to_table(est, tab["X"], tab["y"], tab["w"], bound, max_iter)
        return after, "newton", info
    kw = {k: params[k] for k in ("steps", "damping", "curvature_samples") if k in params}
    after, info = gradient_to_table(est, est.X_train_, est.y_train_, est.sample_weight_, tab["X"], tab["y"],
                                    tab["w"], **kw)  # fmt: skip
    return after, "gradient", info


def _result(est, tab, after, method, info, params, seconds, holdout):
    """The :class:`~.correction.UnlearnResult` of a rebuild erasure (the certificate's evidence)."""
    import torch

    from traceprop_frames.unlearn.correction import UnlearnResult, _accuracy
    from traceprop_frames.unlearn.objective import parameter_fingerprint

    f = tab["forget"]
    with torch.no_grad():
        loss_before = est.per_sample_loss(est.module_, est.X_train_[f], est.y_train_[f]).double().mean()
        loss_after = est.per_sample_loss(after, est.X_train_[f], est.y_train_[f]).double().mean()
    result = UnlearnResult(
        method=method, params={**params, "rebuild": True, "bound_terms": info.get("bound_terms", {})},
        forget=f, already_removed=tab["already"], n_train=len(tab["w"]),
        n_active_before=int((est.sample_weight_ > 0).sum()), n_active_after=int((tab["w"] > 0).sum()),
        iterations=int(info["iterations"]), seconds=seconds, residual_grad_norm=info["residual_grad_norm"],
        strong_convexity=info.get("strong_convexity"), certified_bound=info.get("certified_bound"),
        forget_loss_before=float(loss_before) if f.size else None,
        forget_loss_after=float(loss_after) if f.size else None,
        fingerprint_before=parameter_fingerprint(est.module_), fingerprint_after=parameter_fingerprint(after),
        n_parameters=sum(p.numel() for p in after.parameters()),
    )  # fmt: skip
    if holdout is not None:
        a0, a1 = _accuracy(est, est.module_, *holdout), _accuracy(est, after, *holdout)
        result.holdout = {"n": len(holdout[1]), "accuracy_before": a0, "accuracy_after": a1, "delta": a1 - a0}
    return result


def _pipeline_name(rebuild) -> str:
    mod = getattr(rebuild, "__module__", None) or "?"
    return f"{mod}:{getattr(rebuild, '__qualname__', type(rebuild).__name__)}"


_REMOVED = (
    "the feature pipeline was re-run without the erased rows (rebuild) and the model corrected to the "
    "rebuilt training table"
)


def _body(est, result, lineage, records, hits, tab, smap, n_rebuilt, rerun_s, rebuild, regulations):
    """The unsigned certificate body of a rebuild erasure. ``shared_statistics`` is there even when no
    sample vanished (an aggregate changed): it names the statistics the re-run recomputed."""
    from traceprop_frames.unlearn.request import certificate_body
    from traceprop_frames.unlearn.shared_effects import attach_section, mark_removed

    body = certificate_body(est, result, lineage=lineage, request_sources=records, samples=None,
                            regulations=regulations, previous=(), shared_hits=hits)  # fmt: skip
    if "shared_statistics" not in body:
        attach_section(body, lineage, records, result.forget, removed=True, how=_REMOVED, hits=hits)
    mark_removed(body, _REMOVED)
    if records and (len(tab["changed"]) or len(smap.vanished)):
        body["status"] = "erased"  # no sample vanished, but features computed from the erased rows changed
    body["rebuild"] = {
        "pipeline": _pipeline_name(rebuild),
        "rows_skipped": {r["path"]: list(r["rows"]) for r in records},
        "samples_unchanged": int(len(smap.matched) - len(tab["changed"])),
        "samples_changed": int(len(tab["changed"])),
        "samples_vanished": int(len(smap.vanished)),
        "samples_new": int(len(smap.new_rows)),
        "n_rebuilt": int(n_rebuilt),
        "seconds": float(rerun_s),
    }
    ev = body["evidence"]
    if result.certified_bound is not None:
        ev["bound_statement"] = (
            f"The objective on the rebuilt training table (the feature pipeline re-run without the erased rows) "
            f"is {result.strong_convexity:.3e}-strongly convex, so the parameters after erasure are within "
            f"{result.certified_bound:.3e} (Euclidean norm, float64 rounding of the measured gradient included) "
            "of its exact optimum, i.e. of retraining from scratch on the re-run pipeline's output."
        )
    if len(tab["changed"]) and getattr(est, "store_", None) is not None:
        body["not_guaranteed"].append(
            f"The gradient store keeps the gradients of {len(tab['changed'])} samples whose features the "
            "rebuild changed, computed on their old features: influence scores of those samples are "
            "approximate until the estimator is refit (a new store)."
        )
    return body


def unlearn_with_rebuild(est, source=None, rows=None, *, rebuild, holdout=None, key=None,
                         regulations=("EU_AI_ACT_ART26", "GDPR_ART17"), chain=None, fitted_statistics=None,
                         **params):  # fmt: skip
    """Erase source rows by re-running the feature pipeline without them; returns a signed Certificate.

    The body of ``est.unlearn(source, rows, rebuild=fn)`` (see the module docstring). ``params``:
    ``bound`` (default 1e-6) and ``max_iter`` (25) for the convex model; ``steps``, ``damping``,
    ``curvature_samples`` for the gradient correction. ``fitted_statistics``: a callable
    ``(n_old_rows, n_remaining) -> [entry]`` naming statistics learned outside lineage (a scikit-learn
    transformer's ``fit``) that the re-run recomputed; they join the ``shared_statistics`` section.

    Raises
    ------
    UnlearningError
        No lineage, a request by samples, a re-run that still reads an erased row, a rebuilt table with
        other columns, or a gradient store that cannot hold new samples. Nothing is changed.
    """
    from traceprop_frames.unlearn.certificate import Certificate
    from traceprop_frames.unlearn.ledger import link_of
    from traceprop_frames.unlearn.objective import check_fitted
    from traceprop_frames.unlearn.request import _record_erasure
    from traceprop_frames.unlearn.sample_map import match_samples

    check_fitted(est)
    lineage = getattr(est, "lineage_", None)
    if source is None:
        raise UnlearningError("rebuild= erases source rows: pass source= and rows= (or source={path: rows})")
    requested, records, hits = request_records(lineage, source, rows)  # validates the request
    erased = sorted_unique(np.concatenate([requested, earlier_ids(est, lineage)]))
    X_new, y_new, new_lin, rerun_s = run_rebuild(rebuild, erased)
    Xn, yn = _features(est, X_new), _labels(est, y_new)
    same = len(erased) == len(requested)  # no rows from earlier erasures: the request's mask is the one
    smap = match_samples(lineage, new_lin, erased, old_erased=hits.carried if same else None)
    if len(smap.new_rows) and getattr(est, "store_", None) is not None:
        raise UnlearningError(
            f"the re-run produced {len(smap.new_rows)} training rows the model never had (a filter on a "
            "statistic admits them now); the gradient store cannot hold them. Refit on the rebuilt table."
        )
    tab = layout(est, Xn, yn, smap)
    t0 = time.perf_counter()
    after, method, info = _solve(est, tab, params)
    result = _result(est, tab, after, method, info, params, time.perf_counter() - t0, holdout)
    log = list(getattr(est, "erasures_", []))
    body = _body(est, result, lineage, records, hits, tab, smap, len(new_lin), rerun_s, rebuild, regulations)
    if fitted_statistics is not None:
        _add_fitted(body, fitted_statistics(int((est.sample_weight_ > 0).sum()), int((tab["w"] > 0).sum())))
    body["chain"] = dict(
        chain or getattr(est, "ledger_head_", None) or {"sequence": 1, "previous_sha256": None}
    )
    new_lineage = _record_erasure(est, layout_lineage(lineage, new_lin, smap), body)
    cert = Certificate.sign(body, key)
    est.ledger_head_ = link_of(cert)
    _adopt(est, after, tab, info, new_lineage, erased)
    log.append({"certificate_id": cert.id, "samples": result.forget.tolist()})
    est.erasures_ = log
    return cert


def _adopt(est, after, tab, info, new_lineage, erased) -> None:
    """The rebuilt table, corrected parameters and lineage become the estimator's state."""
    est.module_ = after
    est.X_train_, est.y_train_, est.sample_weight_ = tab["X"], tab["y"], tab["w"]
    est.lineage_ = new_lineage
    est.erased_rows_ = {p: (sha, rows.tolist()) for p, (sha, rows) in skip_map(erased).items()}
    if hasattr(est, "newton_state_"):
        est.newton_state_ = info.get("newton_state")
    est.__dict__.pop("_unlearn_hessian_", None)
    store = getattr(est, "store_", None)
    if store is not None and tab["forget"].size:
        store.mark_removed(tab["forget"])


def _add_fitted(body: dict, entries: list) -> None:
    """Statistics learned outside lineage (recomputed by the re-run) into ``shared_statistics``."""
    if not entries:
        return
    sec = body.setdefault(
        "shared_statistics", {"effect_removed": True, "how": "", "sets": [], "samples_affected": 0}
    )
    sec["sets"] = [*sec["sets"], *entries]
    sec["samples_affected"] = max([sec["samples_affected"], *(e["samples_affected"] for e in entries)])
    sec["effect_removed"] = True
    sec["how"] = (
        "the feature pipeline was re-run without the erased rows (rebuild), the transformers refitted, and "
        "the model corrected to the rebuilt training table"
    )
