"""The unsigned certificate record: regulation tags, the standard statements, and :func:`new_body`.

One floor below :mod:`~traceprop_frames.unlearn.request` (which fills a record from an unlearning run)
and :mod:`~traceprop_frames.unlearn.certificate` (which signs, saves and verifies records), so that
neither of those two needs the other's internals.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from traceprop_frames._version import __version__
from traceprop_frames.errors import CertificateError

REGULATIONS = {
    "EU_AI_ACT_ART26": "EU AI Act, Article 26 (obligations of deployers of high-risk AI systems)",
    "GDPR_ART17": "GDPR, Article 17 (right to erasure)",
}
NOT_GUARANTEED = [
    "Approximate unlearning: the model after erasure is not bit-identical to a model retrained from "
    "scratch without these samples; the evidence section measures how close it is.",
    "No differential-privacy guarantee: nothing bounds what an attacker can infer about the erased "
    "samples beyond the measured evidence, unless differential privacy was configured at training time.",
    "The certified distance bound holds only for strongly convex objectives (logistic regression with an "
    "L2 penalty); it is null otherwise.",
    "Copies of the data or of earlier model versions outside this model (backups, caches, logs, "
    "exported predictions) are not covered.",
    "The source files themselves are not modified; deleting the rows from them is a separate step.",
]


def new_id() -> str:
    """A fresh certificate id (random, 32 hex digits)."""
    return uuid.uuid4().hex


def now_stamp() -> str:
    """The current UTC time as certificates write it (``2026-12-02T07:00:00Z``)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def new_body(**sections) -> dict:
    """A certificate body with id, timestamp, library version and the standard statements filled in."""
    regs = sections.pop("regulations", ["EU_AI_ACT_ART26", "GDPR_ART17"])
    regs = [regs] if isinstance(regs, str) else list(regs)
    bad = [r for r in regs if r not in REGULATIONS]
    if bad:
        raise CertificateError(f"unknown regulation tags {bad}; known: {sorted(REGULATIONS)}")
    body = {
        "schema_version": "1.0",
        "certificate_id": new_id(),
        "created_at": now_stamp(),
        "library": {"name": "traceprop-frames", "version": __version__},
        "regulations": regs,
        "previous_certificates": [],
        "not_guaranteed": list(NOT_GUARANTEED),
        "differential_privacy": False,
    }
    body.update(sections)
    return body
