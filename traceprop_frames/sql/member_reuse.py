"""An eager grouping CTAS's members read again only where its source may have changed since the last read.

An eager grouping ``CREATE TABLE ... AS`` (:mod:`traceprop_frames.sql.member_lists`) reads its members,
``SELECT k AS __tp_k, s.__tp_rid AS __tp_r FROM s WHERE ...``, before the plain statement: ≈ 1.8 ms of
the ≈ 2.4 ms it adds to a 20,000-applicant credit ETL's ``bureau_agg`` (the rest is the NULL lineage
column). A loop that runs the same statements over an unchanged ``s`` reads the same rows every time.
The members of the last read are used again where it can be shown that ``s`` holds exactly the rows it
held then, by a chain over DuckDB's catalog count (``_catalog_version()``; see
:mod:`traceprop_frames.sql.deferred_oids`). That count moves by one at the *start* of every statement
that may change a table, on any connection to the database (``con.raw``, a cursor, another connection
to a shared in-memory database, this connection itself; DDL, DML, transactions, ``register``, failed
statements too), and not for queries.

- A read is kept only where its members query was read before (a statement run once pays nothing for
  this module) and it ran with no other connection to the database open
  (``duckdb_connection_count()`` is 1, read after the count ``c0`` and before the members): a statement
  of another connection that started before ``c0`` and commits after the read (the count moved before
  the read, the rows after it) is then impossible; statements through this connection's own DuckDB
  connection run one after another.
- The kept read is valid at ``c1``, the count after the plain statement, only where ``c1 == c0 + 1``:
  nothing but that statement started between ``c0`` and ``c1``.
- A later grouping CTAS of this connection whose count before it is still the chain's count (nothing at
  all started since: every move since the read was one of these statements) uses the kept members; after
  it, the chain goes on to its ``c1`` again only where ``c1 == c0 + 1`` — else something ran beside it,
  which may have changed ``s`` before the statement read it, and the members are read again and the
  statement run again (as without this module).
- A statement whose target is a kept read's source (``CREATE OR REPLACE TABLE s AS ...``) drops it, and a
  read whose source is its own target is never kept. Any other move of the count (anything else run
  anywhere, a lineage fill of this connection, a failed statement) ends the chain: every kept read is
  dropped (nothing stays held run after run) and the next statement reads its members.

A DuckDB without the counter reads the members every time, as before.
"""

from __future__ import annotations

import pyarrow as pa

_KEEP = 16  # kept reads at most (one per members query)
_SEEN = 256  # members queries remembered as read before


class MemberReads:
    """The members of eager grouping CTAS statements, kept while a count chain shows their sources unchanged."""

    def __init__(self, con) -> None:
        self._con = con
        self._count = getattr(con, "_catalog_version", None)  # None: this DuckDB has no such counter
        self.chain: int | None = None  # the count at which every kept read is still valid
        self.kept: dict[str, tuple[str, pa.Table]] = {}  # members SQL -> (source table, members)
        self._seen: dict[str, None] = {}  # members SQL read before (insertion-ordered, bounded)

    def version(self) -> int | None:
        return None if self._count is None else self._count()

    def reuse(self, msql: str, c0: int | None) -> pa.Table | None:
        """The kept members of ``msql`` where nothing started since the chain's count (``c0`` is the count
        now); where something did, every kept read is dropped."""
        if c0 is None or c0 != self.chain:
            self.forget()
            return None
        hit = self.kept.get(msql)
        return None if hit is None else hit[1]

    def keepable(self, msql: str) -> bool:
        """Whether a read of ``msql`` made now may be kept: it ran before (a statement run once, as in a
        pipeline run once, pays no check) and no other connection to this database is open (≈ 0.25 ms)."""
        if self._count is None:
            return False
        if msql not in self._seen:
            while len(self._seen) >= _SEEN:
                self._seen.pop(next(iter(self._seen)))
            self._seen[msql] = None
            return False
        return self._con.execute("FROM duckdb_connection_count()").fetchall()[0][0] == 1

    def ran(self, msql: str, source: str, target: str, members: pa.Table, c0, keep: bool) -> bool:
        """After the plain statement: True where nothing but it started since ``c0`` (the chain then goes on;
        the read is kept where ``keep``), False where something else did (every kept read dropped)."""
        c1 = self.version()
        if c0 is None or c1 != c0 + 1:
            self.forget()
            return False
        if self.chain != c0:  # a chain that starts here: nothing kept from before
            self.kept.clear()
        self.chain = c1
        for m in [m for m, (s, _) in self.kept.items() if s == target]:
            del self.kept[m]  # (its source was replaced by this statement)
        if keep and source != target:
            self.kept.pop(msql, None)
            while len(self.kept) >= _KEEP:
                self.kept.pop(next(iter(self.kept)))
            self.kept[msql] = (source, members)
        return True

    def forget(self) -> None:
        self.chain = None
        self.kept.clear()
