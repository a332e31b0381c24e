"""Erasure: remove training samples' influence and certify it.

``approximate_unlearn`` (functional: returns an unlearned copy), ``unlearn_estimator`` (in place: the
body of ``est.unlearn(...)``), ``export_compliance`` (certify a functional erasure),
``verify_certificate``, and Ed25519 key helpers.

Modules: ``correction`` (the newton / gradient / retrain methods), ``objective`` (the training objective
over a flat parameter vector), ``record`` (the unsigned certificate body and its standard statements),
``request`` (source rows → training samples, filling the record), ``certificate`` (+
``certificate.schema.json``: signing, files, verification), ``bundle`` (a model folder with its lineage:
atomic saves, lock, crash recovery), ``folder`` (``traceprop erase``: an erasure of a model folder as one
journal commit), ``ledger`` (the folder's chained certificates, ``traceprop verify MODEL``), ``report``
(self-contained HTML with matplotlib plots).
"""

from traceprop_frames.unlearn.certificate import (
    Certificate,
    default_key,
    export_compliance,
    generate_key,
    load_private_key,
    load_public_key,
    save_private_key,
    save_public_key,
    verify_certificate,
)
from traceprop_frames.unlearn.correction import (
    UnlearnResult,
    approximate_unlearn,
    parameter_fingerprint,
    prepare_unlearning,
    unlearn_estimator,
)

__all__ = [
    "Certificate",
    "UnlearnResult",
    "approximate_unlearn",
    "default_key",
    "export_compliance",
    "generate_key",
    "load_private_key",
    "load_public_key",
    "parameter_fingerprint",
    "prepare_unlearning",
    "save_private_key",
    "save_public_key",
    "unlearn_estimator",
    "verify_certificate",
]
