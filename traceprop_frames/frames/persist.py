"""One artifact for data + lineage: a Parquet file with a ``tp_lineage`` list column and a manifest."""

from __future__ import annotations

import os

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from traceprop_frames._durable import atomic_path
from traceprop_frames.errors import LineageFormatError, SourceMissingError
from traceprop_frames.frames.carrier import ATTRS_KEY, LID, attach, resolve
from traceprop_frames.frames.ops import _strip_lid
from traceprop_frames.lineage import persist

LINEAGE_COL = "tp_lineage"
FOLDER_MANIFEST = "_traceprop.json"  # a folder of part files (Spark's write_parquet): manifest beside them


def write_traced(df: pd.DataFrame, path, **kwargs) -> None:
    """Write ``df``'s data and lineage (source records, row ids, op DAG) to one Parquet file."""
    lin = resolve(df)
    data = _strip_lid(df)
    if LINEAGE_COL in data.columns:
        raise LineageFormatError(f"column {LINEAGE_COL!r} is reserved for lineage; rename it first")
    data = data.copy(deep=False)
    data.attrs = {k: v for k, v in df.attrs.items() if k != ATTRS_KEY}
    table = pa.Table.from_pandas(data, preserve_index=False)
    table = table.append_column(LINEAGE_COL, persist.to_arrow(lin))
    meta = dict(table.schema.metadata or {})
    meta.update(persist.schema_metadata(lin))
    with atomic_path(os.fspath(path)) as tmp:  # a crash leaves the old file or the new one, never half
        pq.write_table(table.replace_schema_metadata(meta), tmp, **kwargs)


def read_traced(path) -> pd.DataFrame:
    """Read a file written by ``df.tp.to_parquet``: the same data, tracing to the original sources.

    ``path`` may also be a folder written by Spark (``SparkTraced.write_parquet``): its part files in
    name order, with the manifest in ``_traceprop.json`` beside them.

    Source files are not re-hashed here; ``trace()`` checks them when asked, so a file changed since
    the original load is reported then.
    """
    p = os.fspath(path)
    if not os.path.exists(p):
        raise SourceMissingError(f"no such file: {p!r}")
    try:
        table = pq.read_table(p)
    except (OSError, pa.ArrowException) as e:
        raise LineageFormatError(f"cannot read {p!r} as Parquet (truncated or not Parquet?): {e}") from e
    meta = dict(table.schema.metadata or {})
    if os.path.isdir(p) and os.path.exists(os.path.join(p, FOLDER_MANIFEST)):
        with open(os.path.join(p, FOLDER_MANIFEST), "rb") as fh:
            meta[b"traceprop"] = fh.read()
    if b"traceprop" not in meta or LINEAGE_COL not in table.column_names:
        raise LineageFormatError(
            f"{p!r} holds no traceprop lineage (it was not written by df.tp.to_parquet); load it with "
            "tpf.read_parquet to start lineage from this file instead."
        )
    lin = persist.from_table_metadata(table.column(LINEAGE_COL), meta)
    data = table.drop_columns([LINEAGE_COL]).to_pandas()
    if LID in data.columns:
        data = data.drop(columns=LID)
    return attach(data, lin)
