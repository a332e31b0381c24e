"""The df.tp accessor: row-preserving pandas ops, errors, hash checks, persistence, memory."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import make_column_transformer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import traceprop_frames as tpf
from traceprop_frames.errors import (
    LineageFormatError,
    LineageLostError,
    MissingLineageWarning,
    SourceChangedError,
    SourceChangedWarning,
    SourceMissingError,
    UnknownRowError,
    UnknownSourceError,
    UnsupportedOperationError,
)
from traceprop_frames.frames import carrier


@pytest.fixture
def csv(tmp_path):
    rng = np.random.default_rng(3)
    df = pd.DataFrame(
        {
            "k": rng.integers(0, 5, 40),
            "x": rng.normal(size=40).round(3),
            "c": rng.choice(["a", "b"], 40),
            "lst": [[i, i + 1] if i % 3 else [] for i in range(40)],
        }
    )
    df.loc[::7, "x"] = np.nan
    path = tmp_path / "t.csv"
    df.drop(columns="lst").to_csv(path, index=False)
    return str(path), df


def rows_of(frame, i):
    return frame.tp.sources(rows=[i])


@pytest.mark.parametrize(
    "op",
    [
        lambda d: d[d["x"] > 0],
        lambda d: d.loc[d["k"] == 2, ["x", "k"]],
        lambda d: d.iloc[[5, 3, 3, 9]],
        lambda d: d.sort_values(["k", "x"]),
        lambda d: d.head(7),
        lambda d: d.sample(15, random_state=1),
        lambda d: d.dropna(),
        lambda d: d.fillna(0),
        lambda d: d.assign(y=d["x"] * 2 + 1),
        lambda d: d[["c", "x"]],
        lambda d: d.reset_index().set_index("tp_lid"),
        lambda d: d.reset_index(),  # keys kept in a tp_lid column
        lambda d: d.set_index("c", append=True),  # keys kept as a MultiIndex level
        lambda d: d.groupby("k")[["x"]].transform("mean"),
    ],
)
def test_row_preserving_pandas_ops_keep_lineage(csv, op):
    path, raw = csv
    df = tpf.read_csv(path)
    raw = raw.drop(columns="lst").copy()
    raw.index = df.index  # the oracle: the same op on the raw frame tells which file rows survive
    out = op(df)
    positions = [df.index.get_loc(k) for k in np.asarray(carrier.lineage_keys(out))]
    assert len(out) == len(positions)
    for i, p in enumerate(positions):
        assert {path: [p]} == {k: v.tolist() for k, v in rows_of(out, i).items()}


def test_explode_and_duplicates_keep_lineage_per_copy(csv):
    path, raw = csv
    df = tpf.track(raw[["k", "lst"]], "mem")
    ex = df.explode("lst")
    expect = np.repeat(np.arange(40), [max(len(v), 1) for v in raw["lst"]])
    for i in [0, 1, 2, 5, len(ex) - 1]:
        assert rows_of(ex, i)["mem"].tolist() == [expect[i]]
    both = pd.concat([df, df])  # plain concat keeps the keys: copies trace to the same rows
    assert rows_of(both, 45)["mem"].tolist() == [5]


def test_sklearn_pandas_output_keeps_lineage(csv):
    path, _ = csv
    df = tpf.read_csv(path).dropna()
    ct = make_pipeline(
        make_column_transformer((StandardScaler(), ["x", "k"]), (OneHotEncoder(sparse_output=False), ["c"]))
    ).set_output(transform="pandas")
    out = ct.fit_transform(df)
    np.testing.assert_array_equal(out.tp.sources()[path], df.tp.sources()[path])
    assert out.tp.trace(4)[0].row == df.tp.trace(4)[0].row


@pytest.mark.parametrize(
    "lose, hint",
    [
        (lambda d: pd.merge(d, d, on="k"), "df.tp.merge"),
        (lambda d: d.merge(d, on="k"), "df.tp.merge"),
        (lambda d: d.groupby("k").agg(s=("x", "sum")), "df.tp.groupby"),
        (lambda d: d.reset_index(drop=True), "reset_index"),
        (lambda d: pd.concat([d, d], ignore_index=True), "tpf.concat"),
        (lambda d: d.set_index("c"), "append=True"),
    ],
)
def test_plain_rebuilding_ops_raise_lineage_lost(csv, lose, hint):
    df = tpf.read_csv(csv[0])
    out = lose(df)
    for query in (lambda: out.tp.sources(), lambda: out.tp.trace(0), lambda: out.tp.ops()):
        with pytest.raises(LineageLostError, match=hint.replace(".", r"\.").replace("(", r"\(")):
            query()


def test_changed_file_is_reported(csv):
    path, _ = csv
    df = tpf.read_csv(path)
    assert df.tp.trace(0)[0].sha256_ok is True
    with open(path, "a") as f:
        f.write("9,9.9,z\n")
    with pytest.raises(SourceChangedError, match="changed since it was loaded"):
        df.tp.trace(0)
    with pytest.warns(SourceChangedWarning):
        rows = df.tp.trace(0, strict=False)
    assert rows[0].sha256_ok is False and "changed" in rows[0].trace_to_file()
    with pytest.raises(SourceChangedError):
        df.tp.verify()
    os.remove(path)
    with pytest.raises(SourceMissingError):
        df.tp.trace(0)


def test_bad_input_errors(csv, tmp_path):
    path, _ = csv
    with pytest.raises(SourceMissingError, match="no such file"):
        tpf.read_csv(tmp_path / "nope.csv")
    with pytest.raises(UnsupportedOperationError, match="skiprows"):
        tpf.read_csv(path, skiprows=2)
    df = tpf.read_csv(path)
    with pytest.raises(UnknownRowError, match="unknown row numbers: \\[40\\]"):
        df.tp.rows_from_source(path, [3, 40])
    with pytest.raises(UnknownSourceError, match="other.csv"):
        df.tp.rows_from_source("other.csv", [1])
    with pytest.raises(UnknownRowError, match="outside a frame of 40 rows"):
        df.tp.trace(40)
    with pytest.raises(UnsupportedOperationError, match="axis=0"):
        tpf.concat([df, df], axis=1)
    with pytest.warns(MissingLineageWarning, match="tpf.track"):
        m = df.tp.merge(pd.DataFrame({"k": [1, 2], "z": [0, 1]}), on="k")
    assert set(m.tp.sources()) == {path}


def test_parquet_round_trip_in_a_new_process(csv, tmp_path):
    path, _ = csv
    df = tpf.read_csv(path)
    g = df.tp.groupby("k").agg(s=("x", "sum"), n=("x", "size"))
    m = df.tp.merge(g, on="k")[lambda d: d["x"] > -0.5]
    art = tmp_path / "train.parquet"
    m.tp.to_parquet(art)
    expect = {k: v.tolist() for k, v in m.tp.sources(rows=[3]).items()}
    code = (
        "import json, traceprop_frames as tpf\n"
        f"d = tpf.read_traced({str(art)!r})\n"
        "print(json.dumps({'src': {k: v.tolist() for k, v in d.tp.sources(rows=[3]).items()},"
        " 'ops': d.tp.ops(), 'ok': d.tp.trace(3)[0].sha256_ok, 'n': len(d)}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    import json

    got = json.loads(out.stdout)
    assert got["src"] == expect and got["ok"] is True and got["n"] == len(m)
    assert got["ops"][-1] == "select" and "merge" in got["ops"]
    back = tpf.read_traced(art)
    pd.testing.assert_frame_equal(back.reset_index(drop=True), m.reset_index(drop=True))


def test_malformed_artifacts_raise_named_errors(csv, tmp_path):
    path, raw = csv
    plain = tmp_path / "plain.parquet"
    raw.drop(columns="lst").to_parquet(plain)
    with pytest.raises(LineageFormatError, match="holds no traceprop lineage"):
        tpf.read_traced(plain)
    art = tmp_path / "t.parquet"
    tpf.read_csv(path).tp.to_parquet(art)
    data = art.read_bytes()
    trunc = tmp_path / "trunc.parquet"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(LineageFormatError):
        tpf.read_traced(trunc)


def test_lineage_of_unreferenced_frames_is_freed(csv):
    """Counts only the tables this test creates: the registry is process-global, and tables of earlier
    tests may be freed by the same gc.collect()."""
    path, _ = csv
    first = carrier._cursor[0]  # every table created from here on has base >= first
    df = tpf.read_csv(path)
    m = df.tp.merge(df, on="k")
    f = m[m["x_x"] > 0]
    f.tp.sources()
    mine = [ref for base, ref in list(carrier._tables.items()) if base >= first]
    assert len(mine) == 2 and all(ref() is not None for ref in mine)
    del df, m, f
    gc.collect()
    assert [ref() for ref in mine] == [None, None]
    assert not [base for base in carrier._tables if base >= first]


def test_ancestors_is_a_dag_with_shared_sources(csv):
    path, _ = csv
    df = tpf.read_csv(path)
    g = df.tp.groupby("k").agg(s=("x", "sum"))
    m = df.tp.merge(g, on="k")
    dag = m.tp.ancestors()
    assert dag.ops() == ["read_csv", "groupby_agg", "merge"]
    ids = [n.id for n in dag]
    assert sorted(dag.edges()) == sorted([(ids[0], ids[1]), (ids[0], ids[2]), (ids[1], ids[2])])
    assert "digraph" in dag.to_dot()


def test_track_records_memory_source_without_hash_check():
    df = pd.DataFrame({"a": [1, 2, 3]}, index=["x", "y", "z"])
    t = tpf.track(df, "crm_export")
    assert "index" in t.columns  # a meaningful index is kept as a column
    row = t.tp.trace(2)[0]
    assert (row.path, row.row, row.sha256_ok) == ("crm_export", 2, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t.tp.sources()


def test_plain_concat_of_different_traced_frames_resolves_each_row(csv):
    path, raw = csv
    a = tpf.read_csv(path)
    b = tpf.track(raw[["k", "x"]], "mem_b")
    mixed = pd.concat([a[["k", "x"]].head(3), b.tail(2), a[["k", "x"]].iloc[[10]]])
    got = [{k: v.tolist() for k, v in mixed.tp.sources(rows=[i]).items()} for i in range(len(mixed))]
    assert got == [{path: [0]}, {path: [1]}, {path: [2]}, {"mem_b": [38]}, {"mem_b": [39]}, {path: [10]}]
    assert mixed.tp.ops()[-1] == "concat"


@pytest.mark.parametrize("fn", ["sum", "mean", "count", "size", "min", "max", "first", "last", "nunique"])
def test_groupby_reducers_match_pandas_and_group_members(csv, fn):
    path, raw = csv
    df = tpf.read_csv(path)
    got = getattr(df.tp.groupby("k")[["x"]], fn)()
    plain = pd.read_csv(path)
    expect = getattr(plain.groupby("k", as_index=False)[["x"]], fn)()
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expect.reset_index(drop=True))
    for i, k in enumerate(got["k"]):
        assert df.tp.sources(rows=[0])  # frame still traced
        assert got.tp.sources(rows=[i])[path].tolist() == np.flatnonzero(plain["k"] == k).tolist()


def test_merge_indicator_validate_and_index_join(csv):
    path, raw = csv
    df = tpf.read_csv(path)
    right = tpf.track(pd.DataFrame({"k": [0, 1, 9], "w": [1.0, 2.0, 3.0]}), "right")
    m = df.tp.merge(right, on="k", how="outer", indicator=True, validate="many_to_one")
    plain = pd.read_csv(path).merge(right.reset_index(drop=True), on="k", how="outer", indicator=True)
    pd.testing.assert_frame_equal(m.reset_index(drop=True), plain)
    only_right = int(np.flatnonzero(m["_merge"] == "right_only")[0])
    assert m.tp.sources(rows=[only_right]) == {"right": np.array([2])}
    with pytest.raises(pd.errors.MergeError):
        df.tp.merge(df, on="k", validate="one_to_one")
    keyed = right.reset_index().set_index("k")  # lineage keys ride in the tp_lid column
    j = df.tp.merge(keyed, left_on="k", right_index=True)
    for i in range(len(j)):
        k = j["k"].iloc[i]
        assert j.tp.sources(rows=[i])["right"].tolist() == [{0: 0, 1: 1}[k]]
    assert "tp_lid" not in j.columns


def test_sklearn_output_outlives_the_frame_it_came_from(csv):
    path, _ = csv

    def features():
        df = tpf.read_csv(path).dropna()  # dies when this function returns
        expect = df.tp.sources(rows=[2])
        out = StandardScaler().set_output(transform="pandas").fit_transform(df[["x", "k"]])
        return out, expect

    out, expect = features()
    gc.collect()
    assert "traceprop" in out.attrs  # scikit-learn drops attrs; frames.sklearn_compat carries ours
    assert {k: v.tolist() for k, v in out.tp.sources(rows=[2]).items()} == {
        k: v.tolist() for k, v in expect.items()
    }


def test_column_transformer_output_outlives_its_input(csv):
    path, _ = csv

    def features():
        df = tpf.read_csv(path).dropna()
        ct = make_column_transformer(
            (StandardScaler(), ["x", "k"]), (OneHotEncoder(sparse_output=False), ["c"])
        ).set_output(transform="pandas")
        return ct.fit_transform(df), df.tp.sources()[path]

    out, expect = features()
    gc.collect()
    np.testing.assert_array_equal(out.tp.sources()[path], expect)


def test_sklearn_compat_installs_when_sklearn_is_imported_later():
    code = (
        "import gc, sys, numpy as np, pandas as pd, traceprop_frames as tpf\n"
        "assert 'sklearn' not in sys.modules\n"
        "from sklearn.preprocessing import StandardScaler\n"
        "def f():\n"
        "    df = tpf.track(pd.DataFrame({'x': np.arange(10.0)}), 'm')\n"
        "    return StandardScaler().set_output(transform='pandas').fit_transform(df[df.x > 2])\n"
        "o = f(); gc.collect(); print(o.tp.sources()['m'].tolist())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[3, 4, 5, 6, 7, 8, 9]"


def test_lineage_frame_long_format_matches_sources(csv):
    path, _ = csv
    df = tpf.read_csv(path)
    m = df.tp.merge(tpf.track(pd.DataFrame({"k": [0, 1, 2, 3, 4], "z": range(5)}), "keys"), on="k")
    long = m.tp.lineage_frame(rows=[0, 5])
    for pos in (0, 5):
        got = long[long["position"] == pos].groupby("source")["source_row"].apply(sorted).to_dict()
        assert got == {k: v.tolist() for k, v in m.tp.sources(rows=[pos]).items()}
    assert len(m.tp.lineage_frame()) == 2 * len(m)
