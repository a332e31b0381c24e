"""The first lineage request of a lazily captured query plans from the capture's own rewrite
(``traceprop_frames.sql.first_plan``): no second parse, the same answers.

Oracle: brute force with pandas (which rows of ``t`` and ``u`` each result row comes from), and eager
capture on the same tables.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

import traceprop_frames as tpf

IN_ROWS = "SELECT t.k, t.v FROM t WHERE t.k IN (SELECT k FROM u WHERE w < 40)"
IN_GROUPS = "SELECT g, count(*) AS n FROM t WHERE k IN (SELECT k FROM u WHERE w < 40) GROUP BY g"


@pytest.fixture
def tables(tmp_path):
    rng = np.random.default_rng(3)
    t = pd.DataFrame({"k": rng.integers(0, 12, 50), "g": rng.integers(0, 4, 50), "v": rng.normal(size=50)})
    u = pd.DataFrame({"k": rng.integers(0, 12, 30), "w": rng.integers(0, 100, 30)})
    t.to_csv(tmp_path / "t.csv", index=False)
    u.to_parquet(tmp_path / "u.parquet")
    cons = tpf.connect(capture="eager"), tpf.connect(capture="lazy")
    for con in cons:
        con.read_csv(tmp_path / "t.csv", name="t")
        con.read_parquet(tmp_path / "u.parquet", name="u")
    yield cons, t, u, tmp_path
    for con in cons:
        con.close()


def _count_parses(con, monkeypatch) -> list:
    calls: list = []
    real = con._parse
    monkeypatch.setattr(con, "_parse", lambda text: calls.append(text) or real(text))
    return calls


def _witnesses(t: pd.DataFrame, u: pd.DataFrame, member: np.ndarray) -> list[int]:
    """Rows of ``u`` that witness ``k IN (SELECT k FROM u WHERE w < 40)`` for the ``t`` rows ``member``."""
    return np.flatnonzero(u["k"].isin(t["k"][member]).to_numpy() & (u["w"].to_numpy() < 40)).tolist()


def test_first_request_plans_from_the_capture_no_parse_brute_force(tables, monkeypatch):
    (_, lazy), t, u, tmp = tables
    hit = u["k"][u["w"] < 40]
    for query in (IN_ROWS, IN_GROUPS):
        got = lazy.sql(query)
        assert query in lazy._first_rewrites._kept
        parses = _count_parses(lazy, monkeypatch)
        i = len(got) // 2
        src = got.tp.sources(rows=[i])
        assert parses == [] and query not in lazy._first_rewrites._kept  # planned from it, used once
        if query == IN_ROWS:
            member = (t["k"].to_numpy() == got["k"].iloc[i]) & np.isclose(t["v"].to_numpy(), got["v"].iloc[i])
        else:
            member = (t["g"].to_numpy() == got["g"].iloc[i]) & t["k"].isin(hit).to_numpy()
        assert src[str(tmp / "t.csv")].tolist() == np.flatnonzero(member).tolist()
        assert src[str(tmp / "u.parquet")].tolist() == _witnesses(t, u, member)
        monkeypatch.undo()


def test_every_row_equals_eager_and_a_second_plan_parses(tables, monkeypatch):
    """Each row asked alone on a fresh result (the first on the kept rewrite) equals eager; a plan made
    again (its cache cleared) parses the text afresh and answers the same."""
    (eager, lazy), *_ = tables
    for query in (IN_ROWS, IN_GROUPS):
        want = eager.sql(query)
        want_rows = Counter(
            (tuple(r), tuple(want.tp.lineage().row_ids(i).tolist()))
            for i, r in enumerate(want.itertuples(index=False, name=None))
        )
        got_rows = Counter()
        for i in range(len(want)):
            got = lazy.sql(query)
            ids = got.tp.lineage().take([i]).row_ids(0).tolist()
            got_rows[(tuple(got.iloc[i]), tuple(ids))] += 1
        assert got_rows == want_rows
        lazy._backward_plans.clear()
        parses = _count_parses(lazy, monkeypatch)
        got = lazy.sql(query)
        assert got.tp.lineage().take([0]).row_ids(0).size and parses == [query]
        monkeypatch.undo()


def test_catalog_changed_before_first_request_rewrites_afresh(tables, monkeypatch):
    """A table created after the capture (another catalog): the kept rewrite is not used; the answer
    is still the brute-force one."""
    (_, lazy), t, u, tmp = tables
    got = lazy.sql(IN_GROUPS)
    lazy.raw.execute("CREATE TABLE extra AS SELECT 1 AS x")
    lazy.execute("CREATE TABLE extra2 (x INTEGER)")  # through the connection: the catalog is read again
    parses = _count_parses(lazy, monkeypatch)
    src = got.tp.sources(rows=[0])
    assert parses == [IN_GROUPS]
    member = (t["g"].to_numpy() == got["g"].iloc[0]) & t["k"].isin(u["k"][u["w"] < 40]).to_numpy()
    assert src[str(tmp / "t.csv")].tolist() == np.flatnonzero(member).tolist()
    assert src[str(tmp / "u.parquet")].tolist() == _witnesses(t, u, member)
