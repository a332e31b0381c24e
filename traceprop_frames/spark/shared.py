"""Shared sets on Spark: an uncorrelated scalar subquery's rows stored once, as one marker id per row.

The rewriter lists the rows a scalar subquery read (``WHERE c_acctbal > (SELECT avg(c_acctbal) FROM
customer WHERE ...)``) in the lineage of every row that used its value. Copied into each row, that set
costs rows x set size (TPC-H q22 at SF 1: ~6,400 rows x ~38,000 ids, then flattened into 7 groups).
As in the DuckDB path (:mod:`traceprop_frames.sql.shared`), each such row instead carries one *marker
id* (source :data:`~traceprop_frames.sql.sources.MARKER_SID`, witness index :data:`SPARK_K`, and a
process-wide counter in the low 32 bits), and the marker's set is a Spark DataFrame of the subquery's
ids, bound when the query was planned (a view replaced later does not change it), run once when a
lineage question first needs it. Every answer (``sources``, ``trace``, ``rows_from_source``,
``to_pandas``, ``write_parquet``) replaces the marker by its set; ``to_pandas`` keeps it as one shared
set (stored once), ``write_parquet`` writes it into each row (a file must stand on its own).

Markers are process-wide, so a result registered in another connection of the process still resolves;
a marker id that this process did not make (a table written with markers by another process cannot
be: persisted statements do not use markers) raises :class:`~traceprop_frames.errors.LineageFormatError`.
"""

from __future__ import annotations

import itertools
import threading

import numpy as np

from traceprop_frames.errors import LineageFormatError
from traceprop_frames.lineage.refs import sorted_unique
from traceprop_frames.lineage.sources import ROW_BITS, ROW_MASK
from traceprop_frames.sql.shared import KEY_BITS, MAX_WITNESSES, marker_base
from traceprop_frames.sql.sources import MARKER_SID

SPARK_K = MAX_WITNESSES - 1  # witness index of Spark's markers (DuckDB's are resolved before they leave)
_BASE = marker_base(SPARK_K)
_KEY_MASK = (1 << KEY_BITS) - 1
_counter = itertools.count()
_lock = threading.Lock()
_SIDES: dict[int, object] = {}  # marker id -> DataFrame with one BIGINT column "id" (may hold markers)
_IDS: dict[int, np.ndarray] = {}  # marker id -> its set, sorted, unique, markers inside resolved


def new_marker(side) -> int | None:
    """A fresh marker id for the set ``side`` (a DataFrame of ids), or None when the counter is spent."""
    n = next(_counter)
    if n > _KEY_MASK:
        return None
    with _lock:
        _SIDES[_BASE | n] = side
    return _BASE | n


def is_marker(ids: np.ndarray) -> np.ndarray:
    """Which of ``ids`` are marker ids (of any witness index)."""
    return (np.asarray(ids, dtype=np.int64) >> np.int64(ROW_BITS)) == MARKER_SID


def marker_ids(m: int, _seen: frozenset = frozenset()) -> np.ndarray:
    """The set behind marker ``m``: sorted unique source ids (a Spark job the first time)."""
    hit = _IDS.get(m)
    if hit is not None:
        return hit
    side = _SIDES.get(int(m))
    if side is None or m in _seen:
        low = int(m) & ROW_MASK
        raise LineageFormatError(
            f"row lineage refers to shared set {low >> KEY_BITS}/{low & _KEY_MASK}, which this process did "
            "not make (lineage with shared sets does not outlive its process); rerun the query, or persist "
            "its result with write_parquet / to_pandas, which store the rows"
        )
    got = side.where("id IS NOT NULL").distinct().toArrow()
    ids = sorted_unique(np.asarray(got.column("id").to_numpy(), dtype=np.int64))
    ids = expand(ids, _seen | {int(m)})
    with _lock:
        _IDS[int(m)] = ids
    return ids


def expand(ids: np.ndarray, _seen: frozenset = frozenset()) -> np.ndarray:
    """Sorted unique ``ids`` with every marker replaced by its set."""
    ids = np.asarray(ids, dtype=np.int64)
    m = is_marker(ids)
    if not m.any():
        return ids
    parts = [ids[~m]] + [marker_ids(int(x), _seen) for x in sorted_unique(ids[m]).tolist()]
    return sorted_unique(np.concatenate(parts))
