"""``traceprop erase MODEL --rebuild module:function``: the pipeline re-run from the command line."""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd

from traceprop_frames.cli import main
from traceprop_frames.datasets import make_credit_risk
from traceprop_frames.estimators import TorchLogisticRegression
from traceprop_frames.unlearn.bundle import load_model, save_model

PIPELINE = """
import traceprop_frames as tpf

APP = {app!r}

def features(app=APP):
    a = tpf.read_csv(app)
    num = a.select_dtypes("number").drop(columns=["SK_ID_CURR", "TARGET"])
    return (num - num.mean()) / num.std(), a["TARGET"]
"""


def test_cli_erase_with_rebuild_matches_pipeline_retrain(tmp_path, capsys):
    paths = make_credit_risk(tmp_path / "data", applicants=300, seed=3)
    app = str(paths["application"])
    module = tmp_path / "my_pipeline.py"
    module.write_text(textwrap.dedent(PIPELINE.format(app=app)))
    ns: dict = {}
    exec(module.read_text(), ns)  # the same function the CLI will import
    X, y = ns["features"]()
    save_model(TorchLogisticRegression().fit(X, y), tmp_path / "model")
    assert main(["keygen", "--out", str(tmp_path / "keys")]) == 0
    rc = main(["erase", str(tmp_path / "model"), "--source", app, "--rows", "4", "40",
               "--rebuild", f"{module}:features", "--key", str(tmp_path / "keys" / "signing_key.pem"),
               "--certificate", str(tmp_path / "cert.json")])  # fmt: skip
    assert rc == 0
    out = capsys.readouterr().out
    assert "pipeline re-run" in out and "2 vanished, 298 changed" in out
    assert "shared statistics" in out and "effect removed" in out
    rc = main(
        [
            "verify",
            str(tmp_path / "cert.json"),
            "--public-key",
            str(tmp_path / "keys" / "signing_key.pub.pem"),
        ]
    )
    assert rc == 0 and "effect removed: mean (300 rows read" in capsys.readouterr().out
    # the reference: the rows deleted from the file, the same pipeline, a fresh fit
    deleted = tmp_path / "deleted.csv"
    pd.read_csv(app).drop(index=[4, 40]).to_csv(deleted, index=False)
    ref_X, ref_y = ns["features"](str(deleted))
    ref = TorchLogisticRegression().fit(ref_X, ref_y)
    erased = load_model(tmp_path / "model")
    grid = ref_X.to_numpy()
    assert np.abs(erased.predict_proba(grid)[:, 1] - ref.predict_proba(grid)[:, 1]).max() <= 1e-6
    assert (
        main(
            [
                "verify",
                str(tmp_path / "model"),
                "--public-key",
                str(tmp_path / "keys" / "signing_key.pub.pem"),
            ]
        )
        == 0
    )
    assert "shared statistics effect removed: mean, std" in capsys.readouterr().out


RAW = """
import traceprop_frames as tpf

APP = {app!r}

def raw(app=APP):
    a = tpf.read_csv(app)
    return a.select_dtypes("number").drop(columns=["SK_ID_CURR", "TARGET"]), a["TARGET"]
"""


def test_cli_erase_with_rebuild_on_a_saved_pipeline_refits_its_transformers(tmp_path, capsys):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def pipe():
        return make_pipeline(StandardScaler(), TorchLogisticRegression()).set_output(transform="pandas")

    paths = make_credit_risk(tmp_path / "data", applicants=300, seed=5)
    app = str(paths["application"])
    module = tmp_path / "raw_features.py"
    module.write_text(textwrap.dedent(RAW.format(app=app)))
    ns: dict = {}
    exec(module.read_text(), ns)
    save_model(pipe().fit(*ns["raw"]()), tmp_path / "model")
    assert main(["keygen", "--out", str(tmp_path / "keys")]) == 0
    rc = main(["erase", str(tmp_path / "model"), "--source", app, "--rows", "7", "99",
               "--rebuild", f"{module}:raw", "--key", str(tmp_path / "keys" / "signing_key.pem"),
               "--certificate", str(tmp_path / "cert.json")])  # fmt: skip
    assert rc == 0
    out = capsys.readouterr().out
    assert "2 vanished" in out and "StandardScaler.fit" in out
    deleted = tmp_path / "deleted.csv"
    pd.read_csv(app).drop(index=[7, 99]).to_csv(deleted, index=False)
    ref_X, ref_y = ns["raw"](str(deleted))
    ref = pipe().fit(ref_X, ref_y)
    erased = load_model(tmp_path / "model")  # the saved Pipeline, with the refitted scaler
    np.testing.assert_allclose(erased[0].mean_, ref[0].mean_, rtol=1e-12)
    assert np.abs(erased.predict_proba(ref_X)[:, 1] - ref.predict_proba(ref_X)[:, 1]).max() <= 1e-6
