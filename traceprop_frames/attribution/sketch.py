"""Sketched training runs: predict the model trained without any set ``D`` from precomputed Taylor terms.

Training is a deterministic function ``θ(w)`` of the per-sample weights (:class:`WeightedTraining`);
deleting ``D`` is ``w = 1 − 1_D``. A :class:`TrainingSketch` stores, for ``m`` random directions
``ψ_j ∈ ℂⁿ``, the Taylor coefficients ``c_r(ψ_j) = ⟨T_r, ψ_j^{⊗r}⟩`` (``T_r = ∇^r θ / r!``) of
``z ↦ θ(1 + z ψ_j)`` for ``r ≤ d`` — all orders carried by one forward pass of truncated power series
through the whole run (:mod:`.taylor`). Directions are standard complex Gaussian (``ψ_i ~ CN(0, 1)``):
by Wick's theorem ``E[ψ^{⊗r} ⊗ conj(ψ)^{⊗s}] = 0`` for ``r ≠ s`` and ``r! · Sym`` for ``r = s``, so

    ``Re( c_r(ψ) · conj⟨ψ, v⟩^r ) / r!``

is an unbiased estimate of the ``r``-th Taylor term ``⟨T_r, v^{⊗r}⟩`` along ``v = −1_D``, for every order
separately (real Gaussian directions mix orders of equal parity; Steinhaus directions down-weight
repeated indices). The prediction ``θ(1) + Σ_{r≤d} (mean over the m directions)`` has two errors:
truncation (the terms beyond ``d``) and sampling (the spread over directions, reported as the standard
error); measurements (held-out logits) get their own coefficients by pushing the parameter series
through the model (:meth:`TrainingSketch.measure`), so a prediction costs ``O(m·(|D| + d·n_test))``.

File layout (``path/``)::

    manifest.json     degree, m, seed, directions, training hyper-parameters, parameter names and shapes,
                      model fingerprint, n_samples, precompute seconds, lineage link, bytes
    base.npy          float64 (P,): the parameters at w = 1
    coeffs.bin        raw C-order complex128 (degree, m, P), read through np.memmap
    lineage.parquet   RowLineage of the training rows
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from traceprop_frames.attribution import taylor as tj
from traceprop_frames.attribution.gradients import fingerprint
from traceprop_frames.attribution.weighted import WeightedTraining, forward
from traceprop_frames.errors import SketchError
from traceprop_frames.lineage.refs import sorted_unique

FORMAT_VERSION = 1


def directions(seed: int, m: int, n: int) -> np.ndarray:
    """``(m, n)`` standard complex Gaussian directions (``E|ψ_i|² = 1``), regenerated from ``seed``."""
    g = np.random.default_rng(seed).standard_normal((m, n, 2))
    return (g[..., 0] + 1j * g[..., 1]) / math.sqrt(2.0)


@dataclass
class Measurement:
    """Taylor coefficients of a measurement (e.g. held-out logits): ``base`` (k,), ``coeffs`` (d, m, k)."""

    base: np.ndarray
    coeffs: np.ndarray


@dataclass
class DeletionPrediction:
    """A predicted measurement after deleting ``D``.

    ``terms[r]`` is the estimated ``r``-th Taylor term (``terms[0]`` the measurement at ``w = 1``);
    ``value = terms[:degree+1].sum(0)``; ``stderr`` the sampling standard error of ``value`` over the
    ``m`` directions; ``term_norms`` the Euclidean norm of each term (their decay is the convergence).
    """

    value: np.ndarray
    terms: np.ndarray
    stderr: np.ndarray
    degree: int
    m: int

    @property
    def term_norms(self) -> list[float]:
        return [float(np.linalg.norm(t)) for t in self.terms]

    @property
    def change(self) -> np.ndarray:
        return self.value - self.terms[0]


class TrainingSketch:
    """Taylor coefficients of the trained parameters along ``m`` random complex directions of ``w``.

    Build with :meth:`build` (or :func:`fit_sketch` from a fitted estimator); re-open with :meth:`open`.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(60, 3)); y = (X[:, 0] > 0).astype(float)
    >>> tr = WeightedTraining(hidden=(), epochs=20, batch_size=None, optimizer="sgd", lr=0.5, alpha=1.0)
    >>> sk = TrainingSketch.build(tr, X, y, degree=2, m=8, seed=0)
    >>> sk.predict(np.arange(3), degree=2).value.shape
    (4,)
    """

    def __init__(self, training, degree, m, seed, n_features, n_samples, names, shapes, base, coeffs,
                 model_fingerprint, lineage=None, path=None, seconds=0.0) -> None:  # fmt: skip
        self.training, self.degree, self.m, self.seed = training, int(degree), int(m), int(seed)
        self.n_features, self.n_samples = int(n_features), int(n_samples)
        self.param_names, self.param_shapes = list(names), [tuple(s) for s in shapes]
        self.base, self.coeffs = base, coeffs
        self.model_fingerprint, self.lineage = model_fingerprint, lineage
        self.path, self.seconds = path, float(seconds)
        self._psi = None
        self.applied: set[str] = set()  # fingerprints of models unlearning produced from this sketch

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, training: WeightedTraining, X, y, degree: int = 2, m: int = 64, seed: int = 0,
              lineage=None, path=None, chunk: int = 16) -> TrainingSketch:  # fmt: skip
        """Run the training once per chunk of ``chunk`` directions, carrying degree ``degree`` series.

        Parameters
        ----------
        training : WeightedTraining
        X, y : training inputs (n, F) and 0/1 labels
        degree : int, 1 to 4
        m : int
            Number of directions.
        seed : int
            Seed of the directions (regenerated on load, never stored).
        lineage : RowLineage, optional
            Lineage of the training rows (``samples_from_source`` then maps erasure requests to ``D``).
        path : str, optional
            Directory to write (memory-mapped coefficients + manifest); ``None`` keeps it in memory.
        chunk : int
            Directions per pass (bounds memory: activations are ``chunk · degree`` times larger).
        """
        if not 1 <= int(degree) <= 4:
            raise SketchError(f"degree must be 1..4, got {degree}")
        if int(m) < 2:
            raise SketchError(f"m must be at least 2 (the error estimate needs a spread), got {m}")
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        n = len(X)
        if lineage is not None and len(lineage) != n:
            raise SketchError(f"lineage has {len(lineage)} rows but the training data has {n}")
        t0 = time.perf_counter()
        module = training.module(X.shape[1])
        names = [k for k, _ in module.named_parameters()]
        shapes = [tuple(p.shape) for p in module.parameters()]
        P = sum(p.numel() for p in module.parameters())
        psi = directions(seed, m, n)
        coeffs = _alloc(path, (degree, m, P))
        base = None
        ones = torch.ones(n, dtype=torch.float64)
        for lo in range(0, m, chunk):
            dirs = torch.as_tensor(psi[lo : lo + chunk])
            zero = torch.zeros_like(dirs)
            params = training.run(X, y, tj.Jet([ones, dirs] + [zero] * (degree - 1)))
            if base is None:
                base = torch.cat([p.value.reshape(-1) for p in params]).numpy()
            for r in range(1, degree + 1):
                coeffs[r - 1, lo : lo + len(dirs)] = torch.cat(
                    [p.coeffs[r].reshape(len(dirs), -1) for p in params], 1
                ).numpy()
        self = cls(training, degree, m, seed, X.shape[1], n, names, shapes, base, coeffs, None, lineage,
                   None if path is None else str(path), time.perf_counter() - t0)  # fmt: skip
        self.model_fingerprint = fingerprint(self.base_module())
        self._psi = psi
        if path is not None:
            self._save()
        return self

    def _save(self) -> None:
        p = Path(self.path)
        if isinstance(self.coeffs, np.memmap):
            self.coeffs.flush()
        np.save(p / "base.npy", self.base)
        if self.lineage is not None:
            from traceprop_frames.lineage.persist import save

            save(self.lineage, str(p / "lineage.parquet"))
        tmp = p / "manifest.json.tmp"
        tmp.write_text(json.dumps(self.manifest(), indent=1))
        os.replace(tmp, p / "manifest.json")

    def manifest(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "degree": self.degree,
            "m": self.m,
            "seed": self.seed,
            "directions": "complex_gaussian",
            "training": json.loads(self.training.to_json()),
            "n_samples": self.n_samples,
            "n_features": self.n_features,
            "param_names": self.param_names,
            "param_shapes": [list(s) for s in self.param_shapes],
            "model_fingerprint": self.model_fingerprint,
            "precompute_seconds": self.seconds,
            "lineage": "lineage.parquet" if self.lineage is not None else None,
            "nbytes": self.nbytes,
        }

    @classmethod
    def open(cls, path) -> TrainingSketch:
        """Re-open a sketch written by :meth:`build` (coefficients are a read-only memmap)."""
        mpath = Path(path) / "manifest.json"
        if not mpath.exists():
            raise SketchError(f"{str(path)!r} holds no training sketch (manifest.json missing)")
        m = json.loads(mpath.read_text())
        if m.get("format_version") != FORMAT_VERSION or m.get("directions") != "complex_gaussian":
            raise SketchError(f"{str(path)!r}: unsupported sketch format {m.get('format_version')!r}")
        P = sum(math.prod(s) for s in m["param_shapes"])
        coeffs = np.memmap(
            Path(path) / "coeffs.bin", dtype=np.complex128, mode="r", shape=(m["degree"], m["m"], P)
        )
        lineage = None
        if m["lineage"]:
            from traceprop_frames.lineage.persist import load

            lineage = load(str(Path(path) / m["lineage"]))
        return cls(WeightedTraining(**m["training"]), m["degree"], m["m"], m["seed"], m["n_features"],
                   m["n_samples"], m["param_names"], m["param_shapes"], np.load(Path(path) / "base.npy"),
                   coeffs, m["model_fingerprint"], lineage, str(path), m["precompute_seconds"])  # fmt: skip

    # ------------------------------------------------------------------ reading
    @property
    def nbytes(self) -> int:
        """Bytes of the stored coefficients and base parameters (directions are regenerated)."""
        return int(self.coeffs.size * 16 + self.base.size * 8)

    def psi(self) -> np.ndarray:
        if self._psi is None:
            self._psi = directions(self.seed, self.m, self.n_samples)
        return self._psi

    def unflat(self, flat) -> list[torch.Tensor]:
        """A flat parameter vector as the module's parameter tensors (``named_parameters`` order)."""
        return _unflat(torch.as_tensor(np.asarray(flat, dtype=np.float64)), self.param_shapes)

    def base_params(self) -> list[torch.Tensor]:
        return self.unflat(self.base)

    def base_module(self) -> torch.nn.Module:
        """The model at ``w = 1`` (float64 ``MLPLogit``) the sketch describes."""
        return self.training.to_module(self.base_params(), self.n_features)

    def samples_from_source(self, path: str, rows) -> np.ndarray:
        """Training sample indices that depend on any of ``rows`` of source ``path`` (needs lineage)."""
        if self.lineage is None:
            raise SketchError("this sketch has no lineage: build it from a traced frame or pass lineage=")
        return self.lineage.rows_from_source(path, np.atleast_1d(rows))

    def measure(self, X) -> Measurement:
        """Taylor coefficients of the logits on ``X`` along every direction (one series forward pass)."""
        base = torch.as_tensor(np.asarray(self.base))
        C = torch.as_tensor(np.asarray(self.coeffs))
        params = [
            tj.Jet([b] + [c[r] for r in range(self.degree)])
            for b, c in zip(_unflat(base, self.param_shapes), _unflat_dirs(C, self.param_shapes))
        ]
        out = forward(params, X, self.training.activation)
        return Measurement(out.value.numpy(), torch.stack(out.coeffs[1:]).numpy())

    def predict(
        self, D, measurement: Measurement | None = None, degree: int | None = None
    ) -> DeletionPrediction:
        """Predict the parameters (``measurement=None``) or a measurement after deleting samples ``D``."""
        degree = self.degree if degree is None else int(degree)
        if not 0 <= degree <= self.degree:
            raise SketchError(f"degree must be 0..{self.degree} (the sketch's degree), got {degree}")
        D = sorted_unique(np.asarray(D, dtype=np.int64).reshape(-1))
        if D.size and (D[0] < 0 or D[-1] >= self.n_samples):
            raise SketchError(f"sample indices outside 0..{self.n_samples - 1}")
        base, C = (
            (np.asarray(self.base), self.coeffs)
            if measurement is None
            else (measurement.base, measurement.coeffs)
        )
        s = -np.conj(self.psi()[:, D].sum(1))  # conj<ψ_j, v> for v = −1_D, shape (m,)
        per = np.stack(
            [np.real(np.asarray(C[r - 1]) * (s**r)[:, None]) / math.factorial(r) for r in range(1, degree + 1)]
        ) if degree else np.zeros((0, self.m, base.size))  # fmt: skip
        terms = np.concatenate([base[None], per.mean(1)])
        total = per.sum(0)  # (m, k): one estimate per direction
        stderr = total.std(0, ddof=1) / math.sqrt(self.m) if degree else np.zeros_like(base)
        return DeletionPrediction(terms.sum(0), terms, stderr, degree, self.m)


def predict_deletion(model, sketch: TrainingSketch, D, measurement="params", degree: int | None = None):
    """Predict what the model trained without samples ``D`` would output.

    Parameters
    ----------
    model : fitted estimator or torch module
        Must be the sketch's base run (fingerprints are compared); ``None`` skips the check.
    sketch : TrainingSketch
    D : array-like of int
        Training sample indices, e.g. ``sketch.samples_from_source(path, rows)``.
    measurement : "params", array-like of inputs, or Measurement
        ``"params"``: the flat parameter vector; inputs: their logits; a :class:`Measurement` from
        ``sketch.measure(X)`` reuses the logits' coefficients across many deletion sets.
    degree : int, optional
        Taylor degree to sum up to (default: the sketch's).

    Returns
    -------
    DeletionPrediction

    Raises
    ------
    SketchError
        ``model`` is not the model the sketch was built for, bad ``D`` or ``degree``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(50, 3)); y = (X[:, 0] > 0).astype(float)
    >>> tr = WeightedTraining(hidden=(4,), activation="softplus", epochs=5, batch_size=10, optimizer="sgd", lr=0.1)
    >>> sk = TrainingSketch.build(tr, X, y, degree=2, m=8)
    >>> pred = predict_deletion(sk.base_module(), sk, [0, 1], measurement=X[:5], degree=1)
    >>> pred.value.shape, pred.degree, len(pred.term_norms)
    ((5,), 1, 2)
    """
    if model is not None:
        module = getattr(model, "module_", model)
        if fingerprint(module) != sketch.model_fingerprint:
            raise SketchError(
                "the model is not the sketch's base run (fingerprints differ): build the sketch with "
                "fit_sketch(estimator), which installs the sketched run as the estimator's module"
            )
    if isinstance(measurement, str):
        if measurement != "params":
            raise SketchError(f"measurement must be 'params', inputs or a Measurement, got {measurement!r}")
        return sketch.predict(D, None, degree)
    if not isinstance(measurement, Measurement):
        measurement = sketch.measure(np.asarray(measurement, dtype=np.float64))
    return sketch.predict(D, measurement, degree)


def fit_sketch(est, degree: int = 2, m: int = 64, seed: int = 0, path=None, chunk: int = 16,
               **training) -> TrainingSketch:  # fmt: skip
    """Sketch a fitted ``TorchMLPClassifier``'s training and make the sketched run its model.

    The estimator's data, labels, lineage and hyper-parameters define the run
    (:meth:`WeightedTraining.from_estimator`, ``**training`` overrides); ``est.module_`` becomes the
    run's model at ``w = 1`` in float64 (same initialisation; batches over all samples, so deletions
    keep the order) and ``est.sketch_`` the sketch, which ``est.unlearn(..., method="sketch")`` then applies.
    """
    tr = WeightedTraining.from_estimator(est, **training)
    sk = TrainingSketch.build(tr, est.X_train_, est.y_train_, degree, m, seed, getattr(est, "lineage_", None),
                              path, chunk)  # fmt: skip
    est.module_ = sk.base_module()
    est.sketch_ = sk
    return sk


# ---------------------------------------------------------------------- helpers
def _slices(shapes) -> list[slice]:
    out, lo = [], 0
    for s in shapes:
        k = math.prod(s)
        out.append(slice(lo, lo + k))
        lo += k
    return out


def _unflat(flat: torch.Tensor, shapes) -> list[torch.Tensor]:
    return [flat[sl].reshape(s) for sl, s in zip(_slices(shapes), shapes)]


def _unflat_dirs(C: torch.Tensor, shapes) -> list[torch.Tensor]:
    """(d, m, P) -> per parameter (d, m, *shape)."""
    return [C[:, :, sl].reshape(C.shape[0], C.shape[1], *s) for sl, s in zip(_slices(shapes), shapes)]


def _alloc(path, shape):
    if path is None:
        return np.zeros(shape, dtype=np.complex128)
    os.makedirs(path, exist_ok=True)
    return np.memmap(Path(path) / "coeffs.bin", dtype=np.complex128, mode="w+", shape=shape)
