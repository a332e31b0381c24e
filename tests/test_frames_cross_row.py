"""Cross-row pandas calls on traced frames: a sufficiency oracle.

For a call ``f`` and a result row ``i``, take the source rows its lineage names (from the raw data, in
file order), run the same ``f`` on only those rows with plain pandas, and compare the value of row ``i``'s
own source row with the traced result. Lineage that misses a row the value depends on fails this.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from packaging.version import Version

import traceprop_frames as tpf
from traceprop_frames.errors import LineageLostError
from traceprop_frames.frames import cross_row

CALLS = {
    "shift": lambda d: d["x"].shift(1),
    "shift(-2)": lambda d: d["x"].shift(-2),
    "diff": lambda d: d["x"].diff(),
    "cumsum": lambda d: d["x"].cumsum(),
    "cummax": lambda d: d["x"].cummax(),
    "expanding.max": lambda d: d["x"].expanding().max(),
    "rolling(3).mean": lambda d: d["x"].rolling(3).mean(),
    "rolling(3,center).sum": lambda d: d["x"].rolling(3, center=True, min_periods=1).sum(),
    "ewm.mean": lambda d: d["x"].ewm(alpha=0.5).mean(),
    "ffill": lambda d: d["x"].ffill(),
    "bfill": lambda d: d["x"].bfill(),
    "frame.ffill": lambda d: d[["x", "y"]].ffill(),
    "frame.cumsum": lambda d: d[["x", "y"]].cumsum(),
    "rank": lambda d: d["x"].rank(),
    "pct_change": lambda d: d["x"].pct_change(fill_method=None),
    "interpolate": lambda d: d["x"].interpolate(),
    "qcut": lambda d: pd.qcut(d["y"], 2, labels=False, duplicates="drop"),
    "apply(axis=0)": lambda d: d[["x", "y"]].apply(lambda c: c - c.mean()),
    "gb.transform(sum)": lambda d: d.groupby("k", observed=True)["x"].transform("sum"),
    "gb.transform(lambda)": lambda d: d.groupby("k", observed=True)["y"].transform(lambda g: g / g.sum()),
    "gb.cumsum": lambda d: d.groupby("k", observed=True)["x"].cumsum(),
    "gb.shift": lambda d: d.groupby("k", observed=True)["x"].shift(1),
    "gb.diff": lambda d: d.groupby("k", observed=True)["x"].diff(),
    "gb.rank": lambda d: d.groupby("k", observed=True)["x"].rank(),
    "gb.ffill": lambda d: d.groupby("k", observed=True)["x"].ffill(),
    "gb.bfill": lambda d: d.groupby("k", observed=True)["x"].bfill(),
    "gb.cumcount": lambda d: d.groupby("k", observed=True).cumcount(),
    "gb.rolling(2).sum": lambda d: d.groupby("k", observed=True)["x"].rolling(2).sum(),
    "gb.expanding.mean": lambda d: d.groupby("k", observed=True)["x"].expanding().mean(),
}


def _own_rows(traced_out, name: str) -> np.ndarray:
    frame = traced_out.to_frame() if isinstance(traced_out, pd.Series) else traced_out
    rows = [frame.tp.sources(rows=[i], direct=True)[name] for i in range(len(frame))]
    assert all(len(r) == 1 for r in rows)
    return np.array([r[0] for r in rows], dtype=np.int64)


def _plain_result(call, raw: pd.DataFrame) -> pd.DataFrame:
    """The call on plain pandas, indexed by source row number (group-by rolling puts keys in front)."""
    out = call(raw)
    out = out.to_frame() if isinstance(out, pd.Series) else out
    if isinstance(out.index, pd.MultiIndex):
        out = out.droplevel(list(range(out.index.nlevels - 1)))
    return out


def check_sufficient(raw: pd.DataFrame, call, name: str, rows=None) -> None:
    df = tpf.track(raw, name)
    out = call(df)
    frame = out.to_frame() if isinstance(out, pd.Series) else out
    own = _own_rows(out, name)
    expected = _plain_result(call, raw)
    got = frame.reset_index(drop=True).set_axis(own)
    pd.testing.assert_frame_equal(got.sort_index(), expected.sort_index(), check_names=False)
    for i in range(len(frame)) if rows is None else rows:
        lineage_rows = frame.tp.sources(rows=[i]).get(name, np.zeros(0, dtype=np.int64))
        assert own[i] in lineage_rows
        again = _plain_result(call, raw.iloc[lineage_rows]).loc[own[i]]
        np.testing.assert_allclose(
            np.asarray(again, dtype=float), np.asarray(got.loc[own[i]], dtype=float), equal_nan=True,
            err_msg=f"row {i}: re-running on its lineage rows {lineage_rows.tolist()} gives another value",
        )  # fmt: skip


def _raw(n: int, seed: int, categorical: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n).round(2)
    x[rng.random(n) < 0.25] = np.nan
    k = rng.integers(0, 3, n)
    raw = pd.DataFrame({"k": k, "x": x, "y": rng.integers(1, 9, n).astype(float)})
    if categorical:
        raw["k"] = pd.Categorical(k, categories=[0, 1, 2, 3])  # category 3 is never used
    return raw


@pytest.mark.parametrize("call", list(CALLS), ids=list(CALLS))
def test_every_supported_call_is_sufficient(call):
    check_sufficient(_raw(23, 0), CALLS[call], f"xr_{call}")


@settings(max_examples=120, deadline=None)
@given(
    n=st.integers(1, 25),
    seed=st.integers(0, 10_000),
    call=st.sampled_from(sorted(CALLS)),
    categorical=st.booleans(),
)
def test_sufficiency_on_random_frames(n, seed, call, categorical):
    check_sufficient(_raw(n, seed, categorical), CALLS[call], f"xh_{call}_{seed}_{n}")


def test_assigned_lag_feature_carries_the_previous_row():
    df = tpf.track(pd.DataFrame({"bal": [1.0, 2.0, 4.0, 8.0]}), "xr_lag")
    df["lag"] = df["bal"].shift(1)
    df["run"] = df["bal"].cumsum()
    assert df.tp.sources(rows=[2])["xr_lag"].tolist() == [0, 1, 2]  # run reads rows 0..2
    assert df.tp.sources(rows=[2], direct=True)["xr_lag"].tolist() == [2]
    assert df.tp.rows_from_source("xr_lag", [3]).tolist() == [3]
    assert df.tp.rows_from_source("xr_lag", [0]).tolist() == [0, 1, 2, 3]
    assert df.tp.rows_from_source("xr_lag", [0], direct=True).tolist() == [0]
    assert [r.row for r in df.tp.trace(1, direct=True)] == [1]


def test_prefix_sets_are_linear_in_rows():
    n = 20_000
    df = tpf.track(pd.DataFrame({"x": np.ones(n)}), "xr_big")
    df["c"] = df["x"].cumsum()
    ctx = df.tp.lineage().context
    assert ctx.nbytes < 60 * n  # a pool of n ids plus per-row bounds, not n^2 / 2 ids
    assert df.tp.sources(rows=[n - 1])["xr_big"].size == n


def test_untraced_frames_are_untouched_and_raise_mode_refuses():
    plain = pd.DataFrame({"x": [1.0, 2.0]})
    pd.testing.assert_series_equal(plain["x"].cumsum(), pd.Series([1.0, 3.0], name="x"))
    df = tpf.track(plain, "xr_mode")
    cross_row.set_mode("raise")
    try:
        with pytest.raises(LineageLostError, match="cross-row mode"):
            df["x"].shift(1)
    finally:
        cross_row.set_mode("context")
    with pytest.raises(LineageLostError, match="set_index"):
        df.reset_index()["x"].cumsum()


def _pair():
    a = tpf.track(pd.DataFrame({"k": [0, 1, 2], "x": [1.0, 2.0, 3.0]}), "al_a")
    b = tpf.track(pd.DataFrame({"k": [2, 0, 1], "y": [20.0, 0.0, 10.0]}), "al_b")
    return a, b


@pytest.mark.parametrize(
    "call",
    [
        lambda a, b: a.join(b.set_index("k"), on="k"),
        lambda a, b: pd.concat([a, b.set_index("k")], axis=1),
        lambda a, b: a.__setitem__("y", b.set_index("k")["y"]),
        lambda a, b: a.update(b.set_index("k")[["y"]].rename(columns={"y": "x"})),
        lambda a, b: a.combine_first(b.set_index("k")),
        lambda a, b: a["x"].combine_first(b.set_index("k")["y"]),
        lambda a, b: a.insert(0, "y", b.set_index("k")["y"]),
        lambda a, b: a["k"].map(b.set_index("k")["y"]),
        lambda a, b: a.loc.__setitem__((slice(None), "y"), b.set_index("k")["y"]),
        lambda a, b: a.iloc.__setitem__((slice(None), 1), b.set_index("k")["y"]),
    ],
)
def test_label_matched_rows_of_another_traced_frame_refuse(call):
    a, b = _pair()
    with pytest.raises(LineageLostError, match=r"df\.tp\.merge"):
        call(a, b)


def test_merge_is_the_way_and_same_key_alignment_is_allowed():
    a, b = _pair()
    out = a.tp.merge(b, on="k", how="left")
    assert {k: v.tolist() for k, v in out.tp.sources(rows=[2]).items()} == {"al_a": [2], "al_b": [0]}
    a["z"] = a["x"] * 2  # same keys: allowed, row-only lineage is exact
    sub = a[a["x"] > 1]
    a["w"] = sub["x"]  # aligned by the same lineage keys
    assert {k: v.tolist() for k, v in a.tp.sources(rows=[1]).items()} == {"al_a": [1]}
    a["v"] = b.drop(columns="k")["y"]  # keys of another table never match a key here: all NaN, exact
    assert a["v"].isna().all()
    with pytest.warns(tpf.errors.MissingLineageWarning):
        a["u"] = pd.Series([5.0, 6.0, 7.0], index=pd.Index([1, 2, 3]))


@pytest.mark.parametrize("sort", [True, False])
def test_groupby_observed_false_empty_groups_have_empty_lineage(sort):
    raw = pd.DataFrame(
        {
            "g": pd.Categorical(["b", "a", "b", "a"], categories=["a", "b", "c"]),
            "h": pd.Categorical(["u", "u", "v", "u"], categories=["u", "v"]),
            "x": [1.0, 2.0, 3.0, 4.0],
        }
    )
    df = tpf.track(raw, f"obs_{sort}")
    plain_call = raw.groupby(["g", "h"], observed=False, sort=sort, as_index=False)
    if Version(pd.__version__) < Version("3"):  # pandas 2.2 itself fails here: the same error, traced or not
        with pytest.raises(ValueError, match="Length of values") as plain_err:
            plain_call.agg(s=("x", "sum"), n=("x", "size"))
        with pytest.raises(ValueError, match="Length of values") as traced_err:
            df.tp.groupby(["g", "h"], observed=False, sort=sort).agg(s=("x", "sum"), n=("x", "size"))
        assert str(traced_err.value) == str(plain_err.value)
        return
    out = df.tp.groupby(["g", "h"], observed=False, sort=sort).agg(s=("x", "sum"), n=("x", "size"))
    plain = plain_call.agg(s=("x", "sum"), n=("x", "size"))
    pd.testing.assert_frame_equal(out.reset_index(drop=True), plain)
    for i in range(len(out)):  # oracle: a group's members are the raw rows with its key values
        members = np.flatnonzero((raw["g"] == out["g"].iloc[i]) & (raw["h"] == out["h"].iloc[i])).tolist()
        got = out.tp.sources(rows=[i]).get(f"obs_{sort}", np.zeros(0, dtype=np.int64)).tolist()
        assert got == members
    assert (out["n"] == 0).sum() == 3  # (a, v), (c, u), (c, v): unused combinations, empty lineage


def _reshape_raw():
    rng = np.random.default_rng(5)
    n = 30
    return pd.DataFrame(
        {
            "id": rng.integers(0, 6, n),
            "m": rng.choice(["jan", "feb", "mar"], n),
            "x": np.where(rng.random(n) < 0.2, np.nan, rng.normal(size=n).round(2)),
            "y": rng.integers(0, 5, n).astype(float),
        }
    )


RESHAPES = {
    "pivot_table": (dict(values="x", index="id", columns="m", aggfunc="sum"), ["id"]),
    "pivot_table(2 keys)": (dict(values=["x", "y"], index=["id", "m"], aggfunc="mean"), ["id", "m"]),
    "crosstab": (dict(index="id", columns="m"), ["id"]),
}


@pytest.mark.parametrize("case", list(RESHAPES))
def test_reshaping_rows_are_sufficient(case):
    kwargs, keys = RESHAPES[case]
    plain = _plain_crosstab if case == "crosstab" else _plain_pivot
    raw = _reshape_raw()
    name = f"rs_{case}"
    df = tpf.track(raw, name)
    out = (df.tp.crosstab if case == "crosstab" else df.tp.pivot_table)(**kwargs)
    pd.testing.assert_frame_equal(out.reset_index(drop=True), plain(raw, **kwargs))
    for i in range(len(out)):  # re-run on the row's lineage rows only: the same row comes back
        again = plain(raw.iloc[out.tp.sources(rows=[i])[name]], **kwargs)
        mine = out.iloc[[i]].reset_index(drop=True)
        got = again.merge(mine[keys], on=keys)
        pd.testing.assert_frame_equal(got, mine[got.columns], check_dtype=False)


def _plain_pivot(d, **k):
    out = pd.pivot_table(d, **k)
    if isinstance(out.columns, pd.MultiIndex):
        out.columns = ["_".join(str(p) for p in c if str(p)) for c in out.columns]
    return out.reset_index()


def _plain_crosstab(d, index, columns):
    out = pd.crosstab(d[index], d[columns])
    out.columns = [str(c) for c in out.columns]
    out.columns.name = None
    return out.reset_index()


def test_melt_stack_and_get_dummies_keep_each_rows_source_row():
    raw = _reshape_raw()
    df = tpf.track(raw, "rs_melt")
    melted = df.tp.melt(id_vars=["id"], value_vars=["x", "y"])
    expect = np.tile(np.arange(len(raw)), 2)
    assert [melted.tp.sources(rows=[i])["rs_melt"].tolist() for i in (0, 31, 59)] == [
        [expect[i]] for i in (0, 31, 59)
    ]
    stacked = df[["x", "y"]].stack().to_frame("v")
    first_rows = stacked.index.get_level_values("tp_lid") - df.index[0]
    assert stacked.tp.sources(rows=[3])["rs_melt"].tolist() == [first_rows[3]]
    dummies = pd.get_dummies(df, columns=["m"])
    assert dummies.tp.sources(rows=[7])["rs_melt"].tolist() == [7]


def test_shared_context_survives_parquet_round_trip(tmp_path):
    df = tpf.track(pd.DataFrame({"k": [0, 1, 0, 1], "x": [1.0, 2.0, 3.0, 4.0]}), "xr_persist")
    df["run"] = df.groupby("k")["x"].cumsum()
    df.tp.to_parquet(tmp_path / "f.parquet")
    back = tpf.read_traced(tmp_path / "f.parquet")
    assert back.tp.sources(rows=[2])["xr_persist"].tolist() == [0, 2]
    assert back.tp.sources(rows=[2], direct=True)["xr_persist"].tolist() == [2]


def test_repeated_rows_get_the_union_of_their_copies_sets():
    df = tpf.track(pd.DataFrame({"x": [1.0, 2.0, 4.0, 8.0]}), "xr_dup")
    d = df.iloc[[2, 0, 2, 1]]  # source row 2 twice: its copies read prefixes {2} and {2, 0, 2}
    run = d["x"].cumsum()
    assert run.tolist() == [4.0, 5.0, 9.0, 11.0]
    got = [d.tp.sources(rows=[i])["xr_dup"].tolist() for i in range(4)]
    assert got == [[0, 2], [0, 2], [0, 2], [0, 1, 2]]
    assert df.tp.sources(rows=[3])["xr_dup"].tolist() == [3]  # row 3 was never read


def test_concat_axis1_accepts_a_generator_of_plain_frames():
    """pandas reads any iterable of frames (pyspark's toPandas passes a generator); the check must not
    consume it before pandas does."""
    parts = [pd.DataFrame({"a": [1, 2]}), pd.DataFrame({"b": [3, 4]})]
    out = pd.concat((p for p in parts), axis=1)
    pd.testing.assert_frame_equal(out, pd.DataFrame({"a": [1, 2], "b": [3, 4]}))


def _read_by_plan(plan, n: int) -> list[list[int]]:
    """Per row, the positions a rule's recorded plan says it read (its sets laid out and expanded)."""
    m, layout, refs = plan
    order, starts, ends = (np.asarray(a, dtype=np.int64) for a in layout())
    off, ids = refs(100).csr()
    assert len(starts) == len(ends) == m and len(off) == n + 1
    return [
        sorted({int(p) for s in ids[off[i] : off[i + 1]] - 100 for p in order[starts[s] : ends[s]]})
        for i in range(n)
    ]


def _read_by_rule(kind: str, codes: np.ndarray, arg) -> list[list[int]]:
    """The rules of the module docstring, by brute force: each row's group, in row order."""
    out = []
    for i, c in enumerate(codes):
        if c < 0:
            out.append([])
            continue
        g = np.flatnonzero(codes == c).tolist()
        k = g.index(i)
        if kind == "all":
            out.append(g)
        elif kind == "prefix":
            out.append(g[: k + 1])
        elif kind == "suffix":
            out.append(g[k:])
        elif kind == "window":
            out.append(g[max(k - arg + 1, 0) : k + 1])
        else:  # offset: the row k - arg and the rows between, if it exists
            j = k - arg
            out.append(sorted(g[min(j, k) : max(j, k) + 1]) if 0 <= j < len(g) else [])
    return out


@settings(max_examples=200, deadline=None)
@given(
    codes=st.lists(st.integers(-1, 3), min_size=1, max_size=14),
    kind=st.sampled_from(["all", "prefix", "suffix", "window", "offset"]),
    arg=st.integers(-4, 4),
)
def test_compact_plans_read_what_the_rules_say(codes, kind, arg):
    """The offset / prefix / suffix / window / group parts a call records (compact references, sets laid
    out on demand) expand to exactly the rows the rule reads, grouped and over a whole column."""
    arg = max(arg, 1) if kind == "window" else arg
    codes = np.array(codes, dtype=np.int64)
    want = _read_by_rule(kind, codes, arg)
    assert _read_by_plan(cross_row._group_plan(kind, codes, arg), len(codes)) == want
    whole = np.zeros(len(codes), dtype=np.int64)
    assert _read_by_plan(cross_row._column_plan(kind, len(codes), arg), len(codes)) == _read_by_rule(
        kind, whole, arg
    )


def test_cross_row_calls_record_without_laying_out():
    """Recording shift / cumsum / transform lays out no set (the first question does); a statistic's one
    set is the rows' own id array, not a copy."""
    df = tpf.track(pd.DataFrame({"x": np.arange(6.0), "g": [0, 1, 0, 1, 0, 1]}), "xr_lazy")
    df["lag"] = df["x"].shift(1)
    df["run"] = df["x"].cumsum()
    df["tot"] = df.groupby("g")["x"].transform("sum")
    df["share"] = df["x"] / df["x"].sum()
    blocks = list(df.tp.lineage().context.blocks.values())
    assert [b.label for b in blocks] == ["shift", "cumsum", "groupby.transform", "sum"]
    assert not any(b.is_laid_out for b in blocks[:3])
    assert np.shares_memory(blocks[3].pool, df.tp.lineage().ids)
    assert df.tp.sources(rows=[3])["xr_lazy"].tolist() == list(range(6))
    assert df.tp.sources(rows=[3], direct=True)["xr_lazy"].tolist() == [3]
