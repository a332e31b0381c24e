"""A certified bound above the requested ``bound=`` is said in ``not_guaranteed`` (and by ``traceprop
verify``), with how far it missed and what to do; a met bound adds no such line."""

from __future__ import annotations

import copy

import pytest

import traceprop_frames as tpf
from traceprop_frames.cli import main
from traceprop_frames.datasets import make_credit_risk
from traceprop_frames.estimators import TorchLogisticRegression
from traceprop_frames.unlearn.certificate import generate_key, save_public_key, validate

ERASE = [3, 40, 41, 250]
MISSED = "The certified bound was not met"


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    paths = make_credit_risk(tmp_path_factory.mktemp("credit"), applicants=600, seed=1)
    clf = TorchLogisticRegression().fit(*_zscore(paths["application"]))
    return paths["application"], clf


def _zscore(app_path):
    app = tpf.read_csv(app_path)
    num = app.select_dtypes("number").drop(columns=["SK_ID_CURR", "TARGET"])
    return (num - num.mean()) / num.std(), app["TARGET"]


def _missed_lines(cert) -> list[str]:
    return [s for s in cert.body["not_guaranteed"] if s.startswith(MISSED)]


def _erase(fitted, **kw):
    app, clf = fitted
    clf = copy.deepcopy(clf)
    return clf.unlearn(source=app, rows=ERASE, rebuild=lambda: _zscore(app), **kw)


def test_rebuild_missing_the_bound_says_so(fitted, tmp_path, capsys):
    key = generate_key()
    cert = _erase(fitted, bound=1e-30, max_iter=1, key=key)
    ev = cert.body["evidence"]
    assert ev["certified_bound"] > 1e-30  # no float64 solve certifies 1e-30: the request cannot be met
    (line,) = _missed_lines(cert)
    assert f"{ev['certified_bound']:.3e}" in line and "bound=1.000e-30" in line
    assert "max_iter=1" in line and "a larger max_iter" in line
    assert "fit the estimator on the re-run pipeline's output" in line
    validate(cert.to_dict())
    assert dict(cert.summary())["requested bound"] == "1.000e-30 (NOT met: see not_guaranteed)"
    pub = save_public_key(key, tmp_path / "k.pub.pem")
    path = cert.save(tmp_path / "c.json")
    assert main(["verify", str(path), "--public-key", str(pub)]) == 0
    assert "NOT met" in capsys.readouterr().out


def test_rebuild_meeting_the_bound_adds_no_line(fitted):
    cert = _erase(fitted)  # default bound 1e-6
    assert cert.body["evidence"]["certified_bound"] <= 1e-6
    assert _missed_lines(cert) == []
    assert dict(cert.summary())["requested bound"] == "1.000e-06 (met)"


def test_rounding_floor_is_named_as_the_stop(fitted):
    # enough steps, a target below the gradient's own float64 rounding bound: more steps cannot help
    cert = _erase(fitted, bound=1e-30, max_iter=25)
    (line,) = _missed_lines(cert)
    assert cert.body["method"]["iterations"] < 25
    assert "more steps cannot lower the bound" in line and "larger max_iter" not in line


@pytest.mark.parametrize("kw, missed", [({"bound": 1e-30, "max_iter": 1}, True), ({}, False)])
def test_plain_newton_erasure(fitted, kw, missed):
    app, clf = fitted
    clf = copy.deepcopy(clf)
    cert = clf.unlearn(source=app, rows=ERASE, method="newton", **kw)
    ev = cert.body["evidence"]
    assert (ev["certified_bound"] > cert.body["method"]["parameters"]["bound"]) is missed
    lines = _missed_lines(cert)
    assert len(lines) == int(missed)
    if missed:
        assert "method='retrain'" in lines[0]
