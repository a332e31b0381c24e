"""A lazy request whose flat member listing filters with a correlated ``NOT EXISTS`` runs it grouped
(``sql.flat_exists``: ``GROUP BY ALL``, for DuckDB's plan); the lineage stays each group's member rows.

Oracle: brute force with pandas. Row ``i`` of ``SELECT g, count(*), sum(v) FROM c WHERE NOT EXISTS
(SELECT 1 FROM o WHERE o.ock = c.ck) GROUP BY g`` came from the rows of ``c`` with that ``g`` (NULL: the
NULL group) whose ``ck`` no row of ``o`` has (a NULL ``ck`` has none); ``o`` gives no row (an empty
``o`` keeps the result: the lineage is sufficient).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import traceprop_frames as tpf
from traceprop_frames.errors import SourceChangedError
from traceprop_frames.sql import lazy as lazy_mod
from traceprop_frames.sql.flat_exists import grouped

GROUPED = "SELECT g, count(*) AS n, sum(v) AS s FROM c WHERE NOT EXISTS (SELECT 1 FROM o WHERE o.ock = c.ck) GROUP BY g"
ONE = "SELECT count(*) AS n, sum(v) AS s FROM c WHERE NOT EXISTS (SELECT 1 FROM o WHERE o.ock = c.ck)"


@pytest.fixture
def tables(tmp_path):
    rng = np.random.default_rng(11)
    n = 60
    c = pd.DataFrame({
        "ck": pd.array(rng.integers(0, 30, n), dtype="Int64"),
        "g": pd.array(rng.integers(0, 4, n), dtype="Int64"),  # repeated keys: several members a group
        "v": rng.integers(1, 100, n),
    })  # fmt: skip
    c.loc[[3, 17], "ck"] = pd.NA  # NOT EXISTS holds for a NULL key
    c.loc[[5, 8, 40], "g"] = pd.NA  # a NULL group
    o = pd.DataFrame({"ock": pd.array(rng.integers(0, 30, 12), dtype="Int64")})
    o.loc[[2], "ock"] = pd.NA
    eager, lazy = tpf.connect(capture="eager"), tpf.connect(capture="lazy")
    for name, df in (("c", c), ("o", o)):
        df.to_parquet(tmp_path / f"{name}.parquet", index=False)
        for con in (eager, lazy):
            con.read_parquet(tmp_path / f"{name}.parquet", name=name)
    yield eager, lazy, c, o, tmp_path
    eager.close()
    lazy.close()


def _members(c, o, g) -> list[int]:
    """Rows of ``c`` in group ``g`` (None: NULL) that no row of ``o`` matches (brute force)."""
    taken = {int(k) for k in o["ock"] if not pd.isna(k)}
    return [
        i
        for i in range(len(c))
        if (pd.isna(c["g"][i]) if g is None else not pd.isna(c["g"][i]) and int(c["g"][i]) == g)
        and (pd.isna(c["ck"][i]) or int(c["ck"][i]) not in taken)
    ]


def _key(v):
    return None if pd.isna(v) else int(v)


def _spy(monkeypatch) -> list[str]:
    """The statements ``grouped`` changed from now on."""
    seen = []

    def spy(query: str) -> str:
        out = grouped(query)
        if out != query:
            seen.append(out)
        return out

    monkeypatch.setattr(lazy_mod, "grouped", spy)
    return seen


def _check(df, rows, c, o, tmp, lin=None) -> None:
    lin = df.tp.lineage().take(rows) if lin is None else lin
    for j, i in enumerate(rows):
        src = lin.take([j]).sources()
        assert src.get(str(tmp / "c.parquet"), np.array([])).tolist() == _members(c, o, _key(df["g"].iloc[i]))
        assert not src.get(str(tmp / "o.parquet"), np.array([])).size


def test_each_group_alone_brute_force(tables, monkeypatch):
    _, lazy, c, o, tmp = tables
    seen = _spy(monkeypatch)
    n = len(lazy.sql(GROUPED))
    assert n == 5  # four groups and the NULL group
    for i in range(n):
        fresh = lazy.sql(GROUPED)  # a first request each time
        _check(fresh, [i], c, o, tmp)
    assert len(seen) == n and all(s.endswith(" GROUP BY ALL") and "NOT EXISTS" in s for s in seen)


@pytest.mark.parametrize("rows", [[0, 2, 1], [1, 1, 0], [4, 4]])
def test_several_and_repeated_rows_brute_force(tables, monkeypatch, rows):
    _, lazy, c, o, tmp = tables
    seen = _spy(monkeypatch)
    df = lazy.sql(GROUPED)
    lin = df.tp.lineage().take(rows)
    lin.materialize()  # one request for all of them
    _check(df, rows, c, o, tmp, lin)
    assert seen  # the grouped listing answered


def test_equal_to_eager(tables):
    eager, lazy, c, o, tmp = tables
    want, got = eager.sql(GROUPED + " ORDER BY g"), lazy.sql(GROUPED + " ORDER BY g")
    pd.testing.assert_frame_equal(want.reset_index(drop=True), got.reset_index(drop=True))
    for i in range(len(got)):
        assert sorted(got.tp.sources(rows=[i])[str(tmp / "c.parquet")].tolist()) == sorted(
            want.tp.sources(rows=[i])[str(tmp / "c.parquet")].tolist()
        )


def test_one_row_result_brute_force(tables, monkeypatch):
    _, lazy, c, o, tmp = tables
    seen = _spy(monkeypatch)
    df = lazy.sql(ONE)
    want = sorted(set(_members(c, o, None)) | {i for g in range(4) for i in _members(c, o, g)})
    assert df.tp.sources(rows=[0])[str(tmp / "c.parquet")].tolist() == want
    assert seen


def test_sufficient(tables):
    """Re-running the query on a row's lineage rows alone reproduces the row."""
    _, lazy, c, o, tmp = tables
    df = lazy.sql(GROUPED + " ORDER BY g")
    for i in range(len(df)):
        keep = df.tp.sources(rows=[i])[str(tmp / "c.parquet")]
        con = tpf.connect(capture="lazy")
        con.raw.register("c", c.iloc[keep].reset_index(drop=True))
        con.raw.register("o", o.iloc[[]])
        again = con.raw.sql(GROUPED).df()
        assert len(again) == 1 and again["n"][0] == df["n"].iloc[i] and again["s"][0] == df["s"].iloc[i]
        con.close()


def test_source_changed_between_requests(tables):
    eager, lazy, c, o, tmp = tables
    df = lazy.sql(GROUPED)
    _check(df, [0], c, o, tmp)  # the first request: the plan is kept
    lazy.execute("DELETE FROM o WHERE ock < 10")
    with pytest.raises(SourceChangedError, match="changed since"):
        df.tp.sources(rows=[1])


def test_control_a_listing_that_loses_members_is_caught(tables, monkeypatch):
    """Control: were the grouped listing to drop member rows, the oracle above would see it."""
    _, lazy, c, o, tmp = tables
    monkeypatch.setattr(lazy_mod, "grouped", lambda q: grouped(q) + " LIMIT 1")
    df = lazy.sql(GROUPED)
    big = max(range(len(df)), key=lambda i: len(_members(c, o, _key(df["g"].iloc[i]))))
    with pytest.raises(AssertionError):
        _check(df, [big], c, o, tmp)


@pytest.mark.parametrize(
    "query, changed",
    [
        ("SELECT a FROM t WHERE NOT EXISTS(SELECT 1 FROM u WHERE u.k = t.k)", True),
        ("SELECT a FROM t WHERE exists (SELECT 1 FROM u)", True),
        ("SELECT a FROM t, u WHERE u.k = t.k", False),
        ("SELECT not_exists_flag(a) FROM t", False),
    ],
)
def test_grouped_only_with_exists(query, changed):
    assert grouped(query) == (f"{query} GROUP BY ALL" if changed else query)
