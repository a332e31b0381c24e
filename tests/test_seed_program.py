"""The Traceprop seed program (examples/seed_program.py) end to end, checked against plain numpy on the file."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import traceprop_frames as tp
from traceprop_frames.attribution import GradientStore, TrainingContext
from traceprop_frames.errors import StoreError, UnlearningError
from traceprop_frames.unlearn import approximate_unlearn

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("seed_program", ROOT / "examples" / "seed_program.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cwd = os.getcwd()
    work = tmp_path_factory.mktemp("seed")
    try:
        out = mod.main(str(work))
    finally:
        os.chdir(cwd)
    raw = pd.read_csv(work / "credit_scores.csv").to_numpy(dtype=np.float32)
    norm = (raw - raw.mean(axis=0)) / raw.std(axis=0)
    out["want"] = np.flatnonzero(norm[:, 3] > 0)  # oracle: the rows that pass the filter
    out["work"] = work
    return out


def test_filter_rows_and_sufficient_sources(run):
    X_filt, want = run["X_filt"], run["want"]
    assert X_filt.sources(direct=True)["credit_scores.csv"].tolist() == want.tolist()
    assert X_filt.sources()["credit_scores.csv"].tolist() == list(range(600))
    assert X_filt.ops() == ["load_csv", "mean(axis=0)", "std(axis=0)", "elementwise", "row_filter"]


def test_store_samples_are_the_filtered_rows(run):
    store, want = run["store"], run["want"]
    assert store.n_samples == len(want)
    for k in (0, 7, len(want) - 1):
        assert [r.row for r in store.get_provenance(k).rows] == [int(want[k])]
    idx, sc = run["scores"].indices, run["scores"].scores
    assert len(idx) == 5 and np.all(np.diff(sc) <= 0)
    pairs = list(run["scores"])  # the seed's `for idx, score in scores:` over one applicant's row
    assert [i for i, _ in pairs] == idx.tolist() and [s for _, s in pairs] == sc.tolist()
    assert run["forget_set"].tolist() == [int(np.searchsorted(want, run["top_row"]))]


def test_unlearned_copy_and_certificate(run):
    before, after = run["model"], run["theta_prime"]
    assert after is not before and after.unlearn_result_.method == "gradient"
    diff = sum(float((a - b).detach().abs().sum()) for a, b in zip(before.parameters(), after.parameters()))
    assert diff > 0
    doc = json.loads((run["work"] / "article26_cert.json").read_text())
    cert = doc["certificate"]
    assert cert["forget_set"]["count"] == 1
    assert run["store"].removed[run["forget_set"]].all()


def test_batches_carry_their_rows_through_a_shuffled_loader(run):
    X_t, want = run["X_t"], run["want"]
    loader = DataLoader(TensorDataset(X_t, torch.zeros(len(X_t))), batch_size=16, shuffle=True)
    xb, _ = next(iter(loader))
    rows = xb.sources(direct=True)["credit_scores.csv"]
    assert sorted(rows.tolist()) == sorted(want[xb.samples].tolist())
    np.testing.assert_array_equal(xb.as_plain().numpy(), X_t.as_plain().numpy()[xb.samples])


def test_clear_errors_without_lineage_or_data(tmp_path):
    model = torch.nn.Linear(3, 1)
    store = GradientStore(k=32, path=None)
    with pytest.raises(StoreError, match="to_torch"):
        with TrainingContext(model, store) as ctx:
            model(torch.zeros(4, 3))
            ctx.backward(model(torch.zeros(4, 3)).sum(), 0)
    with pytest.raises(UnlearningError, match=r"data=\(X_train, y_train\)"):
        approximate_unlearn(model, [0])
    X = tp.tensor(np.ones((4, 3)), source="no_label_src").to_torch()
    with pytest.raises(UnlearningError, match="0/1 labels"):
        approximate_unlearn(model, [0], data=(X, torch.full((4,), 3.0)))
