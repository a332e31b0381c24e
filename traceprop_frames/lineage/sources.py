"""Source registry: which files (or in-memory tables) row ids point into.

A *global row id* is one int64: ``source_id << 40 | row_number`` where ``row_number`` is the 0-based
data row of the source (header excluded). 2**40 rows per source and 2**23 sources per process.

The registry is process-global. Saved lineage stores the source records (path, sha256, ...) next to the
ids; loading re-registers them and remaps the source ids, so ids never leak between processes.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from traceprop_frames.errors import (
    SourceChangedError,
    SourceMissingError,
    UnknownRowError,
    UnknownSourceError,
)

ROW_BITS = 40
ROW_MASK = (1 << ROW_BITS) - 1
MAX_SOURCES = 1 << (63 - ROW_BITS)


def encode(source_id: int, rows: np.ndarray) -> np.ndarray:
    """Global row ids for ``rows`` (0-based) of source ``source_id``."""
    rows = np.asarray(rows, dtype=np.int64)
    return (np.int64(source_id) << np.int64(ROW_BITS)) | rows


def decode(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split global row ids into (source ids, row numbers)."""
    ids = np.asarray(ids, dtype=np.int64)
    return ids >> np.int64(ROW_BITS), ids & np.int64(ROW_MASK)


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class Source:
    """One loaded source: a file (csv/parquet) or an in-memory table (``tpf.track``)."""

    id: int
    path: str  # as the user gave it to the reader; this is the key of ``sources()``
    abspath: str | None  # None for in-memory sources
    sha256: str
    format: str  # "csv", "parquet", "memory", "sql"
    n_rows: int
    loaded_at: float = field(default_factory=time.time)
    schema: dict[str, str] = field(default_factory=dict)
    # cache of the last successful re-hash: (mtime_ns, size) -> sha256
    _stat_cache: tuple[int, int, str] | None = field(default=None, repr=False, compare=False)

    @property
    def is_file(self) -> bool:
        return self.abspath is not None

    def current_sha256(self) -> str | None:
        """sha256 of the file as it is now (re-hashed only when its size or mtime changed).

        Returns None for in-memory sources and for files that no longer exist.
        """
        if self.abspath is None:
            return None
        try:
            st = os.stat(self.abspath)
        except FileNotFoundError:
            return None
        cached = self._stat_cache
        if cached is not None and cached[0] == st.st_mtime_ns and cached[1] == st.st_size:
            return cached[2]
        digest = sha256_file(self.abspath)
        self._stat_cache = (st.st_mtime_ns, st.st_size, digest)
        return digest

    def check(self) -> bool | None:
        """True if the file is unchanged, False if changed or missing, None for in-memory sources."""
        if self.abspath is None:
            return None
        now = self.current_sha256()
        return now is not None and now == self.sha256

    def verify(self) -> None:
        """Raise if the file changed or disappeared since it was loaded."""
        if self.abspath is None:
            return
        now = self.current_sha256()
        if now is None:
            raise SourceMissingError(
                f"source file {self.path!r} ({self.abspath}) no longer exists; its lineage points at "
                "rows that cannot be checked. Restore the file, or reload the data from its new place."
            )
        if now != self.sha256:
            raise SourceChangedError(
                f"source file {self.path!r} changed since it was loaded (sha256 {self.sha256[:12]}… at "
                f"load, {now[:12]}… now): row numbers may point at different records. Restore the "
                "original file, or reload it and re-run the pipeline; pass strict=False to get the rows "
                "flagged sha256_ok=False instead of this error."
            )

    def to_record(self) -> dict:
        return {
            "id": self.id,
            "path": self.path,
            "abspath": self.abspath,
            "sha256": self.sha256,
            "format": self.format,
            "n_rows": int(self.n_rows),
            "loaded_at": self.loaded_at,
            "schema": dict(self.schema),
        }


class LazyHashSource(Source):
    """An in-memory source whose content hash is computed on first read of :attr:`sha256`.

    Registering one costs O(1): nothing hashes the data until a reader asks for the hash (saving
    lineage, a certificate, ``trace()``'s ``SourceRow.sha256``). The hash is of the data as it is then.
    """

    _hash_lock = threading.Lock()  # one for all: hashing is rare, registering must stay cheap

    def __init__(self, *, hasher: Callable[[], str], **kw) -> None:
        self._hasher = hasher
        self._digest = None
        super().__init__(sha256="", **kw)

    @classmethod
    def memory(
        cls, sid: int, path: str, n_rows: int, hasher: Callable[[], str], schema: dict
    ) -> LazyHashSource:
        """What ``LazyHashSource(hasher=..., id=sid, path=path, abspath=None, format="memory", ...)`` makes,
        with its fields set at once (registering runs on every ``tp.tensor(array, source=...)``)."""
        obj = cls.__new__(cls)
        obj.__dict__.update(
            _hasher=hasher, _digest=None, id=sid, path=path, abspath=None, format="memory", n_rows=n_rows,
            loaded_at=time.time(), schema=schema, _stat_cache=None,
        )  # fmt: skip
        return obj

    @property
    def sha256(self) -> str:  # type: ignore[override]
        if self._digest is None:
            with self._hash_lock:
                if self._digest is None:
                    self._digest = self._hasher()
                    self._hasher = None  # release the data reference once hashed
        return self._digest

    @sha256.setter
    def sha256(self, value: str) -> None:
        if value:
            self._digest = value

    @property
    def is_hashed(self) -> bool:
        return self._digest is not None


class SourceRegistry:
    """Process-wide table of sources. The same (path, sha256, format) is registered once."""

    def __init__(self) -> None:
        self._sources: list[Source] = []
        self._by_key: dict[tuple, int] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sources)

    def register(
        self,
        path: str,
        *,
        sha256: str,
        format: str,
        n_rows: int,
        abspath: str | None = None,
        schema: dict[str, str] | None = None,
        loaded_at: float | None = None,
    ) -> Source:
        key = (str(path), abspath, sha256, format, int(n_rows))
        with self._lock:
            sid = self._by_key.get(key)
            if sid is not None:
                return self._sources[sid]
            sid = len(self._sources)
            if sid >= MAX_SOURCES:
                raise OverflowError(f"more than {MAX_SOURCES} sources registered in one process")
            src = Source(
                id=sid,
                path=str(path),
                abspath=abspath,
                sha256=sha256,
                format=format,
                n_rows=int(n_rows),
                schema=dict(schema or {}),
            )
            if loaded_at is not None:
                src.loaded_at = loaded_at
            self._sources.append(src)
            self._by_key[key] = sid
            return src

    def register_memory(self, path: str, n_rows: int, hasher: Callable[[], str], schema=None) -> Source:
        """Register an in-memory source in O(1): its sha256 is ``hasher()``, called on first use.

        Every call registers a new source (the content is not hashed, so two calls cannot be told apart
        as the same data); :meth:`find` returns all sources of one name and readers merge them by name.
        """
        with self._lock:
            sid = len(self._sources)
            if sid >= MAX_SOURCES:
                raise OverflowError(f"more than {MAX_SOURCES} sources registered in one process")
            src = LazyHashSource.memory(sid, str(path), int(n_rows), hasher, dict(schema or {}))
            self._sources.append(src)
            return src

    def register_file(self, path: str | os.PathLike, format: str, n_rows: int, schema=None) -> Source:
        """Register a file source, hashing its bytes now."""
        p = os.fspath(path)
        if not os.path.exists(p):
            raise SourceMissingError(f"source file {p!r} does not exist (cwd: {os.getcwd()})")
        abspath = os.path.abspath(p)
        digest = sha256_file(abspath)
        src = self.register(p, sha256=digest, format=format, n_rows=n_rows, abspath=abspath, schema=schema)
        st = os.stat(abspath)
        src._stat_cache = (st.st_mtime_ns, st.st_size, digest)
        return src

    def register_record(self, rec: dict) -> Source:
        """Re-register a source saved with :meth:`Source.to_record` (ids may differ)."""
        return self.register(
            rec["path"],
            sha256=rec["sha256"],
            format=rec["format"],
            n_rows=rec["n_rows"],
            abspath=rec.get("abspath"),
            schema=rec.get("schema"),
            loaded_at=rec.get("loaded_at"),
        )

    def get(self, source_id: int) -> Source:
        try:
            return self._sources[int(source_id)]
        except IndexError:
            raise UnknownSourceError(f"no source with id {source_id} in this process") from None

    def find(self, path: str | os.PathLike, candidates: np.ndarray | None = None) -> list[Source]:
        """Sources matching ``path`` (as given, or the same absolute file), newest first.

        ``candidates`` restricts the search to those source ids (the ones a lineage refers to).
        """
        p = os.fspath(path)
        ap = os.path.abspath(p)
        pool = self._sources if candidates is None else [self._sources[int(i)] for i in candidates]
        hits = [s for s in pool if s.path == p or (s.abspath is not None and s.abspath == ap)]
        return sorted(hits, key=lambda s: -s.id)

    def ids_for_rows(self, path: str | os.PathLike, rows, candidates: np.ndarray | None = None) -> np.ndarray:
        """Global ids of ``rows`` of the source(s) named ``path``; raises for unknown paths or rows."""
        hits = self.find(path, candidates)
        if not hits:
            known = sorted({self._sources[int(i)].path for i in candidates}) if candidates is not None else []
            raise UnknownSourceError(
                f"no lineage refers to source {os.fspath(path)!r}"
                + (f"; the sources behind these rows are {known}" if known else "")
                + ". Pass the path exactly as given to the reader (or the same file)."
            )
        rows = np.atleast_1d(np.asarray(rows))
        if rows.size and not np.issubdtype(rows.dtype, np.integer):
            raise UnknownRowError(f"row numbers must be integers, got dtype {rows.dtype}")
        rows = rows.astype(np.int64)
        n_rows = max(s.n_rows for s in hits)
        bad = rows[(rows < 0) | (rows >= n_rows)]
        if bad.size:
            raise UnknownRowError(
                f"{os.fspath(path)!r} has data rows 0..{n_rows - 1} (0-based, header excluded); "
                f"unknown row numbers: {bad[:20].tolist()}{' …' if bad.size > 20 else ''}"
            )
        return np.concatenate([encode(s.id, rows) for s in hits])


REGISTRY = SourceRegistry()
