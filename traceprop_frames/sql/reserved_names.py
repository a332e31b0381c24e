"""Column names the traced connection's loaders refuse in a user's data: names it gives a meaning of its own.

- ``__tp_rid`` / ``__tp_lin`` (and any ``__tp_...`` name: the prefix of every column and table the
  rewrite adds) are the hidden columns that carry a loaded row's id and a derived row's
  lineage (``sql.rewrite``). A user column of that name would be read as ids (a silently wrong lineage),
  and DuckDB would rename the loader's own column (``__tp_rid_1``) or the user's column would vanish from
  ``SELECT *`` (the hidden columns are excluded): a wrong answer too.
- ``file_row_number`` is the column DuckDB adds when ``con.read_parquet`` asks it for each row's position
  in the file (how a Parquet row's id is made); DuckDB refuses a file that has one.
- ``rowid`` in a CSV file: ``con.read_csv`` numbers the rows by DuckDB's ``rowid``, which such a column
  hides (checked once DuckDB has read the CSV's columns, in ``TracedConnection.read_csv``). A Parquet file or a
  frame with a ``rowid`` column loads and traces correctly: its ids come from ``file_row_number`` / the
  frame's lineage, and the readers that go by ``rowid`` skip tables with such a column.

Names compare as DuckDB compares them: case-insensitively.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlglot import exp

from traceprop_frames.errors import UnsupportedOperationError, UnsupportedSQLError
from traceprop_frames.sql.rewrite import LIN, RID

HIDDEN = (RID, LIN)
PARQUET = (*HIDDEN, "file_row_number")
CSV = (*HIDDEN, "rowid")
PREFIX = "__tp_"  # every column and table name the rewrite adds starts with it


def refuse_reserved(columns: Iterable, reserved: Iterable[str], what: str) -> None:
    """Raise UnsupportedOperationError naming the columns of ``columns`` that are ``reserved``."""
    names = {r.lower() for r in reserved}
    bad = [str(c) for c in columns if str(c).lower() in names or str(c).lower().startswith(PREFIX)]
    if bad:
        raise UnsupportedOperationError(
            f"{what}: column(s) {bad} have a name the traced connection uses itself ({', '.join(sorted(names))},"
            f" or any name starting with {PREFIX!r}),"
            " so its rows could not be traced or its answers would change; rename the column(s) first "
            "(in the file, on load, or with df.rename(columns=...))"
        )


def refuse_reserved_identifiers(stmt: exp.Expression) -> None:
    """Raise UnsupportedSQLError if a statement run through the traced connection names anything
    ``__tp_...``: the prefix of the columns and tables the rewrite adds. A user's ``7 AS __tp_rid`` in a
    ``CREATE TABLE ... AS`` was read as that table's row ids (a silently wrong lineage, and ``SELECT *``
    showed the connection's own ids as ``__tp_rid_1``)."""
    bad = sorted({i.name for i in stmt.find_all(exp.Identifier) if i.name.lower().startswith(PREFIX)})
    if bad:
        raise UnsupportedSQLError(
            f"names starting with {PREFIX!r} are reserved for the lineage columns and tables the traced "
            f"connection adds, and this statement names {bad}; rename them (the hidden lineage columns "
            f"themselves are visible on con.raw)"
        )
