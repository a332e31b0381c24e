"""Model folder format 2: the training matrices live in data/*.npy, written once, never by an erasure."""

from __future__ import annotations

import hashlib
import json
import os
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import traceprop_frames as tpf
from traceprop_frames.errors import ModelFolderError
from traceprop_frames.estimators import TorchLogisticRegression
from traceprop_frames.unlearn import generate_key, ledger
from traceprop_frames.unlearn.bundle import load_lineage, load_model, save_model
from traceprop_frames.unlearn.folder import erase_in_folder, erase_requests_in_folder


def data(n=400, d=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    y = (rng.random(n) < 1 / (1 + np.exp(-X @ rng.standard_normal(d)))).astype(int)
    return X, y


def snapshot(folder):
    """(inode, mtime_ns, sha256) of every data file."""
    return {
        p.name: (p.stat().st_ino, p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted((folder / "data").glob("*.npy"))
    }


@pytest.mark.parametrize("pipeline", [False, True], ids=["estimator", "pipeline"])
def test_round_trip_keeps_the_training_data_out_of_the_pickle(tmp_path, pipeline):
    X, y = data()
    est = TorchLogisticRegression()
    model = (make_pipeline(StandardScaler(), est) if pipeline else est).fit(X, y)
    fitted = model.steps[-1][1] if pipeline else model
    folder = save_model(model, tmp_path / "model")
    meta = json.loads((folder / "bundle.json").read_text())
    assert meta["format"] == 2 and set(meta["data"]) == {"X_train_", "y_train_"}
    assert sorted(p.name.split("-")[0] for p in (folder / "data").iterdir()) == ["X_train", "y_train"]
    # the pickle alone holds no training matrix (oracle: unpickle it and look)
    with open(folder / "model.pkl", "rb") as f:
        bare = pickle.load(f)
    bare_est = bare.steps[-1][1] if pipeline else bare
    assert not hasattr(bare_est, "X_train_") and not hasattr(bare_est, "y_train_")
    assert hasattr(fitted, "X_train_")  # saving did not strip the caller's model
    back = load_model(folder)
    got = back.steps[-1][1] if pipeline else back
    assert np.array_equal(got.X_train_, fitted.X_train_) and np.array_equal(got.y_train_, fitted.y_train_)
    assert isinstance(got.X_train_, np.memmap) and not got.X_train_.flags.writeable
    assert np.array_equal(back.predict_proba(X), model.predict_proba(X))
    # saved elsewhere, a loaded model takes its data files along (the mapped arrays are written out)
    save_model(back, tmp_path / "copy")
    again = load_model(tmp_path / "copy")
    assert np.array_equal((again.steps[-1][1] if pipeline else again).X_train_, fitted.X_train_)
    # the loaded model erases like the original (the data is read from the mapped file)
    a = fitted.unlearn(samples=[0, 5], key=generate_key())
    b = got.unlearn(samples=[0, 5], key=generate_key())
    assert a.body["model"]["fingerprint_after"] == b.body["model"]["fingerprint_after"]


def test_erasures_do_not_rewrite_the_data_files(tmp_path):
    X, y = data()
    src = tmp_path / "clients.parquet"
    pd.DataFrame(X, columns=[f"f{j}" for j in range(X.shape[1])]).assign(label=y).to_parquet(src)
    df = tpf.read_parquet(str(src))
    est = TorchLogisticRegression().fit(df[[f"f{j}" for j in range(X.shape[1])]], df["label"])
    folder = save_model(est, tmp_path / "model")
    before = snapshot(folder)
    pkl = hashlib.sha256((folder / "model.pkl").read_bytes()).hexdigest()
    key = generate_key()
    erase_in_folder(folder, source=str(src), rows=[3], key=key)
    requests = [
        {"request_id": f"r{i}", "source": str(src), "rows": [r], "received": "2026-12-01"}
        for i, r in enumerate([10, 11, 12])
    ]
    erase_requests_in_folder(folder, requests, key=key)
    assert snapshot(folder) == before  # same files: same inode, mtime and bytes
    assert hashlib.sha256((folder / "model.pkl").read_bytes()).hexdigest() != pkl  # the model was rewritten
    back = load_model(folder)
    assert np.flatnonzero(back.sample_weight_ == 0).tolist() == [3, 10, 11, 12]
    assert len(ledger.verify_chain(folder, key.public_key())) == 4
    assert load_lineage(folder) is not None
    # saving another model into the folder replaces the data files and removes the old ones
    X2, y2 = data(seed=1)
    save_model(TorchLogisticRegression().fit(X2, y2), folder)
    after = snapshot(folder)
    assert len(after) == 2 and not set(after) & set(before)
    assert np.array_equal(load_model(folder).X_train_, X2)


def write_format_1(model, folder):
    """A model folder as the format-1 writer made it: the training matrices pickled inside model.pkl."""
    est = model.steps[-1][1] if hasattr(model, "steps") else model
    folder.mkdir(parents=True, exist_ok=True)
    est.lineage_, est.store_ = None, None
    with open(folder / "model.pkl", "wb") as f:
        pickle.dump(model, f, protocol=pickle.HIGHEST_PROTOCOL)
    torch.save({k: v.detach() for k, v in est.module_.state_dict().items()}, folder / "parameters.pt")
    meta = {
        "format": 1,
        "estimator": f"{type(est).__module__}.{type(est).__qualname__}",
        "lineage": False,
        "store": None,
        "parameters": "parameters.pt",
    }
    (folder / "bundle.json").write_text(json.dumps(meta, indent=2) + "\n")


def test_a_format_1_folder_loads_and_an_erasure_moves_it_to_format_2(tmp_path):
    X, y = data()
    model = make_pipeline(StandardScaler(), TorchLogisticRegression()).fit(X, y)
    write_format_1(model, tmp_path)
    back = load_model(tmp_path)
    assert not isinstance(back[-1].X_train_, np.memmap)  # read from the pickle, as written
    assert np.array_equal(back[-1].X_train_, model[-1].X_train_)
    assert np.array_equal(back.predict_proba(X), model.predict_proba(X))
    erase_in_folder(tmp_path, samples=[4], key=generate_key())
    meta = json.loads((tmp_path / "bundle.json").read_text())
    assert meta["format"] == 2 and len(list((tmp_path / "data").glob("*.npy"))) == 2
    again = load_model(tmp_path)
    assert np.array_equal(again[-1].X_train_, model[-1].X_train_) and again[-1].sample_weight_[4] == 0


def test_a_data_file_swapped_for_another_models_is_refused(tmp_path):
    # same name, dtype and shape, other content: only the recorded sha256 can tell
    X, y = data()
    save_model(TorchLogisticRegression().fit(X, y), tmp_path / "a")
    save_model(TorchLogisticRegression().fit(*data(seed=2)), tmp_path / "b")
    (xa,) = (tmp_path / "a" / "data").glob("X_train-*.npy")
    (xb,) = (tmp_path / "b" / "data").glob("X_train-*.npy")
    os.replace(xb, xa)
    with pytest.raises(ModelFolderError, match="not the X_train_ this model was saved with.*backup"):
        load_model(tmp_path / "a")
    with pytest.raises(ModelFolderError, match="not the X_train_"):
        erase_in_folder(tmp_path / "a", samples=[1], key=generate_key())


def test_traceprop_verify_checks_the_data_files_without_unpickling(tmp_path, capsys):
    from traceprop_frames.cli import main
    from traceprop_frames.unlearn import save_public_key

    X, y = data()
    folder = save_model(TorchLogisticRegression().fit(X, y), tmp_path / "model")
    key = generate_key()
    save_public_key(key, tmp_path / "key.pub.pem")
    erase_in_folder(folder, samples=[2], key=key)
    (folder / "model.pkl").write_bytes(b"not a pickle")  # verify never opens it
    assert main(["verify", "--public-key", str(tmp_path / "key.pub.pem"), str(folder)]) == 0
    assert "2 training data file(s) match bundle.json" in capsys.readouterr().out
    (path,) = (folder / "data").glob("y_train-*.npy")
    y_bad = np.load(path)
    y_bad[0] = 1 - y_bad[0]
    np.save(path, y_bad)
    assert main(["verify", "--public-key", str(tmp_path / "key.pub.pem"), str(folder)]) == 1
    assert "INVALID" in capsys.readouterr().err
