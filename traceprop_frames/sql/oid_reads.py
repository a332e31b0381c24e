"""The table oids read once while nothing that may change them has run (DuckDB's catalog count).

A lazy result's lineage check compares the oids of the tables its query read with the oids now
(``duckdb_tables()``, ≈ 0.6-1.3 ms a read): a table replaced through ``con.raw``, a cursor or another
connection gets a new oid. Every request read them again, and a request over lazily made tables read
them once per table checked.

This DuckDB build counts, per database and across all its connections, the statements that may change
what a name binds to (``_catalog_version()``: DDL, DML, transactions, ``ATTACH`` / ``DETACH``,
``register``, failed statements too; not queries or binds), as :mod:`traceprop_frames.sql.deferred_oids`
and :mod:`traceprop_frames.sql.autocommit` use it. While the count equals the count of the last read,
that read's oids are the oids now: they are returned without asking. A read whose count moved while it
ran is not kept; a DuckDB without the counter reads every time, as before.
"""

from __future__ import annotations

from collections.abc import Callable


class OidReads:
    """The last oid read and the catalog count it holds at."""

    def __init__(self, raw) -> None:
        self._count = getattr(raw, "_catalog_version", None)  # None: this DuckDB has no such counter
        self._last: tuple[int, dict[str, int]] | None = None

    def read(self, query: Callable[[], dict[str, int]]) -> dict[str, int]:
        """The oids now: the last read's where the count has not moved since, else ``query()`` (a copy:
        callers may change theirs)."""
        if self._count is None:
            return query()
        now = self._count()
        if self._last is not None and self._last[0] == now:
            return dict(self._last[1])
        oids = query()
        self._last = (now, dict(oids)) if self._count() == now else None
        return oids

    def at(self, count: int | None) -> dict[str, int] | None:
        """The last read's oids where it holds at catalog count ``count`` (else None): what a run of lazy
        CTAS statements starting at that count knows (:mod:`traceprop_frames.sql.deferred_oids`)."""
        if count is None or self._last is None or self._last[0] != count:
            return None
        return self._last[1]

    def stale(self) -> bool:
        """Whether oids read earlier may differ now: the count moved since the last read (or none is
        kept). False where this DuckDB has no counter (nothing to tell by: callers keep their cache)."""
        return self._count is not None and (self._last is None or self._last[0] != self._count())

    def forget(self) -> None:
        self._last = None
