"""ModelFolder: one object for a model folder (open → lock → recover → load → stage → commit)."""

from __future__ import annotations

import numpy as np
import pytest

from traceprop_frames.errors import ModelFolderError
from traceprop_frames.estimators import TorchLogisticRegression
from traceprop_frames.unlearn.bundle import ModelFolder, load_model, save_model
from traceprop_frames.unlearn.objective import parameter_fingerprint


def _fit(seed: int):
    X = np.random.default_rng(seed).normal(size=(80, 3))
    return TorchLogisticRegression().fit(X, X[:, 0] > 0)


def test_open_names_a_folder_that_is_not_a_model_folder(tmp_path):
    with pytest.raises(ModelFolderError, match="no model folder"):
        ModelFolder.open(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFolderError, match="no bundle.json"):
        ModelFolder.open(tmp_path / "empty")


def test_commit_writes_the_model_and_other_files_together_or_not_at_all(tmp_path):
    folder = ModelFolder(tmp_path / "m").save(_fit(0))
    before = (folder.path / "model.pkl").read_bytes()
    extra = folder.path / "ledger" / "note.txt"
    extra.parent.mkdir()

    def broken(path):
        path.write_text("half")
        raise OSError("disk full")

    with folder.lock():
        model = folder.load()
        model.module_.linear.weight.data += 1.0
        with pytest.raises(OSError, match="disk full"):
            folder.commit(model, {extra: broken})
    assert not folder.pending() and not extra.exists()
    assert (folder.path / "model.pkl").read_bytes() == before
    with folder.lock():
        folder.commit(model, {extra: lambda p: p.write_text("entry")})
    assert extra.read_text() == "entry"
    assert parameter_fingerprint(load_model(folder.path).module_) == parameter_fingerprint(model.module_)


def test_shortcuts_are_the_objects_methods(tmp_path):
    est = _fit(1)
    path = save_model(est, tmp_path / "m")
    folder = ModelFolder.open(path)
    assert folder.recover() == "clean" and folder.meta()["format"] == 2
    assert parameter_fingerprint(folder.load().module_) == parameter_fingerprint(est.module_)
    assert folder.lineage() is None and folder.verify_data() == 2
    assert set(folder.parameters()) == set(est.module_.state_dict())
