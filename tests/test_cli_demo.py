"""The `traceprop` command: demo (small), trace, erase, verify, keygen, --help."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import torch

import traceprop_frames as tpf
from traceprop_frames.cli import main


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--applicants", "600", "--out", str(out), "--k", "64"]) == 0
    return out


def test_demo_outputs(demo):
    html = (demo / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4  # DAG, influence, before/after, Δp histogram
    assert "http://" not in html and "https://" not in html  # self-contained
    for needle in ("Op DAG", "erase", "certificate", "not guarantee"):
        assert needle in html
    cert = tpf.verify_certificate(demo / "erasure_certificate.json", demo / "keys" / "signing_key.pub.pem")
    assert cert.status == "erased" and cert.body["forget_set"]["count"] == 1
    assert cert.body["evidence"]["holdout"] is not None and cert.body["evidence"]["certified_bound"] < 1e-4
    assert (demo / "model" / "bundle.json").exists()
    # step 8: the same erasure through the whole pipeline (re-run without the rows, transformers refitted)
    rb = tpf.verify_certificate(
        demo / "erasure_certificate.rebuild.json", demo / "keys" / "signing_key.pub.pem"
    )
    assert rb.body["rebuild"]["samples_vanished"] == 0 and rb.body["shared_statistics"]["effect_removed"]
    assert rb.body["evidence"]["certified_bound"] < 1e-6


def test_verify_command(demo, tmp_path, capsys):
    cert, pub = demo / "erasure_certificate.json", demo / "keys" / "signing_key.pub.pem"
    assert main(["verify", str(cert), "--public-key", str(pub)]) == 0
    assert "OK" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_bytes(cert.read_bytes()[:-40])
    assert main(["verify", str(bad), "--public-key", str(pub)]) == 1
    assert "INVALID" in capsys.readouterr().err


def test_trace_and_erase_commands(demo, model_copy, tmp_path, capsys):
    model = model_copy
    assert main(["trace", str(model)]) == 0
    assert "ops:" in capsys.readouterr().out
    assert main(["trace", str(model), "--sample", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "row 3:" and any("bureau.csv row" in ln or "application.csv row" in ln for ln in lines)
    bureau = demo / "data" / "bureau.csv"
    assert main(["trace", str(model), "--source", str(bureau), "--rows", "5"]) == 0
    assert "feed" in capsys.readouterr().out
    assert main(["keygen", "--out", str(tmp_path)]) == 0
    key = tmp_path / "signing_key.pem"
    rows = pd.read_csv(bureau)
    first = rows.index[rows["SK_ID_CURR"] == rows["SK_ID_CURR"].iloc[5]].tolist()
    out = tmp_path / "erase.json"
    args = ["erase", str(model), "--source", str(bureau), "--rows", *map(str, first), "--key", str(key)]
    assert main([*args, "--certificate", str(tmp_path / "dry.json"), "--dry-run"]) == 0  # changes nothing
    assert main([*args, "--certificate", str(out)]) == 0
    body = json.loads(out.read_text())["certificate"]
    assert body["status"] == "erased" and body["request"]["sources"][0]["rows"] == sorted(first)
    # the model folder was updated: the same request is now a no-op
    assert main([*args, "--certificate", str(tmp_path / "again.json")]) == 0
    assert json.loads((tmp_path / "again.json").read_text())["certificate"]["status"] == "no-op"
    assert main(["verify", str(out), "--public-key", str(tmp_path / "signing_key.pub.pem")]) == 0
    # unknown rows: a named error, exit status 2
    assert main(["erase", str(model), "--source", str(bureau), "--rows", "99999999", "--key", str(key)]) == 2
    assert "UnknownRowError" in capsys.readouterr().err


@pytest.mark.parametrize("cmd", [[], ["demo"], ["trace"], ["erase"], ["verify"], ["keygen"], ["recover"]])
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code == 0
    assert "usage: traceprop" in capsys.readouterr().out


@pytest.fixture
def model_copy(demo, tmp_path):
    """A copy of the demo's model folder (the module's demo folder is shared by the other tests)."""
    dst = tmp_path / "model"
    shutil.copytree(demo / "model", dst)
    return dst


def _erase_more(demo, model, n):
    """n more erasures through the CLI, signed with the demo's key: the ledger grows to 1 + n."""
    bureau = demo / "data" / "bureau.csv"
    key = demo / "keys" / "signing_key.pem"
    for r in range(n):
        argv = ["erase", str(model), "--source", str(bureau), "--rows", str(40 + 7 * r), "--key", str(key)]
        assert main([*argv, "--certificate", str(model.parent / f"c{r}.json")]) == 0


def test_ledger_verifies_on_the_demo_model(demo, capsys):
    pub = demo / "keys" / "signing_key.pub.pem"
    assert main(["verify", str(demo / "model"), "--public-key", str(pub)]) == 0
    assert "1 erasure certificate(s), chain intact" in capsys.readouterr().out
    # the ledger holds the very certificate the demo wrote
    assert (demo / "model" / "ledger" / "000001.json").read_bytes() == (
        demo / "erasure_certificate.json"
    ).read_bytes()


def test_ledger_fails_when_parameters_change_outside_an_erasure(demo, model_copy, capsys):
    from traceprop_frames.unlearn.bundle import final_estimator, load_model, save_model

    pub = demo / "keys" / "signing_key.pub.pem"
    model = load_model(model_copy)
    with torch.no_grad():
        next(final_estimator(model).module_.parameters())[0, 0] += 1e-3
    save_model(model, model_copy)
    assert main(["verify", str(model_copy), "--public-key", str(pub)]) == 1
    assert "changed outside an erasure" in capsys.readouterr().err


def test_ledger_fails_when_a_middle_certificate_is_deleted(demo, model_copy, capsys):
    pub = demo / "keys" / "signing_key.pub.pem"
    _erase_more(demo, model_copy, 2)
    assert main(["verify", str(model_copy), "--public-key", str(pub)]) == 0
    assert "3 erasure certificate(s)" in capsys.readouterr().out
    ledger_dir = model_copy / "ledger"
    second = (ledger_dir / "000002.json").read_bytes()
    (ledger_dir / "000002.json").unlink()
    assert main(["verify", str(model_copy), "--public-key", str(pub)]) == 1
    assert "000002.json is missing" in capsys.readouterr().err
    # renumbering the files to close the gap does not help: the signed links no longer match
    (ledger_dir / "000003.json").rename(ledger_dir / "000002.json")
    assert main(["verify", str(model_copy), "--public-key", str(pub)]) == 1
    assert "does not link" in capsys.readouterr().err
    # a certificate signed by another key in the chain is refused as well
    (ledger_dir / "000002.json").write_bytes(second)
    other = model_copy.parent / "other"
    assert main(["keygen", "--out", str(other)]) == 0
    assert main(["verify", str(model_copy), "--public-key", str(other / "signing_key.pub.pem")]) == 1
    assert "signed by key" in capsys.readouterr().err
