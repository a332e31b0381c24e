"""Lazy one-row lineage: a WHERE clause's correlated scalar aggregate and its witness list from one
``LATERAL`` subquery in the flat member listing, as eager capture runs it
(:mod:`traceprop_frames.sql.scalar_lateral`).

The lazy rewrite lists each member's witnesses as a second copy of the subquery, ``(SELECT list(
lineitem.__tp_rid) FROM lineitem WHERE l_partkey = p_partkey)``, beside the comparison with the scalar
aggregate: DuckDB decorrelates each into its own scan of the table (TPC-H q17 at SF 1: a third scan of
``lineitem``, the backward query about 1.4x the query). One ``LATERAL (SELECT 0.2 * avg(l_quantity),
list(lineitem.__tp_rid) FROM lineitem WHERE l_partkey = p_partkey)`` gives both from one scan: an
aggregate without GROUP BY gives exactly one row per outer row (over no rows too: ``avg`` NULL, ``list``
NULL, as the two subqueries give), so the members and each member's witness list are the same. Only the
shapes :func:`~traceprop_frames.sql.scalar_lateral.lateral_scalar` accepts; a form DuckDB refuses makes
the request fall back to the general backward query (:meth:`~traceprop_frames.sql.lazy.Resolver.lineage`).
"""

from __future__ import annotations

from sqlglot import exp

from traceprop_frames.sql.correlated import _outer_columns
from traceprop_frames.sql.rewrite import Catalog, _has_agg
from traceprop_frames.sql.scalar_lateral import lateral_scalar


def lateral_witnesses(sel: exp.Expression, cat: Catalog) -> int:
    """Merge each correlated scalar aggregate compared in ``sel``'s top-level WHERE with its witness list
    in ``sel``'s last column (the lineage expression a flat listing reads); changes ``sel`` in place.
    Returns how many were merged."""
    if not isinstance(sel, exp.Select):
        return 0
    ctes = {c.alias_or_name.lower() for c in (sel.args.get("with_") or exp.With()).expressions}
    aggregated = sel.args.get("group") is not None or any(
        _has_agg(e, cat.aggregates) for e in sel.expressions
    )
    return lateral_scalar(
        sel,
        1,
        1,
        aggregated,
        lambda s: _outer_columns(s, cat, ctes),
        lambda e: _has_agg(e, cat.aggregates),
    )
