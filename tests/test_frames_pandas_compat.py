"""pandas behaves as without the library, on untraced and traced frames: warnings name the caller's
line, chained assignment still raises ``ChainedAssignmentError``, copy-on-write is pandas' own.

pandas' own test suite is the wider judge (``make pandas-compat``); these pin the three properties on
traced frames too, where only this project can test them.
"""

from __future__ import annotations

import contextlib
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
