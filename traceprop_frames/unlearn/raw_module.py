"""A raw torch module plus the data it was trained on, in the estimator contract of :mod:`.correction`.

``approximate_unlearn(module, forget, data=(X, y))`` wraps a plain ``torch.nn.Module`` (a custom training
loop, the Traceprop seed program) so the same corrections apply: the per-sample loss is binary
cross-entropy on the module's logit, no penalty (say ``weight_decay=`` if the loop used one).
"""

from __future__ import annotations

import numpy as np
import torch

from traceprop_frames.errors import UnlearningError


class TrainedModule:
    """``module_``, ``X_train_``, ``y_train_``, ``sample_weight_``, ``lineage_`` of a raw torch module."""

    def __init__(self, module: torch.nn.Module, X, y, weight_decay: float = 0.0) -> None:
        self.module_ = module
        self.lineage_ = getattr(X, "root_lineage", None)
        X = (
            X.detach().cpu().as_subclass(torch.Tensor).numpy()
            if isinstance(X, torch.Tensor)
            else np.asarray(X)
        )
        y = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
        self.X_train_ = np.ascontiguousarray(X, dtype=np.float32)
        self.y_train_ = np.asarray(y, dtype=np.float32).reshape(-1)
        if len(self.X_train_) != len(self.y_train_):
            raise UnlearningError(
                f"data=(X, y) has {len(self.X_train_)} rows of X but {len(self.y_train_)} labels"
            )
        if not np.isin(self.y_train_, (0.0, 1.0)).all():
            raise UnlearningError("data=(X, y): y must hold 0/1 labels (binary cross-entropy on a logit)")
        self.sample_weight_ = np.ones(len(self.y_train_), dtype=np.float32)
        self.weight_decay = float(weight_decay)

    def penalty(self, module: torch.nn.Module) -> torch.Tensor:
        if not self.weight_decay:
            return torch.zeros((), dtype=torch.float64)
        return 0.5 * self.weight_decay * sum((p.double() ** 2).sum() for p in module.parameters())


def wrap(model: torch.nn.Module, data, weight_decay: float = 0.0) -> TrainedModule:
    if data is None:
        raise UnlearningError(
            "approximate_unlearn got a raw torch module, which cannot be corrected without the data it was "
            "trained on: pass data=(X_train, y_train) (the tensors of the DataLoader's dataset), or train "
            "with a traceprop estimator (TorchMLPClassifier / TorchLogisticRegression), which keeps them."
        )
    X, y = data
    return TrainedModule(model, X, y, weight_decay)
