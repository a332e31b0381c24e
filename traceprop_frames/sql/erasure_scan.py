"""The scan filter of an erasure's pipeline re-run: rows of a loaded file that the table leaves out.

Inside :func:`traceprop_frames.lineage.erasure_scope.skipping_rows`, ``con.read_csv`` and
``con.read_parquet`` load every record (the file's sha256 and row numbers are those of the whole file)
and filter the erased rows at the scan, so the recorded SQL that follows runs over the file as if those
rows had never been in it, and its lineage keeps the original row ids.
"""

from __future__ import annotations

from traceprop_frames.lineage.erasure_scope import rows_to_skip


def scan_filter(src, row_column: str) -> str:
    """``" WHERE <row_column> NOT IN (...)"`` for the rows of ``src`` to skip now, or ``""``.

    Examples
    --------
    >>> class S:
    ...     abspath, sha256 = "/nowhere.csv", "0" * 64
    >>> scan_filter(S(), "rowid")
    ''
    """
    rows = rows_to_skip(src.abspath, src.sha256)
    if rows is None or not rows.size:
        return ""
    return f" WHERE {row_column} NOT IN ({', '.join(str(int(r)) for r in rows.tolist())})"
