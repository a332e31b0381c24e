"""Save and load lineage: an Arrow list column (one list of global row ids per row) + a JSON manifest.

The manifest holds the source records (path, sha256, format, n_rows, ...) and the op DAG. Loading
re-registers the sources in this process's registry and remaps the source ids inside the row ids, so
a model trained days later still traces to the original files (and notices if they changed).
"""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa

from traceprop_frames.errors import LineageFormatError
from traceprop_frames.lineage.context import Context, SetBlock
from traceprop_frames.lineage.graph import LineageDAG
from traceprop_frames.lineage.rowsets import RowLineage
from traceprop_frames.lineage.sources import REGISTRY, ROW_BITS, ROW_MASK

FORMAT_VERSION = 1
CONTEXT_KEY = b"traceprop_context"


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


def context_payload(lin: RowLineage) -> bytes | None:
    """The shared context (row references + set blocks) as one ``.npz`` blob, or None without any."""
    if not lin.has_context:
        return None
    ctx = lin.context
    arrays = {"row_ref_offsets": ctx.ref_offsets, "row_refs": ctx.refs}
    blocks = []
    for k, b in enumerate(ctx.blocks.values()):
        for name in ("pool", "starts", "ends", "ref_offsets", "refs"):
            arrays[f"b{k}_{name}"] = getattr(b, name)
        blocks.append({"base": b.base, "m": b.m, "label": b.label})
    arrays["blocks_json"] = np.frombuffer(json.dumps(blocks).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _context_from_payload(payload: bytes, n_rows: int, remap) -> Context:
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as z:
            blocks_meta = json.loads(bytes(z["blocks_json"]).decode())
            old_bases = np.array([b["base"] for b in blocks_meta], dtype=np.int64)
            new_bases = np.zeros(len(blocks_meta), dtype=np.int64)

            def remap_sets(refs):
                k = np.searchsorted(old_bases, refs, side="right") - 1
                if refs.size and (
                    np.any(k < 0) or np.any(refs - old_bases[k] >= [blocks_meta[i]["m"] for i in k])
                ):
                    raise LineageFormatError("shared-set reference outside the saved blocks")
                return new_bases[k] + (refs - old_bases[k])

            built: list[SetBlock] = []
            for k, bm in enumerate(blocks_meta):
                refs = remap_sets(np.asarray(z[f"b{k}_refs"], dtype=np.int64))
                b = SetBlock(remap(z[f"b{k}_pool"]), z[f"b{k}_starts"], z[f"b{k}_ends"], bm["label"],
                             z[f"b{k}_ref_offsets"], refs, tuple(built))  # fmt: skip
                new_bases[k] = b.base
                built.append(b)
            ctx = Context(z["row_ref_offsets"], remap_sets(np.asarray(z["row_refs"], dtype=np.int64)), built)
    except LineageFormatError:
        raise
    except (KeyError, ValueError, OSError, TypeError, IndexError) as e:
        raise LineageFormatError(f"malformed shared-context part of a lineage artifact: {e}") from e
    if len(ctx) != n_rows:
        raise LineageFormatError(f"shared context has {len(ctx)} rows, the lineage {n_rows}")
    return ctx


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


def from_csr(offsets: np.ndarray, ids: np.ndarray, meta: dict, context: bytes | None = None) -> RowLineage:
    """Rebuild a RowLineage from CSR arrays saved with :func:`manifest`: the sources are re-registered in
    this process and the source ids inside the row ids remapped."""
    try:
        if meta.get("format_version") != FORMAT_VERSION:
            raise LineageFormatError(
                f"lineage format version {meta.get('format_version')!r}; this library reads {FORMAT_VERSION}"
            )
        old = np.array([s["id"] for s in meta["sources"]], dtype=np.int64)
        new = np.array([REGISTRY.register_record(s).id for s in meta["sources"]], dtype=np.int64)
        order_ok = bool(old.size) and bool(np.all(np.diff(old) > 0))

        def remap(a):
            a = np.asarray(a, dtype=np.int64)
            if not a.size:
                return a
            sids = a >> np.int64(ROW_BITS)
            pos = np.searchsorted(old, sids) if old.size else np.zeros_like(sids)
            if not order_ok or np.any(pos >= len(old)) or np.any(old[np.minimum(pos, len(old) - 1)] != sids):
                raise LineageFormatError("lineage refers to sources missing from its manifest")
            return (new[pos] << np.int64(ROW_BITS)) | (a & np.int64(ROW_MASK))

        ids = remap(ids)
        ctx = _context_from_payload(context, len(offsets) - 1, remap) if context is not None else None
        node = LineageDAG.from_records(meta["dag"])
    except LineageFormatError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise LineageFormatError(f"malformed lineage artifact: {e}") from e
    return RowLineage(offsets, ids, node, ctx)


def dumps_manifest(lin: RowLineage) -> bytes:
    return json.dumps(manifest(lin)).encode()


def loads_manifest(raw: bytes) -> dict:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise LineageFormatError(f"lineage manifest is not valid JSON: {e}") from e


def save(lin: RowLineage, path: str) -> None:
    """Write a RowLineage alone to a Parquet file (one list column + manifest in the metadata)."""
    import pyarrow.parquet as pq

    table = pa.table({"tp_lineage": to_arrow(lin)})
    table = table.replace_schema_metadata(schema_metadata(lin))
    pq.write_table(table, path)


def schema_metadata(lin: RowLineage) -> dict[bytes, bytes]:
    """Parquet schema metadata for ``lin``: the manifest, and the shared context when there is one."""
    meta = {b"traceprop": dumps_manifest(lin)}
    payload = context_payload(lin)
    if payload is not None:
        meta[CONTEXT_KEY] = payload
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
