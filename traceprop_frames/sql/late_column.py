"""Lazy ``CREATE TABLE ... AS`` in memory: the table made without its lineage column, added when needed.

A lazy CTAS (see :mod:`traceprop_frames.sql.lazy_tables`) used to make its table with a ``__tp_lin``
column of NULLs, filled when the table's lineage is first needed. DuckDB writes those NULLs (≈ 0.6 ms per
20,000-row table, a third of the lazy credit ETL's extra time at 20k). In memory, outside a transaction
opened through the traced connection, the table is now made by the plain statement alone and the column
is added by ``ALTER TABLE ... ADD COLUMN IF NOT EXISTS __tp_lin BIGINT[]`` (which keeps DuckDB's table
oid, so the pending table's fingerprint stays valid) only when something needs it:

- the table's lineage is filled (``_materialise``: after its record was checked against the table);
- ``con.raw`` is handed out (user code sees the tables as before: with the column);
- a lazy query's capture SQL names ``__tp_lin`` (a star's ``EXCLUDE (__tp_lin)``);
- ``BEGIN`` through the traced connection (a ROLLBACK must not bring back a table without it; inside
  that transaction a lazy CTAS makes its table with the column, as before).

Until then the catalog still lists the table as carrying ``__tp_lin`` (:meth:`LateColumns.hidden`, also
after a re-read of DuckDB's catalog), so every eager rewrite that reads it fills it first, as before. A
table under that name that is not the one made (another oid; or, where a statement outside the traced
connection moved DuckDB's catalog count before the oid was read, rows other than its query's: see
:mod:`traceprop_frames.sql.ctas_rows`) is never given the column: the pending table's check reports it as
changed (:class:`~traceprop_frames.errors.SourceChangedError`), never as a table without lineage and
never a lineage read from another table. In a database file the table keeps its NULL column (its record and
column are written in one transaction, read by other processes).
"""

from __future__ import annotations

from traceprop_frames.sql.rewrite import LIN


def add_sql(quoted: str) -> str:
    """The statement that gives table ``quoted`` its (NULL) lineage column."""
    return f"ALTER TABLE {quoted} ADD COLUMN IF NOT EXISTS {LIN} BIGINT[]"


class LateColumns:
    """Names of the pending tables made without their lineage column (see the module docstring)."""

    def __init__(self) -> None:
        self.tables: set[str] = set()

    def __bool__(self) -> bool:
        return bool(self.tables)

    def made(self, name: str, late: bool) -> None:
        """Table ``name`` was (re)made by a lazy CTAS, without (``late``) or with its column."""
        if late:
            self.tables.add(name)
        else:
            self.tables.discard(name)

    def forget(self, name: str) -> None:
        """``name`` is no longer a pending table of this connection (dropped, replaced, not the one made)."""
        self.tables.discard(name)

    def mentioned(self, sql: str) -> bool:
        """True where ``sql`` (a capture query) may read a lineage column that is not there yet."""
        return bool(self.tables) and LIN in sql

    def given(self, names: list[str]) -> None:
        """``names`` got their column."""
        self.tables.difference_update(names)

    def hidden(self, columns: dict[str, list[str]]) -> dict[str, str]:
        """For a catalog read from DuckDB: the tables that carry lineage though their column is not there."""
        return {t: LIN for t in self.tables if t in columns}
