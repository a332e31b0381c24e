"""The lineage manifest: the source records and op DAG saved beside a lineage's row ids.

One floor below :mod:`~traceprop_frames.lineage.rowsets` (which pickles through it) and
:mod:`~traceprop_frames.lineage.persist` (which writes it to Parquet): it only reads the source
registry and the op graph, so neither of the two modules above needs the other.
"""

from __future__ import annotations

import numpy as np

from traceprop_frames.errors import LineageFormatError
from traceprop_frames.lineage.graph import LineageDAG, OpNode
from traceprop_frames.lineage.sources import REGISTRY, ROW_BITS, ROW_MASK

FORMAT_VERSION = 1


def build(source_ids: np.ndarray, node: OpNode, n_rows: int) -> dict:
    """The manifest of a lineage whose row ids use ``source_ids``, with op DAG ending at ``node``."""
    return {
        "format_version": FORMAT_VERSION,
        "sources": [REGISTRY.get(s).to_record() for s in np.asarray(source_ids).tolist()],
        "dag": LineageDAG(node).to_records(),
        "n_rows": int(n_rows),
    }


def remap(ids: np.ndarray, meta: dict) -> tuple[np.ndarray, OpNode]:
    """Re-register ``meta``'s sources in this process and rewrite the source ids inside ``ids``.

    Returns the remapped ids and the op DAG's final node. Raises :class:`LineageFormatError` for a
    manifest from another format version, or row ids whose source the manifest does not list.
    """
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
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise LineageFormatError(f"malformed lineage artifact: {e}") from e
    return ids, node
