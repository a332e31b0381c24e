"""GradientStore on disk: manifest, memmap, re-open in a new process, erasure marks, lineage answers."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch

import traceprop_frames as tpf
from traceprop_frames.attribution import GradientStore, TrainingContext, compute_influence_scores, fingerprint
from traceprop_frames.attribution.store import StoreError
from traceprop_frames.estimators.mlp import MLPLogit


@pytest.fixture()
def traced(tmp_path):
    rng = np.random.default_rng(0)
    n = 40
    df = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    df["y"] = (df["a"] - df["b"] + 0.3 * rng.normal(size=n) > 0).astype(int)
    path = tmp_path / "credit_scores.csv"
    df.to_csv(path, index=False)
    return tpf.read_csv(str(path)), str(path)


def _train(train, store, variant_epochs=3):
    torch.manual_seed(0)
    X = torch.tensor(np.ascontiguousarray(train[["a", "b"]].to_numpy()), dtype=torch.float32)
    y = torch.tensor(np.ascontiguousarray(train["y"].to_numpy()), dtype=torch.float32)
    model = MLPLogit(2, (4,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    crit = torch.nn.BCEWithLogitsLoss()
    with TrainingContext(model, store, lineage=train) as ctx:
        for _ in range(variant_epochs):
            for idx in np.array_split(np.random.default_rng(1).permutation(len(train)), 4):
                opt.zero_grad()
                ctx.backward(crit(model(X[idx]), y[idx]), batch_idx=idx)
                opt.step()
            ctx.checkpoint()
    return model, X


def test_store_files_manifest_and_reopen_in_new_process(traced, tmp_path):
    train, path = traced
    train = train[train["a"] > -1.0]  # a filtered frame: sample i is row i of *this* frame
    sdir = tmp_path / "store"
    store = GradientStore(k=32, path=str(sdir), seed=5, dtype="float16", variant="TRAK")
    model, X = _train(train, store)
    m = json.loads((sdir / "manifest.json").read_text())
    assert m["k"] == 32 and m["seed"] == 5 and m["dtype"] == "float16" and m["variant"] == "TRAK"
    assert m["n_samples"] == len(train) and m["n_checkpoints"] == 3
    gen = m["data_dir"]  # one generation of files; the manifest is the commit point
    assert gen.startswith("data-") and m["lineage"] == f"{gen}/lineage.parquet"
    assert m["model_fingerprint"] == fingerprint(model)
    assert m["bytes_per_sample"] == 3 * (32 * 2 + 16)
    feats = sdir / gen / "ckpt_000" / "features.bin"
    assert os.path.getsize(feats) == len(train) * 32 * 2
    assert isinstance(store.features(0), np.memmap)
    src_row = int(train.tp.sources(rows=[3])[path][0]) if hasattr(train, "tp") else None
    expected = compute_influence_scores(model, store, X[:3], top_k=4)
    torch.save(model, tmp_path / "model.pt")
    code = textwrap.dedent(
        f"""
        import json, numpy as np, torch
        from traceprop_frames.attribution import GradientStore, compute_influence_scores
        s = GradientStore.open({str(sdir)!r})
        model = torch.load({str(tmp_path / "model.pt")!r}, weights_only=False)
        X = torch.tensor(np.load({str(tmp_path / "x.npy")!r}))
        top = compute_influence_scores(model, s, X, top_k=4)
        try:
            s.features(0)[0, 0] = 1
            ro = False
        except (ValueError, OSError):
            ro = True
        print(json.dumps({{"idx": top.indices.tolist(), "prov": s.get_provenance(3).trace_to_file(),
                          "ro": ro, "n": s.n_samples}}))
        """
    )
    np.save(tmp_path / "x.npy", X[:3].numpy())
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["idx"] == expected.indices.tolist() and got["ro"] and got["n"] == len(train)
    assert got["prov"] == f"{path} row {src_row}"


def test_provenance_and_samples_from_source(traced, tmp_path):
    train, path = traced
    train = train.iloc[::-1]  # reversed: sample 0 is source row 39
    store = GradientStore(k=16, path=str(tmp_path / "s"), variant="LL")
    _train(train, store, variant_epochs=1)
    prov = store.get_provenance(0)
    assert prov.trace_to_file() == f"{path} row 39" and prov.rows[0].row == 39 and prov.rows[0].sha256_ok
    np.testing.assert_array_equal(store.samples_from_source(path, [39, 0]), [0, 39])
    store.mark_removed([1, 2])
    reopened = GradientStore.open(str(tmp_path / "s"))
    assert reopened.removed[[1, 2]].all() and reopened.removed.sum() == 2
    with pytest.raises(StoreError, match="read-only"):
        reopened.begin(torch.nn.Linear(2, 1), 3)
    with pytest.raises(IndexError):
        store.get_provenance(len(train))


def test_batch_mean_variant_one_row_per_batch(traced):
    train, _ = traced
    store = GradientStore(k=8, variant="BM", dtype="float32")
    model, X = _train(train, store, variant_epochs=1)
    ck = store.checkpoints[0]
    assert ck.n_rows == 4 and sorted(np.unique(ck.rows).tolist()) == [0, 1, 2, 3]
    S = compute_influence_scores(model, store, X[:2], top_k=40)
    assert S.indices.shape == (2, 40)


def test_store_without_lineage_and_errors():
    store = GradientStore(k=4)
    with pytest.raises(StoreError, match="begin"):
        store.add_checkpoint({})
    with pytest.raises(StoreError, match="no gradient store"):
        GradientStore.open("/nonexistent/store")
    with pytest.raises(ValueError, match="dtype"):
        GradientStore(dtype="int8")
    store.begin(torch.nn.Linear(3, 1), 5)
    assert store.get_provenance(2).trace_to_file() == "training sample 2 (no lineage recorded)"
    with pytest.raises(StoreError, match="no lineage"):
        store.samples_from_source("x.csv", [1])


def test_batch_mean_streaming_top_k_matches_full(traced):
    """4 feature rows, k=8: an ill-conditioned kernel (cond ~1e7), where float32 products after the
    solve gave a different answer per block shape (0.4 % apart); every block size must agree."""
    from traceprop_frames.attribution import TRAKScorer, top_k_scores

    train, _ = traced
    store = GradientStore(k=8, variant="BM", dtype="float32")
    model, X = _train(train, store, variant_epochs=2)
    sc = TRAKScorer(store)
    full = top_k_scores(sc.scores(model, X[:3]), 5)
    for block in (1, 7, 40):
        streamed = sc.top_k(model, X[:3], 5, block_samples=block)
        np.testing.assert_allclose(streamed.scores, full.scores, rtol=1e-9)
