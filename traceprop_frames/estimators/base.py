"""Shared machinery of the torch binary classifiers (see the package docstring for the contract)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets, unique_labels
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from traceprop_frames.attribution.scoring import (
    TRAKScorer,
    exact_influence_scores,
    fill_checkpoint,
    top_k_scores,
)
from traceprop_frames.attribution.store import GradientStore
from traceprop_frames.lineage.events import lineage_step


def _capture_lineage(X):
    """The RowLineage of a traced frame's rows, or None (plain arrays, or lineage that cannot resolve)."""
    if not isinstance(X, pd.DataFrame):
        return None
    from traceprop_frames.errors import LineageLostError
    from traceprop_frames.frames import has_lineage, resolve

    if not has_lineage(X):
        return None
    try:
        return resolve(X)
    except LineageLostError as e:
        import warnings

        from traceprop_frames.errors import MissingLineageWarning

        warnings.warn(
            f"training rows carry no usable lineage, influence results will not name source rows: {e}",
            MissingLineageWarning,
            stacklevel=3,
        )
        return None


class TorchBinaryClassifier(ClassifierMixin, BaseEstimator):
    """Base class: validation, store filling, influence, predictions. Subclasses define the model."""

    # --------------------------------------------------------------- subclass API
    def _build_module(self, n_features: int) -> torch.nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def _fit_module(self, X, y, sample_weight, init_module=None, callback=None) -> torch.nn.Module:
        raise NotImplementedError  # pragma: no cover

    def penalty(self, module: torch.nn.Module, n_active=None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _n_active(self, n_active):
        return float(self.sample_weight_.sum()) if n_active is None else n_active

    def _damping(self, n_active: float) -> float:
        """Hessian of ``n_active * penalty`` (the kernel damping ``λ`` of the unnormalised objective)."""
        return 0.0

    _dtype = torch.float32

    # --------------------------------------------------------------- objective
    def per_sample_loss(self, module: torch.nn.Module, X, y) -> torch.Tensor:
        """Unregularised per-sample losses ``BCEWithLogits(module(X), y)``, shape ``(n,)``."""
        dtype = next(module.parameters()).dtype
        X = torch.as_tensor(np.asarray(X) if not isinstance(X, torch.Tensor) else X).to(dtype)
        y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).to(dtype)
        return torch.nn.functional.binary_cross_entropy_with_logits(module(X), y, reduction="none")

    def objective(self, module, X, y, sample_weight) -> torch.Tensor:
        """``(w * per_sample_loss).sum() / w.sum() + penalty(module)`` — the training objective."""
        dtype = next(module.parameters()).dtype
        w = torch.as_tensor(np.asarray(sample_weight)).to(dtype)
        return (w * self.per_sample_loss(module, X, y)).sum() / w.sum() + self.penalty(module, w.sum())

    # --------------------------------------------------------------- sklearn API
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        tags.non_deterministic = "random_state" in self.get_params() and self.random_state is None
        return tags

    @lineage_step("train")
    def fit(self, X, y, sample_weight=None):
        """Fit on ``X`` (array or DataFrame; a traced frame records lineage) and binary ``y``.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
        y : array-like of shape (n_samples,), two classes
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self
        """
        lineage = _capture_lineage(X)
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], y_numeric=False)
        check_classification_targets(y)
        self.classes_ = unique_labels(y)
        if len(self.classes_) > 2:
            raise ValueError(
                f"Only binary classification is supported. {type(self).__name__} got "
                f"{len(self.classes_)} classes: {self.classes_[:5]}"
            )
        if len(self.classes_) < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of 2 classes; got 1 class: {self.classes_}"
            )
        sw = _check_sample_weight(sample_weight, X, dtype=np.float64)
        if np.any(sw < 0) or sw.sum() <= 0:
            raise ValueError("sample weights must be non-negative with a positive sum")
        self.X_train_ = np.ascontiguousarray(X, dtype=np.float32)
        self.y_train_ = (y == self.classes_[1]).astype(np.float32)
        self.sample_weight_ = sw.astype(np.float32)
        self.lineage_ = lineage
        ckpts: list[dict] = []
        self.module_ = self._fit_module(
            self.X_train_,
            self.y_train_,
            self.sample_weight_,
            callback=ckpts.append if self._wants_ckpts() else None,
        )
        self.n_iter_ = int(getattr(self.module_, "_n_iter", 0))
        self.store_ = self._fill_store(ckpts) if self.store is not None else None
        return self

    def _member_seeds(self) -> list[int]:
        """Seeds of the extra ensemble members (``n_models - 1``): ``random_state + m``, or fresh ones."""
        n_models = int(getattr(self, "n_models", 1))
        if n_models < 1:
            raise ValueError(f"n_models must be at least 1, got {n_models}")
        rs = getattr(self, "random_state", None)
        if isinstance(rs, (int, np.integer)):
            return [int(rs) + m for m in range(1, n_models)]
        return [int(s) for s in np.random.default_rng().integers(0, 2**31 - 1, n_models - 1)]

    def _rel_damping(self, variant: str) -> float:
        """Relative TRAK kernel damping recorded in the store (see :class:`TRAKScorer`)."""
        return float(getattr(self, "rel_damping", 1e-6))

    def _wants_ckpts(self) -> bool:
        return self.store is not None and getattr(self, "n_checkpoints", 1) > 1

    def _fill_store(self, ckpts: list[dict], removed=None) -> GradientStore:
        """A new gradient store for ``module_`` (its checkpoints ``ckpts``, and every extra ensemble member
        trained here on ``sample_weight_``). ``removed``: samples marked removed before the store is
        committed (a store refilled after an erasure: :mod:`traceprop_frames.unlearn.refresh`)."""
        path = None if self.store is True or self.store == "memory" else self.store
        store = GradientStore(
            k=self.k,
            path=path,
            seed=self.projection_seed,
            dtype=self.store_dtype,
            variant=getattr(self, "store_variant", "TRAK"),
        )
        n = len(self.X_train_)
        store.begin(self.module_, n, self.lineage_, damping=self._damping(float(self.sample_weight_.sum())))
        final = {k: v.detach().clone() for k, v in self.module_.named_parameters()}
        n_ck = getattr(self, "n_checkpoints", 1)
        members = [[*_spread(ckpts, final, n_ck), final]]
        frac = float(getattr(self, "ensemble_fraction", 1.0))
        if not 0 < frac <= 1:
            raise ValueError(f"ensemble_fraction must be in (0, 1], got {frac}")
        for seed in self._member_seeds():  # ensembling: independently trained models (own init and order)
            ck: list[dict] = []
            keep = _member_subset(self.sample_weight_, frac, seed) > 0  # the member fits on its rows alone
            m = self._fit_module(
                self.X_train_[keep], self.y_train_[keep], self.sample_weight_[keep],
                callback=ck.append if n_ck > 1 else None, seed=seed,
            )  # fmt: skip
            last = {k: v.detach().clone() for k, v in m.named_parameters()}
            members.append([*_spread(ck, last, n_ck), last])
        batches = None
        if store.variant == "BM":
            rng = np.random.default_rng(0 if self.random_state is None else self.random_state)
            bs = min(getattr(self, "batch_size", 200), n)
            batches = np.array_split(rng.permutation(n), max(1, int(np.ceil(n / bs))))
        for params in [p for member in members for p in member]:
            fill_checkpoint(store, self.module_, self.X_train_, self.y_train_, params=params, batches=batches)
        extra = {
            "estimator": type(self).__name__,
            "rel_damping": self._rel_damping(store.variant),
            "n_models": len(members),
            "ensemble_fraction": frac,
        }
        if removed is not None:  # erased before this fill: no checkpoint saw them
            store.removed[np.asarray(removed, dtype=np.int64)] = True
            extra["n_removed_at_fill"] = int(store.removed.sum())
        store.finalize(self.module_, extra=extra)
        return store

    def _validate_test(self, X) -> np.ndarray:
        check_is_fitted(self)
        return validate_data(self, X, reset=False, dtype=np.float64).astype(np.float32)

    def decision_function(self, X) -> np.ndarray:
        """Logit of the positive class ``classes_[1]``, shape ``(n_samples,)``."""
        X = self._validate_test(X)
        with torch.no_grad():
            out = self.module_(torch.as_tensor(X).to(next(self.module_.parameters()).dtype))
        return out.double().numpy().reshape(-1)

    def predict_proba(self, X) -> np.ndarray:
        """``(n_samples, 2)`` class probabilities in the order of ``classes_``."""
        p = 1.0 / (1.0 + np.exp(-self.decision_function(X)))
        return np.column_stack([1 - p, p])

    def predict_log_proba(self, X) -> np.ndarray:
        return np.log(np.clip(self.predict_proba(X), 1e-300, None))

    def predict(self, X) -> np.ndarray:
        d = self.decision_function(X)
        return self.classes_[(d > 0).astype(int)]

    # --------------------------------------------------------------- influence
    def influence_scores(self, X_test, method: str | None = None, **kw) -> np.ndarray:
        """``(n_test, n_train)`` influence of each training sample on each test point's logit.

        ``scores[t, i] > 0``: including training sample ``i`` raises ``decision_function(X_test)[t]``.
        Erased samples (``store_.removed`` / zero ``sample_weight_``) are NaN.

        Parameters
        ----------
        X_test : array-like of shape (n_test, n_features)
        method : {"trak", "exact", "replay"} or None
            ``"trak"``: the gradient store (default when the model was fit with ``store=``);
            ``"exact"``: full-Hessian influence function (default without a store; meant for convex models);
            ``"replay"``: the exact derivative of the test logits with respect to every row's weight
            through the whole deterministic training run (:mod:`traceprop_frames.attribution.replay`).
        **kw
            ``damping`` / ``weighted`` for the TRAK scorer; ``segment`` / ``dtype`` for replay.
        """
        X = self._validate_test(X_test)
        if method is None:
            method = "trak" if self.store_ is not None else "exact"
        if method == "replay":
            from traceprop_frames.attribution.replay import estimator_replay_scores

            return estimator_replay_scores(self, X, **kw)
        if method == "trak":
            if self.store_ is None:
                raise ValueError(
                    "method='trak' needs a gradient store: fit with store='./path' or store=True"
                )
            return TRAKScorer(self.store_, **kw).scores(self.module_, X)
        if method != "exact":
            raise ValueError(f"unknown influence method {method!r}; use 'trak', 'exact' or 'replay'")
        removed = self.sample_weight_ == 0
        if self.store_ is not None:
            removed = removed | self.store_.removed
        w = self.sample_weight_

        def objective(m):
            wt = torch.as_tensor(w).to(next(m.parameters()).dtype)
            return (
                wt * self.per_sample_loss(m, self.X_train_, self.y_train_)
            ).sum() + wt.sum() * self.penalty(m, wt.sum())

        return exact_influence_scores(
            self.module_, objective, self.X_train_, self.y_train_, X, removed=removed
        )

    def influence(
        self, X_test, top_k: int = 5, method: str | None = None, *, direct: bool = True, **kw
    ) -> pd.DataFrame:
        """The ``top_k`` most influential training rows per test point, with the source rows behind them.

        Parameters
        ----------
        direct : bool, default=True
            List each training row's *direct* source rows (those whose values it carries) and name the
            shared sets it also read (a column mean, a partition total) in the ``shared`` column;
            ``False`` lists every source row behind it, the statistics' rows included.

        Returns
        -------
        DataFrame
            One line per (test point, ranked training sample, source row): ``test_row`` (position in
            ``X_test``), ``rank`` (0 = most positive score), ``train_row`` (training sample index),
            ``score``, ``source`` (file path; None without lineage), ``source_row`` (0-based data row;
            -1 without lineage), ``sha256_ok``, ``shared`` (the shared sets the training row also read,
            ``"op [n rows]; ..."``, None when none). A training row built from several source rows
            (joins, aggregations) repeats its ``rank``/``score`` on several lines.
        """
        if (method or ("trak" if self.store_ is not None else "exact")) == "trak" and self.store_ is not None:
            # streamed over the store in sample blocks: no (n_test, n_train) matrix for big stores
            best = TRAKScorer(self.store_, **kw).top_k(self.module_, self._validate_test(X_test), top_k)
        else:
            best = top_k_scores(self.influence_scores(X_test, method=method, **kw), top_k)
        n_test, kk = best.indices.shape
        t = np.repeat(np.arange(n_test), kk)
        r = np.tile(np.arange(kk), n_test)
        i = best.indices.reshape(-1)
        s = best.scores.reshape(-1)
        lin = self.lineage_
        rec: dict[str, list] = {k: [] for k in ("test_row", "rank", "train_row", "score")}
        from traceprop_frames.lineage.shared_summary import context_text

        src, srow, ok, shared, sizes = [], [], [], [], {}
        for tt, rr, ii, ss in zip(t.tolist(), r.tolist(), i.tolist(), s.tolist()):
            rows = lin.trace(ii, strict=False, direct=direct) if lin is not None else []
            ctx = context_text(lin, ii, sizes) if lin is not None else None
            for sr in rows or [None]:
                shared.append(ctx)
                rec["test_row"].append(tt)
                rec["rank"].append(rr)
                rec["train_row"].append(ii)
                rec["score"].append(ss)
                src.append(None if sr is None else sr.path)
                srow.append(-1 if sr is None else sr.row)
                ok.append(None if sr is None else sr.sha256_ok)
        out = {**rec, "source": src, "source_row": srow, "sha256_ok": ok, "shared": shared}
        return pd.DataFrame(out).astype(
            {
                "test_row": "int64",
                "rank": "int64",
                "train_row": "int64",
                "score": "float64",
                "source_row": "int64",
            }
        )

    # --------------------------------------------------------------- unlearning
    def unlearn(self, source=None, rows=None, *, samples=None, method=None, rebuild=None, **kwargs):
        """Erase training rows (by source rows or sample indices); see :mod:`traceprop_frames.unlearn`.

        With ``rebuild=fn`` (``fn()`` returns ``(X, y)`` as built for ``fit``), the feature pipeline is
        re-run without the rows and the model corrected to the rebuilt table
        (:mod:`traceprop_frames.unlearn.rebuild`): statistics that read the rows are recomputed too.
        """
        if rebuild is not None:
            from traceprop_frames.unlearn.rebuild import unlearn_with_rebuild

            if samples is not None or method is not None:
                from traceprop_frames.errors import UnlearningError

                raise UnlearningError("rebuild= chooses its own method and erases source rows, not samples=")
            return unlearn_with_rebuild(self, source, rows, rebuild=rebuild, **kwargs)
        from traceprop_frames.unlearn import unlearn_estimator
        from traceprop_frames.unlearn.rebuild import note_erased_rows

        cert = unlearn_estimator(self, source=source, rows=rows, samples=samples, method=method, **kwargs)
        note_erased_rows(self, cert.body)  # a later rebuild= re-run leaves these rows out too
        return cert


def _member_subset(sample_weight: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """0/1 mask of the rows an extra ensemble member trains on: ``round(fraction × n_active)`` of the rows
    with non-zero weight, drawn by ``np.random.default_rng(seed).choice(active, m, replace=False)``
    (all rows when ``fraction == 1``)."""
    mask = np.zeros(len(sample_weight), dtype=np.float32)
    active = np.flatnonzero(sample_weight > 0)
    if fraction == 1:
        mask[active] = 1
        return mask
    m = max(1, int(round(fraction * len(active))))
    mask[np.random.default_rng(seed).choice(active, m, replace=False)] = 1
    return mask


def _spread(ckpts: list[dict], final: dict, n_ck: int) -> list[dict]:
    """``n_ck - 1`` snapshots evenly spaced over the second half of training (the final model excluded)."""
    if n_ck <= 1 or len(ckpts) <= 1:
        return []
    pick = np.unique(np.round(np.linspace(len(ckpts) // 2, len(ckpts) - 1, n_ck)).astype(int))
    snaps = [ckpts[j] for j in pick]
    return snaps[:-1] if _same(snaps[-1], final) else snaps


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in b)
