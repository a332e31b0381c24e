"""Sketched training runs: Taylor arithmetic, the training map's coefficients, the estimator, the store,
and the ``method="sketch"`` erasure — each against an independent oracle (known series, finite
differences, retraining, Wick's theorem on a known polynomial)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

import traceprop_frames as tpf
from traceprop_frames.attribution import taylor as tj
from traceprop_frames.attribution.sketch import TrainingSketch, directions, fit_sketch, predict_deletion
from traceprop_frames.attribution.weighted import WeightedTraining
from traceprop_frames.errors import SketchError, UnlearningError
from traceprop_frames.estimators import TorchMLPClassifier
from traceprop_frames.estimators.mlp import MLPLogit


def _series(fn, a0: float, degree: int = 4) -> list[float]:
    x = tj.Jet([torch.tensor(a0, dtype=torch.float64), torch.ones(1, dtype=torch.complex128)]
               + [torch.zeros(1, dtype=torch.complex128)] * (degree - 1))  # fmt: skip
    out = fn(x)
    return [float(out.coeffs[0])] + [complex(c[0]).real for c in out.coeffs[1:]]


@pytest.mark.parametrize(
    "fn, a0, expected",
    [
        (tj.sqrt, 4.0, [2, 1 / 4, -1 / 64, 1 / 512, -5 / 16384]),
        (tj.reciprocal, 1.0, [1, -1, 1, -1, 1]),
        (tj.sigmoid, 0.0, [0.5, 1 / 4, 0, -1 / 48, 0]),
        (tj.softplus, 0.0, [math.log(2), 1 / 2, 1 / 8, 0, -1 / 192]),
        (tj.tanh, 0.0, [0, 1, 0, -1 / 3, 0]),
        (lambda x: tj.mul(x, x) * 3.0, 2.0, [12, 12, 3, 0, 0]),
    ],
)
def test_jet_functions_match_known_taylor_series(fn, a0, expected):
    np.testing.assert_allclose(_series(fn, a0), expected, atol=1e-12)


def _data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    y = (X[:, 0] + 0.5 * rng.normal(size=n) > 0).astype(float)
    return X, y


def _coeffs(tr, X, y, dirs, degree):
    dirs = torch.as_tensor(np.atleast_2d(dirs)).to(torch.complex128)
    w = tj.Jet([torch.ones(len(X), dtype=torch.float64), dirs] + [torch.zeros_like(dirs)] * (degree - 1))
    params = tr.run(X, y, w)
    return [
        torch.cat([p.coeffs[r].reshape(len(dirs), -1) for p in params], 1).numpy()
        for r in range(1, degree + 1)
    ]


TINY = WeightedTraining(hidden=(4, 3), epochs=4, batch_size=10, lr=0.05, alpha=0.1, optimizer="sgd",
                        activation="softplus")  # fmt: skip


@pytest.mark.parametrize("tr", [TINY, WeightedTraining(hidden=(3,), epochs=3, batch_size=8, lr=0.05,
                                                      alpha=0.1, optimizer="adam", eps=1e-3,
                                                      activation="tanh")])  # fmt: skip
def test_training_coefficients_match_finite_differences(tr):
    X, y = _data()
    u = np.random.default_rng(1).normal(size=len(X))
    coeffs = _coeffs(tr, X, y, u, 3)

    def theta(t):
        return torch.cat([p.reshape(-1) for p in tr.run(X, y, 1 + t * u)]).numpy()

    ts = 2e-3 * np.arange(-3, 4)
    fit = np.polynomial.polynomial.polyfit(ts, np.stack([theta(t) for t in ts]), 6)
    np.testing.assert_allclose(fit[0], theta(0.0), atol=1e-12)
    for r in (1, 2, 3):
        assert np.abs(coeffs[r - 1][0].imag).max() == 0
        np.testing.assert_allclose(coeffs[r - 1][0].real, fit[r], atol=1e-4 * max(1.0, np.abs(fit[r]).max()))


def test_complex_directions_are_multilinear():
    """c_r is a symmetric r-linear form of the direction: c₂(a + ib) = c₂(a) − c₂(b) + i(c₂(a+b) − c₂(a) − c₂(b))."""
    X, y = _data()
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=len(X)), rng.normal(size=len(X))
    c1, c2 = _coeffs(TINY, X, y, np.stack([a + 1j * b, a, b, a + b]), 2)
    np.testing.assert_allclose(c1[0], c1[1] + 1j * c1[2], atol=1e-10)
    np.testing.assert_allclose(c2[0], c2[1] - c2[2] + 1j * (c2[3] - c2[1] - c2[2]), atol=1e-9)


def test_estimator_is_unbiased_for_each_order_on_a_known_polynomial():
    """θ(w) = A w + wᵀB w (per output): the sketch estimate of θ(1 − 1_D) − θ(1) converges to the truth."""
    n, P, m = 6, 2, 20000
    rng = np.random.default_rng(3)
    A = rng.normal(size=(P, n))
    B = rng.normal(size=(P, n, n))
    B = B + B.transpose(0, 2, 1)
    psi = directions(0, m, n)
    c1 = psi @ A.T  # (m, P): ⟨T₁, ψ⟩
    c2 = np.einsum("mi,pij,mj->mp", psi, B, psi)  # ⟨T₂, ψψ⟩, T₂ = B (second derivative / 2)
    sk = TrainingSketch(TINY, 2, m, 0, 1, n, ["a"], [(P,)], np.zeros(P), np.stack([c1, c2]), "fp")
    D = np.array([1, 4])
    v = np.zeros(n)
    v[D] = -1
    pred = sk.predict(D)
    truth = [A @ v, np.einsum("i,pij,j->p", v, B, v)]
    for r in (1, 2):
        assert np.all(np.abs(pred.terms[r] - truth[r - 1]) < 5 * pred.stderr + 1e-9)
    assert np.abs(pred.terms[2]).max() > 1.0  # the second-order term is not negligible here


def test_exact_taylor_converges_to_retraining_and_sketch_stores(tmp_path):
    X, y = _data(60)
    tr = WeightedTraining(hidden=(), epochs=40, batch_size=None, lr=0.5, alpha=1.0, optimizer="sgd")
    D = np.array([3, 17, 41])
    w = np.ones(len(X))
    w[D] = 0
    truth = torch.cat([p.reshape(-1) for p in tr.run(X, y, w)]).numpy()
    base = torch.cat([p.reshape(-1) for p in tr.run(X, y, np.ones(len(X)))]).numpy()
    v = np.zeros(len(X))
    v[D] = -1
    terms = _coeffs(tr, X, y, v, 3)
    errs = [np.abs(base + sum(t[0].real for t in terms[:r]) - truth).max() for r in (1, 2, 3)]
    assert errs[0] > 5 * errs[1] > 25 * errs[2]
    sk = TrainingSketch.build(tr, X, y, degree=3, m=8, seed=5, path=tmp_path / "sk", chunk=3)
    again = TrainingSketch.open(tmp_path / "sk")
    assert again.manifest()["degree"] == 3 and again.manifest()["m"] == 8
    assert again.model_fingerprint == sk.model_fingerprint
    np.testing.assert_array_equal(again.predict(D).value, sk.predict(D).value)
    np.testing.assert_allclose(sk.base, base, atol=1e-14)
    with pytest.raises(SketchError, match="degree"):
        sk.predict(D, degree=4)
    with pytest.raises(SketchError, match="no training sketch"):
        TrainingSketch.open(tmp_path)


def test_fit_sketch_predicts_logits_and_unlearns_with_a_certificate(tmp_path):
    rng = np.random.default_rng(0)
    n = 80
    df = pd.DataFrame(rng.normal(size=(n, 3)), columns=["a", "b", "c"])
    df["y"] = (df["a"] + 0.5 * rng.normal(size=n) > 0).astype(int)
    df.to_csv(tmp_path / "t.csv", index=False)
    frame = tpf.read_csv(tmp_path / "t.csv")
    est = TorchMLPClassifier(hidden_layer_sizes=(4,), max_iter=5, batch_size=20, random_state=0)
    est.fit(frame[["a", "b", "c"]], frame["y"])
    sk = fit_sketch(est, degree=2, m=32, activation="softplus", optimizer="sgd", lr=0.1, alpha=0.01)
    with torch.random.fork_rng(devices=[]):  # the sketched run starts where the estimator's fit starts
        torch.manual_seed(0)
        init = MLPLogit(3, (4,))
    for (n1, p1), (n2, p2) in zip(init.named_parameters(), sk.training.module(3).named_parameters()):
        assert n1 == n2 and torch.equal(p1.double(), p2)
    D = sk.samples_from_source(str(tmp_path / "t.csv"), [5, 6])
    assert D.tolist() == [5, 6]
    Xte = rng.normal(size=(10, 3))
    pred = predict_deletion(est, sk, D, measurement=Xte)
    w = np.ones(n)
    w[D] = 0
    true = sk.training.train(est.X_train_, est.y_train_, w)(torch.as_tensor(Xte)).detach().numpy()
    assert pred.value.shape == (10,) and np.all(np.isfinite(pred.stderr))
    assert np.abs(pred.value - true).max() < 5 * pred.stderr.max() + 1e-3
    cert = est.unlearn(str(tmp_path / "t.csv"), [5, 6], method="sketch")
    p = cert.body["method"]["parameters"]
    assert cert.body["method"]["name"] == "sketch" and p["degree"] == 2 and p["m"] == 32
    assert p["estimated_error"] >= p["sampling_stderr"] > 0
    got = torch.cat([q.detach().reshape(-1) for q in est.module_.parameters()]).numpy()
    np.testing.assert_allclose(got, sk.predict(D).value)
    with pytest.raises(SketchError, match="fingerprints differ"):
        predict_deletion(TorchMLPClassifier(hidden_layer_sizes=(4,), max_iter=1, random_state=0).fit(
            est.X_train_, est.y_train_), sk, D)  # fmt: skip
    plain = TorchMLPClassifier(hidden_layer_sizes=(4,), max_iter=1, random_state=0).fit(
        est.X_train_, est.y_train_
    )
    with pytest.raises(UnlearningError, match="fit_sketch"):
        plain.unlearn(samples=[1], method="sketch")
