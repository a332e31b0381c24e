"""Reductions of traced rows flowing back into rows: a sufficiency oracle.

For an expression ``f`` over raw frames and a result row ``i``: take the source rows its lineage names
(from each raw frame, in file order), run ``f`` on only those rows with plain pandas, and compare the
value of row ``i``'s own source row with the traced result. Lineage that misses a row the value (or the
row's selection by a filter) depends on fails this — as it does with the wrappers uninstalled.
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import traceprop_frames as tpf
from traceprop_frames.errors import LineageLostError, UntracedValuesWarning
from traceprop_frames.frames import cross_row
from traceprop_frames.frames.traced_values import TracedFloat, TracedInt


def _set(d, col, value, where=None):
    d = d.copy()
    if where is None:
        d[col] = value(d)
    else:
        d.loc[where(d), col] = value(d)
    return d


def _set_series(s, where, value):
    s = s.copy()
    s[where(s)] = value(s)
    return s


REDUCTIONS = ["sum", "mean", "median", "std", "var", "min", "max", "prod", "count", "nunique", "sem", "skew",
              "kurt"]  # fmt: skip


def _ratio(name: str):
    return lambda a, b: a["y"] / getattr(a["y"], name)()


CALLS = {
    "s / s.sum()": lambda a, b: a["x"] / a["x"].sum(),
    "s - s.mean()": lambda a, b: a["x"] - a["x"].mean(),
    "filter s > s.mean()": lambda a, b: a[a["x"] > a["x"].mean()],
    "filter s <= s.median() (flex)": lambda a, b: a[a["y"].le(a["y"].median())],
    "zscore": lambda a, b: (a["x"] - a["x"].mean()) / a["x"].std(),
    "scalar on the left": lambda a, b: a["x"].max() - a["x"],
    "fillna(median)": lambda a, b: a["x"].fillna(a["x"].median()),
    "text fillna(mode()[0])": lambda a, b: a["c"].fillna(a["c"].mode()[0] if a["c"].notna().any() else "z"),
    "text fillna(max())": lambda a, b: a["c"].fillna(a["c"].max()),
    "fillna(dict)": lambda a, b: a[["x", "y"]].fillna({"x": a["x"].median(), "y": a["y"].mean()}),
    "where": lambda a, b: a["x"].where(a["x"] < a["x"].quantile(0.75), a["y"].median()),
    "mask": lambda a, b: a["x"].mask(a["y"] > a["y"].mean(), 0.0),
    "clip": lambda a, b: a["x"].clip(lower=a["x"].quantile(0.2), upper=a["x"].quantile(0.8)),
    "replace": lambda a, b: a["y"].replace(1.0, a["y"].max()),
    "df[z] = sum": lambda a, b: _set(a, "z", lambda d: d["y"].sum())[["z"]],
    "assign(z=count)": lambda a, b: a.assign(z=a["x"].count())[["z"]],
    ".loc[m, c] = mean": lambda a, b: _set(a, "x", lambda d: d["x"].mean(), lambda d: d["y"] > 4)[["x"]],
    "s[m] = mean": lambda a, b: _set_series(a["x"], lambda s: s > 0, lambda s: s.mean()),
    ".loc[:, c] = max": lambda a, b: _set(a[["x", "y"]], "y", lambda d: d["x"].max(), lambda d: slice(None)),
    "agg('sum')": lambda a, b: a["x"] / a["x"].agg("sum"),
    "apply(np.mean) of a frame": lambda a, b: a[["x", "y"]] - a[["x", "y"]].apply(np.mean),
    "describe()['mean']": lambda a, b: a["y"] - a["y"].describe()["mean"],
    "plain groupby().sum().sum()": lambda a, b: a["y"] / a.groupby("k", observed=True)["y"].sum().sum(),
    "arith of scalars": lambda a, b: a["x"] * (a["y"].sum() / a["y"].count() + 1) ** 2,
    "numpy ufunc of a scalar": lambda a, b: a["y"] - np.log1p(abs(a["x"].sum())),
    "round(scalar)": lambda a, b: a["y"] - round(a["y"].mean(), 1),
    "quantile(q)": lambda a, b: a["x"] > a["x"].quantile(0.3),
    "frame zscore": lambda a, b: (a[["x", "y"]] - a[["x", "y"]].mean()) / a[["x", "y"]].std(),
    "frame fillna(median)": lambda a, b: a[["x", "y"]].fillna(a[["x", "y"]].median()),
    "frame sub(mean, axis=1)": lambda a, b: a[["x", "y"]].sub(a[["x", "y"]].mean(), axis=1),
    "frame > quantile": lambda a, b: a[["x", "y"]] > a[["x", "y"]].quantile(0.5),
    "stat of a stat frame": lambda a, b: a["x"] / a[["x", "y"]].mean()["y"],
    "other frame's mean": lambda a, b: a["x"] - b["v"].mean(),
    "filter isin": lambda a, b: a[a["k"].isin(b["k"])],
    "filter ~isin": lambda a, b: a[~a["k"].isin(b["k"])],
    "isin as value": lambda a, b: a["k"].isin(b["k"]),
    "isin(a statistic)": lambda a, b: a["y"].isin(b["v"].round().abs().mode()),
    "cut(bins=statistics)": lambda a, b: pd.cut(a["y"], [0, np.fmin(a["y"].mean(), 8.5), 9], labels=False),
    "corr": lambda a, b: a["y"] * a["y"].corr(a["y"] ** 2),
    "filter between": lambda a, b: a[a["y"].between(a["y"].quantile(0.25), a["y"].mean())],
    "transform(closure over a mean)": lambda a, b: a.groupby("k", observed=True)["y"].transform(
        lambda g: g - a["y"].mean()
    ),
    "apply(axis=1) closure": lambda a, b: a[["y"]].apply(lambda r: r["y"] / a["y"].sum(), axis=1),
    "map(closure)": lambda a, b: a["y"].map(lambda v: v / a["y"].max()),
    "Series.apply(closure)": lambda a, b: a["y"].apply(lambda v: v - b["v"].mean()),
    "loc[[idxmax]] (a row key)": lambda a, b: a.loc[[a["y"].idxmax()]] if len(a) else a,
    "query(@mean)": lambda a, b: a.query("y > @a.y.mean()"),
    **{f"y / y.{r}()": _ratio(r) for r in REDUCTIONS},
}


def _frame(out) -> pd.DataFrame:
    return out.to_frame() if isinstance(out, pd.Series) else out


def check_sufficient(raw_a, raw_b, call, tag: str, rows=None) -> None:
    a, b = tpf.track(raw_a, f"{tag}_a"), tpf.track(raw_b, f"{tag}_b")
    out = _frame(call(a, b))
    expected = _frame(call(raw_a, raw_b))
    own = np.array([out.tp.sources(rows=[i], direct=True)[f"{tag}_a"][0] for i in range(len(out))], dtype=int)
    got = out.reset_index(drop=True).set_axis(own)
    pd.testing.assert_frame_equal(got, expected, check_names=False)  # the wrappers change no value
    for i in range(len(out)) if rows is None else rows:
        lin = out.tp.sources(rows=[i])
        sub_a = raw_a.iloc[lin.get(f"{tag}_a", np.zeros(0, dtype=int))]
        sub_b = raw_b.iloc[lin.get(f"{tag}_b", np.zeros(0, dtype=int))]
        again = _frame(call(sub_a, sub_b))
        assert own[i] in again.index, f"row {i}: re-running on its lineage rows {lin} does not select it"
        assert _same(again.loc[own[i]], got.loc[own[i]]), (
            f"row {i}: re-running on its lineage rows {lin} differs"
        )


def _same(u, v) -> bool:
    u, v = np.atleast_1d(np.asarray(u, dtype=object)), np.atleast_1d(np.asarray(v, dtype=object))
    if u.shape != v.shape:
        return False
    for p, q in zip(u.tolist(), v.tolist()):
        if pd.isna(p) or pd.isna(q):
            if not (pd.isna(p) and pd.isna(q)):
                return False
        elif isinstance(p, str) or isinstance(q, str):
            if p != q:
                return False
        elif not np.isclose(float(p), float(q), rtol=1e-7, atol=1e-12):
            return False
    return True


def _raws(n: int, seed: int, categorical: bool = False):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n).round(2)
    x[rng.random(n) < 0.25] = np.nan
    k = rng.integers(0, 4, n)  # duplicate keys
    c = rng.choice(["p", "q", "r"], n).astype(object)
    c[rng.random(n) < 0.25] = None
    a = pd.DataFrame({"k": k, "x": x, "y": rng.integers(1, 9, n).astype(float), "c": c})
    m = max(n // 2, 1)
    b = pd.DataFrame({"k": rng.integers(0, 6, m), "v": rng.normal(size=m).round(2)})
    if categorical:
        a["k"] = pd.Categorical(k, categories=[0, 1, 2, 3, 9])  # category 9 is never used
    return a, b


@pytest.mark.parametrize("call", list(CALLS), ids=list(CALLS))
def test_every_pattern_is_sufficient(call):
    raws = _raws(17, 3)
    try:
        CALLS[call](*raws)
    except (
        TypeError
    ) as plain_err:  # pandas 2.2 with numpy 2.x: max() of text with None fails in pandas itself
        with pytest.raises(TypeError) as traced_err:
            CALLS[call](tpf.track(raws[0], f"rd_{call}_a"), tpf.track(raws[1], f"rd_{call}_b"))
        assert str(traced_err.value) == str(plain_err)  # the user gets pandas' own error, nothing else
        return
    check_sufficient(*raws, CALLS[call], f"rd_{call}")


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(0, 20), seed=st.integers(0, 10_000), call=st.sampled_from(sorted(CALLS)), cat=st.booleans()
)
def test_sufficiency_on_random_frames(n, seed, call, cat):
    check_sufficient(*_raws(n, seed, cat), CALLS[call], f"rh_{seed}_{n}")


@pytest.mark.parametrize("call", ["s / s.sum()", "filter s > s.mean()", "frame zscore", "filter isin"])
def test_the_oracle_fails_with_the_wrappers_uninstalled(call):
    cross_row.uninstall()
    try:
        with pytest.raises(AssertionError):
            check_sufficient(*_raws(17, 3), CALLS[call], f"ru_{call}")
    finally:
        cross_row.install()


def test_traced_scalars_union_their_sets_and_behave_as_numpy_scalars():
    a = tpf.track(pd.DataFrame({"x": [1.0, 2.0, 6.0]}), "rs_a")
    b = tpf.track(pd.DataFrame({"v": [10.0, 30.0]}), "rs_b")
    total, mean, n = a["x"].sum(), b["v"].mean(), a["x"].count()
    assert isinstance(total, (TracedFloat, float, np.float64)) and isinstance(n, TracedInt)
    both = (total + mean) / n
    assert isinstance(both, TracedFloat) and both == pytest.approx((9.0 + 20.0) / 3)
    assert type(float(both)) is float and type(both.item()) is float  # the boundary: plain Python values
    assert type(pickle.loads(pickle.dumps(both))) is np.float64
    a["z"] = both
    assert {k: v.tolist() for k, v in a.tp.sources(rows=[0]).items()} == {"rs_a": [0, 1, 2], "rs_b": [0, 1]}
    assert {k: v.tolist() for k, v in a.tp.sources(rows=[0], direct=True).items()} == {"rs_a": [0]}


def test_one_set_is_stored_once_for_all_rows():
    n = 20_000
    df = tpf.track(pd.DataFrame({"x": np.arange(n, dtype=float)}), "rs_big")
    df["share"] = df["x"] / df["x"].sum()
    df["c"] = df["x"] - df["x"].mean()
    assert df.tp.lineage().context.nbytes < 60 * n  # n ids, shared by both sets, plus a reference per row
    assert df.tp.sources(rows=[5])["rs_big"].size == n


def test_raise_mode_refuses_where_a_statistic_meets_rows():
    df = tpf.track(pd.DataFrame({"x": [1.0, np.nan, 3.0]}), "rs_mode")
    cross_row.set_mode("raise")
    try:
        m = df["x"].mean()  # computing it is fine
        for call in (lambda: df["x"] - m, lambda: df["x"].fillna(m), lambda: df.assign(z=m)):
            with pytest.raises(LineageLostError, match="cross-row mode"):
                call()
        with pytest.raises(LineageLostError, match="without an index"):
            df["r"] = np.roll(df["x"].to_numpy(), 1)
    finally:
        cross_row.set_mode("context")


def test_rowless_arrays_warn_and_an_indexed_series_states_alignment():
    df = tpf.track(pd.DataFrame({"x": [3.0, 1.0, 2.0], "k": ["b", "a", "b"]}), "rs_warn")
    for value in (
        np.roll(df["x"].to_numpy(), 1),
        pd.factorize(df["k"])[0],
        list(df["x"]),
        pd.Categorical(df["k"]),
    ):
        with pytest.warns(UntracedValuesWarning, match=r"tpf\.tensor"):
            df["z"] = value
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        df["pred"] = pd.Series(np.array([0.1, 0.9, 0.5]), index=df.index)  # row i from row i: stated
        df["c"] = 1.0
        plain = pd.DataFrame({"x": [1.0, 2.0]})
        plain["z"] = np.roll(plain["x"].to_numpy(), 1)  # untraced: untouched


def test_isin_with_keyless_traced_values_refuses():
    a = tpf.track(pd.DataFrame({"k": [1, 2]}), "rs_isin_a")
    b = tpf.track(pd.DataFrame({"k": [2, 3]}), "rs_isin_b")
    with pytest.raises(LineageLostError, match=r"tp\.merge"):
        a["k"].isin(b.reset_index(drop=True)["k"])
    assert a["k"].isin([2]).tolist() == [False, True]  # literal values: nothing to record


def test_reductions_that_cannot_carry_their_rows_warn():
    raw = pd.DataFrame({"d": pd.to_datetime(["2024-01-02", "2024-01-01"]), "x": [1.0, 2.0]})
    df = tpf.track(raw, "rs_ts")
    with pytest.warns(UntracedValuesWarning, match="Timestamp"):
        df["d"].min()


def test_values_of_frames_that_lost_their_keys_carry_every_row_of_their_table():
    df = tpf.track(pd.DataFrame({"k": [0, 1, 0, 1], "x": [1.0, 2.0, 3.0, 4.0]}), "rs_lost")
    sums = df.groupby("k")["x"].sum()  # plain group-by: the keys are gone, its values still read rows
    sub = df[df["k"] == 0]
    sub["share"] = sub["x"] / sums.sum()
    sub["first"] = sub["x"] - sums[0]
    assert sub.tp.sources(rows=[0])["rs_lost"].tolist() == [0, 1, 2, 3]
    flat = df.reset_index()
    with pytest.raises(LineageLostError, match="set_index"):
        flat["x"] - flat["x"].mean()
