"""Column names the traced connection's loaders refuse in a user's data: names it gives a meaning of its own.

- ``__tp_rid`` / ``__tp_lin`` are the hidden columns that carry a loaded row's id and a derived row's
  lineage (``sql.rewrite``). A user column of that name would be read as ids (a silently wrong lineage),
  and DuckDB would rename the loader's own column (``__tp_rid_1``) or the user's column would vanish from
  ``SELECT *`` (the hidden columns are excluded): a wrong answer too.
- ``file_row_number`` is the column DuckDB adds when ``con.read_parquet`` asks it for each row's position
  in the file (how a Parquet row's id is made); DuckDB refuses a file that has one.
- ``rowid`` in a CSV file: ``con.read_csv`` numbers the rows by DuckDB's ``rowid``, which such a column
  hides (checked where the CSV's columns are known, in ``TracedConnection.read_csv``). A Parquet file or a
  frame with a ``rowid`` column loads and traces correctly: its ids come from ``file_row_number`` / the
  frame's lineage, and the readers that go by ``rowid`` skip tables with such a column.

Names compare as DuckDB compares them: case-insensitively.
"""

from __future__ import annotations

from collections.abc import Iterable

from traceprop_frames.errors import UnsupportedOperationError
from traceprop_frames.sql.rewrite import LIN, RID

HIDDEN = (RID, LIN)
PARQUET = (*HIDDEN, "file_row_number")


def refuse_reserved(columns: Iterable, reserved: Iterable[str], what: str) -> None:
    """Raise UnsupportedOperationError naming the columns of ``columns`` that are ``reserved``."""
    names = {r.lower() for r in reserved}
    bad = [str(c) for c in columns if str(c).lower() in names]
    if bad:
        raise UnsupportedOperationError(
            f"{what}: column(s) {bad} have a name the traced connection uses itself ({', '.join(sorted(names))}),"
            " so its rows could not be traced or its answers would change; rename the column(s) first "
            "(in the file, on load, or with df.rename(columns=...))"
        )
