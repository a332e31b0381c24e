"""ProvenanceTensor: row selection on numpy and torch data keeps each row's source rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import traceprop_frames as tpf
from traceprop_frames.errors import LineageLostError, UnknownRowError, UnsupportedOperationError


@pytest.fixture
def frame():
    df = pd.DataFrame({"a": np.arange(10.0), "b": np.arange(10.0) * 2, "k": [0, 1] * 5})
    return tpf.track(df, "t_src")


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize(
    "select",
    [
        lambda n: [6, 2, 2],
        lambda n: slice(1, 9, 3),
        lambda n: np.arange(n) % 3 == 0,
        lambda n: torch.tensor([4, 0]),
        lambda n: -1,
    ],
)
def test_row_selection_keeps_lineage(frame, backend, select):
    filtered = frame[frame["a"] > 2]  # frame rows 3..9
    pt = tpf.tensor(filtered, columns=["a", "b"], backend=backend)
    key = select(len(pt))
    out = pt[key]
    # oracle: the same selection on the source-row numbers that survive the filter (rows 3..9 of t_src)
    idx = key if isinstance(key, slice) else np.asarray(key.numpy() if isinstance(key, torch.Tensor) else key)
    src_rows = np.arange(3, 10)[idx]
    src_rows = np.atleast_1d(src_rows)
    assert len(out) == len(src_rows)
    for i, r in enumerate(src_rows):
        assert out.sources(rows=[i]) == {"t_src": np.array([r])}
        assert float(out.data[i, 0]) == float(r)  # column a holds the source row number
    assert type(out.data) is (np.ndarray if backend == "numpy" else torch.Tensor)


def test_columns_merge_lineage_and_ops(frame):
    g = frame.tp.groupby("k").agg(s=("a", "sum"))
    pt = tpf.tensor(g, columns=["s"], backend="torch")
    assert pt.shape == (2, 1) and pt.data.dtype == torch.float32
    assert pt.sources(rows=[1])["t_src"].tolist() == [1, 3, 5, 7, 9]
    assert pt.rows_from_source("t_src", [4]).tolist() == [0]
    assert pt[:, [0]].ops() == ["track", "groupby_agg", "tensor", "column_select"]
    assert [n.op for n in pt.ancestors()] == ["track", "groupby_agg", "tensor"]


def test_bad_input(frame):
    pt = tpf.tensor(frame)
    with pytest.raises(UnknownRowError):
        pt[[10]]
    with pytest.raises(UnknownRowError, match="mask"):
        pt[np.ones(3, dtype=bool)]
    with pytest.raises(UnsupportedOperationError):
        pt[np.array([0.5])]
    with pytest.raises(UnsupportedOperationError, match="backend"):
        tpf.tensor(frame, backend="jax")
    with pytest.raises(LineageLostError):
        tpf.tensor(frame.reset_index(drop=True))
