"""Property tests: random small tables and generated queries, checked against a brute-force oracle.

The oracle evaluates each query shape in plain Python over tagged rows (("R", i) / ("S", j)), with SQL's
NULL rules, and yields (output values, set of source rows) per output row. It shares no code with the
rewriter.
"""

from __future__ import annotations

import itertools
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

import traceprop_frames as tpf
from traceprop_frames.lineage import REGISTRY, decode

KEYS = st.sampled_from([0, 1, 2, None])
R_ROWS = st.lists(st.tuples(KEYS, st.integers(0, 9)), max_size=6)
S_ROWS = st.lists(st.tuples(KEYS, st.integers(0, 9)), max_size=6)
THRESH = st.integers(-1, 9)
_DIR = Path(tempfile.mkdtemp(prefix="tp_sql_prop_"))
_n = itertools.count()


_CON = tpf.connect()  # one connection for all examples: each example replaces r and s


def _load(r_rows, s_rows):
    """The connection with R (a Parquet file: __tp_rid) and S (a registered traced frame)."""
    con = _CON
    path = _DIR / f"r{next(_n)}.parquet"
    r = pd.DataFrame({"k": pd.array([k for k, _ in r_rows], dtype="Int64"), "v": [v for _, v in r_rows]})
    r["v"] = r["v"].astype("int64")
    r.to_parquet(path)
    con.read_parquet(path, name="r")
    s = pd.DataFrame({"k": pd.array([k for k, _ in s_rows], dtype="Int64"), "w": [w for _, w in s_rows]})
    s["w"] = s["w"].astype("int64")
    name = f"S{next(_n)}"
    con.register("s", tpf.track(s, name))
    return con, {str(path): "R", name: "S"}


def _observed(df, names) -> Counter:
    lin = df.tp.lineage()
    paths = {}
    out = Counter()
    values = df.reset_index(drop=True).astype(object).where(df.reset_index(drop=True).notna(), None)
    for i, row in enumerate(values.itertuples(index=False, name=None)):
        sids, rows = decode(lin.row_ids(i))
        tags = set()
        for s, r in zip(sids.tolist(), rows.tolist()):
            if s not in paths:
                paths[s] = names[REGISTRY.get(s).path]
            tags.add((paths[s], r))
        out[(_norm(row), frozenset(tags))] += 1
    return out


def _norm(values) -> tuple:
    return tuple(None if v is None else round(float(v), 6) for v in values)


def _expected(rows) -> Counter:
    return Counter((_norm(vals), frozenset(tags)) for vals, tags in rows)


def _eq(a, b) -> bool:
    return a is not None and b is not None and a == b


# ---------------------------------------------------------------------------------------------- oracle
def _r(r_rows, c):
    return [((k, v), {("R", i)}) for i, (k, v) in enumerate(r_rows) if v > c]


def _join(r_rows, s_rows, c, left):
    out = []
    for i, (k, v) in enumerate(r_rows):
        if not v > c:
            continue
        hits = [(j, w) for j, (k2, w) in enumerate(s_rows) if _eq(k, k2)]
        out += [((k, v, w), {("R", i), ("S", j)}) for j, w in hits]
        if left and not hits:
            out.append(((k, v, None), {("R", i)}))
    return out


def _group(rows, key, aggs):
    groups: dict = {}
    for vals, tags in rows:
        g = groups.setdefault(key(vals), ([], set()))
        g[0].append(vals)
        g[1].update(tags)
    return [((k, *(a(m) for a in aggs)), tags) for k, (m, tags) in groups.items()]


SHAPES = ["scan", "join", "group", "distinct", "agg", "union", "union_all", "intersect", "except",
          "exists", "not_exists", "in", "not_in", "scalar", "cte_group_join", "full_join", "scalar_select",
          "exists_agg"]  # fmt: skip


def build(shape, r_rows, s_rows, c, d, left):
    """(SQL, expected rows) for one shape."""
    join = "LEFT JOIN" if left else "JOIN"
    s_hit = [(j, k, w) for j, (k, w) in enumerate(s_rows) if w > d]
    if shape == "scan":
        return f"SELECT k, v FROM r WHERE v > {c}", _r(r_rows, c)
    if shape == "join":
        return f"SELECT r.k, r.v, s.w FROM r {join} s ON r.k = s.k WHERE r.v > {c}", _join(
            r_rows, s_rows, c, left
        )
    if shape == "group":
        rows = _join(r_rows, s_rows, c, left)
        sql = f"SELECT r.k, count(*) AS n, sum(r.v) AS sv FROM r {join} s ON r.k = s.k WHERE r.v > {c} GROUP BY r.k"
        return sql, _group(rows, lambda x: x[0], [len, lambda m: sum(x[1] for x in m)])
    if shape == "full_join":
        pairs = [
            (i, j)
            for i, (k, v) in enumerate(r_rows)
            for j, (k2, _) in enumerate(s_rows)
            if _eq(k, k2) and v > c
        ]
        rows = [((r_rows[i][0], r_rows[i][1], s_rows[j][1]), {("R", i), ("S", j)}) for i, j in pairs]
        rows += [
            ((k, v, None), {("R", i)}) for i, (k, v) in enumerate(r_rows) if i not in {p[0] for p in pairs}
        ]
        rows += [
            ((None, None, w), {("S", j)}) for j, (_, w) in enumerate(s_rows) if j not in {p[1] for p in pairs}
        ]
        return f"SELECT r.k, r.v, s.w FROM r FULL JOIN s ON r.k = s.k AND r.v > {c}", rows
    if shape == "scalar_select":
        rows = []
        for (k, v), tags in _r(r_rows, c):
            wit = {("S", j) for j, (k2, _) in enumerate(s_rows) if _eq(k, k2)}
            rows.append(((v, len(wit)), tags | wit))
        return f"SELECT v, (SELECT count(*) FROM s WHERE s.k = r.k) AS n FROM r WHERE v > {c}", rows
    if shape == "exists_agg":
        tags = set()
        n = 0
        for (k, _), t in _r(r_rows, c):
            wit = {("S", j) for j, k2, _ in s_hit if _eq(k, k2)}
            if wit:
                n += 1
                tags |= t | wit
        sql = f"SELECT count(*) AS n FROM r WHERE v > {c} AND EXISTS (SELECT 1 FROM s WHERE s.k = r.k AND s.w > {d})"
        return sql, [((n,), tags)]
    if shape == "distinct":
        return f"SELECT DISTINCT k FROM r WHERE v > {c}", _group(_r(r_rows, c), lambda x: x[0], [])
    if shape == "agg":
        rows = _r(r_rows, c)
        tags = set().union(*[t for _, t in rows]) if rows else set()
        return f"SELECT count(*) AS n FROM r WHERE v > {c}", [((len(rows),), tags)]
    if shape in ("union", "union_all", "intersect", "except"):
        left_rows = [((k,), t) for (k, _), t in _r(r_rows, c)]
        right_rows = [((k,), {("S", j)}) for j, k, _ in s_hit]
        op = {"union": "UNION", "union_all": "UNION ALL", "intersect": "INTERSECT", "except": "EXCEPT"}[shape]
        sql = f"SELECT k FROM r WHERE v > {c} {op} SELECT k FROM s WHERE w > {d}"
        if shape == "union_all":
            return sql, left_rows + right_rows
        both = _group(left_rows + right_rows, lambda x: x[0], [])
        lk = {v[0] for v, _ in left_rows}
        rk = {v[0] for v, _ in right_rows}
        if shape == "intersect":
            return sql, [r for r in both if r[0][0] in lk and r[0][0] in rk]
        if shape == "except":
            return sql, _group([r for r in left_rows if r[0][0] not in rk], lambda x: x[0], [])
        return sql, both
    base = f"SELECT k, v FROM r WHERE v > {c} AND "
    out = []
    for (k, v), tags in _r(r_rows, c):
        wit = {("S", j) for j, k2, _ in s_hit if _eq(k, k2)}
        ks = [k2 for _, k2, _ in s_hit]
        if shape == "exists" and wit:
            out.append(((k, v), tags | wit))
        elif shape == "not_exists" and not wit:
            out.append(((k, v), tags))
        elif shape == "in" and wit:
            out.append(((k, v), tags | wit))
        elif shape == "not_in" and not wit and (not ks or (k is not None and None not in ks)):
            out.append(((k, v), tags))
        elif shape == "scalar" and s_hit and v > sum(w for *_, w in s_hit) / len(s_hit):
            out.append(((k, v), tags | {("S", j) for j, *_ in s_hit}))
    if shape == "cte_group_join":
        sums = _group(
            [((k, w), {("S", j)}) for j, k, w in s_hit], lambda x: x[0], [lambda m: sum(x[1] for x in m)]
        )
        rows = []
        for (k, v), tags in _r(r_rows, c):
            rows += [((k, v, tot), tags | t) for (k2, tot), t in sums if _eq(k, k2)]
        sql = (f"WITH t AS (SELECT k, sum(w) AS tot FROM s WHERE w > {d} GROUP BY k) "
               f"SELECT r.k, r.v, t.tot FROM r JOIN t USING (k) WHERE r.v > {c}")  # fmt: skip
        return sql, rows
    cond = {
        "exists": f"EXISTS (SELECT 1 FROM s WHERE s.k = r.k AND s.w > {d})",
        "not_exists": f"NOT EXISTS (SELECT 1 FROM s WHERE s.k = r.k AND s.w > {d})",
        "in": f"r.k IN (SELECT k FROM s WHERE w > {d})",
        "not_in": f"r.k NOT IN (SELECT k FROM s WHERE w > {d})",
        "scalar": f"r.v > (SELECT avg(w) FROM s WHERE w > {d})",
    }[shape]
    return base + cond, out


@settings(max_examples=250)  # a DuckDB pipeline per example: a fixed budget in every profile
@given(st.sampled_from(SHAPES), R_ROWS, S_ROWS, THRESH, THRESH, st.booleans())
def test_lineage_matches_brute_force(shape, r_rows, s_rows, c, d, left):
    con, names = _load(r_rows, s_rows)
    sql, rows = build(shape, r_rows, s_rows, c, d, left)
    df = con.sql(sql)
    assert _observed(df, names) == _expected(rows), sql


@settings(max_examples=25)  # a file, a reader and a SQL query per example
@given(R_ROWS, THRESH)
def test_composed_pandas_then_sql(r_rows, c):
    """A traced frame filtered in pandas, registered, aggregated in SQL: ids still point at the file."""
    con, names = _load(r_rows, [])
    path = next(p for p, n in names.items() if n == "R")
    frame = tpf.read_parquet(path)
    con.register("f", frame[frame["v"] > c])
    df = con.sql("SELECT k, count(*) AS n FROM f GROUP BY k")
    expected = _group(_r(r_rows, c), lambda x: x[0], [len])
    assert _observed(df, {path: "R"}) == _expected(expected)
    assert np.all(np.isin(df.tp.lineage().ids, REGISTRY.ids_for_rows(path, range(len(r_rows))))) or not len(
        r_rows
    )
