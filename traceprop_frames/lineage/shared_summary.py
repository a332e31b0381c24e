"""One line per derived row naming the shared sets it also read (for influence tables and reports).

A row's *direct* lineage is the source rows whose values it carries; its shared context is the sets
that statistics broadcast into it read (:mod:`traceprop_frames.lineage.context`). Tables meant for
people list the direct rows and summarise the context in one column: ``"mean(axis=0) [2000 rows]"``.
"""

from __future__ import annotations

import numpy as np

from traceprop_frames.lineage.refs import sorted_unique


def context_sets(lineage, i: int, cache: dict | None = None) -> list[tuple[str, int]]:
    """``(label, distinct source rows read)`` of each shared set row ``i`` refers to directly.

    ``cache`` (a dict kept across calls on one lineage) keeps the row count per set.

    Examples
    --------
    >>> from traceprop_frames.lineage.rowsets import RowLineage
    >>> lin = RowLineage(np.array([0, 1, 2]), np.array([10, 11]))
    >>> context_sets(lin, 0)
    []
    """
    if lineage is None or not lineage.has_context:
        return []
    ctx = lineage.context
    n = len(lineage)
    sets = sorted_unique(ctx.row_refs(np.array([int(i) % max(n, 1)])))
    cache = {} if cache is None else cache
    out = []
    for s, label in zip(sets.tolist(), ctx.labels(sets)):
        if s not in cache:
            cache[s] = int(sorted_unique(ctx.closure(np.array([s]))).size)
        out.append((label, cache[s]))
    return out


def context_text(lineage, i: int, cache: dict | None = None) -> str | None:
    """:func:`context_sets` as one string (``"mean(axis=0) [2000 rows]; std [2000 rows]"``), None if none."""
    sets = context_sets(lineage, i, cache)
    return "; ".join(f"{label} [{n} rows]" for label, n in sets) or None
