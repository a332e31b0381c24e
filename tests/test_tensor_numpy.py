"""ProvenanceTensor under plain numpy: lineage checked against the raw file with plain numpy.

Oracle: the rows a computation reads are known from its structure (a filter keeps the rows whose
condition holds on the raw values; mean/std read every row; cumsum row i reads rows 0..i), and
sufficiency is checked by re-running the same numpy code on only a row's lineage rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import traceprop_frames as tp
from traceprop_frames.errors import GranularityError, LineageLostError, UnsupportedOperationError


@pytest.fixture
def csv(tmp_path):
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(40, 5)).round(3)
    path = tmp_path / "credit_scores.csv"
    pd.DataFrame(raw, columns=list("abcde")).to_csv(path, index=False)
    return str(path), raw.astype(np.float32)


def _normalize(a):
    return (a - a.mean(axis=0)) / a.std(axis=0)


def test_seed_chain_rows_match_raw_file(csv):
    path, raw = csv
    X = tp.load_csv(path)
    X_norm = (X - X.mean(axis=0)) / X.std(axis=0)
    X_filt = X_norm[X_norm[:, 3] > 0]
    want = np.flatnonzero(_normalize(raw)[:, 3] > 0)  # oracle from the raw values
    np.testing.assert_allclose(np.asarray(X_filt), _normalize(raw)[want], rtol=1e-4, atol=1e-6)
    assert X_filt.sources(direct=True)[path].tolist() == want.tolist()
    assert X_filt.sources()[path].tolist() == list(range(40))  # mean/std read every row
    assert (
        X_filt.ops()
        == ["read_csv", "load_csv", "mean(axis=0)", "std(axis=0)", "elementwise", "row_filter"][1:]
    )
    assert [r.row for r in X_filt.trace(0, direct=True)] == [int(want[0])]
    assert set(X_filt.context_labels(0)) == {"mean(axis=0)", "std(axis=0)"}
    # sufficiency: re-running on only row 0's lineage rows reproduces row 0
    rows = X_filt.sources(rows=[0])[path]
    again = _normalize(raw[rows])
    np.testing.assert_allclose(
        again[np.searchsorted(rows, want[0])], np.asarray(X_filt)[0], rtol=1e-4, atol=1e-6
    )
    # the shared set is stored once, not per row
    assert X_filt.lineage.context.n_sets == 2


def test_step_names_a_group(csv):
    path, _ = csv
    X = tp.load_csv(path)
    with tp.step("normalize"):
        Z = (X - X.mean(axis=0)) / X.std(axis=0)
    assert Z[Z[:, 3] > 0].ops() == ["load_csv", "normalize", "row_filter"]


def test_cumsum_prefix_is_sufficient(csv):
    path, raw = csv
    X = tp.load_csv(path)
    C = np.cumsum(X, axis=0)
    for i in (0, 7, 39):
        rows = C.sources(rows=[i])[path]
        assert rows.tolist() == list(range(i + 1))
        np.testing.assert_allclose(np.cumsum(raw[rows], axis=0)[-1], np.asarray(C)[i], rtol=1e-5)
        assert C.sources(rows=[i], direct=True)[path].tolist() == [i]
    assert C.rows_from_source(path, [30]).tolist() == list(range(30, 40))
    assert C.rows_from_source(path, [30], direct=True).tolist() == [30]


def test_elementwise_functions_columns_and_row_reductions(csv):
    path, raw = csv
    X = tp.load_csv(path)
    Y = np.log1p(np.clip(np.where(X > 0, X, 0.0), 0, 1)) @ np.ones((5, 2))
    assert isinstance(Y, tp.ProvenanceTensor) and Y.shape == (40, 2)
    assert Y.sources(rows=[3])[path].tolist() == [3]  # all row-local
    r = X.sum(axis=1)
    assert r.shape == (40,) and r.sources(rows=[5])[path].tolist() == [5]
    total = X.sum(axis=0)  # a reduction returning one row: union of all
    assert total.is_statistic and total.sources()[path].tolist() == list(range(40))
    sel = X[[4, 1, 1]]
    assert sel.sources(direct=True)[path].tolist() == [1, 4] and sel.ops()[-1] == "row_select"


def test_concatenate_and_hstack(csv, tmp_path):
    path, raw = csv
    X = tp.load_csv(path)
    other = tp.tensor(np.ones((3, 5)), source="extra_rows")
    both = np.concatenate([X[:2], other])
    assert both.shape == (5, 5)
    assert both.sources(rows=[1])[path].tolist() == [1] and "extra_rows" in both.sources(rows=[4])
    side = np.hstack([X[:, [0]], X[:, [1]] * 2])
    assert side.sources(rows=[6])[path].tolist() == [6]


def test_untraceable_operations_raise(csv):
    path, _ = csv
    X = tp.load_csv(path)
    with pytest.raises(LineageLostError, match="np.asarray"):
        _ = X.T
    with pytest.raises(LineageLostError, match="reshape"):
        X.reshape(5, 40)
    with pytest.raises(LineageLostError, match="not tracked"):
        np.linalg.svd(X)
    with pytest.raises(LineageLostError, match="mix rows"):
        X[:5] + X[:5, 0]  # (5,) broadcast along the columns of (5, 5)
    assert np.asarray(X).T.shape == (5, 40)  # the plain array stays available


def test_granularity_modes(csv):
    path, _ = csv
    op = tp.load_csv(path, granularity="op")
    z = (op - op.mean(axis=0))[op[:, 0] > 0]
    assert z.ops()[-1] == "row_filter" and z.source_files() == [path]
    with pytest.raises(GranularityError, match="'row'"):
        z.trace(0)
    cell = tp.load_csv(path, columns=["a", "b", "c"], granularity="cell")
    mixed = cell[:, [0, 1]] * 2 + cell[:, [2, 2]]
    assert mixed.columns_lineage() == [frozenset({"a", "c"}), frozenset({"b", "c"})]
    assert (cell @ np.ones((3, 1))).columns_lineage() == [frozenset({"a", "b", "c"})]
    with pytest.raises(GranularityError, match="cell"):
        tp.load_csv(path).columns_lineage()


def test_non_numeric_columns_are_named(tmp_path):
    p = tmp_path / "mixed.csv"
    pd.DataFrame({"x": [1.0, 2.0], "name": ["a", "b"]}).to_csv(p, index=False)
    with pytest.raises(UnsupportedOperationError, match=r"\['name'\].*tpf\.tensor"):
        tp.load_csv(str(p))
    assert tp.load_csv(str(p), columns=["x"]).shape == (2, 1)
