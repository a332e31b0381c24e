"""MLflow: lineage, store manifest and erasure certificates land in the model's run (a local file-backed
tracking store, no server); the pyfunc model predicts like the estimator and keeps influence/unlearn."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

mlflow = pytest.importorskip("mlflow")

import traceprop_frames as tpf  # noqa: E402
from traceprop_frames.estimators import TorchLogisticRegression  # noqa: E402
from traceprop_frames.integrations import mlflow as tmlf  # noqa: E402
from traceprop_frames.lineage import persist  # noqa: E402


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store behind this flag
    mlflow.set_tracking_uri((tmp_path / "mlruns").as_uri())
    exp = mlflow.create_experiment("traceprop", artifact_location=(tmp_path / "artifacts").as_uri())
    yield exp
    mlflow.set_tracking_uri(None)


def test_model_run_holds_lineage_manifest_and_certificates(tmp_path, tracking):
    rng = np.random.default_rng(0)
    raw = pd.DataFrame({"x": rng.normal(size=60), "z": rng.normal(size=60)})
    raw["y"] = (raw["x"] + 0.3 * rng.normal(size=60) > 0).astype(int)
    path = tmp_path / "people.csv"
    raw.to_csv(path, index=False)
    df = tpf.read_csv(path)
    train = df[df["z"] > -1.0]  # the oracle: rows used = rows with z > -1
    clf = TorchLogisticRegression(store=str(tmp_path / "store"), k=16)
    with mlflow.start_run(experiment_id=tracking) as run:
        clf.fit(train[["x", "z"]], train["y"])
        info = tmlf.log_model(clf)
    cert = clf.unlearn(
        source=str(path), rows=[int(np.flatnonzero(raw["z"] > -1.0)[0])]
    )  # after the run ended

    client = mlflow.MlflowClient()
    got = Path(client.download_artifacts(run.info.run_id, "traceprop", str(tmp_path / "dl")))
    summary = json.loads((got / "lineage_summary.json").read_text())
    src = summary["sources"][0]
    assert src["sha256_at_load"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert src["rows_used"] == int((raw["z"] > -1.0).sum()) == summary["training_rows"]
    lin = persist.load(str(got / "lineage.parquet"))
    assert lin.sources()[str(path)].tolist() == np.flatnonzero(raw["z"] > -1.0).tolist()
    manifest = json.loads((got / "gradient_store_manifest.json").read_text())
    assert manifest["k"] == 16 and manifest["n_samples"] == len(train)
    logged = json.loads((got / "certificates" / f"{cert.id}.json").read_text())
    assert logged["certificate"] == json.loads(cert.to_json())["certificate"]
    tags = client.get_run(run.info.run_id).data.tags
    assert tags["traceprop.source.0.sha256"] == src["sha256_at_load"]

    loaded = mlflow.pyfunc.load_model(info.model_uri)
    X = train[["x", "z"]].iloc[:5]
    wrapped = loaded.unwrap_python_model()
    # the logged model is the one before the erasure
    np.testing.assert_allclose(loaded.predict(X), wrapped.estimator.predict_proba(X)[:, 1])
    top = wrapped.influence(X.iloc[[0]], top_k=3)
    assert set(top["source"]) == {str(path)}
    cert2 = wrapped.unlearn(source=str(path), rows=[int(np.flatnonzero(raw["z"] > -1.0)[1])])
    assert cert2.body["forget_set"]["count"] == 1


def test_watch_ends_when_the_estimator_is_gone(tmp_path, tracking):
    """Watching erasures subscribes a step listener; once no watched estimator is alive it unsubscribes,
    so later untraced work runs without a listener again."""
    import gc

    from traceprop_frames.lineage import events

    rng = np.random.default_rng(1)
    raw = pd.DataFrame({"x": rng.normal(size=40)})
    raw["y"] = (raw["x"] > 0).astype(int)
    path = tmp_path / "p.csv"
    raw.to_csv(path, index=False)
    df = tpf.read_csv(path)
    assert not events.listening()
    clf = TorchLogisticRegression(k=8).fit(df[["x"]], df["y"])
    with mlflow.start_run(experiment_id=tracking):
        tmlf.log_estimator(clf)
    assert events.listening()
    del clf
    gc.collect()
    assert not events.listening()
