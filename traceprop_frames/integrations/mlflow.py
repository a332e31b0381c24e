"""MLflow: a fitted estimator's lineage, gradient-store manifest and erasure certificates as artifacts of
the run that produced the model, and an ``mlflow.pyfunc`` model that keeps influence and unlearning.

Needs the ``mlflow`` extra (``mlflow-skinny`` is enough). Artifacts, under ``traceprop/`` of the run:

- ``lineage.parquet``: the training rows' lineage (:func:`traceprop_frames.lineage.persist.save` format);
- ``lineage_summary.json``: training rows, ops, and each source's path, format, rows, sha256 at load and
  now, and how many of its rows the training data uses;
- ``gradient_store_manifest.json``: the GradientStore manifest (k, seed, fingerprints, removed samples);
- ``certificates/<id>.json``: each signed erasure certificate, logged when the erasure happens.

The run also gets tags ``traceprop.source.<i>.path`` / ``.sha256`` so sources are searchable.
"""

from __future__ import annotations

import json
import tempfile
import weakref
from pathlib import Path

import mlflow
import numpy as np
from mlflow.tracking import MlflowClient

from traceprop_frames.lineage import events
from traceprop_frames.unlearn.bundle import final_estimator, load_model, save_model

ARTIFACT_DIR = "traceprop"
_watched: dict[int, tuple[weakref.ref, str]] = {}  # id(estimator) -> (weak ref to it, run id)


def lineage_summary(est) -> dict:
    """The JSON summary of a fitted estimator's training lineage (sources, sha256s, rows used)."""
    from traceprop_frames.lineage import REGISTRY

    lin = getattr(est, "lineage_", None)
    if lin is None:
        return {
            "training_rows": int(getattr(est, "X_train_", np.zeros((0,))).shape[0]),
            "sources": [],
            "ops": [],
        }
    used = lin.sources()
    sources = []
    for sid in lin.source_ids().tolist():
        s = REGISTRY.get(int(sid))
        sources.append({
            "path": s.path, "abspath": s.abspath, "format": s.format, "n_rows": int(s.n_rows),
            "sha256_at_load": s.sha256, "sha256_now": s.current_sha256(),
            "rows_used": int(len(used.get(s.path, ()))),
        })  # fmt: skip
    return {"training_rows": len(lin), "lineage_ids": int(lin.n_ids), "ops": lin.ops(), "sources": sources}


def log_estimator(model, run_id: str | None = None, *, watch_erasures: bool = True) -> str:
    """Log ``model``'s lineage, summary and gradient-store manifest as artifacts of a run.

    Parameters
    ----------
    model : fitted traceprop estimator, or a Pipeline ending in one
    run_id : str, optional
        The run that produced the model; default the active run.
    watch_erasures : bool
        Log every later erasure certificate of this estimator to the same run (default True).

    Returns
    -------
    str
        The run id.
    """
    from traceprop_frames.lineage import persist

    est = final_estimator(model)
    run_id = run_id or _active_run_id()
    client = MlflowClient()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        summary = lineage_summary(est)
        (d / "lineage_summary.json").write_text(json.dumps(summary, indent=1))
        if getattr(est, "lineage_", None) is not None:
            persist.save(est.lineage_, str(d / "lineage.parquet"))
        store = getattr(est, "store_", None)
        if store is not None:
            (d / "gradient_store_manifest.json").write_text(json.dumps(store.manifest(), indent=1))
        for f in sorted(d.iterdir()):
            client.log_artifact(run_id, str(f), ARTIFACT_DIR)
    for i, s in enumerate(summary["sources"]):
        client.set_tag(run_id, f"traceprop.source.{i}.path", s["path"])
        client.set_tag(run_id, f"traceprop.source.{i}.sha256", s["sha256_at_load"])
    if watch_erasures:
        key = id(est)
        _watched[key] = (weakref.ref(est, lambda _ref, key=key: _unwatch(key)), run_id)
        events.subscribe(_on_step)
    return run_id


def _unwatch(key: int) -> None:
    """A watched estimator was garbage-collected: forget it; with none left, stop listening to steps (so
    untraced work goes back to the no-listener path)."""
    hit = _watched.get(key)
    if hit is not None and hit[0]() is None:
        del _watched[key]
    if not _watched:
        events.unsubscribe(_on_step)


def log_certificate(cert, run_id: str | None = None) -> str:
    """Log a signed erasure certificate as ``traceprop/certificates/<id>.json`` of a run (default: active).

    Returns the artifact path inside the run.
    """
    run_id = run_id or _active_run_id()
    with tempfile.TemporaryDirectory() as tmp:
        path = cert.save(Path(tmp) / f"{cert.id}.json")
        MlflowClient().log_artifact(run_id, str(path), f"{ARTIFACT_DIR}/certificates")
    return f"{ARTIFACT_DIR}/certificates/{cert.id}.json"


def _on_step(state: str, ev: events.StepEvent) -> None:
    """Listener: a COMPLETE erasure of a watched estimator logs its certificate to the model's run."""
    if ev.kind != "erase" or state != "COMPLETE":
        return
    hit = _watched.get(id(ev.args[0]))
    if hit is not None and hit[0]() is ev.args[0]:
        log_certificate(ev.result, hit[1])


def _active_run_id() -> str:
    run = mlflow.active_run()
    if run is None:
        from traceprop_frames.errors import TracepropError

        raise TracepropError("no active MLflow run: call inside `with mlflow.start_run():` or pass run_id=")
    return run.info.run_id


class TracepropModel(mlflow.pyfunc.PythonModel):
    """``mlflow.pyfunc`` model: ``predict`` gives the positive-class probability; ``estimator``,
    :meth:`influence` and :meth:`unlearn` keep the traced model's attribution and erasure reachable
    (``mlflow.pyfunc.load_model(uri).unwrap_python_model()``)."""

    def load_context(self, context) -> None:
        self.model = load_model(context.artifacts["model"])

    @property
    def estimator(self):
        return final_estimator(self.model)

    def predict(self, context, model_input, params=None):
        return self.model.predict_proba(model_input)[:, 1]

    def influence(self, X_test, top_k: int = 5, **kwargs):
        """Top training rows by influence, with their source rows (see the estimator's ``influence``)."""
        return self.estimator.influence(X_test, top_k=top_k, **kwargs)

    def unlearn(self, *args, **kwargs):
        """Erase source rows from the loaded model (see the estimator's ``unlearn``); returns the certificate."""
        return self.estimator.unlearn(*args, **kwargs)


def log_model(model, name: str = "model", run_id: str | None = None):
    """Log ``model`` as an ``mlflow.pyfunc`` model (:class:`TracepropModel`) plus :func:`log_estimator`'s
    artifacts, in the active run. Returns MLflow's ``ModelInfo``."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_model(model, Path(tmp) / "bundle")
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=TracepropModel(),
            artifacts={"model": str(folder)},
            pip_requirements=["traceprop-frames"],
        )
    log_estimator(model, run_id)
    return info
