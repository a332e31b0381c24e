"""A lazy one-row request whose flat member listing compares a correlated scalar aggregate in its WHERE
clause reads the aggregate and its witness list from one ``LATERAL`` subquery (``sql.lazy_lateral``, as
eager capture does), not from two copies of the subquery.

Oracle: brute force with pandas. ``SELECT ... FROM a WHERE v < (SELECT 2 * avg(v2) FROM c WHERE c.ck =
a.ak)``: the members are the rows of ``a`` (in the group asked) whose ``ak`` has rows in ``c`` with a
non-NULL ``v2`` and ``v`` below twice their mean; the lineage is the members and, for each, every row of
``c`` the subquery read (``c.ck = a.ak``, a NULL ``v2`` included). NULL keys on both sides, repeated keys
(several members read the same ``c`` rows), a key ``c`` lacks (``avg`` NULL: not a member), an empty
result, and a table changed before the first question (``SourceChangedError``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _sql_oracle import assert_lazy_equals_eager, eager_lazy_plain

from traceprop_frames.errors import SourceChangedError
from traceprop_frames.sql import lazy as lazy_mod
from traceprop_frames.sql.lazy_lateral import lateral_witnesses

SUB = "(SELECT 2 * avg(v2) FROM c WHERE c.ck = a.ak)"
ONE = f"SELECT count(*) AS n, sum(v) AS s FROM a WHERE v < {SUB}"
GROUPED = f"SELECT g, count(*) AS n, sum(v) AS s FROM a WHERE v < {SUB} GROUP BY g"
ALL = object()


@pytest.fixture
def tables(tmp_path):
    rng = np.random.default_rng(5)
    n = 70
    a = pd.DataFrame({
        "ak": pd.array(rng.integers(0, 15, n), dtype="Int64"),  # repeated keys; 12..14 are not in c
        "g": pd.array(rng.integers(0, 3, n), dtype="Int64"),
        "v": rng.integers(1, 60, n),
    })  # fmt: skip
    a.loc[[2, 11], "ak"] = pd.NA
    a.loc[[7, 33], "g"] = pd.NA  # a NULL group
    c = pd.DataFrame({"ck": pd.array(rng.integers(0, 12, 30), dtype="Int64"), "v2": rng.integers(1, 40, 30)})
    c["v2"] = c["v2"].astype("Int64")
    c.loc[[3], "ck"] = pd.NA
    k0 = c["ck"].mode()[0]  # the most repeated key: one of its rows has a NULL v2
    c.loc[c.index[c["ck"] == k0][:1], "v2"] = pd.NA  # read by the subquery (a witness), not in the mean
    eager, lazy, _ = eager_lazy_plain(tmp_path, {"a": a, "c": c})
    yield eager, lazy, a, c, tmp_path
    eager.close()
    lazy.close()


def _same_group(x, g) -> bool:
    return pd.isna(x) if pd.isna(g) else not pd.isna(x) and int(x) == int(g)


def _oracle(a, c, g=ALL) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {"a": set(), "c": set()}
    for i in range(len(a)):
        if pd.isna(a["ak"][i]) or (g is not ALL and not _same_group(a["g"][i], g)):
            continue
        read = [k for k in range(len(c)) if not pd.isna(c["ck"][k]) and int(c["ck"][k]) == int(a["ak"][i])]
        vals = [int(c["v2"][k]) for k in read if not pd.isna(c["v2"][k])]
        if vals and a["v"][i] < 2 * (sum(vals) / len(vals)):
            out["a"].add(i)
            out["c"].update(read)
    return out


def _got(df, i, tmp) -> dict[str, set[int]]:
    src = df.tp.sources(rows=[i])
    return {t: set(src.get(str(tmp / f"{t}.parquet"), np.array([], dtype=np.int64)).tolist()) for t in "ac"}


def _spy(monkeypatch) -> list[int]:
    """How many subqueries each plan merged from now on."""
    seen = []

    def spy(sel, cat):
        seen.append(lateral_witnesses(sel, cat))
        return seen[-1]

    monkeypatch.setattr(lazy_mod, "lateral_witnesses", spy)
    return seen


def test_one_row_brute_force(tables, monkeypatch):
    _, lazy, a, c, tmp = tables
    seen = _spy(monkeypatch)
    want = _oracle(a, c)
    null_v2 = set(np.flatnonzero(c["v2"].isna().to_numpy()).tolist())
    assert len(want["a"]) > 5 and {2, 11} & want["a"] == set() and want["c"] & null_v2  # NULLs both sides
    assert _got(lazy.sql(ONE), 0, tmp) == want
    assert seen == [1]  # the LATERAL listing answered


def test_each_group_alone_brute_force(tables, monkeypatch):
    _, lazy, a, c, tmp = tables
    seen = _spy(monkeypatch)
    n = len(lazy.sql(GROUPED))
    assert n == 4  # three groups and the NULL group
    for i in range(n):
        fresh = lazy.sql(GROUPED)  # a first request each time (the plan is per query text)
        lazy._backward_plans.clear()
        assert _got(fresh, i, tmp) == _oracle(a, c, fresh["g"].iloc[i])
    assert seen and all(m == 1 for m in seen)


def test_several_rows_at_once(tables):
    _, lazy, a, c, tmp = tables
    df = lazy.sql(GROUPED)
    lin = df.tp.lineage().take([2, 0, 0])
    for j, i in enumerate([2, 0, 0]):
        src = lin.take([j]).sources()
        got = {t: set(src.get(str(tmp / f"{t}.parquet"), np.array([])).tolist()) for t in "ac"}
        assert got == _oracle(a, c, df["g"].iloc[i])


def test_equal_to_eager(tables):
    eager, lazy, _, _, _ = tables
    assert_lazy_equals_eager(eager, lazy, (ONE, GROUPED + " ORDER BY g"))


def test_empty_results(tables):
    _, lazy, _, _, tmp = tables
    df = lazy.sql(ONE.replace("WHERE v <", "WHERE v > 1000 AND v <"))
    assert df["n"].iloc[0] == 0 and _got(df, 0, tmp) == {"a": set(), "c": set()}
    df = lazy.sql(GROUPED.replace("WHERE v <", "WHERE v > 1000 AND v <"))
    assert len(df) == 0 and df.tp.sources() == {}


def test_source_changed_before_the_question(tables):
    _, lazy, _, _, tmp = tables
    one, grouped = lazy.sql(ONE), lazy.sql(GROUPED)
    lazy.execute("DELETE FROM c WHERE ck < 4")
    for df in (one, grouped):
        with pytest.raises(SourceChangedError, match="changed since"):
            df.tp.sources(rows=[0])


def test_other_shapes_are_not_merged(tables, monkeypatch):
    """A subquery in the SELECT list, or compared inside an OR, keeps the two subqueries (and is right)."""
    _, lazy, a, c, tmp = tables
    seen = _spy(monkeypatch)
    df = lazy.sql(f"SELECT count(*) AS n FROM a WHERE v < {SUB} OR v > 58")
    want = _oracle(a, c)
    extra = {i for i in range(len(a)) if a["v"][i] > 58}
    got = _got(df, 0, tmp)
    assert want["a"] | extra == got["a"] and want["c"] <= got["c"]
    assert seen == [0]
