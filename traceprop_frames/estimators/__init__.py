"""scikit-learn estimators on torch models whose training rows can be traced, scored and erased.

Contract (relied on by :mod:`traceprop_frames.unlearn`)
-------------------------------------------------------
After ``fit`` both :class:`TorchLogisticRegression` and :class:`TorchMLPClassifier` expose:

- ``module_`` — the trained ``torch.nn.Module``; ``module_(X)`` returns the logit of the positive class,
  shape ``(n,)`` (float64 for the logistic regression, float32 for the MLP);
- ``X_train_`` — ``np.ndarray`` float32 ``(n, d)``, the validated training matrix; row ``i`` is training
  sample ``i`` and store sample ``i``;
- ``y_train_`` — float32 in {0, 1} (1 = ``classes_[1]``, the positive class);
- ``sample_weight_`` — float32 ``(n,)``; 1.0 for active samples by default; unlearning sets erased ones
  to 0.0;
- ``lineage_`` — the :class:`~traceprop_frames.lineage.RowLineage` of the training rows (captured at fit
  time with ``resolve(X)`` when ``X`` is a traced frame, also through a Pipeline with pandas output), or
  None;
- ``store_`` — the :class:`~traceprop_frames.attribution.GradientStore` (``store=`` path or True), or None;
- ``classes_``, ``n_features_in_``, ``feature_names_in_`` (when X is a DataFrame).

Methods: ``per_sample_loss(module, X, y)`` -> torch ``(n,)`` unregularised BCE-with-logits losses;
``penalty(module, n_active=None)`` -> scalar tensor (``n_active`` defaults to ``sample_weight_.sum()``);
the training objective is exactly ``(w * per_sample_loss).sum() / w.sum() + penalty(module, w.sum())``
(``objective(module, X, y, w)`` computes it). ``_fit_module(X, y, sample_weight, init_module=None)``
trains and returns a module (deterministic: the logistic regression is strictly convex, the MLP uses
``random_state``); ``unlearn(source=None, rows=None, *, samples=None, method=None, **kw)`` delegates to
``traceprop_frames.unlearn.unlearn_estimator``. ``influence_scores(X_test)`` is ``(n_test, n_train)``
(NaN for erased samples) and ``influence(X_test, top_k)`` a DataFrame with the source rows.

Only binary classification is supported (``classes_`` has two labels).
"""

from traceprop_frames.estimators.base import TorchBinaryClassifier
from traceprop_frames.estimators.logistic import TorchLogisticRegression
from traceprop_frames.estimators.mlp import TorchMLPClassifier

__all__ = ["TorchBinaryClassifier", "TorchLogisticRegression", "TorchMLPClassifier"]
