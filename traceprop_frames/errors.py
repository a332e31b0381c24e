"""One exception hierarchy for the whole package.

Every message says what happened and what the user can do next.
"""

from __future__ import annotations


class TracepropError(Exception):
    """Base class of every error raised by traceprop_frames."""


class LineageLostError(TracepropError):
    """A frame's row lineage was dropped by an operation that rebuilds rows outside the accessor."""


class SourceChangedError(TracepropError):
    """A source file's bytes no longer match the sha256 recorded when it was loaded."""


class SourceMissingError(TracepropError, FileNotFoundError):
    """A source file (recorded at load time, or passed to a reader) does not exist."""


class SourceFormatError(TracepropError, ValueError):
    """A source file cannot be parsed: ragged records, an encoding that is not the one asked for, no
    header, or not the file format the reader expects."""


class UnknownSourceError(TracepropError, KeyError):
    """A path or source name that no lineage in this frame/store refers to."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else ""


class UnknownRowError(TracepropError, IndexError):
    """Row numbers that do not exist in a source (or positions outside a frame)."""


class UnsupportedOperationError(TracepropError, ValueError):
    """An argument or operation whose lineage this library cannot compute exactly."""


class MissingDependencyError(TracepropError, ImportError):
    """An optional integration was used without its extra installed (e.g. ``traceprop-frames[spark]``)."""


class UnsupportedSQLError(TracepropError, ValueError):
    """A SQL construct the lineage rewriter cannot carry row ids through."""


class LineageFormatError(TracepropError, ValueError):
    """A saved lineage artifact is malformed, truncated or from an incompatible version."""


class SourceChangedWarning(UserWarning):
    """Emitted (with ``strict=False``) when a source file changed since it was loaded."""


class MissingLineageWarning(UserWarning):
    """Emitted when part of a result comes from a table that carries no lineage."""


class UntracedValuesWarning(UserWarning):
    """Values without a row handle (a NumPy array, a list, a non-numeric reduction) entered a traced frame:
    pandas cannot say which rows they were computed from, so each row keeps only its own lineage."""


class StoreError(TracepropError):
    """A gradient store is missing, malformed, read-only or used before it was filled."""


class SketchError(TracepropError, ValueError):
    """A training sketch is missing, malformed, or does not describe the model it is applied to."""


class ReplayError(TracepropError, ValueError):
    """A training run cannot be replayed (not deterministic, or something it needs was not recorded)."""


class UnlearningError(TracepropError, ValueError):
    """An erasure request that cannot be carried out (unfitted model, bad method, empty remainder...)."""


class RequestFileError(UnlearningError):
    """An erasure request file (``traceprop erase --requests``) is malformed; the message names the line."""


class ModelFolderError(TracepropError, ValueError):
    """A model folder is missing, incomplete, malformed or written by a newer version of the library."""


class CertificateError(TracepropError):
    """Base class of erasure-certificate errors."""


class CertificateFormatError(CertificateError, ValueError):
    """A certificate file is truncated, not JSON, or does not match the published JSON Schema."""


class CertificateSignatureError(CertificateError):
    """A certificate's Ed25519 signature does not verify: the file was altered or signed by another key."""


class GranularityError(TracepropError):
    """A lineage question that the tensor's granularity does not record (e.g. ``trace()`` in ``"op"`` mode)."""


class LedgerError(CertificateError):
    """A model folder's erasure ledger does not link up: a certificate is missing, reordered or altered,
    or the model on disk was changed outside an erasure."""


class InterruptedWriteError(ModelFolderError):
    """A crash interrupted an erasure of this model folder; ``traceprop recover MODEL`` finishes or undoes it."""


class FolderLockedError(TracepropError, TimeoutError):
    """Another process holds the model folder's lock (an erasure in progress) past the given timeout."""


class LineageEventError(TracepropError, ValueError):
    """A lineage event (OpenLineage) is invalid against its JSON Schema, or its emitter is misconfigured."""


class LineageEmitWarning(UserWarning):
    """A lineage listener (e.g. the OpenLineage emitter) failed; the step itself ran normally."""
