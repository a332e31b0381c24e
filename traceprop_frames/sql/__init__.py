"""Row-level lineage through DuckDB SQL: ``tpf.connect()`` returns a :class:`TracedConnection`.

Queries are rewritten with sqlglot (see :mod:`traceprop_frames.sql.rewrite` for the rules and the
semantics of subqueries); results come back as traced pandas DataFrames.
"""

from traceprop_frames.sql.connection import TracedConnection, connect, lineage_from_arrow
from traceprop_frames.sql.rewrite import LIN, RID, Catalog, rewrite_query

__all__ = ["LIN", "RID", "Catalog", "TracedConnection", "connect", "lineage_from_arrow", "rewrite_query"]
