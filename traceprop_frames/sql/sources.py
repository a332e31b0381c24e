"""Source ids inside a DuckDB database, mapped to this process's :data:`REGISTRY` ids.

Row ids stored in DuckDB tables are ``db_source_id << 40 | row``. A database file outlives the process
that loaded its sources, so a persistent database keeps its source records (path, sha256, format,
n_rows, ...) in a small table ``__tp_sources``; reopening it re-registers them, and ids coming out of
DuckDB are remapped to this process's ids (one small lookup table, no loop over rows). In-memory
databases use the process ids themselves (the identity map).
"""

from __future__ import annotations

import json

import duckdb
import numpy as np

from traceprop_frames.errors import LineageFormatError
from traceprop_frames.lineage import REGISTRY
from traceprop_frames.lineage.sources import ROW_BITS, ROW_MASK

TABLE = "__tp_sources"
MARKER_SID = (1 << (63 - ROW_BITS)) - 1  # reserved source id: "the rows of constant witness k"


class SourceMap:
    """Two-way map between a database's source ids and the process registry's."""

    def __init__(self, raw: duckdb.DuckDBPyConnection, persistent: bool) -> None:
        self.raw = raw
        self.persistent = persistent
        self._to_proc: dict[int, int] = {}
        self._to_db: dict[int, int] = {}
        self._identity = True
        if persistent:
            exists = raw.execute(
                "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND schema_name = 'main'", [TABLE]
            ).fetchall()[0][0]
            if exists:
                for db_id, rec in raw.execute(f"SELECT db_id, record FROM {TABLE}").fetchall():
                    self._add(int(db_id), REGISTRY.register_record(json.loads(rec)).id)

    def _add(self, db_id: int, proc_id: int) -> None:
        self._to_proc[db_id] = proc_id
        self._to_db[proc_id] = db_id
        self._identity = self._identity and db_id == proc_id

    def db_id(self, proc_id: int) -> int:
        """The database id of a registry source (allocated, and persisted, on first use)."""
        hit = self._to_db.get(proc_id)
        if hit is not None:
            return hit
        db_id = proc_id if proc_id not in self._to_proc else max(self._to_proc) + 1
        if self.persistent:
            self.raw.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (db_id BIGINT PRIMARY KEY, record VARCHAR)")
            rec = json.dumps(REGISTRY.get(proc_id).to_record())
            self.raw.execute(f"INSERT INTO {TABLE} VALUES (?, ?)", [db_id, rec])
        self._add(db_id, proc_id)
        return db_id

    def _remap(self, ids: np.ndarray, mapping: dict[int, int], allocate: bool) -> np.ndarray:
        if ids.size == 0:
            return ids
        sids = ids >> np.int64(ROW_BITS)
        uniq = np.unique(sids)
        lut = {}
        for s in uniq.tolist():
            if s not in mapping and allocate:
                self.db_id(s)
            if s not in mapping:
                raise LineageFormatError(
                    f"row ids refer to source {s}, unknown to this database's {TABLE} table (was the "
                    "table copied from another database?)"
                )
            lut[s] = mapping[s]
        new = np.array([lut[s] for s in uniq.tolist()], dtype=np.int64)
        return (new[np.searchsorted(uniq, sids)] << np.int64(ROW_BITS)) | (ids & np.int64(ROW_MASK))

    def to_db(self, ids: np.ndarray) -> np.ndarray:
        """Process ids (e.g. a registered traced frame's lineage) as database ids."""
        out = self._remap(ids, self._to_db, allocate=True)
        return ids if self._identity else out

    def to_process(self, ids: np.ndarray) -> np.ndarray:
        """Database ids (from a query result) as this process's registry ids."""
        if self._identity:
            return ids
        return self._remap(ids, self._to_proc, allocate=False)
