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
from traceprop_frames.lineage.graph import LineageDAG
from traceprop_frames.lineage.rowsets import RowLineage
from traceprop_frames.lineage.sources import REGISTRY, ROW_BITS, ROW_MASK

FORMAT_VERSION = 1


def to_arrow(lin: RowLineage) -> pa.Array:
    """list<int64> array built from the CSR arrays (large_list past 2**31 ids)."""
    ids = pa.array(lin.ids, pa.int64())
    if lin.n_ids < 2**31 - 1:
        return pa.ListArray.from_arrays(pa.array(lin.offsets.astype(np.int32), pa.int32()), ids)
    return pa.LargeListArray.from_arrays(pa.array(lin.offsets, pa.int64()), ids)


def manifest(lin: RowLineage) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "sources": [REGISTRY.get(s).to_record() for s in lin.source_ids().tolist()],
        "dag": LineageDAG(lin.node).to_records(),
        "n_rows": len(lin),
    }


def from_arrow(arr: pa.Array | pa.ChunkedArray, meta: dict) -> RowLineage:
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
    return from_csr(offsets - offsets[0], ids, meta)


def from_csr(offsets: np.ndarray, ids: np.ndarray, meta: dict) -> RowLineage:
    """Rebuild a RowLineage from CSR arrays saved with :func:`manifest`: the sources are re-registered in
    this process and the source ids inside the row ids remapped."""
    try:
        if meta.get("format_version") != FORMAT_VERSION:
            raise LineageFormatError(
                f"lineage format version {meta.get('format_version')!r}; this library reads {FORMAT_VERSION}"
            )
        old = np.array([s["id"] for s in meta["sources"]], dtype=np.int64)
        new = np.array([REGISTRY.register_record(s).id for s in meta["sources"]], dtype=np.int64)
        sids = ids >> np.int64(ROW_BITS)
        if ids.size:
            pos = np.searchsorted(old, sids) if old.size else np.zeros_like(sids)
            order_ok = old.size and np.all(np.diff(old) > 0)
            if not order_ok or np.any(pos >= len(old)) or np.any(old[np.minimum(pos, len(old) - 1)] != sids):
                raise LineageFormatError("lineage refers to sources missing from its manifest")
            ids = (new[pos] << np.int64(ROW_BITS)) | (ids & np.int64(ROW_MASK))
        node = LineageDAG.from_records(meta["dag"])
    except LineageFormatError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise LineageFormatError(f"malformed lineage artifact: {e}") from e
    return RowLineage(offsets, ids, node)


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
    table = table.replace_schema_metadata({b"traceprop": dumps_manifest(lin)})
    if not atomic:
        pq.write_table(table, path)
        return
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def load(path: str) -> RowLineage:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as e:
        raise LineageFormatError(f"cannot read lineage file {path!r}: {e}") from e
    meta = (table.schema.metadata or {}).get(b"traceprop")
    if meta is None or "tp_lineage" not in table.column_names:
        raise LineageFormatError(f"{path!r} holds no traceprop lineage")
    return from_arrow(table.column("tp_lineage"), loads_manifest(meta))
