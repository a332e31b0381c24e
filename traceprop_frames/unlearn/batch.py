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
    from traceprop_frames.lineage import OpNode
    from traceprop_frames.unlearn.certificate import Certificate, default_key, load_private_key
    from traceprop_frames.unlearn.correction import _adopt, check_fitted, run_unlearning
    from traceprop_frames.unlearn.ledger import link_of
    from traceprop_frames.unlearn.request import certificate_body, forget_from_request, ids_by_request

    check_fitted(est)
    if not requests:
        raise UnlearningError("no erasure requests given")
    key = default_key() if key is None else load_private_key(key)  # once, not per certificate
    link = dict(chain or getattr(est, "ledger_head_", None) or {"sequence": 1, "previous_sha256": None})
    lineage = getattr(est, "lineage_", None)
    cache: dict = {}
    ids = ids_by_request(lineage, requests, cache)  # every row checked before anything changes
    mapped = [
        forget_from_request(lineage, r["source"], r["rows"], cache=cache, ids=i)
        for r, i in zip(requests, ids)
    ]
    union = np.unique(np.concatenate([f for f, _ in mapped]))
    w_before = np.asarray(est.sample_weight_)
    after, w_after, result = run_unlearning(est, union, method, **params)
    solve_id = hashlib.sha256(  # the ledger position makes it unique even for a repeated no-op batch
        (result.fingerprint_before + result.fingerprint_after + json.dumps(link)).encode() + union.tobytes()
    ).hexdigest()[:32]
    batch = {
        "solve_id": solve_id,
        "n_requests": len(requests),
        "n_samples": int(result.forget.size),
        "fingerprint_before": result.fingerprint_before,
        "fingerprint_after": result.fingerprint_after,
    }
    new_lineage = lineage
    if lineage is not None and result.forget.size:
        params = {"solve_id": solve_id, "n_requests": len(requests), "n_samples": int(result.forget.size),
                  "method": result.method}  # fmt: skip
        new_lineage = lineage.with_node(OpNode("erase", params, (lineage.node,)))
    losses = _losses(est, after, result.forget)
    log = list(getattr(est, "erasures_", []))
    erased_by: dict[int, list[int]] = {}  # sample -> positions in the log of the certificates that erased it
    for at, e in enumerate(log):
        for s in e["samples"]:
            erased_by.setdefault(s, []).append(at)
    certs = []
    for req, (forget, records) in zip(requests, mapped):
        own = _restrict(result, forget, w_before, losses)
        earlier = sorted({at for s in own.already_removed.tolist() for at in erased_by.get(s, ())})
        body = certificate_body(est, own, lineage=lineage, request_sources=records, regulations=regulations,
                                previous=[log[at]["certificate_id"] for at in earlier])  # fmt: skip
        body["batch"] = {"request_id": req["request_id"], "received": req["received"], **batch}
        body["chain"] = link
        if new_lineage is not lineage:
            body["lineage"] = {"erase_op": "erase", "ops": new_lineage.ops()}
        cert = Certificate.sign(body, key)
        link = link_of(cert)
        certs.append(cert)
        if own.forget.size:
            log.append({"certificate_id": cert.id, "samples": own.forget.tolist()})
    if result.forget.size:
        _adopt(est, after, w_after, result, new_lineage)
    est.erasures_ = log
    est.ledger_head_ = link
    return certs


def _losses(est, after, samples: np.ndarray):
    """Per-sample losses of ``samples`` before and after the solve (sorted ``samples``), in one call each."""
    import torch

    X, y = est.X_train_[samples], est.y_train_[samples]
    with torch.no_grad():
        before = est.per_sample_loss(est.module_, X, y).double().numpy()
        now = est.per_sample_loss(after, X, y).double().numpy()
    return samples, before, now


def _restrict(result, forget: np.ndarray, w_before: np.ndarray, losses):
    """The shared solve's result narrowed to one request: its own samples and their losses."""
    import copy

    own = copy.copy(result)
    forget = np.unique(forget)
    erased_before = np.asarray(w_before)[forget] == 0
    own.forget, own.already_removed = forget[~erased_before], forget[erased_before]
    if own.forget.size == 0:
        own.method, own.params = "none", {}
        own.forget_loss_before = own.forget_loss_after = None
        return own
    samples, before, now = losses
    at = np.searchsorted(samples, own.forget)
    own.forget_loss_before, own.forget_loss_after = float(before[at].mean()), float(now[at].mean())
    return own
