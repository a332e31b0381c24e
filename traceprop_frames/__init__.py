"""traceprop_frames: which source-file rows drove this prediction, and proof they are gone after erasure.

Public API: ``read_csv``, ``read_parquet``, ``read_traced``, ``track``, ``concat``, ``tensor``, ``connect``
(SQL), ``verify_certificate`` and the ``df.tp`` accessor; estimators in :mod:`traceprop_frames.estimators`,
attribution in :mod:`traceprop_frames.attribution`, erasure in :mod:`traceprop_frames.unlearn`; exceptions
live in :mod:`traceprop_frames.errors`.
"""

from traceprop_frames import errors
from traceprop_frames._version import __version__
from traceprop_frames.frames import concat, read_csv, read_parquet, read_traced, track
from traceprop_frames.lineage import RowLineage, SourceRow
from traceprop_frames.tensor import ProvenanceTensor, tensor


def connect(database: str = ":memory:", **kwargs):
    """A traced DuckDB connection (see :mod:`traceprop_frames.sql`)."""
    from traceprop_frames.sql import connect as _connect

    return _connect(database, **kwargs)


def verify_certificate(path, public_key):
    """Check a signed erasure certificate; raises a ``CertificateError`` if altered (see
    :func:`traceprop_frames.unlearn.verify_certificate`)."""
    from traceprop_frames.unlearn.certificate import verify_certificate as _verify

    return _verify(path, public_key)


__all__ = [
    "ProvenanceTensor",
    "RowLineage",
    "SourceRow",
    "__version__",
    "concat",
    "connect",
    "errors",
    "read_csv",
    "read_parquet",
    "read_traced",
    "tensor",
    "track",
    "verify_certificate",
]
