"""The Spark SQL pieces of the lineage rewrite: one small function per construct that differs from DuckDB.

The rules live in :mod:`traceprop_frames.sql.rewrite` (one rule set for every engine). They build a few
list expressions by DuckDB name; :func:`to_spark` maps each to its Spark SQL equivalent, so the rewritten
tree prints as Spark SQL. Everything else (``* EXCEPT (...)``, ``GROUP BY ALL``, ``ARRAY(...)``,
``flatten``, ``CAST(NULL AS ARRAY<BIGINT>)``, ``collect_list`` from ``list``) sqlglot's Spark dialect
already prints, and Spark 4 runs.
"""

from __future__ import annotations

from sqlglot import exp

_EMPTY_IDS = "CAST(ARRAY() AS ARRAY<BIGINT>)"


def _list(node: exp.Anonymous) -> exp.Expression:
    """DuckDB ``list(x)`` (aggregate) is Spark's ``collect_list(x)`` (both skip no rows; NULL ids drop)."""
    return exp.Anonymous(this="collect_list", expressions=node.expressions)


def _list_concat(node: exp.Anonymous) -> exp.Expression:
    """DuckDB ``list_concat`` treats a NULL list as empty; Spark's ``concat`` would return NULL."""
    empty = exp.maybe_parse(_EMPTY_IDS, dialect="spark")
    args = [exp.Coalesce(this=a, expressions=[empty.copy()]) for a in node.expressions]
    return exp.Anonymous(this="concat", expressions=args)


# DuckDB function name (as the rewriter builds it) -> its Spark form
FUNCTIONS = {"list": _list, "list_concat": _list_concat}

# Spark aggregates that sqlglot may parse as anonymous functions (the rewriter must know they aggregate)
AGGREGATES = frozenset(
    """any any_value approx_count_distinct approx_percentile array_agg avg bit_and bit_or bit_xor bitmap_construct_agg
    bitmap_or_agg bool_and bool_or collect_list collect_set corr count count_if count_min_sketch covar_pop covar_samp
    every first first_value histogram_numeric hll_sketch_agg hll_union_agg kurtosis last last_value listagg max
    max_by mean median min min_by mode percentile percentile_approx percentile_cont percentile_disc regr_avgx
    regr_avgy regr_count regr_intercept regr_r2 regr_slope regr_sxx regr_sxy regr_syy skewness some std stddev
    stddev_pop stddev_samp string_agg sum try_avg try_sum var_pop var_samp variance""".split()
)


def to_spark(tree: exp.Expression) -> str:
    """Spark SQL for a tree rewritten by :func:`traceprop_frames.sql.rewrite_query`.

    Examples
    --------
    >>> import sqlglot
    >>> from traceprop_frames.sql import Catalog, rewrite_query
    >>> q = sqlglot.parse_one("SELECT k, count(*) AS n FROM a GROUP BY k", read="spark")
    >>> to_spark(rewrite_query(q, Catalog({"a": "__tp_rid"})).expression)
    'SELECT k, COUNT(*) AS n, COLLECT_LIST(a.__tp_rid) AS __tp_lin FROM a GROUP BY k'
    """

    def to_spark_call(node: exp.Expression) -> exp.Expression:
        fn = FUNCTIONS.get(node.name.lower()) if isinstance(node, exp.Anonymous) else None
        return node if fn is None else fn(node)

    # a copy first: the rewriter may place one call object at two spots of the tree (a copy gives each its
    # own), and a call may sit inside another's arguments (again until none is left)
    tree = tree.copy()
    for _ in range(16):  # a call may sit inside another's arguments: again until none is left
        tree = tree.transform(to_spark_call, copy=False)
        if not any(n.name.lower() in FUNCTIONS for n in tree.find_all(exp.Anonymous)):
            break
    return tree.sql(dialect="spark")
