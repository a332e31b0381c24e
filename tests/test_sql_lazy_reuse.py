"""Lazy capture reading a key from the output column that holds it (``sql.lazy_reuse``).

Oracles: brute force (pandas group membership, NULL a group of its own) and eager capture of the same
statements. Each test asserts which keys were reused (the path under test ran).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

import traceprop_frames as tpf
from traceprop_frames.errors import SourceChangedError
from traceprop_frames.sql.lazy import LazyRowLineage


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(3)
    n = 70
    t = pd.DataFrame({
        "g": rng.integers(0, 4, n), "s": rng.choice(["x", "y", "z", None], n), "v": rng.normal(size=n).round(3),
        "k": rng.integers(0, 12, n),
    })  # fmt: skip
    t.to_csv(tmp_path / "t.csv", index=False)
    return t, tmp_path


def _connect(tmp, capture: str):
    con = tpf.connect(capture=capture)
    con.read_csv(tmp / "t.csv", name="t")
    return con


def _shape(con, q: str):
    return con._captures[q][1]


def _rows(df: pd.DataFrame) -> Counter:
    lin = df.tp.lineage()
    return Counter(
        (tuple(str(x) for x in row), tuple(sorted(lin.row_ids(j).tolist())))
        for j, row in enumerate(df.itertuples(index=False, name=None))
    )


def _members(t: pd.DataFrame, cols: list[str], values: tuple) -> list[int]:
    hit = np.ones(len(t), dtype=bool)
    for c, v in zip(cols, values):
        hit &= (
            t[c].isna().to_numpy()
            if v is None or (isinstance(v, float) and np.isnan(v))
            else (t[c] == v).to_numpy()
        )
    return np.flatnonzero(hit).tolist()


CASES = [  # (query, group columns as output, reused positions)
    ("SELECT g, s, count(*) AS n FROM t GROUP BY g, s", ["g", "s"], [0, 1]),
    ("SELECT s AS label, sum(v) AS sv FROM t GROUP BY s", ["label"], [0]),
    ("SELECT count(*) AS n, s FROM t GROUP BY s, g", None, [1, None]),  # g is not an output column
    ("SELECT s, list(v ORDER BY v) AS l FROM t GROUP BY s", ["s"], [0]),  # a list column: the Arrow path
]


@pytest.mark.parametrize("q,cols,reused", CASES)
def test_group_keys_read_from_the_output(data, q, cols, reused):
    t, tmp = data
    t = t.rename(columns={"s": "label"}) if cols == ["label"] else t
    lazy = _connect(tmp, "lazy")
    df = lazy.sql(q)
    assert isinstance(df.tp.lineage(), LazyRowLineage)
    shape = _shape(lazy, q)
    assert shape.reused == reused and shape.n_keys == reused.count(None)
    if cols is not None:  # brute force, each row alone
        for r, values in enumerate(df[cols].itertuples(index=False, name=None)):
            values = tuple(None if pd.isna(v) else v for v in values)
            assert df.tp.sources(rows=[r])[str(tmp / "t.csv")].tolist() == _members(t, cols, values), values
    assert _rows(lazy.sql(q)) == _rows(_connect(tmp, "eager").sql(q))  # all rows at once: eager's sets


def test_rows_key_read_from_the_output(data):
    """A grouping table's key selected as it is, joined where its keys stay (a RIGHT JOIN)."""
    _, tmp = data
    q = "SELECT b.k, b.n, t.v FROM t RIGHT JOIN agg b USING (k)"
    lazy, eager = _connect(tmp, "lazy"), _connect(tmp, "eager")
    for con in (lazy, eager):
        con.execute("CREATE TABLE agg AS SELECT k + 3 AS k, count(*) AS n FROM t GROUP BY k + 3")
        con.execute("CREATE OR REPLACE TABLE agg AS SELECT k, count(*) AS n FROM t WHERE g > 0 GROUP BY k")
    df = lazy.sql(q)
    shape = _shape(lazy, q)
    assert shape.reused == [None, 0] and shape.n_keys == 1
    assert _rows(df) == _rows(eager.sql(q))


def test_changed_in_between_raises(data):
    _, tmp = data
    lazy = _connect(tmp, "lazy")
    q = CASES[0][0]
    df = lazy.sql(q)
    lazy.execute("DELETE FROM t WHERE g = 1")
    with pytest.raises(SourceChangedError):
        df.tp.sources(rows=[0])


def test_persisted(data):
    _, tmp = data
    q = CASES[0][0]
    lazy = _connect(tmp, "lazy")
    lazy.sql(q).tp.to_parquet(tmp / "out.parquet")
    assert _shape(lazy, q).n_keys == 0
    assert _rows(tpf.read_traced(tmp / "out.parquet")) == _rows(_connect(tmp, "eager").sql(q))


def test_star_outputs_not_reused(data):
    """A star expands to several columns: output positions are not known from the SELECT list."""
    _, tmp = data
    q = "SELECT b.*, t.v FROM t RIGHT JOIN agg b USING (k)"
    lazy, eager = _connect(tmp, "lazy"), _connect(tmp, "eager")
    for con in (lazy, eager):
        con.execute("CREATE TABLE agg AS SELECT k, count(*) AS n FROM t WHERE g > 0 GROUP BY k")
    df = lazy.sql(q)
    assert _shape(lazy, q).reused == [None, None]
    assert _rows(df) == _rows(eager.sql(q))


@pytest.mark.parametrize("how", ["loc", "iloc"])
def test_a_reused_key_is_not_the_users_column(data, how):
    """The user's frame is theirs: a key read from an output column is a copy, so writing into that
    column (in place, before any lineage is asked) leaves each row's lineage that of the value it had."""
    t, tmp = data
    q = "SELECT g, count(*) AS n FROM t GROUP BY g ORDER BY g"
    lazy = _connect(tmp, "lazy")
    df = lazy.sql(q)
    assert _shape(lazy, q).reused == [0]  # (the path under test ran)
    values = df["g"].tolist()
    if how == "loc":
        df.loc[0, "g"] = 99
    else:
        df.iloc[1, 0] = values[0]  # (written into the column's own memory: it failed so before the copy)
    for r, g in enumerate(values):
        assert df.tp.sources(rows=[r])[str(tmp / "t.csv")].tolist() == _members(t, ["g"], (g,)), (how, r)
