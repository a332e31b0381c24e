"""The `traceprop` command: demo (small), trace, erase, verify, keygen, --help."""

from __future__ import annotations

import json

import pandas as pd
import pytest

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


def test_verify_command(demo, tmp_path, capsys):
    cert, pub = demo / "erasure_certificate.json", demo / "keys" / "signing_key.pub.pem"
    assert main(["verify", str(cert), "--public-key", str(pub)]) == 0
    assert "OK" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_bytes(cert.read_bytes()[:-40])
    assert main(["verify", str(bad), "--public-key", str(pub)]) == 1
    assert "INVALID" in capsys.readouterr().err


def test_trace_and_erase_commands(demo, tmp_path, capsys):
    model = demo / "model"
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


@pytest.mark.parametrize("cmd", [[], ["demo"], ["trace"], ["erase"], ["verify"], ["keygen"]])
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code == 0
    assert "usage: traceprop" in capsys.readouterr().out
