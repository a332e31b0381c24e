"""Re-run the SQL a training table was built with, from its lineage DAG (for erasure by rebuild).

A traced connection records, on the op DAG, every file it loaded (``read_csv`` / ``read_parquet`` with
path, sha256, table name and the loader's options) and every statement (``sql`` with the query text). :func:`replay` loads
the same files into a fresh connection and runs the recorded statements in dependency order; inside
an erasure's re-run (:func:`traceprop_frames.lineage.erasure_scope.skipping_rows`) the loaders filter
the erased rows at the scan, so group-by aggregates, scalar subqueries and windows are recomputed
without them, and the result keeps the original row ids.

Usage::

    to_xy = lambda df: (df.drop(columns="TARGET"), df["TARGET"])
    clf.unlearn(source="bureau.csv", rows=[12], rebuild=rerun(clf.lineage_, to_xy))
"""

from __future__ import annotations

import pandas as pd

from traceprop_frames.errors import SourceChangedError, UnsupportedOperationError

_PASS_THROUGH = ("erase", "rebuild")  # ops the erasure layer adds on top of the table's own lineage
_LOADERS = ("read_csv", "read_parquet")


def sql_head(node):
    """The ``sql`` op whose result the training table is (following first parents through the erasure
    layer's ops and single-parent row-preserving steps)."""
    seen = node
    while node is not None and node.op != "sql":
        if node.op in _PASS_THROUGH or len(node.parents) == 1:
            node = node.parents[0] if node.parents else None
        else:
            node = None
    if node is None:
        raise UnsupportedOperationError(
            f"the training table was not built by a query of a traced connection (its last op is "
            f"{seen.op!r}); pass rebuild= a function that re-runs your pipeline instead."
        )
    return node


def _load(con, node) -> None:
    p = node.params
    if "table" not in p:
        raise UnsupportedOperationError(
            f"cannot replay {node.op} of {p.get('path')!r}: it was not loaded by con.{node.op} (no table name "
            "recorded). Pass rebuild= a function that re-runs your pipeline instead."
        )
    getattr(con, node.op)(p["path"], p["table"], **p.get("options", {}))  # the options recorded at load
    from traceprop_frames.lineage import REGISTRY

    now = REGISTRY.find(p["path"])[0].sha256
    if now != p["sha256"]:
        raise SourceChangedError(
            f"{p['path']!r} changed since the training table was built (sha256 {p['sha256'][:12]}… then, "
            f"{now[:12]}… now): its recorded SQL cannot be replayed on it. Restore the file."
        )


def replay(head) -> pd.DataFrame:
    """Load the files and run the statements of ``head``'s DAG in a fresh connection; ``head``'s result."""
    from traceprop_frames.sql.connection import connect

    con = connect()
    out = None
    for node in head.topo():
        if node.op in _LOADERS:
            _load(con, node)
        elif node.op == "sql":
            out = con.execute(node.params["query"])
        elif node.op != "sql_insert":  # an insert's statement is its own sql node, replayed above
            raise UnsupportedOperationError(
                f"cannot replay op {node.op!r} (a frame registered from pandas?): only files loaded by the "
                "connection and SQL statements replay. Pass rebuild= a function that re-runs your pipeline."
            )
    if out is None:
        raise UnsupportedOperationError("the recorded SQL's last statement returned no table to rebuild from")
    return out


def rerun(lineage, to_xy):
    """A ``rebuild=`` callable: replay the SQL behind ``lineage`` and turn its result into ``(X, y)``.

    Parameters
    ----------
    lineage : RowLineage
        The training table's lineage (``est.lineage_``).
    to_xy : callable
        ``df -> (X, y)``: the steps after the query (column selection), as done before ``fit``.
    """
    head = sql_head(lineage.node)

    def rebuild():
        return to_xy(replay(head))

    rebuild.__qualname__ = "sql.replay.rerun"
    return rebuild
