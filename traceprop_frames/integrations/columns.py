"""Column-level lineage of one step: which input columns feed each output column, and how.

Plain data, no OpenLineage types: ``{output column: [(input index, input column, type, subtype)]}`` and a
dataset-wide list ``[(input index, input column, type, subtype)]`` (join keys, group-by keys), where the
input index says which of the step's inputs (left/right, or the SQL table) the column belongs to.
Transformation types follow the OpenLineage column-lineage facet: ``DIRECT`` / ``INDIRECT`` with the
subtypes ``IDENTITY``, ``TRANSFORMATION``, ``AGGREGATION``, ``JOIN``, ``GROUP_BY``.

An output column whose inputs we cannot know (made by code we did not see) is left out: the facet is
partial rather than wrong.
"""

from __future__ import annotations

import pandas as pd

Edge = tuple[int, str, str, str]


def _as_list(x) -> list:
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [x]


def merge_columns(left: pd.DataFrame, right: pd.DataFrame, out: pd.DataFrame, *, on=None, left_on=None,
                  right_on=None, suffixes=("_x", "_y"), **_) -> tuple[dict[str, list[Edge]], list[Edge]]:  # fmt: skip
    """Column lineage of ``left.merge(right)``: columns pass through (IDENTITY); keys are INDIRECT JOIN.

    Examples
    --------
    >>> import pandas as pd
    >>> l, r = pd.DataFrame({"k": [1], "v": [2]}), pd.DataFrame({"k": [1], "v": [3]})
    >>> fields, ds = merge_columns(l, r, l.merge(r, on="k"), on="k")
    >>> fields["v_x"], fields["v_y"]
    ([(0, 'v', 'DIRECT', 'IDENTITY')], [(1, 'v', 'DIRECT', 'IDENTITY')])
    >>> ds
    [(0, 'k', 'INDIRECT', 'JOIN'), (1, 'k', 'INDIRECT', 'JOIN')]
    """
    lcols, rcols = {str(c) for c in left.columns}, {str(c) for c in right.columns}
    lkeys = [str(k) for k in _as_list(on if on is not None else left_on)]
    rkeys = [str(k) for k in _as_list(on if on is not None else right_on)]
    sx, sy = (s or "" for s in suffixes)
    fields: dict[str, list[Edge]] = {}
    for c in map(str, out.columns):
        if c in lcols and c in rcols:  # an ``on`` key: both sides' values
            fields[c] = [(0, c, "DIRECT", "IDENTITY"), (1, c, "DIRECT", "IDENTITY")]
        elif c in lcols:
            fields[c] = [(0, c, "DIRECT", "IDENTITY")]
        elif c in rcols:
            fields[c] = [(1, c, "DIRECT", "IDENTITY")]
        elif sx and c.endswith(sx) and c[: -len(sx)] in lcols:
            fields[c] = [(0, c[: -len(sx)], "DIRECT", "IDENTITY")]
        elif sy and c.endswith(sy) and c[: -len(sy)] in rcols:
            fields[c] = [(1, c[: -len(sy)], "DIRECT", "IDENTITY")]
    keys = [(0, k, "INDIRECT", "JOIN") for k in lkeys if k in lcols]
    keys += [(1, k, "INDIRECT", "JOIN") for k in rkeys if k in rcols]
    return fields, keys


def groupby_columns(df: pd.DataFrame, by, selection, fn: str, args: tuple, kwargs: dict, out: pd.DataFrame):
    """Column lineage of ``df.tp.groupby(by).<fn>(...)``: keys pass through, aggregates are AGGREGATION.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"g": [1, 1], "x": [2, 3]})
    >>> out = df.groupby("g", as_index=False).agg(total=("x", "sum"))
    >>> groupby_columns(df, "g", None, "agg", (None,), {"total": ("x", "sum")}, out)
    ({'g': [(0, 'g', 'DIRECT', 'IDENTITY')], 'total': [(0, 'x', 'DIRECT', 'AGGREGATION')]}, [(0, 'g', 'INDIRECT', 'GROUP_BY')])
    """
    keys = [str(k) for k in _as_list(by) if isinstance(k, str)]
    cols = {str(c) for c in df.columns}
    fields: dict[str, list[Edge]] = {
        k: [(0, k, "DIRECT", "IDENTITY")] for k in keys if k in map(str, out.columns)
    }
    named = {k: v for k, v in kwargs.items() if isinstance(v, tuple) and len(v) == 2}
    func = args[0] if args else None
    if fn == "agg" and named:
        for name, (col, _how) in named.items():
            if str(col) in cols:
                fields[str(name)] = [(0, str(col), "DIRECT", "AGGREGATION")]
    elif fn == "agg" and isinstance(func, dict):
        for col in func:
            if str(col) in cols and str(col) in map(str, out.columns):
                fields[str(col)] = [(0, str(col), "DIRECT", "AGGREGATION")]
    elif fn != "size" and (fn != "agg" or isinstance(func, str)):
        chosen = [str(c) for c in _as_list(selection)] if selection is not None else sorted(cols - set(keys))
        for c in chosen:
            if c in cols and c in map(str, out.columns):
                fields[c] = [(0, c, "DIRECT", "AGGREGATION")]
    return fields, [(0, k, "INDIRECT", "GROUP_BY") for k in keys if k in cols]


def concat_columns(frames: list[pd.DataFrame], out: pd.DataFrame):
    """Column lineage of ``tpf.concat(frames)``: each column comes from the inputs that have it."""
    fields = {}
    for c in map(str, out.columns):
        src = [(i, c, "DIRECT", "IDENTITY") for i, f in enumerate(frames) if c in map(str, f.columns)]
        if src:
            fields[c] = src
    return fields, []


def sql_columns(query, out_columns: list[str], schema: dict[str, dict[str, str]]):
    """Column lineage of a SELECT (a sqlglot expression) over tables whose columns are ``schema``.

    Input indices refer to ``sorted(schema)``. Raises ``sqlglot.errors.SqlglotError`` if sqlglot cannot
    follow a column (the caller then leaves the facet out).

    Examples
    --------
    >>> import sqlglot
    >>> q = sqlglot.parse_one("SELECT k, sum(x) AS s FROM t GROUP BY k", read="duckdb")
    >>> sql_columns(q, ["k", "s"], {"t": {"k": "INT", "x": "INT"}})[0]
    {'k': [(0, 'k', 'DIRECT', 'IDENTITY')], 's': [(0, 'x', 'DIRECT', 'AGGREGATION')]}
    """
    from sqlglot import exp
    from sqlglot.lineage import lineage

    tables = sorted(schema)
    index = {t.lower(): i for i, t in enumerate(tables)}
    real = {t.lower(): {c.lower(): c for c in schema[t]} for t in tables}
    fields: dict[str, list[Edge]] = {}
    for name, col in zip(out_columns, query.named_selects):
        root = lineage(col, query, schema=schema, dialect="duckdb")
        nodes = list(root.walk())
        inner = [n.expression for n in nodes if n.downstream]
        if any(e.find(exp.AggFunc) for e in inner):
            subtype = "AGGREGATION"
        elif all(isinstance(e.unalias(), exp.Column) for e in inner):
            subtype = "IDENTITY"
        else:
            subtype = "TRANSFORMATION"
        edges = []
        for n in nodes:
            if n.downstream or not isinstance(n.source, exp.Table):
                continue
            t, c = n.source.name.lower(), n.name.split(".")[-1].lower()
            if t in index and c in real[t]:
                edges.append((index[t], real[t][c], "DIRECT", subtype))
        if edges:
            fields[str(name)] = sorted(set(edges))
    return fields, []
