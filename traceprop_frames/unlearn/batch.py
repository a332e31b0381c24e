"""Batches of erasure requests: many requests, one solve, one signed certificate per request.

A request file is a CSV with one row per request and the columns ``request_id``, ``source`` (the file the
rows come from, as the model's lineage names it), ``rows`` (0-based data rows separated by spaces or
semicolons) and ``received`` (the date the request arrived, kept verbatim)::

    request_id,source,rows,received
    r-001,data/bureau.csv,4821,2026-11-30
    r-002,data/bureau.csv,7203;7204 7205,2026-12-01

Every request is mapped to training samples through the lineage first (an unknown source or row refuses
the whole batch, before anything changes); the union is erased in one solve; then each request gets its
own certificate naming its own source rows and training samples, and a ``batch`` section naming the
shared solve (its id, the number of requests and samples, and the model fingerprints before and after).
The certificates are consecutive, chained entries of the model folder's erasure ledger (:mod:`.ledger`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os

import numpy as np

from traceprop_frames.errors import RequestFileError, UnlearningError
from traceprop_frames.lineage.refs import sorted_unique
from traceprop_frames.unlearn.request import forget_from_requests, ids_by_request

COLUMNS = ("request_id", "source", "rows", "received")


def read_requests(path) -> list[dict]:
    """Parse a request CSV into ``[{"request_id", "source", "rows", "received"}, ...]``.

    Raises
    ------
    RequestFileError
        Missing columns, an empty or duplicate request id, or rows that are not non-negative integers.

    Examples
    --------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "req.csv")
    >>> _ = open(p, "w").write("request_id,source,rows,received\\nr1,a.csv,3 5,2026-12-01\\n")
    >>> read_requests(p)
    [{'request_id': 'r1', 'source': 'a.csv', 'rows': [3, 5], 'received': '2026-12-01'}]
    """
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise RequestFileError(
                f"{os.fspath(path)}: missing columns {missing}; the header must be {','.join(COLUMNS)}"
            )
        out, seen = [], set()
        for line, rec in enumerate(reader, start=2):
            rid = (rec["request_id"] or "").strip()
            if not rid or rid in seen:
                raise RequestFileError(f"{os.fspath(path)} line {line}: empty or repeated request_id {rid!r}")
            seen.add(rid)
            parts = (rec["rows"] or "").replace(";", " ").split()
            if not parts or not all(p.isdigit() for p in parts):
                raise RequestFileError(
                    f"{os.fspath(path)} line {line}: rows {rec['rows']!r} must be 0-based row numbers "
                    "separated by spaces or semicolons"
                )
            out.append(
                {
                    "request_id": rid,
                    "source": rec["source"].strip(),
                    "rows": [int(p) for p in parts],
                    "received": (rec["received"] or "").strip(),
                }
            )
    if not out:
        raise RequestFileError(f"{os.fspath(path)} holds no requests")
    return out


def erase_requests(est, requests, *, method=None, key=None,
                   regulations=("EU_AI_ACT_ART26", "GDPR_ART17"), chain=None, **params) -> list:  # fmt: skip
    """Erase every request's rows from ``est`` in one solve; returns one signed Certificate per request.

    The certificates are consecutive entries of the model's erasure ledger: certificate ``i`` carries
    ``chain = {"sequence": s + i, "previous_sha256": sha256 of certificate i-1's file}``. On a model
    folder, :func:`~traceprop_frames.unlearn.folder.erase_requests_in_folder` commits them together with
    the model (``traceprop erase MODEL --requests FILE``).

    Parameters
    ----------
    est : fitted estimator with lineage (see :mod:`traceprop_frames.unlearn.correction`)
        Updated in place as by :func:`~traceprop_frames.unlearn.unlearn_estimator`.
    requests : list of dict
        ``{"request_id", "source", "rows", "received"}`` each (:func:`read_requests`).
    method, key, regulations, **params
        As for :func:`~traceprop_frames.unlearn.unlearn_estimator`.
    chain : dict, optional
        The first certificate's ledger link (:func:`.ledger.next_link`); default: the link after the
        last certificate this estimator issued (``est.ledger_head_``), or entry 1.

    Returns
    -------
    list of Certificate
        In request order; ``status="no-op"`` for a request whose samples had all been erased before.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np, pandas as pd, traceprop_frames as tpf
    >>> from traceprop_frames.estimators import TorchLogisticRegression
    >>> from traceprop_frames.unlearn import generate_key
    >>> rng = np.random.default_rng(0)
    >>> path = os.path.join(tempfile.mkdtemp(), "clients.csv")
    >>> pd.DataFrame({"x": rng.normal(size=100), "y": rng.integers(0, 2, 100)}).to_csv(path, index=False)
    >>> df = tpf.read_csv(path)
    >>> est = TorchLogisticRegression().fit(df[["x"]], df["y"])
    >>> certs = erase_requests(est, [{"request_id": "a", "source": path, "rows": [3], "received": ""},
    ...                              {"request_id": "b", "source": path, "rows": [5, 6], "received": ""}],
    ...                        key=generate_key())
    >>> [(c.body["batch"]["request_id"], c.body["forget_set"]["training_indices"]) for c in certs]
    [('a', [3]), ('b', [5, 6])]
    >>> [c.body["chain"]["sequence"] for c in certs]
    [1, 2]
    """
    from traceprop_frames.unlearn.certificate import Signer
    from traceprop_frames.unlearn.correction import _adopt, check_fitted, run_unlearning

    check_fitted(est)
    if not requests:
        raise UnlearningError("no erasure requests given")
    signer = Signer(key)  # the key loaded, its id and PEM computed once, not per certificate
    link = dict(chain or getattr(est, "ledger_head_", None) or {"sequence": 1, "previous_sha256": None})
    lineage = getattr(est, "lineage_", None)
    cache: dict = {}
    mapped = forget_from_requests(lineage, requests, cache)  # 1. select: every row checked before any change
    union = sorted_unique(np.concatenate([f for f, _ in mapped]))
    w_before = np.asarray(est.sample_weight_)
    after, w_after, result = run_unlearning(est, union, method, **params)  # 2. solve, 3. evidence
    batch = _batch_section(result, union, link, len(requests))
    new_lineage = _lineage_after(lineage, result, batch)
    own = _own_samples(result, [f for f, _ in mapped], w_before, _losses(est, after, result.forget))
    bodies = _Bodies(est, result, signer, regulations, lineage, new_lineage, own)
    bodies.shared = _shared_sections(lineage, requests, cache, own, result.forget)
    log = list(getattr(est, "erasures_", []))
    certs, link = _sign_each(requests, mapped, bodies, own, log, batch, signer, link)  # 4. sign
    if result.forget.size:  # 5. record
        _adopt(est, after, w_after, result, new_lineage)
    est.erasures_ = log
    est.ledger_head_ = link
    from traceprop_frames.unlearn.rebuild import note_erased_rows

    for cert in certs:  # a later rebuild= re-run leaves these rows out too, as after a single erasure
        note_erased_rows(est, cert.body)
    return certs


def _batch_section(result, union: np.ndarray, link: dict, n_requests: int) -> dict:
    """What every certificate of the batch says about the shared solve (its id, counts, fingerprints)."""
    solve_id = hashlib.sha256(  # the ledger position makes it unique even for a repeated no-op batch
        (result.fingerprint_before + result.fingerprint_after + json.dumps(link)).encode() + union.tobytes()
    ).hexdigest()[:32]
    return {
        "solve_id": solve_id,
        "n_requests": n_requests,
        "n_samples": int(result.forget.size),
        "fingerprint_before": result.fingerprint_before,
        "fingerprint_after": result.fingerprint_after,
    }


def _shared_sections(lineage, requests, cache: dict, own: dict, forget: np.ndarray) -> list:
    """Each request's ``shared_statistics`` section (None for a request that erased no sample, as a single
    erasure has none then): the shared statistics that read the request's rows, and the training samples
    still computed from them once the whole batch is erased (``forget``). One analysis of the batch's rows
    first: when no statistic read any of them, every section says so without a pass per request."""
    from traceprop_frames.unlearn.shared_effects import SharedHits, section

    if lineage is None:
        return [None] * len(requests)
    ids = ids_by_request(lineage, requests, cache)
    every = SharedHits(lineage, np.concatenate(ids) if ids else np.zeros(0, np.int64))
    out = []
    for i, request_ids in enumerate(ids):
        if not own["forget"][i]:
            out.append(None)
            continue
        hits = SharedHits(lineage, request_ids) if every.ops else every
        out.append(section(lineage, request_ids, forget, removed=False, hits=hits))
    return out


def _lineage_after(lineage, result, batch: dict):
    """The training lineage with the batch's ``erase`` op (unchanged when nothing was erased)."""
    from traceprop_frames.lineage import OpNode

    if lineage is None or not result.forget.size:
        return lineage
    params = {"solve_id": batch["solve_id"], "n_requests": batch["n_requests"],
              "n_samples": int(result.forget.size), "method": result.method}  # fmt: skip
    return lineage.with_node(OpNode("erase", params, (lineage.node,)))


def _sign_each(requests, mapped, bodies, own, log: list, batch: dict, signer, link: dict):
    """One signed certificate per request, chained in the ledger; appends to ``log`` the certificates
    that erased samples. Returns ``(certificates, the link after the last)``."""
    from traceprop_frames.unlearn.ledger import link_of

    erased_by: dict[int, list[int]] = {}  # sample -> positions in the log of the certificates that erased it
    for at, e in enumerate(log):
        for s in e["samples"]:
            erased_by.setdefault(s, []).append(at)
    certs = []
    for i, (req, (_, records)) in enumerate(zip(requests, mapped)):
        earlier = sorted({at for s in own["removed"][i] for at in erased_by.get(s, ())})
        body = bodies.body(i, records, [log[at]["certificate_id"] for at in earlier])
        body["batch"] = {"request_id": req["request_id"], "received": req["received"], **batch}
        body["chain"] = link
        cert = signer.sign(body)
        link = link_of(cert)
        certs.append(cert)
        if own["forget"][i]:
            log.append({"certificate_id": cert.id, "samples": own["forget"][i]})
    return certs, link


def _own_samples(result, forgets: list, w_before: np.ndarray, losses) -> dict:
    """Each request's own samples (not erased before), the ones erased before, and its samples' mean
    losses before and after the solve: for all requests at once, as Python lists (one per request)."""
    counts = np.array([f.size for f in forgets], dtype=np.int64)
    flat = np.concatenate(forgets) if forgets else np.zeros(0, np.int64)  # each sorted and distinct
    group = np.repeat(np.arange(len(forgets)), counts)
    new = np.asarray(w_before)[flat] != 0
    cuts = np.cumsum(counts)[:-1]
    fresh, gone = flat[new], flat[~new]
    n_new = np.bincount(group[new], minlength=len(forgets))
    samples, before, now = losses
    at = np.searchsorted(samples, fresh)
    with np.errstate(invalid="ignore", divide="ignore"):  # a request with no new sample has no loss
        mean_before = np.bincount(group[new], weights=before[at], minlength=len(forgets)) / n_new
        mean_after = np.bincount(group[new], weights=now[at], minlength=len(forgets)) / n_new
    split = np.cumsum(n_new)[:-1]
    return {
        "forget": [p.tolist() for p in np.split(fresh, split)],
        "removed": [p.tolist() for p in np.split(gone, cuts - np.cumsum(n_new)[:-1])],
        "positions": (fresh, n_new),
        "loss_before": [None if n == 0 else float(v) for n, v in zip(n_new.tolist(), mean_before.tolist())],
        "loss_after": [None if n == 0 else float(v) for n, v in zip(n_new.tolist(), mean_after.tolist())],
    }


class _Bodies:
    """The certificate bodies of one batch: what every request's certificate shares (method, model,
    evidence but the forget-set losses, statements, lineage) is made once, by
    :func:`~.request.certificate_body` on the solve narrowed to one request of each kind (erased, no-op),
    and registered with the signer; each body copies it and fills in what is the request's own."""

    def __init__(self, est, result, signer, regulations, lineage, new_lineage, own) -> None:
        from traceprop_frames.unlearn.request import certificate_body

        self.result = result
        self.shared: list = []  # each request's shared_statistics section or None (_shared_sections)
        fresh, n_new = own["positions"]
        self.own = own
        self.source_rows = [{}] * len(n_new)
        if lineage is not None and fresh.size:
            grouped = lineage.sources_grouped(fresh, n_new, direct=True)  # statistics: shared_statistics
            self.source_rows = [{k: v.tolist() for k, v in g.items()} for g in grouped]
        lineage_section = {"erase_op": None, "ops": []}
        if new_lineage is not lineage:
            lineage_section = {"erase_op": "erase", "ops": new_lineage.ops()}
        self.templates = {}
        for erased in (True, False):
            narrowed = _restrict(result, result.forget[:1] if erased else result.forget[:0])
            t = certificate_body(est, narrowed, regulations=regulations)
            for k in ("method", "model", "not_guaranteed", "regulations", "library"):
                t[k] = signer.share(t[k])
            t["lineage"] = signer.share(lineage_section)
            t["evidence"] = signer.share(t["evidence"])
            self.templates[erased] = t

    def body(self, i: int, records: list, previous: list) -> dict:
        """Request ``i``'s body (unsigned): the shared template with its own parts filled in."""
        from traceprop_frames.unlearn.record import new_id, now_stamp

        r, own = self.result, self.own
        forget = own["forget"][i]
        t = self.templates[bool(forget)]
        body = dict(t)
        body["certificate_id"], body["created_at"] = new_id(), now_stamp()
        body["request"] = {"sources": records, "samples": None}
        body["forget_set"] = {
            "training_indices": forget,
            "count": len(forget),
            "share": float(len(forget) / max(r.n_train, 1)),
            "already_removed": own["removed"][i],
            "n_train": r.n_train,
            "n_active_before": r.n_active_before,
            "n_active_after": r.n_active_after,
            "source_rows": self.source_rows[i],
        }
        if forget:
            body["evidence"] = {**t["evidence"], "forget_loss_before": own["loss_before"][i],
                                "forget_loss_after": own["loss_after"][i]}  # fmt: skip
        body["previous_certificates"] = previous
        sec = self.shared[i] if self.shared else None
        if sec is not None:
            from traceprop_frames.unlearn.shared_effects import not_guaranteed_statement

            body["shared_statistics"] = sec
            note = not_guaranteed_statement(sec)
            if note:
                body["not_guaranteed"] = [*t["not_guaranteed"], note]
        return body


def _losses(est, after, samples: np.ndarray):
    """Per-sample losses of ``samples`` before and after the solve (sorted ``samples``), in one call each."""
    import torch

    X, y = est.X_train_[samples], est.y_train_[samples]
    with torch.no_grad():
        before = est.per_sample_loss(est.module_, X, y).double().numpy()
        now = est.per_sample_loss(after, X, y).double().numpy()
    return samples, before, now


def _restrict(result, forget: np.ndarray):
    """The shared solve's result narrowed to the samples ``forget`` (none erased before): the template
    of the certificates that erase samples (some ``forget``) or that are no-ops (none)."""
    import copy

    narrowed = copy.copy(result)
    narrowed.forget, narrowed.already_removed = forget, forget[:0]
    if forget.size == 0:
        narrowed.method, narrowed.params = "none", {}
        narrowed.forget_loss_before = narrowed.forget_loss_after = None
    return narrowed
