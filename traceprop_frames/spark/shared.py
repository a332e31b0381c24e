"""Shared sets on Spark: an uncorrelated scalar subquery's rows stored once, as one marker id per row.

The rewriter lists the rows a scalar subquery read (``WHERE c_acctbal > (SELECT avg(c_acctbal) FROM
customer WHERE ...)``) in the lineage of every row that used its value. Copied into each row, that set
costs rows x set size (TPC-H q22 at SF 1: ~6,400 rows x ~38,000 ids, then flattened into 7 groups).
As in the DuckDB path (:mod:`traceprop_frames.sql.shared`), each such row instead carries one *marker
id* (source :data:`~traceprop_frames.sql.sources.MARKER_SID`, witness index :data:`SPARK_K`, and a
number in the low 32 bits), and the marker's set is a Spark DataFrame of the subquery's ids, bound when
the query was planned (a view replaced later does not change it), run once when a lineage question first
needs it. Every answer (``sources``, ``trace``, ``rows_from_source``, ``to_pandas``, ``write_parquet``)
replaces the marker by its set; ``to_pandas`` keeps it as one shared set (stored once), ``write_parquet``
writes it into each row (a file must stand on its own).

Lifetime: a marker's set belongs to a :class:`SharedSets` owner, one per planned query (a result keeps
its own; a view made from a result, by ``register`` or ``CREATE VIEW``, keeps the owners of what it
reads, and so does each owner of the query that reads it). The process-wide table from marker id to owner
holds owners weakly: when the last result or view that can carry a marker is gone, its set (a Spark
DataFrame) is released and its number is handed out again, so a long-running session that runs many
queries holds only the sets of the results still alive. Numbers are unique among live markers; 2^32 sets
alive at once raise :class:`~traceprop_frames.errors.UnsupportedOperationError`.

Markers are process-wide, so a result registered in another connection of the process still resolves;
a marker id that no live owner holds (one from another process: persisted statements and written files
carry no markers) raises :class:`~traceprop_frames.errors.LineageFormatError`.
"""

from __future__ import annotations

import threading
import weakref

import numpy as np

from traceprop_frames.errors import LineageFormatError, UnsupportedOperationError
from traceprop_frames.lineage.refs import sorted_unique
from traceprop_frames.lineage.sources import ROW_BITS, ROW_MASK
from traceprop_frames.sql.shared import KEY_BITS, MAX_WITNESSES, marker_base
from traceprop_frames.sql.sources import MARKER_SID

SPARK_K = MAX_WITNESSES - 1  # witness index of Spark's markers (DuckDB's are resolved before they leave)
_BASE = marker_base(SPARK_K)
_KEY_MASK = (1 << KEY_BITS) - 1
_lock = threading.RLock()  # (re-entered when a collection inside new_marker finalizes an owner)
_LIVE: weakref.WeakValueDictionary[int, SharedSets] = weakref.WeakValueDictionary()  # marker -> owner
_free: list[int] = []  # numbers of released markers, handed out again first
_next = [0]  # the lowest number never handed out


class SharedSets:
    """The shared sets one planned query made, keeping alive the owners whose markers its rows may carry.

    ``parents``: the owners of the views the query reads (their markers flow into this query's rows and
    into its sets). Results and connection views hold owners; nothing else does.
    """

    __slots__ = ("__weakref__", "_numbers", "ids", "parents", "sides")

    def __init__(self, parents=()) -> None:
        self.sides: dict[int, object] = {}  # marker id -> DataFrame with one BIGINT column "id"
        self.ids: dict[int, np.ndarray] = {}  # marker id -> its set, sorted, unique, markers resolved
        self.parents: set[SharedSets] = set()
        self._numbers: list[int] | None = None
        self.adopt(parents)

    def adopt(self, owners) -> None:
        """Keep ``owners`` (and so their sets) alive as long as this one."""
        self.parents.update(o for o in owners if o is not None and o is not self)

    def new_marker(self, side) -> int:
        """A fresh marker id for the set ``side`` (a DataFrame of ids), owned by this object."""
        with _lock:
            if _free:
                n = _free.pop()
            elif _next[0] <= _KEY_MASK:
                n, _next[0] = _next[0], _next[0] + 1
            else:
                raise UnsupportedOperationError(
                    f"{_KEY_MASK + 1} Spark shared sets are alive at once (one per scalar subquery of each "
                    "live result); drop results and views you no longer need (del result) so their sets are "
                    "released, or persist them with to_pandas / write_parquet"
                )
            if self._numbers is None:
                self._numbers = []
                weakref.finalize(self, _release, self._numbers)
            self._numbers.append(n)
            self.sides[_BASE | n] = side
            _LIVE[_BASE | n] = self
        return _BASE | n

    def forget(self, marker: int) -> None:
        """Drop ``marker``'s set (a plan that will not use it); its number is released with the owner."""
        self.sides.pop(marker, None)
        self.ids.pop(marker, None)
        with _lock:
            if _LIVE.get(marker) is self:
                del _LIVE[marker]


def _release(numbers: list[int]) -> None:
    """An owner is gone: its marker numbers may be handed out again (no live row can carry them)."""
    with _lock:
        _free.extend(numbers)


def live_markers() -> int:
    """How many shared sets are alive in this process (markers of live results and views)."""
    return len(_LIVE)


def is_marker(ids: np.ndarray) -> np.ndarray:
    """Which of ``ids`` are marker ids (of any witness index)."""
    return (np.asarray(ids, dtype=np.int64) >> np.int64(ROW_BITS)) == MARKER_SID


def marker_ids(m: int, _seen: frozenset = frozenset()) -> np.ndarray:
    """The set behind marker ``m``: sorted unique source ids (a Spark job the first time)."""
    m = int(m)
    owner = _LIVE.get(m)
    hit = None if owner is None else owner.ids.get(m)
    if hit is not None:
        return hit
    if owner is None or m in _seen:
        low = m & ROW_MASK
        raise LineageFormatError(
            f"row lineage refers to shared set {low >> KEY_BITS}/{low & _KEY_MASK}, which this process did "
            "not make or has released (a shared set lives as long as the results and views that carry it, "
            "within their process); rerun the query, or persist its result with write_parquet / to_pandas, "
            "which store the rows"
        )
    got = owner.sides[m].where("id IS NOT NULL").distinct().toArrow()
    ids = sorted_unique(np.asarray(got.column("id").to_numpy(), dtype=np.int64))
    ids = expand(ids, _seen | {m})
    owner.ids[m] = ids
    return ids


def expand(ids: np.ndarray, _seen: frozenset = frozenset()) -> np.ndarray:
    """Sorted unique ``ids`` with every marker replaced by its set."""
    ids = np.asarray(ids, dtype=np.int64)
    m = is_marker(ids)
    if not m.any():
        return ids
    parts = [ids[~m]] + [marker_ids(int(x), _seen) for x in sorted_unique(ids[m]).tolist()]
    return sorted_unique(np.concatenate(parts))
