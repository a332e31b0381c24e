"""Whether the DuckDB connection underneath is known to have no transaction open, without asking.

The traced connection runs some reads in a transaction of its own (the query and the lineage lists it
reads see the same rows, see :meth:`TracedConnection._own_transaction`). It must not ``BEGIN`` inside a
transaction the user opened through ``con.raw`` (DuckDB aborts an open transaction when another BEGIN
fails), and it found out by asking: ``SELECT txid_current()`` twice (the same id twice: inside one),
two statements, ≈ 1 ms of a 30 ms credit ETL at 20,000 applicants.

This DuckDB build counts, per database and across its connections, the statements that may change what
a name binds to (``_catalog_version()``): ``BEGIN``, ``COMMIT`` and ``ROLLBACK`` on any connection count,
as do DDL and DML; queries do not. So where the connection was known to have no transaction open when
the count was ``n`` (checked by asking, after its own ``COMMIT``, or after an autocommit statement of its
own run while that was known) and the count is still ``n``, nothing that could open one has run since:
the question need not be asked. Anything else (the count moved, a DuckDB without the counter) asks as
before.
"""

from __future__ import annotations


class Autocommit:
    """The catalog count at which the connection was last known to have no transaction open."""

    def __init__(self, raw) -> None:
        self._count = getattr(raw, "_catalog_version", None)  # None: this DuckDB has no such counter
        self._at: int | None = None

    def known(self) -> bool:
        """True where no transaction can be open: none was at the count now."""
        return self._at is not None and self._count is not None and self._count() == self._at

    def mark(self) -> None:
        """No transaction is open now (the caller knows: it asked, committed, or ran an autocommit
        statement of its own while :meth:`known`)."""
        if self._count is not None:
            self._at = self._count()

    def forget(self) -> None:
        self._at = None
