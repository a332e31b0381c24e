"""Save and load lineage: an Arrow list column (one list of global row ids per row) + a JSON manifest.

The manifest holds the source records (path, sha256, format, n_rows, ...) and the op DAG. Loading
re-registers the sources in this process's registry and remaps the source ids inside the row ids, so
a model trained days later still traces to the original files (and notices if they changed).
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from traceprop_frames._durable import atomic_path
from traceprop_frames.errors import LineageFormatError
from traceprop_frames.lineage.context import context_payload
from traceprop_frames.lineage.manifest import FORMAT_VERSION, build
from traceprop_frames.lineage.rowsets import RowLineage, from_csr

__all__ = [
    "CONTEXT_KEY",
    "FORMAT_VERSION",
    "from_arrow",
    "from_csr",
    "from_table_metadata",
    "load",
    "manifest",
    "save",
    "schema_metadata",
    "to_arrow",
]

CONTEXT_KEY = b"traceprop_context"  # Parquet schema metadata: the shared sets blob (lineage.context)


def to_arrow(lin: RowLineage) -> pa.Array:
    """list<int64> array built from the CSR arrays (large_list past 2**31 ids)."""
    ids = pa.array(lin.ids, pa.int64())
    if lin.n_ids < 2**31 - 1:
        return pa.ListArray.from_arrays(pa.array(lin.offsets.astype(np.int32), pa.int32()), ids)
    return pa.LargeListArray.from_arrays(pa.array(lin.offsets, pa.int64()), ids)


def manifest(lin: RowLineage) -> dict:
    """Source records + op DAG of ``lin`` (see :mod:`traceprop_frames.lineage.manifest`)."""
    return build(lin.source_ids(), lin.node, len(lin))


def from_arrow(arr: pa.Array | pa.ChunkedArray, meta: dict, context: bytes | None = None) -> RowLineage:
    """Rebuild a RowLineage from a list column and its manifest, remapping source ids."""
    try:
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        if not pa.types.is_list(arr.type) and not pa.types.is_large_list(arr.type):
            raise LineageFormatError(f"lineage column has type {arr.type}, expected list<int64>")
        if arr.null_count:
            raise LineageFormatError("lineage column has null entries (truncated or edited file?)")
        offsets = np.asarray(arr.offsets, dtype=np.int64)
        ids = np.asarray(arr.values.to_numpy(zero_copy_only=False), dtype=np.int64)[offsets[0] : offsets[-1]]
    except pa.ArrowException as e:
        raise LineageFormatError(f"malformed lineage artifact: {e}") from e
    return from_csr(offsets - offsets[0], ids, meta, context)


def dumps_manifest(lin: RowLineage) -> bytes:
    return json.dumps(manifest(lin)).encode()


def loads_manifest(raw: bytes) -> dict:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise LineageFormatError(f"lineage manifest is not valid JSON: {e}") from e


def save(lin: RowLineage, path: str, atomic: bool = True) -> None:
    """Write a RowLineage alone to a Parquet file (one list column + manifest in the metadata).

    ``atomic``: write a temporary file, fsync and rename it (a crash leaves the old file or the new one);
    ``False`` when the caller stages the file itself (a model folder's journal).
    """
    import pyarrow.parquet as pq

    table = pa.table({"tp_lineage": to_arrow(lin)})
    table = table.replace_schema_metadata(schema_metadata(lin))
    if not atomic:
        pq.write_table(table, path)
        return
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def schema_metadata(lin: RowLineage) -> dict[bytes, bytes]:
    """Parquet schema metadata for ``lin``: the manifest, and the shared sets when there are any."""
    meta = {b"traceprop": dumps_manifest(lin)}
    if lin.has_context:
        meta[CONTEXT_KEY] = context_payload(lin.context)
    return meta


def from_table_metadata(arr, metadata: dict) -> RowLineage:
    """Inverse of :func:`schema_metadata` for a lineage list column ``arr``."""
    return from_arrow(arr, loads_manifest(metadata[b"traceprop"]), metadata.get(CONTEXT_KEY))


def load(path: str) -> RowLineage:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as e:
        raise LineageFormatError(f"cannot read lineage file {path!r}: {e}") from e
    meta = (table.schema.metadata or {}).get(b"traceprop")
    if meta is None or "tp_lineage" not in table.column_names:
        raise LineageFormatError(f"{path!r} holds no traceprop lineage")
    return from_table_metadata(table.column("tp_lineage"), table.schema.metadata)
