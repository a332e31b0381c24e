"""Spark DataFrames over source files whose hidden ``__tp_rid`` is the global id of each file row.

Row numbers mean what they mean in the pandas and DuckDB readers (0-based data rows of the file):

- Parquet: Spark 4's ``_metadata.row_index`` (the row's position in its file).
- CSV: each file is read on its own with ``multiLine`` (a file is then one partition, read in file
  order), so ``monotonically_increasing_id()`` right above the scan is the record's index in the file —
  quoted newlines stay inside their record and blank lines are skipped, as in ``pd.read_csv``.

Every file is hashed (sha256) and registered in the process :data:`REGISTRY`, as the other readers do.
A file with a column named as one the connection uses itself (``__tp_rid``, ``__tp_lin``, any ``__tp_...``
name; ``_metadata`` in Parquet, which hides Spark's metadata column the row ids come from) is refused as
DuckDB's loaders refuse theirs (:func:`traceprop_frames.sql.reserved_names.refuse_reserved`).
"""

from __future__ import annotations

import glob
import os

import numpy as np
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from traceprop_frames.errors import SourceMissingError, UnsupportedOperationError
from traceprop_frames.lineage import REGISTRY, encode
from traceprop_frames.lineage.sources import Source
from traceprop_frames.sql.reserved_names import HIDDEN, refuse_reserved
from traceprop_frames.sql.rewrite import RID

# CSV options that drop or skip records: row numbers could not be trusted
_CSV_REJECT = {"mode", "comment", "samplingratio", "linesep"}
_CSV_DEFAULTS = {"header": True, "inferSchema": True, "escape": '"'}
# a Parquet column ``_metadata`` hides Spark's file metadata column, whose ``row_index`` numbers the rows
PARQUET = (*HIDDEN, "_metadata")


def _files(path, ext: str) -> list[str]:
    p = os.fspath(path)
    if os.path.isdir(p):
        files = sorted(glob.glob(os.path.join(p, "**", f"*.{ext}"), recursive=True))
        if not files:
            raise SourceMissingError(f"no *.{ext} files under {p!r}")
        return files
    if not os.path.exists(p):
        raise SourceMissingError(f"no such file: {p!r} (cwd: {os.getcwd()})")
    return [p]


def _base(src: Source) -> int:
    return int(encode(src.id, np.zeros(1, dtype=np.int64))[0])


def read_parquet(spark: SparkSession, path) -> tuple[DataFrame, list[Source]]:
    """A DataFrame of the Parquet file(s) at ``path`` with ``__tp_rid``; a folder is read file by file."""
    files = _files(path, "parquet")
    for f in files:  # all checked before any is registered
        refuse_reserved(pq.ParquetFile(f).schema_arrow.names, PARQUET, f)
    parts, sources = [], []
    for f in files:
        src = REGISTRY.register_file(f, "parquet", pq.ParquetFile(f).metadata.num_rows)
        df = spark.read.parquet(f)
        rid = (F.lit(_base(src)) + F.col("_metadata.row_index")).cast("bigint").alias(RID)
        parts.append(df.select(*[F.col(f"`{c}`") for c in df.columns], rid))
        sources.append(src)
    return _union(parts), sources


def plain_parquet(spark: SparkSession, path) -> DataFrame:
    """The files :func:`read_parquet` reads, read the same way, without ``__tp_rid`` (no metadata column)."""
    return _union([spark.read.parquet(f) for f in _files(path, "parquet")])


def read_csv(spark: SparkSession, path, **options) -> tuple[DataFrame, list[Source]]:
    """A DataFrame of the CSV file(s) at ``path`` with ``__tp_rid`` (row numbers as ``pd.read_csv``'s).

    ``options`` are Spark CSV options; the defaults are ``header=True, inferSchema=True, escape='"'``
    (RFC 4180 quoting, as pandas reads it). Options that drop records raise.
    """
    bad = sorted(k for k in options if k.lower() in _CSV_REJECT or k.lower() == "multiline")
    if bad:
        raise UnsupportedOperationError(
            f"con.read_csv does not accept {bad}: they drop, skip or re-split records, so row numbers "
            "could not be traced. Load the whole file, then filter in SQL (lineage is kept)."
        )
    opts = {**_CSV_DEFAULTS, **options, "multiLine": True}
    parts, sources = [], []
    for f in _files(path, "csv"):
        df = spark.read.options(**opts).csv(f)
        refuse_reserved(df.columns, HIDDEN, f)
        if df.rdd.getNumPartitions() != 1:  # cannot happen for one multiLine file; the numbering needs it
            raise UnsupportedOperationError(
                f"Spark split {f!r} into several partitions; row numbers need one"
            )
        n = df.count()
        src = REGISTRY.register_file(f, "csv", n, schema={c: str(t) for c, t in df.dtypes})
        rid = (F.lit(_base(src)) + F.monotonically_increasing_id()).cast("bigint").alias(RID)
        parts.append(df.select(*[F.col(f"`{c}`") for c in df.columns], rid))
        sources.append(src)
    return _union(parts), sources


def _union(parts: list[DataFrame]) -> DataFrame:
    out = parts[0]
    for p in parts[1:]:
        out = out.unionByName(p)
    return out
