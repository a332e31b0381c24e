"""A lazy request for one result row whose backward query lists the row's members (a flat listing: an
aggregate, or one group of a GROUP BY) makes the row's lineage the union of the members' ids; where every
member has one id from each table, ``lazy._one_row`` lays them out table by table (column-major), so the
ids of one table lie together and ``sources()`` sorts them in about one pass (``lineage.refs.sorted_unique``
picks timsort for a few ascending runs).

Oracle: brute force with pandas over the inner join ``a.ak = b.bk`` (NULL keys match nothing; repeated keys
on both sides: several members share an ``a`` row or a ``b`` row), with a filter; a LEFT JOIN (a NULL ``b``
id for the rows without a match: the stride differs, the row-major layout stays), an empty result, and a
table changed before the first question (``SourceChangedError``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _sql_oracle import assert_lazy_equals_eager, eager_lazy_plain

from traceprop_frames.errors import SourceChangedError
from traceprop_frames.sql import lazy as lazy_mod

ONE = "SELECT count(*) AS n, sum(v * w) AS s FROM a, b WHERE a.ak = b.bk AND v > 20"
GROUPED = "SELECT g, count(*) AS n, sum(v * w) AS s FROM a, b WHERE a.ak = b.bk AND v > 20 GROUP BY g"
THREE = "SELECT count(*) AS n FROM a, b, c WHERE a.ak = b.bk AND c.ck = b.bk AND v > 20"
LEFT = "SELECT g, count(*) AS n, sum(w) AS s FROM a LEFT JOIN b ON a.ak = b.bk WHERE v > 20 GROUP BY g"


@pytest.fixture
def tables(tmp_path):
    rng = np.random.default_rng(7)
    n = 80
    a = pd.DataFrame({
        "ak": pd.array(rng.integers(0, 25, n), dtype="Int64"),  # repeated keys
        "g": pd.array(rng.integers(0, 3, n), dtype="Int64"),
        "v": rng.integers(1, 100, n),
    })  # fmt: skip
    a.loc[[4, 9, 30], "ak"] = pd.NA  # NULL keys join nothing
    a.loc[[6, 50], "g"] = pd.NA  # a NULL group
    b = pd.DataFrame({"bk": pd.array(rng.integers(0, 25, 40), dtype="Int64"), "w": rng.integers(1, 9, 40)})
    b.loc[[1, 22], "bk"] = pd.NA
    c = pd.DataFrame({"ck": pd.array(rng.integers(0, 25, 15), dtype="Int64")})
    eager, lazy, _ = eager_lazy_plain(tmp_path, {"a": a, "b": b, "c": c})
    yield eager, lazy, {"a": a, "b": b, "c": c}, tmp_path
    eager.close()
    lazy.close()


def _eq(x, y) -> bool:
    return not pd.isna(x) and not pd.isna(y) and int(x) == int(y)


def _same_group(x, g) -> bool:
    return pd.isna(x) if g is None or pd.isna(g) else _eq(x, g)


ALL = object()


def _inner(t, g=ALL, three=False) -> dict[str, set[int]]:
    """Rows of each table behind the members (brute force; ``g``: only that group, None: the NULL one)."""
    a, b, c = t["a"], t["b"], t["c"]
    out: dict[str, set[int]] = {"a": set(), "b": set(), "c": set()}
    for i in range(len(a)):
        if a["v"][i] <= 20 or (g is not ALL and not _same_group(a["g"][i], g)):
            continue
        for j in range(len(b)):
            if not _eq(a["ak"][i], b["bk"][j]):
                continue
            ks = [k for k in range(len(c)) if _eq(c["ck"][k], b["bk"][j])] if three else [None]
            for k in ks:
                out["a"].add(i), out["b"].add(j)
                if k is not None:
                    out["c"].add(k)
    return out


def _got(df, i, tmp) -> dict[str, set[int]]:
    src = df.tp.sources(rows=[i])
    return {t: set(src.get(str(tmp / f"{t}.parquet"), np.array([], dtype=np.int64)).tolist()) for t in "abc"}


def _spy(monkeypatch) -> list[tuple[int, int, bool]]:
    """(members, ids, laid out table by table) of every ``_one_row`` from now on."""
    seen = []
    real = lazy_mod._one_row

    def spy(members):
        out = real(members)
        k = members.ids.size // max(len(members), 1)
        seen.append((len(members), members.ids.size, k > 1 and members.ids.size == k * len(members)))
        return out

    monkeypatch.setattr(lazy_mod, "_one_row", spy)
    return seen


def test_one_row_of_an_aggregate_brute_force(tables, monkeypatch):
    _, lazy, t, tmp = tables
    seen = _spy(monkeypatch)
    df = lazy.sql(ONE)
    want = _inner(t)
    assert len(want["a"]) > 5 and len(want["b"]) > 5  # several members, shared rows on both sides
    assert _got(df, 0, tmp) == want
    assert seen and seen[0][2]  # the table-by-table layout answered


def test_each_group_alone_brute_force(tables, monkeypatch):
    _, lazy, t, tmp = tables
    seen = _spy(monkeypatch)
    n = len(lazy.sql(GROUPED))
    assert n == 4  # three groups and the NULL group
    for i in range(n):
        fresh = lazy.sql(GROUPED)  # a first request each time
        assert _got(fresh, i, tmp) == _inner(t, fresh["g"].iloc[i])
    assert len(seen) == n and all(s[2] for s in seen)


def test_three_tables_brute_force(tables):
    _, lazy, t, tmp = tables
    df = lazy.sql(THREE)
    want = _inner(t, three=True)
    assert want["c"]
    assert _got(df, 0, tmp) == want


def test_left_join_null_ids_brute_force(tables, monkeypatch):
    """A LEFT JOIN's unmatched rows have no ``b`` id: members of one or two ids (the row-major layout)."""
    _, lazy, t, tmp = tables
    seen = _spy(monkeypatch)
    a = t["a"]
    for i in range(len(lazy.sql(LEFT))):
        df = lazy.sql(LEFT)
        g = df["g"].iloc[i]
        rows = {r for r in range(len(a)) if a["v"][r] > 20 and _same_group(a["g"][r], g)}
        assert _got(df, i, tmp) == {"a": rows, "b": _inner(t, g)["b"], "c": set()}
    assert any(not s[2] for s in seen)  # some group has unmatched rows: uneven members


def test_empty_results(tables):
    _, lazy, _, tmp = tables
    df = lazy.sql(ONE.replace("v > 20", "v > 1000"))  # one row, count 0, no member
    assert df["n"].iloc[0] == 0
    assert _got(df, 0, tmp) == {"a": set(), "b": set(), "c": set()}
    df = lazy.sql(GROUPED.replace("v > 20", "v > 1000"))  # no row at all
    assert len(df) == 0 and df.tp.sources() == {}


def test_equal_to_eager(tables):
    eager, lazy, _, _ = tables
    assert_lazy_equals_eager(eager, lazy, (ONE + "", GROUPED + " ORDER BY g", THREE, LEFT + " ORDER BY g"))


def test_source_changed_before_the_question(tables):
    _, lazy, _, tmp = tables
    one, grouped = lazy.sql(ONE), lazy.sql(GROUPED)
    lazy.execute("DELETE FROM b WHERE bk < 5")
    for df in (one, grouped):
        with pytest.raises(SourceChangedError, match="changed since"):
            df.tp.sources(rows=[0])
