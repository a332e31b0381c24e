"""Readers that start lineage: each data row knows (file, 0-based row number, file sha256)."""

from __future__ import annotations

import os
from contextlib import contextmanager

import numpy as np
import pandas as pd

from traceprop_frames.errors import SourceFormatError, SourceMissingError, UnsupportedOperationError
from traceprop_frames.frames.carrier import LID, attach
from traceprop_frames.lineage import REGISTRY, OpNode, RowLineage
from traceprop_frames.lineage.erasure_scope import rows_to_skip

# Arguments that change which file records become frame rows: row numbers could not be trusted.
_CSV_REJECT = ("skiprows", "skipfooter", "chunksize", "iterator", "index_col", "header", "comment")


def _schema(df: pd.DataFrame) -> dict[str, str]:
    return {str(c): str(t) for c, t in df.dtypes.items()}


def _start(df: pd.DataFrame, path: str, fmt: str, params: dict) -> pd.DataFrame:
    src = REGISTRY.register_file(path, fmt, len(df), schema=_schema(df))
    node = OpNode(f"read_{fmt}", {"path": src.path, "sha256": src.sha256, **params})
    skip = rows_to_skip(src.abspath, src.sha256)  # an erasure re-running the pipeline (lineage/erasure_scope)
    if skip is not None and skip.size:
        mask = np.ones(len(df), dtype=bool)
        mask[skip[skip < len(df)]] = False
        keep = np.flatnonzero(mask)
        node = OpNode(f"read_{fmt}", {**node.params, "rows_skipped": int(len(df) - len(keep))})
        return attach(df.iloc[keep].reset_index(drop=True), RowLineage.identity(src, node).take(keep))
    return attach(df, RowLineage.identity(src, node))


def _check_path(path) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise UnsupportedOperationError(
            f"traced readers need a file path (got {type(path).__name__}); a buffer has no file to hash. "
            "Write it to a file first, or load it with pandas and call tpf.track(df, name)."
        )
    p = os.fspath(path)
    if not os.path.exists(p):
        raise SourceMissingError(f"no such file: {p!r} (cwd: {os.getcwd()})")
    return p


@contextmanager
def _parse_errors(path: str, fmt: str):
    """A file the reader cannot parse -> :class:`SourceFormatError` naming the file and the fix."""
    import pyarrow as pa

    try:
        yield
    except UnicodeDecodeError as e:
        raise SourceFormatError(
            f"{path!r} is not valid {e.encoding} text ({e.reason} at byte {e.start}): pass the file's "
            "encoding, e.g. tpf.read_csv(path, encoding='latin-1')"
        ) from e
    except pd.errors.EmptyDataError as e:
        raise SourceFormatError(f"{path!r} is empty (no header, no rows): {str(e).strip()}") from e
    except pd.errors.ParserError as e:
        raise SourceFormatError(
            f"cannot parse {path!r} as {fmt}: {str(e).strip()}. Fix the ragged records, or pass the right sep=/quotechar="
        ) from e
    except pa.ArrowException as e:
        raise SourceFormatError(f"cannot read {path!r} as {fmt}: {e}") from e


def read_csv(path, **kwargs) -> pd.DataFrame:
    """``pd.read_csv`` that records, for every row, its file, 0-based data row and the file's sha256.

    Row numbers count the data records pandas parses (header excluded; with pandas' default
    ``skip_blank_lines=True`` a blank line is not a record). ``nrows`` is allowed; arguments that drop or
    re-index records (``skiprows``, ``skipfooter``, ``comment``, ``header``, ``index_col``, ``chunksize``,
    ``iterator``) raise :class:`UnsupportedOperationError`.
    """
    p = _check_path(path)
    bad = [k for k in _CSV_REJECT if k in kwargs]
    if bad:
        raise UnsupportedOperationError(
            f"tpf.read_csv does not accept {bad}: they change which records become rows, so row numbers "
            "could not be traced. Load the whole file, then filter (and set_index(..., append=True)) "
            "with pandas."
        )
    with _parse_errors(p, "CSV"):
        df = pd.read_csv(p, **kwargs)
    return _start(df, p, "csv", {k: v for k, v in kwargs.items() if k in ("sep", "nrows", "usecols")})


def read_parquet(path, **kwargs) -> pd.DataFrame:
    """``pd.read_parquet`` that records file, 0-based row number (file order) and sha256 per row.

    ``columns`` is allowed; ``filters`` (which drops rows inside the reader) raises
    :class:`UnsupportedOperationError` — filter after loading instead.
    """
    p = _check_path(path)
    if kwargs.get("filters") is not None:
        raise UnsupportedOperationError(
            "tpf.read_parquet does not accept filters=: rows dropped inside the reader lose their row "
            "numbers. Load, then filter with pandas (lineage is kept)."
        )
    if os.path.isdir(p):
        raise UnsupportedOperationError(
            f"{p!r} is a directory (a partitioned dataset): row numbers need one file. Read each file "
            "with tpf.read_parquet and combine them with tpf.concat."
        )
    with _parse_errors(p, "Parquet"):
        df = pd.read_parquet(p, **kwargs)
    return _start(df, p, "parquet", {k: v for k, v in kwargs.items() if k == "columns"})


def track(df: pd.DataFrame, name: str) -> pd.DataFrame:
    """Start lineage for an in-memory frame: row ``i`` (by position) is row ``i`` of source ``name``.

    The sha256 is computed from the frame's contents (``pd.util.hash_pandas_object``); in-memory
    sources have no file to re-check, so their rows trace with ``sha256_ok=None``. Returns a traced
    copy (a non-default index is kept as columns); ``df`` is not changed.
    """

    if not isinstance(df, pd.DataFrame):
        raise UnsupportedOperationError(f"tpf.track needs a DataFrame, got {type(df).__name__}")
    if not isinstance(name, str) or not name:
        raise UnsupportedOperationError("tpf.track needs a non-empty name for the source, e.g. 'crm_export'")
    out = df.copy()
    idx = out.index
    if not (isinstance(idx, pd.RangeIndex) and idx.start == 0 and idx.step == 1 and idx.name is None):
        out = out.reset_index()  # keep a meaningful index as columns; the index becomes the lineage key
    if LID in out.columns:
        raise UnsupportedOperationError(f"column {LID!r} is reserved for lineage keys; rename it first")
    h = _content_sha256(out)
    src = REGISTRY.register(name, sha256=h, format="memory", n_rows=len(out), schema=_schema(out))
    return attach(out, RowLineage.identity(src, OpNode("track", {"name": name, "sha256": h})))


def _content_sha256(df: pd.DataFrame) -> str:
    """sha256 over the column names and per-row hashes of a frame's values."""
    import hashlib

    h = hashlib.sha256(repr(list(map(str, df.columns))).encode())
    for col in df.columns:
        s = df[col]
        try:
            vals = pd.util.hash_pandas_object(s, index=False)
        except TypeError:  # unhashable cells (lists, dicts): hash their text form
            vals = pd.util.hash_pandas_object(s.astype(str), index=False)
        h.update(vals.to_numpy().tobytes())
    return h.hexdigest()
