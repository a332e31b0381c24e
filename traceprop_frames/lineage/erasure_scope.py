"""Rows the traced readers leave out while a feature pipeline is re-run for an erasure.

``unlearn(..., rebuild=fn)`` re-runs the user's feature pipeline ``fn`` inside :func:`skipping_rows`:
every traced reader (``tpf.read_csv``, ``tpf.read_parquet``, ``con.read_csv``, ``con.read_parquet``)
asks :func:`rows_to_skip` for the file it is loading and drops those data rows *after* hashing and
parsing the whole file, so the rows that remain keep their original row numbers and the file keeps its
sha256: lineage of the re-run names the same global row ids as the original run, minus the erased ones.

The scope is a :class:`contextvars.ContextVar` (one per thread / task): code outside the re-run is never
affected. A file whose bytes changed since the erased rows were named is refused (the row numbers might
name other records now).
"""

from __future__ import annotations

import contextlib
import contextvars
import os

import numpy as np

from traceprop_frames.errors import SourceChangedError
from traceprop_frames.lineage.refs import sorted_unique

_SCOPE: contextvars.ContextVar[dict | None] = contextvars.ContextVar("tp_skip_rows", default=None)


@contextlib.contextmanager
def skipping_rows(rows_by_file: dict):
    """Within the block, traced readers drop the given rows of the given files.

    Parameters
    ----------
    rows_by_file : dict
        ``{abspath: (sha256, rows)}``; ``rows`` are 0-based data rows of the file as it was loaded.

    Examples
    --------
    >>> with skipping_rows({"/data/a.csv": ("0" * 64, [3, 5])}):
    ...     sorted(active_files())
    ['/data/a.csv']
    >>> active_files()
    []
    """
    scope = {
        os.path.abspath(os.fspath(p)): (sha, sorted_unique(np.asarray(r, dtype=np.int64)))
        for p, (sha, r) in rows_by_file.items()
    }
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)


def active_files() -> list[str]:
    """The files whose rows are being skipped now (empty outside :func:`skipping_rows`)."""
    scope = _SCOPE.get()
    return [] if scope is None else list(scope)


def rows_to_skip(abspath: str | None, sha256: str) -> np.ndarray | None:
    """Sorted rows to drop from the file being read (None: read every row).

    Raises :class:`SourceChangedError` when rows of this path are to be skipped but the file's sha256 is
    not the one the rows were named in.
    """
    scope = _SCOPE.get()
    if scope is None or abspath is None:
        return None
    hit = scope.get(os.path.abspath(abspath))
    if hit is None:
        return None
    sha, rows = hit
    if sha != sha256:
        raise SourceChangedError(
            f"{abspath!r} changed since the rows to erase were named (sha256 {sha[:12]}… then, "
            f"{sha256[:12]}… now): its row numbers may name other records. Restore the file the model was "
            "trained on, or delete the rows from it yourself and refit."
        )
    return rows
