"""The table oids of lazy ``CREATE TABLE ... AS`` records, read once for a run of them.

A lazily captured CTAS (see :mod:`traceprop_frames.sql.lazy_tables`) records, for the table it made and
each table it read, the DuckDB table oid: a table replaced through ``con.raw`` or another connection gets
a new oid, so the record tells "still the table it was made from / the table made" apart from "replaced".
Reading the oids costs a statement (``duckdb_tables()``, ≈ 0.6 ms); a pipeline of several CTAS paid it
after each one.

This DuckDB build counts, per database and across all its connections, the statements that may change
what a name binds to (``_catalog_version()``: DDL, DML, transactions, ``register``, failed statements
too; not queries or binds). While that count has not moved since a CTAS, the oids read *now* are the oids
the CTAS left; the connection keeps its count once the CTAS is done and reads the oids when next needed:

- at the next oid read for any reason (a lazy query's fingerprint, a lineage check);
- before any other statement through the traced connection (``execute``, the loaders, ``register``);
- a further lazy CTAS run through the traced connection while the count is unchanged *continues* the run
  (it changes no oid a record holds: pending tables that read its target are filled first, and a pending
  table it replaces is no longer pending), so the run is read once, after its last CTAS.

If the count moved in between by something else (``con.raw``, a cursor, another connection to the same
database, even a ``SET`` or a statement on another table), the oids *now* may not be the oids the records
saw. The run then keeps what it knew when it started (:attr:`DeferredOids.known`: the oids read at the
count just before its first CTAS, a read kept by :mod:`~traceprop_frames.sql.oid_reads` or made then):
while the count held, only the run's own CTAS statements ran, and they replaced only the tables they made
(:attr:`DeferredOids.made`), so every other table's oid is still the one known at the start. The
settle gives those tables that oid — a table replaced since then has another one now, and a later check
reports it as changed (:class:`~traceprop_frames.errors.SourceChangedError`) — and gives the tables the
run made the oid read now, marking each such record for a check of its rows (``verify``): before its
lineage is used, the table must hold exactly the rows its recorded query gives over its inputs (which the
oids show are the tables it was made from), else it raises. A record of an eager grouping CTAS (its
lineage is the members read when it was made, not its query) keeps :data:`UNREAD` for its table. Where
the run's start is not known (no oids read at its count), every oid stays :data:`UNREAD`, equal to no
oid: the tables count as changed, never a lineage computed from a table that may have been replaced. A
DuckDB without the counter reads the oids right after each CTAS, as before.

A lazy *query* run from its kept plan while records wait (or the cached oids are gone after a CTAS) waits
with them (:meth:`DeferredOids.add_result`): its result's fingerprint holds its tables' write counts now
and the oids read later. A table that a later CTAS of the run replaces has its write count moved by it,
so the result still reports it as changed; the result's resolver is held weakly (a result dropped before
the read needs none). The credit ETL (two CTAS, then the joined query, in a loop) then reads no oids at
all until lineage is asked for or another statement runs.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

UNREAD = object()  # a record's oid not read (yet, or ever): equal to no oid


class _Result:
    """A lazy query's resolver waiting for its oids (held weakly), read and set as a record's are."""

    __slots__ = ("_ref",)
    name = None  # (a record's table name: none)

    def __init__(self, resolver) -> None:
        self._ref = weakref.ref(resolver)

    @property
    def alive(self) -> bool:
        return self._ref() is not None

    @property
    def fingerprint(self) -> dict:
        resolver = self._ref()
        return {} if resolver is None else resolver.fingerprint

    @fingerprint.setter
    def fingerprint(self, fp: dict) -> None:
        resolver = self._ref()
        if resolver is not None:
            resolver.fingerprint = fp


def _live(record) -> bool:
    """False for a result's entry whose result is gone (it needs no oids)."""
    return not isinstance(record, _Result) or record.alive


class DeferredOids:
    """Pending-table records whose fingerprints wait for one oid read (see the module docstring)."""

    def __init__(self, raw) -> None:
        self._count = getattr(raw, "_catalog_version", None)  # None: this DuckDB has no such counter
        self.records: list = []
        self.at: int | None = None  # the count the records' oids are valid at
        self.known: dict[str, int] | None = None  # oids at the run's start (None: not known)
        self.made: set[str] = set()  # tables the run's CTAS statements made (their oids not in known)

    @property
    def available(self) -> bool:
        return self._count is not None

    def version(self) -> int | None:
        return None if self._count is None else self._count()

    def unchanged(self) -> bool:
        """True when no record waits, or nothing that may change a name ran since the records' count."""
        return not self.records or self.version() == self.at

    def _start(self, known: dict[str, int] | None) -> None:
        """A run starts where no record waits: ``known`` are the oids at the count just before it."""
        if not self.records:
            self.known = None if known is None else dict(known)
            self.made = set()

    def add(self, record, tables: list[str], writes: dict[str, int], known: dict | None = None) -> None:
        """``record`` (a PendingTable just made) waits for the oids of ``tables``; the count now is the
        one every waiting record is valid at (the caller checked :meth:`unchanged` before its CTAS).
        ``known``: the oids at the count just before the CTAS, where read (used where a run starts)."""
        self._start(known)
        self.made.add(record.name)
        if self.known is not None:
            self.known.pop(record.name, None)
        record.fingerprint = {t: (UNREAD, writes.get(t, 0)) for t in tables}
        # the record of a table it replaces is no longer pending: dropped (a loop of CTAS keeps one each)
        self.records = [r for r in self.records if r.name != record.name and _live(r)]
        self.records.append(record)
        self.at = self.version()

    def add_result(
        self, resolver, tables: list[str], writes: dict[str, int], known: dict | None = None
    ) -> None:
        """A lazy query's ``resolver`` waits for the oids of ``tables`` like a record (the caller checked
        :meth:`unchanged` before its query; a query moves no count; ``known`` as for :meth:`add`)."""
        self._start(known)
        resolver.fingerprint = {t: (UNREAD, writes.get(t, 0)) for t in tables}
        self.records = [r for r in self.records if _live(r)]
        self.records.append(_Result(resolver))
        self.at = self.version()

    def advance(self) -> None:
        """The traced connection ran a statement that replaced none of the records' tables (a lazy CTAS
        that failed): the records stay valid at the count now."""
        if self.records:
            self.at = self.version()

    def settle(
        self,
        read: Callable[[], dict[str, int]],
        oids: dict[str, int] | None = None,
        checkable: Callable[[object], bool] = lambda record: True,
    ) -> list:
        """Give the waiting records their oids: ``oids`` (read now) or ``read()``. Where the count moved,
        from what the run knew at its start (see the module docstring); returns the records whose table
        must be checked row by row before use (a record ``checkable`` refuses keeps :data:`UNREAD`)."""
        if not self.records:
            return []
        records, self.records = self.records, []
        known, made, self.known, self.made = self.known, self.made, None, set()
        moved = self.version() != self.at
        if moved and known is None:
            return []  # they keep UNREAD: their tables count as changed
        if oids is None:
            oids = read()
        if not moved:
            for r in records:
                r.fingerprint = {t: (oids.get(t), w) for t, (_, w) in r.fingerprint.items()}
            return []
        verify = []
        for r in records:
            ok = r.name is None or checkable(r)
            r.fingerprint = {
                t: (known.get(t) if t not in made else oids.get(t) if ok or t != r.name else UNREAD, w)
                for t, (_, w) in r.fingerprint.items()
            }
            if r.name is not None and ok:
                verify.append(r)
        return verify
