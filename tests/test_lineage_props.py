"""Property tests: random frames and random op chains; lineage vs tags carried by plain pandas.

The oracle never touches the library: every source row carries a frozenset tag {(source, row)} in an
object column, and plain pandas carries the tags through the same chain (filters/sorts keep them, a
merge unions the two sides' tags, a group-by unions its members', concat stacks). The traced chain runs
the same steps without the tag column; row by row, ``df.tp.sources(rows=[i])`` must equal the tags.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import traceprop_frames as tpf

TAG = "__tags"


class PandasRefused(Exception):
    """Plain pandas raised on this step (and the traced step raised the same error)."""


def _source(name: str, seed: int, n: int, nan_keys: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    key = rng.integers(0, 4, n).astype(float)
    if nan_keys and n:
        key[rng.random(n) < 0.2] = np.nan
    df = pd.DataFrame({"k": key, f"v_{name}": rng.integers(-5, 6, n).astype(float)})
    traced = tpf.track(df, name)
    oracle = df.copy()
    oracle[TAG] = [frozenset({(name, i)}) for i in range(n)]
    return traced, oracle


def _union(a, b):
    a = a if isinstance(a, frozenset) else frozenset()
    b = b if isinstance(b, frozenset) else frozenset()
    return a | b


def _value_col(df: pd.DataFrame) -> str:
    return next(c for c in df.columns if c.startswith("v_"))


def apply_step(step, cur_t, cur_o, make_other):
    kind = step[0]
    if kind == "filter":
        col = _value_col(cur_o)
        return cur_t[cur_t[col] > step[1]], cur_o[cur_o[col] > step[1]]
    if kind == "sort":
        col = _value_col(cur_o)
        return (
            cur_t.sort_values([col, "k"], ascending=step[1], kind="stable"),
            cur_o.sort_values([col, "k"], ascending=step[1], kind="stable"),
        )
    if kind == "head":
        return cur_t.head(step[1]), cur_o.head(step[1])
    if kind == "merge":
        how = step[1]
        ot, oo = make_other()
        kw = {"how": how} if how == "cross" else {"how": how, "on": "k"}
        try:
            mo = cur_o.merge(oo, suffixes=("", "_r"), **kw)
        except (pd.errors.MergeError, ValueError) as e:
            # pandas refuses this chain (e.g. a second cross merge makes a duplicate "k_r"): the traced
            # merge must refuse it with pandas' own error and message
            with pytest.raises(type(e), match=re.escape(str(e))):
                cur_t.tp.merge(ot, suffixes=("", "_r"), **kw)
            raise PandasRefused from e
        mt = cur_t.tp.merge(ot, suffixes=("", "_r"), **kw)
        mo[TAG] = [_union(a, b) for a, b in zip(mo[TAG], mo[TAG + "_r"])]
        return mt, mo.drop(columns=TAG + "_r")
    if kind == "groupby":
        dropna = step[1]
        col = _value_col(cur_o)
        gt = cur_t.tp.groupby("k", dropna=dropna).agg(**{col: (col, "sum")})
        go = cur_o.groupby("k", dropna=dropna, as_index=False).agg(
            **{col: (col, "sum"), TAG: (TAG, lambda s: frozenset().union(*s))}
        )
        return gt, go
    if kind == "concat_self":
        return tpf.concat([cur_t, cur_t]), pd.concat([cur_o, cur_o], ignore_index=True)
    if kind == "concat_other":
        ot, oo = make_other()
        col = _value_col(cur_o)
        ot = ot.rename(columns={_value_col(ot): col})
        oo = oo.rename(columns={_value_col(oo): col})
        return tpf.concat([cur_t, ot]), pd.concat([cur_o, oo], ignore_index=True)
    if kind == "sample":
        return cur_t.sample(frac=1.0, replace=True, random_state=step[1]), cur_o.sample(
            frac=1.0, replace=True, random_state=step[1]
        )
    raise AssertionError(kind)


steps = st.one_of(
    st.tuples(st.just("filter"), st.integers(-3, 3)),
    st.tuples(st.just("sort"), st.booleans()),
    st.tuples(st.just("head"), st.integers(0, 8)),
    st.tuples(st.just("merge"), st.sampled_from(["inner", "left", "right", "outer", "cross"])),
    st.tuples(st.just("groupby"), st.booleans()),
    st.tuples(st.just("concat_self")),
    st.tuples(st.just("concat_other")),
    st.tuples(st.just("sample"), st.integers(0, 100)),
)


def check_same(traced: pd.DataFrame, oracle: pd.DataFrame) -> None:
    assert len(traced) == len(oracle)
    data = oracle.drop(columns=TAG).reset_index(drop=True)
    got = traced.reset_index(drop=True)
    pd.testing.assert_frame_equal(got, data, check_dtype=False)
    for i, tags in enumerate(oracle[TAG]):
        src = traced.tp.sources(rows=[i])
        got_tags = {(name, int(r)) for name, rows in src.items() for r in rows}
        assert got_tags == set(tags), f"row {i}"


@settings(max_examples=60)  # a chain of up to 4 traced ops per example: a fixed budget in every profile
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(0, 7),
    nan_keys=st.booleans(),
    chain=st.lists(steps, min_size=1, max_size=4),
)
def test_random_chains_match_pandas_tags(seed, n, nan_keys, chain):
    counter = [0]

    def make_other():
        counter[0] += 1
        return _source(f"o{seed}_{counter[0]}", seed + counter[0], 4, nan_keys)

    cur_t, cur_o = _source(f"s{seed}", seed, n, nan_keys)
    for step in chain:
        try:
            cur_t, cur_o = apply_step(step, cur_t, cur_o, make_other)
        except PandasRefused:
            break  # checked inside apply_step; the frames so far are checked below
        if len(cur_o) > 300:  # cross joins of concats grow fast; the property is checked up to here
            break
    check_same(cur_t, cur_o)


@pytest.mark.parametrize("how", ["inner", "left", "right", "outer", "cross"])
def test_every_merge_kind_against_tags(how):
    lt, lo = _source("L", 1, 6, True)
    rt, ro = _source("R", 2, 5, True)
    kw = {"how": how} if how == "cross" else {"how": how, "on": "k"}
    mt = lt.tp.merge(rt, **kw)
    mo = lo.merge(ro, **kw)
    mo[TAG] = [_union(a, b) for a, b in zip(mo[TAG + "_x"], mo[TAG + "_y"])]
    check_same(mt, mo.drop(columns=[TAG + "_x", TAG + "_y"]))


@settings(max_examples=150, deadline=None)
@given(
    lk=st.lists(st.one_of(st.none(), st.integers(0, 4)), max_size=9),
    rk=st.lists(st.one_of(st.none(), st.integers(0, 4)), max_size=9),
    how=st.sampled_from(["inner", "left", "right", "outer", "left_anti", "right_anti"]),
    by_index=st.sampled_from(["", "left", "right", "both"]),
    sort=st.booleans(),
    indicator=st.booleans(),
)
def test_merge_rows_read_from_pandas_join_equal_position_columns(lk, rk, how, by_index, sort, indicator):
    """The matched rows read from pandas' own join indexers are those that position columns carried
    through the same merge give, and the merged frame is pandas' own."""
    from traceprop_frames.frames import ops

    if how.endswith("anti") and not hasattr(pd.core.reshape.merge, "_MergeOperation"):
        return
    left = pd.DataFrame({"k": pd.array(lk, dtype="Int64"), "a": range(len(lk))})
    right = pd.DataFrame({"k": pd.array(rk, dtype="Int64"), "b": range(len(rk))})
    kw = dict(how=how, on=None, left_on=None, right_on=None, left_index=False, right_index=False, sort=sort,
              suffixes=("_x", "_y"), indicator=indicator, validate=None)  # fmt: skip
    if by_index in ("left", "both"):
        left = left.set_index("k")
        kw["left_index"] = True
    else:
        kw["left_on"] = "k"
    if by_index in ("right", "both"):
        right = right.set_index("k")
        kw["right_index"] = True
    else:
        kw["right_on"] = "k"
    try:
        want = pd.merge(left, right, **kw)
    except (ValueError, NotImplementedError):
        return  # a combination pandas refuses: nothing to compare
    fast = ops._pandas_join_rows(left, right, kw)
    assert fast is not None
    out, pl, pr = fast
    pd.testing.assert_frame_equal(out, want)
    la = left.assign(**{ops._POS_L: np.arange(len(left))})
    ra = right.assign(**{ops._POS_R: np.arange(len(right))})
    slow = pd.merge(la, ra, **kw)
    np.testing.assert_array_equal(pl, ops._positions(slow[ops._POS_L]))
    np.testing.assert_array_equal(pr, ops._positions(slow[ops._POS_R]))


@settings(max_examples=100, deadline=None)
@given(
    k=st.lists(st.one_of(st.none(), st.integers(0, 3)), min_size=1, max_size=12),
    j=st.integers(0, 2),
    sort=st.booleans(),
    dropna=st.booleans(),
    two_keys=st.booleans(),
    categorical=st.booleans(),
)
def test_group_codes_are_ngroup(k, j, sort, dropna, two_keys, categorical):
    """The group numbers df.tp.groupby reads (the grouper's own codes where it can) are ngroup()'s."""
    from traceprop_frames.frames.ops import _group_codes

    keys = pd.Categorical(k, categories=[3, 2, 1, 0]) if categorical else pd.array(k, dtype="Int64")
    df = pd.DataFrame({"k": keys, "j": [(i * j) % 3 for i in range(len(k))], "x": range(len(k))})
    gb = df.groupby(["k", "j"] if two_keys else "k", as_index=False, sort=sort, dropna=dropna, observed=True)
    gb.agg(s=("x", "sum"))
    want = gb.ngroup()
    np.testing.assert_array_equal(_group_codes(gb), want.fillna(-1).to_numpy(dtype=np.int64))
