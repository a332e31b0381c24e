"""pandas behaves as without the library, on untraced and traced frames: warnings name the caller's
line, chained assignment still raises ``ChainedAssignmentError``, copy-on-write is pandas' own.

pandas' own test suite is the wider judge (``make pandas-compat``); these pin the three properties on
traced frames too, where only this project can test them.
"""

from __future__ import annotations

import contextlib
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

import traceprop_frames as tpf

PANDAS3 = int(pd.__version__.split(".")[0]) >= 3
HERE = __file__


def _frame(traced: bool) -> pd.DataFrame:
    df = pd.DataFrame({"k": [1, 1, 2, 2], "a": [1.0, np.nan, 3.0, 4.0], "b": [1, 2, 3, 4]})
    return tpf.track(df, "compat") if traced else df


@contextlib.contextmanager
def _cow():
    """pandas 3: copy-on-write is the only mode; pandas 2.2: its option."""
    if PANDAS3:
        yield
    else:
        with pd.option_context("mode.copy_on_write", True):
            yield


def _caught(fn):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        fn()
    return [x for x in w if not issubclass(x.category, tpf.errors.UntracedValuesWarning)]


def _pandas_warning_calls(df):
    """Calls that make pandas warn (deprecations) through each kind of wrapper, for this pandas."""
    if PANDAS3:
        return {
            "groupby cumulative (cross-row)": lambda: df.groupby("k").cummax(foo=1),
            "setitem with expansion (reductions)": lambda: df["b"].copy().__setitem__(-5, "x"),
            "fillna (cross-row + reductions)": lambda: pd.Series(
                pd.to_datetime(["2020", None]), index=df.index[:2]
            ).fillna("x"),
        }
    return {
        "shift with freq and fill_value (cross-row)": lambda: df.set_index(
            pd.date_range("2020", periods=len(df))
        ).shift(1, freq="D", fill_value=1),
        "sum over axis=None (reductions)": lambda: df[["a", "b"]].sum(axis=None),
        "fillna downcast (cross-row + reductions)": lambda: df["a"].astype(object).fillna(0),
        "concat with an empty frame (alignment)": lambda: pd.concat(
            [df, pd.DataFrame({"a": []}, dtype=object)]
        ),
    }


@pytest.mark.parametrize("traced", [False, True], ids=["untraced", "traced"])
def test_pandas_warnings_name_the_callers_line(traced):
    df = _frame(traced)
    for label, call in _pandas_warning_calls(df).items():
        caught = _caught(call)
        assert caught, f"{label}: pandas emitted no warning (the example needs updating for this pandas)"
        for w in caught:
            assert w.filename == HERE, f"{label}: {w.category.__name__} names {w.filename}:{w.lineno}"


def _chained(df):
    key = df.index[0]
    return {
        "df[c][i] = v": lambda: _set_chained_getitem(df, key),
        "df[c].loc[i] = v": lambda: _set_chained_loc(df, key),
        "df[c].iloc[0] = v": lambda: _set_chained_iloc(df),
        "df[c].fillna(v, inplace=True)": lambda: df["a"].fillna(0.0, inplace=True),
        "df[c].clip(v, inplace=True)": lambda: df["a"].clip(lower=2.0, inplace=True),
        "df[c].update(other)": lambda: df["a"].update(pd.Series([9.0], index=[key])),
    }


def _set_chained_getitem(df, key):
    df["a"][key] = 100.0


def _set_chained_loc(df, key):
    df["a"].loc[key] = 100.0


def _set_chained_iloc(df):
    df["a"].iloc[0] = 100.0


@pytest.mark.parametrize("traced", [False, True], ids=["untraced", "traced"])
def test_chained_assignment_error_still_raised(traced):
    with _cow():
        df = _frame(traced)
        before = df.copy()
        for label, call in _chained(df).items():
            caught = _caught(call)
            chained = [w for w in caught if issubclass(w.category, pd.errors.ChainedAssignmentError)]
            assert len(chained) == 1, f"{label}: {[(w.category.__name__, w.filename) for w in caught]}"
            assert chained[0].filename == HERE, f"{label}: names {chained[0].filename}"
        pd.testing.assert_frame_equal(df, before)  # copy-on-write: a chained assignment changes nothing


def _plain_assignments(df):
    key = df.index[0]
    s = df["a"]
    df["c"] = 1.0
    df.loc[key, "b"] = 7
    s[key] = 5.0
    s.fillna(0.0, inplace=True)
    return df, s


@pytest.mark.parametrize("traced", [False, True], ids=["untraced", "traced"])
def test_plain_assignment_does_not_warn(traced):
    with _cow():
        df = _frame(traced)
        caught = _caught(lambda: _plain_assignments(df))
        assert not [w for w in caught if issubclass(w.category, pd.errors.ChainedAssignmentError)]
        assert df.loc[df.index[0], "b"] == 7 and (df["c"] == 1.0).all()


def _cow_story(df):
    """A user's copy-on-write expectations, as values: a selected column or a filtered frame is a
    copy; changing it leaves the parent as it was."""
    col = df["a"]
    col.iloc[0] = -1.0
    part = df[df["b"] > 1]
    part.iloc[0, part.columns.get_loc("b")] = -2
    view = df.loc[:, ["a", "b"]]
    view.loc[view.index[1], "a"] = -3.0
    df2 = df.reset_index(drop=True)
    df2.loc[0, "b"] = -4
    return [df.to_numpy(copy=True), col.to_numpy(), part.to_numpy(), view.to_numpy(), df2.to_numpy()]


def test_copy_on_write_is_pandas_own():
    with _cow():
        plain = _cow_story(_frame(False))
        traced = _cow_story(_frame(True))
    for p, t in zip(plain, traced, strict=True):
        np.testing.assert_array_equal(p, t)
    assert plain[0][0, 1] == 1.0  # the parent kept its value


def _everyday_calls(df, other):
    s = df["a"]
    return [
        lambda: df.iloc[1, 1], lambda: df.at[1, "a"], lambda: df.loc[1, "a"], lambda: s.iloc[1], lambda: s[1],
        lambda: s + 1, lambda: s * s, lambda: s > 0, lambda: df[["a", "b"]] + other[["a", "b"]],
        lambda: s.sum(), lambda: s.mean(), lambda: df.std(), lambda: s.fillna(0), lambda: s.clip(-1, 1),
        lambda: s.where(s > 0), lambda: df.__setitem__("z", 1.0), lambda: s.iloc.__setitem__(0, 1.5),
        lambda: df.loc.__setitem__((0, "b"), 2.0), lambda: s.shift(1), lambda: s.cumsum(),
        lambda: s.rolling(3).mean(), lambda: df.groupby("k")["a"].transform("mean"),
        lambda: pd.concat([df, other]), lambda: df.reset_index(), lambda: s.isin([1.0]),
        lambda: pd.cut(s, 2), lambda: df.insert(0, "y", 1.0),
    ]  # fmt: skip


def test_untraced_calls_never_enter_this_package():
    """On untraced objects every hooked pandas call runs pandas' own code only: not one frame of
    traceprop_frames/frames/ is entered (the hooks sit behind a test inside pandas' own function).
    (``pd.concat(..., axis=1)``, which ``df.join`` calls, does reach its hook: the test is the axis.)"""
    from traceprop_frames.frames import inline

    df, other = _frame(False), _frame(False)
    ours = tpf.frames.__path__[0]
    entered = []

    def profile(frame, event, arg):
        if event == "call" and frame.f_code.co_filename.startswith(ours):
            entered.append(f"{frame.f_code.co_name} ({frame.f_code.co_filename}:{frame.f_lineno})")

    calls = _everyday_calls(df, other)
    sys.setprofile(profile)
    try:
        for call in calls:
            call()
    finally:
        sys.setprofile(None)
    wrapped = {k: v for k, v in inline.patched().items() if v != "inline"}
    assert not entered, f"untraced calls entered {entered[:5]} (methods not inlined: {wrapped})"


def test_patched_methods_are_pandas_own_code():
    from traceprop_frames.frames import inline

    done = inline.patched()
    assert len(done) > 100
    for label in (
        "Series.sum",
        "Series.__getitem__",
        "DataFrame.__setitem__",
        "_LocationIndexer.__setitem__",
    ):
        assert done[label] == "inline", (label, done[label])
    fn = pd.Series.__getitem__
    assert fn.__code__.co_filename == pd.core.series.__file__ and fn.__qualname__ == "Series.__getitem__"


def test_uninstall_restores_pandas_objects_and_install_is_repeatable():
    from traceprop_frames.frames import cross_row

    owners = (pd.Series, pd.DataFrame, pd.core.generic.NDFrame, pd.core.indexing._LocationIndexer, pd)
    snap = lambda: {(o, k): v for o in owners for k, v in vars(o).items() if callable(v)}  # noqa: E731
    cells = lambda f: [c.cell_contents for c in (getattr(f, "__closure__", None) or ())]  # noqa: E731
    cross_row.uninstall()
    try:
        before, sum_cells = snap(), cells(pd.DataFrame.sum)
        cross_row.install()
        assert snap() != before
        cross_row.uninstall()
        assert snap() == before and cells(pd.DataFrame.sum) == sum_cells
    finally:
        cross_row.install()
    df = tpf.track(pd.DataFrame({"x": [1.0, 2.0, 4.0]}), "reinstalled")
    df["run"] = df["x"].cumsum()
    assert df.tp.sources(rows=[2])["reinstalled"].tolist() == [0, 1, 2]


@pytest.mark.skipif(not PANDAS3, reason="pandas 3.1 deprecates reset_index(inplace=...)")
@pytest.mark.parametrize("traced", [False, True], ids=["untraced", "traced"])
def test_fixed_stacklevel_warning_names_callers_line(traced):
    """pandas warns about ``reset_index(inplace=...)`` with a fixed ``stacklevel=3``: no frame of ours
    may sit between the user and pandas (the keys' move to a column is seen by the insert hook)."""
    df = _frame(traced)
    caught = [w for w in _caught(lambda: df.reset_index(inplace=False)) if "inplace" in str(w.message)]
    if not caught:
        pytest.skip("this pandas does not deprecate reset_index(inplace=...)")
    assert all(w.filename == HERE for w in caught), [(w.filename, w.lineno) for w in caught]
    if traced:
        with pytest.raises(tpf.errors.LineageLostError, match="set_index"):
            df.reset_index()["a"].cumsum()


@pytest.mark.parametrize("traced", [False, True], ids=["untraced", "traced"])
def test_default_arguments_reach_pandas_as_the_user_gave_them(traced):
    """A hooked method hands pandas the caller's arguments, not the values pandas' own preamble rewrote
    (pandas 2.2's ffill turns an omitted ``downcast`` into ``None``; passing that on warns the user about a
    keyword they never wrote)."""
    raw = pd.DataFrame({"x": [1.0, np.nan, 3.0], "y": [np.nan, 2.0, 1.0]})
    df = tpf.track(raw, f"defaults_{traced}") if traced else raw
    calls = [lambda d: d[["x", "y"]].ffill(), lambda d: d[["x", "y"]].bfill(), lambda d: d["x"].interpolate()]
    for call in calls:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # any warning pandas would not give for the plain call fails
            got = call(df)
        pd.testing.assert_frame_equal(pd.DataFrame(got).reset_index(drop=True), pd.DataFrame(call(raw)))
