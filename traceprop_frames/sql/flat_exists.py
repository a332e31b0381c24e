"""A flat member listing with a correlated ``[NOT] EXISTS`` runs grouped (``GROUP BY ALL``).

A lazy request for an aggregate's rows reads the flat listing of their members (one row per member:
its lineage parts; the request keeps their union). Where that listing filters with a correlated
``NOT EXISTS`` (TPC-H q22: ``NOT EXISTS (SELECT * FROM orders WHERE o_custkey = c_custkey)``), DuckDB
plans the plain query (an aggregate on top) with its duplicate-eliminated join: the outer rows' keys
are collected first and ``orders`` is scanned with them as a filter. Without an aggregate on top its
optimizer removes that join and builds a hash table of the whole ``orders`` (1.5 M rows at SF 1): the
backward query cost more than the query itself (q22: 57 ms CPU against 37 ms, DuckDB alone). Grouped
by all its columns the listing gets the plain query's plan (q22: 21-34 ms).

Grouping drops repeated member rows only, and a flat listing is used as the union of its rows: the
lineage is the same. Listings without ``EXISTS`` are not grouped: an aggregate over a large listing
costs more than it saves (q06, q14: +15-20 %).
"""

from __future__ import annotations

import re

_EXISTS = re.compile(r"\bEXISTS\s*\(", re.IGNORECASE)


def grouped(query: str) -> str:
    """``query`` (a flat listing's SELECT) with ``GROUP BY ALL`` where it has an ``EXISTS``; else as is."""
    return f"{query} GROUP BY ALL" if _EXISTS.search(query) else query
