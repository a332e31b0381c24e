"""sqlglot's DuckDB dialect, corrected where its round trip (parse, then generate) changes a query's answer.

The rewriter parses the user's SQL and generates SQL again; everything it does not touch must come out
meaning exactly what was written. sqlglot's DuckDB dialect loses a few things on that round trip, and each
fix below keeps one of them (see ``tests/test_sql_compat_constructs.py``):

- ``NULLS FIRST`` / ``NULLS LAST`` written by the user: sqlglot drops the one it takes for DuckDB's default,
  but the default is a setting (``SET default_null_order``); an explicit clause is always written back.
- ``last(x IGNORE NULLS)`` / ``first(x IGNORE NULLS)``: written back as they are (sqlglot drops IGNORE
  NULLS from ``last`` and turns ``first`` into ``any_value``).
- ``arr[:x]`` stays a slice (sqlglot read ``:x`` as a named parameter, ``arr[$x]``).
- ``reduce(list, lambda, initial)`` keeps its argument order (sqlglot swapped lambda and initial value).
- ``LIMIT (expr) %`` is written with ``%`` (DuckDB rejects ``(expr) PERCENT``).
- ``agg(x) EXPORT_STATE`` is read as one expression (sqlglot read EXPORT_STATE as a column alias).
- ``USING KEY (k, max(v) AS v)`` of a recursive CTE is read with its aggregates (sqlglot read names only).
- ``GROUP BY *`` is read as ``GROUP BY ALL`` (what DuckDB means by it; a star would also take the
  columns the rewrite adds).
- ``string_agg`` / ``group_concat`` keep the name written (sqlglot wrote ``LISTAGG``, whose exported state
  ``to_aggregate_state(..., 'string_agg', ...)`` then cannot combine with).
"""

from __future__ import annotations

from sqlglot import exp
from sqlglot.dialects.duckdb import DuckDB
from sqlglot.generators.duckdb import DuckDBGenerator
from sqlglot.parsers.duckdb import DuckDBParser
from sqlglot.tokens import TokenType

_NULLS = "tp_nulls"  # Ordered.meta key: "FIRST" | "LAST" when the query names the null order
_NAME = "tp_name"  # GroupConcat.meta key: the function name the query wrote
_STRING_AGGS = ("STRING_AGG", "GROUP_CONCAT", "LISTAGG")


class ExportState(exp.Expression, exp.Func):
    """``agg(x) EXPORT_STATE``: the aggregate's state instead of its value (DuckDB)."""

    arg_types = {"this": True}


def _reduce(args: list) -> exp.Expression:
    """DuckDB's ``reduce(list, lambda[, initial])`` (sqlglot reads the lambda as the initial value)."""
    if len(args) != 3:
        return exp.Anonymous(this="list_reduce", expressions=args)
    return exp.Reduce(this=args[0], merge=args[1], initial=args[2])


def _named_as(name: str, parse):
    """A function parser that records the name the query wrote on the node it returns."""

    def parse_named(self):
        node = parse(self)
        if isinstance(node, exp.GroupConcat):
            node.meta[_NAME] = name
        return node

    return parse_named


class _Parser(DuckDBParser):
    # ``arr[:x]`` is a slice; DuckDB has no ``:name`` parameters (sqlglot read ``:x`` as one)
    PLACEHOLDER_PARSERS = {k: v for k, v in DuckDBParser.PLACEHOLDER_PARSERS.items() if k != TokenType.COLON}
    FUNCTIONS = {
        **DuckDBParser.FUNCTIONS,
        "REDUCE": _reduce,
        "LIST_REDUCE": _reduce,
        "ARRAY_REDUCE": _reduce,
    }
    FUNCTION_PARSERS = {
        **DuckDBParser.FUNCTION_PARSERS,
        **{k: _named_as(k, DuckDBParser.FUNCTION_PARSERS[k]) for k in _STRING_AGGS},
    }

    def _parse_ordered(self, parse_method=None):
        start = self._index
        node = super()._parse_ordered(parse_method)
        if node is not None:
            words = [t.text.upper() for t in self._tokens[max(start, self._index - 2) : self._index]]
            if len(words) == 2 and words[0] == "NULLS" and words[1] in ("FIRST", "LAST"):
                node.meta[_NULLS] = words[1]
        return node

    def _parse_wrapped_id_vars(self, optional: bool = False):
        prev = [t.text.upper() for t in self._tokens[max(self._index - 2, 0) : self._index]]
        if prev == ["USING", "KEY"]:  # USING KEY (k, max(v)): DuckDB's keys may aggregate (sqlglot: names)
            return self._parse_wrapped_csv(self._parse_assignment_alias)
        return super()._parse_wrapped_id_vars(optional)

    def _parse_assignment_alias(self):
        return self._parse_alias(self._parse_assignment())

    def _parse_group(self, skip_group_by_token: bool = False):
        node = super()._parse_group(skip_group_by_token)
        star = node.expressions[0] if node is not None and len(node.expressions) == 1 else None
        if isinstance(star, exp.Star) and not any(star.args.values()) and list(node.args) == ["expressions"]:
            return exp.Group(all=True)  # GROUP BY * is GROUP BY ALL (not "every column", lineage keys too)
        return node

    def _parse_column_ops(self, this):
        this = super()._parse_column_ops(this)
        if (
            isinstance(this, (exp.Func, exp.IgnoreNulls))
            and self._curr is not None
            and self._curr.text.upper() == "EXPORT_STATE"
        ):
            self._advance()  # sqlglot read it as the column's alias, or failed inside a call's parentheses
            this = super()._parse_column_ops(ExportState(this=this))
        return this


class _Generator(DuckDBGenerator):
    TRANSFORMS = {
        **DuckDBGenerator.TRANSFORMS,
        ExportState: lambda self, e: f"{self.sql(e, 'this')} EXPORT_STATE",
        exp.GroupConcat: lambda self, e: self.groupconcat_sql(e),
    }
    IGNORE_RESPECT_NULLS_WINDOW_FUNCTIONS = (
        *DuckDBGenerator.IGNORE_RESPECT_NULLS_WINDOW_FUNCTIONS,
        exp.First,
        exp.Last,
    )

    def groupconcat_sql(self, expression: exp.GroupConcat) -> str:
        sql = DuckDBGenerator.TRANSFORMS[exp.GroupConcat](self, expression)
        name = expression.meta.get(_NAME)
        return name + sql[len("LISTAGG") :] if name and sql.startswith("LISTAGG(") else sql

    def not_sql(self, expression: exp.Not) -> str:
        inner = expression.this  # "x IS NOT NULL", as DuckDB names a column computed from it
        if isinstance(inner, exp.Is) and isinstance(inner.expression, exp.Null):
            return f"{self.sql(inner, 'this')} IS NOT NULL"
        return super().not_sql(expression)

    def limitoptions_sql(self, expression: exp.LimitOptions) -> str:
        sql = super().limitoptions_sql(expression)  # DuckDB reads "(expr) PERCENT" as an error; "%" always
        return sql.replace(" PERCENT", " %", 1) if expression.args.get("percent") else sql

    def ordered_sql(self, expression: exp.Ordered) -> str:
        sql = super().ordered_sql(expression)
        explicit = expression.meta.get(_NULLS)
        if explicit is None:
            return sql
        return f"{sql.removesuffix(' NULLS FIRST').removesuffix(' NULLS LAST')} NULLS {explicit}"


class TracedDuckDB(DuckDB):
    """DuckDB, with the round-trip fixes above; pass it wherever sqlglot takes ``dialect=``/``read=``."""

    Parser = _Parser
    Generator = _Generator


DIALECT = TracedDuckDB


def quote_name(name: str) -> str:
    """``name`` as a double-quoted DuckDB identifier (embedded quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


# functions whose value may change between two runs of the same statement on the same tables (and
# functions sqlglot does not know, user macros among them): a statement holding one is not run again to
# pick the same rows (sql.member_lists, sql.lazy_unique)
VOLATILE = tuple(
    getattr(exp, n)
    for n in ("Anonymous", "Rand", "Randn", "Uuid", "CurrentDate", "CurrentTime", "CurrentTimestamp",
              "CurrentDatetime", "CurrentTimestampLTZ")
    if hasattr(exp, n)
)  # fmt: skip
