"""A kept lazy capture statement run with one bind where nothing can have changed what it binds to.

A lazy query whose plan is kept (same text, same catalog) ran its capture statement as
``con.sql(capture).df()``. In this DuckDB build ``con.sql`` binds the statement to make the relation
(its column types are read from it) and ``.df()`` prepares and binds it again to run it: the first bind
is ≈ 2 ms of TPC-H q02's ≈ 15 ms. ``con.execute(capture).df()`` binds once and gives the same frame
(the same result through the same conversion).

The two differ where the statement does not bind: inside a transaction the user opened, a failed
``con.sql`` leaves the transaction usable (the eager path then reports the error as before), a failed
``con.execute`` aborts it. So the direct run is used only where the statement bound before at the
catalog count now. This DuckDB build counts, per database and across all its connections, every
statement that may change what a name binds to (``_catalog_version()``: DDL, DML, transactions,
``SET`` / ``USE``, ``ATTACH``, failed statements too; not queries or binds; see
:mod:`traceprop_frames.sql.oid_reads`). While the count equals the count read *before* the statement
last bound, nothing has run since that could make it bind otherwise: it binds again, to the same column
types (kept with the count; the direct run's own column types are compared with them all the same, and
a difference aborts it and binds through a relation), and the frame is converted as before. A DuckDB
without the counter keeps the relation path every time.

Only small results: ``execute`` streams its result, and ``.df()`` of a streamed result converts it chunk
by chunk, slower than a relation's materialized one once there are many chunks (a 200,000-row lazy result:
1.125x the relation path's CPU time; 20,000 rows: 1.013x), while the bind saved is a fixed cost. So the
direct run is used only where the statement's last result fitted in one DuckDB vector (``_DIRECT_ROWS``),
which both paths fetch in one chunk; a larger result sends the next run through a relation again.
"""

from __future__ import annotations

_KEEP = 256
_DIRECT_ROWS = 2048  # DuckDB's vector size: a result this small comes in one chunk either way


class BoundCaptures:
    """Per query text: the capture statement that last bound, the catalog count before that bind, and
    the column types it bound to."""

    def __init__(self, raw) -> None:
        self._count = getattr(raw, "_catalog_version", None)  # None: this DuckDB has no such counter
        self._kept: dict[str, tuple[str, int, list[str]]] = {}

    def count(self) -> int | None:
        """The catalog count now (read before a bind that :meth:`keep` records)."""
        return None if self._count is None else self._count()

    def types(self, text: str, sql: str) -> list[str] | None:
        """The column types ``sql`` bound to for ``text`` where it bound at the count now (then running it
        directly binds it the same way); None where it must bind through a relation first."""
        hit = self._kept.get(text)
        if hit is None or self._count is None or hit[1] != self._count() or hit[0] != sql:
            return None
        return hit[2]

    def keep(self, text: str, sql: str, count: int | None, types: list[str], rows: int) -> None:
        """``sql`` (for ``text``) bound to ``types`` and gave ``rows`` rows; ``count`` was read before the
        bind. Not kept where the result is larger than one vector (see the module docstring)."""
        if count is None or rows > _DIRECT_ROWS:
            return
        while len(self._kept) >= _KEEP:
            self._kept.pop(next(iter(self._kept)))
        self._kept[text] = (sql, count, types)

    def ran(self, text: str, rows: int) -> None:
        """A direct run of ``text`` gave ``rows`` rows: past one vector, the next run goes through a relation."""
        if rows > _DIRECT_ROWS:
            self.forget(text)

    def forget(self, text: str) -> None:
        self._kept.pop(text, None)
