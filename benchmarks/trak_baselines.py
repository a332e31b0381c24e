"""The official ``traker`` package and ``dattri``'s TRAK on our binary MLP, for side-by-side LDS.

Both are benchmark-only, optional (``pip install -e .[bench]``). They get the same model checkpoints
(the parameters our gradient store holds), the same training / test arrays and the same projection
dimension; their scores are ``(n_test, n_train)`` in our sign convention (positive: including the
training row raises the test logit), so ``traceprop_frames.attribution.lds.lds`` scores them on the same
retrained subsets.

The binary model maps to TRAK's output function as in the TRAK paper: training rows use the margin
``(2y − 1) f`` (log-odds of the correct class) with out-to-loss weight ``Q = 1 − p_correct``; test rows
use the logit ``f`` itself (the quantity LDS retrains predict), i.e. the margin with label 1.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile

import numpy as np
import torch


def _margin(module, weights, buffers, x, label):
    f = torch.func.functional_call(module, (weights, buffers), (x.unsqueeze(0),)).reshape(())
    return (2 * label - 1) * f


def traker_scores(module, checkpoints, X, y, X_test, k, lambda_reg=0.0, batch=500):
    """TRAK scores from the official ``traker`` package (CPU: its ``BasicProjector``, float32).

    ``checkpoints``: list of parameter dicts (one TRAK "model id" each); ``lambda_reg``: the absolute
    ridge TRAK adds to ``XᵀX`` (its default is 0).
    """
    from trak import TRAKer
    from trak.modelout_functions import AbstractModelOutput

    class BinaryMargin(AbstractModelOutput):
        def __init__(self):
            super().__init__()

        @staticmethod
        def get_output(model, weights, buffers, x, label):
            return _margin(model, weights, buffers, x, label)

        def get_out_to_loss_grad(self, model, weights, buffers, batch):
            x, label = batch
            f = torch.func.functional_call(model, (weights, buffers), (x,)).reshape(-1)
            return torch.sigmoid(-(2 * label - 1) * f).clone().detach().unsqueeze(-1)

    X, y, Xt = (torch.as_tensor(np.asarray(a), dtype=torch.float32) for a in (X, y, X_test))
    with tempfile.TemporaryDirectory() as tmp:
        tr = TRAKer(
            model=module, task=BinaryMargin(), train_set_size=len(X), save_dir=tmp, device="cpu",
            proj_dim=k, use_half_precision=False, lambda_reg=lambda_reg, logging_level=logging.ERROR,
        )  # fmt: skip
        for mid, params in enumerate(checkpoints):
            tr.load_checkpoint(params, model_id=mid)
            for lo in range(0, len(X), batch):
                tr.featurize(
                    batch=(X[lo : lo + batch], y[lo : lo + batch]), num_samples=len(X[lo : lo + batch])
                )
        with contextlib.redirect_stderr(io.StringIO()):  # progress bars
            tr.finalize_features()
        for mid, params in enumerate(checkpoints):
            tr.start_scoring_checkpoint("test", params, model_id=mid, num_targets=len(Xt))
            tr.score(batch=(Xt, torch.ones(len(Xt))), num_samples=len(Xt))
        with contextlib.redirect_stderr(io.StringIO()):
            S = tr.finalize_scores("test")
    return np.asarray(S, dtype=np.float64).T


def dattri_scores(module, checkpoints, X, y, X_test, k, regularization=0.0, batch=500):
    """TRAK scores from ``dattri.algorithm.trak.TRAKAttributor`` (CPU projector, default "normal")."""
    from dattri.algorithm.trak import TRAKAttributor
    from dattri.task import AttributionTask

    def margin(params, data):
        x, label = data
        return _margin(module, params, {}, x, label)

    def logit(params, data):
        x, _ = data
        return torch.func.functional_call(module, params, (x.unsqueeze(0),)).reshape(())

    def p_correct(params, data):
        return torch.sigmoid(margin(params, data))

    X, y, Xt = (torch.as_tensor(np.asarray(a), dtype=torch.float32) for a in (X, y, X_test))
    task = AttributionTask(
        loss_func=margin, model=module, checkpoints=[dict(c) for c in checkpoints], target_func=logit
    )
    att = TRAKAttributor(
        task=task, correct_probability_func=p_correct, device="cpu", regularization=regularization,
        projector_kwargs={"proj_dim": k, "proj_max_batch_size": 32, "proj_seed": 0, "device": "cpu"},
    )  # fmt: skip
    loader = torch.utils.data.DataLoader
    train = loader(torch.utils.data.TensorDataset(X, y), batch_size=batch, shuffle=False)
    test = loader(torch.utils.data.TensorDataset(Xt, torch.ones(len(Xt))), batch_size=batch, shuffle=False)
    with contextlib.redirect_stderr(io.StringIO()):  # a progress bar per gradient pass
        att.cache(train)
        S = att.attribute(test)  # (n_train, n_test)
    return np.asarray(S.detach(), dtype=np.float64).T


def mean_diag_unweighted(module, params, X):
    """Mean diagonal of both packages' ``XᵀX`` at ``params``: ``Σ_i |∇f_i|² / d`` (they divide the
    projected gradients by ``sqrt(d)``; a dense N(0, 1) or ±1 projection keeps ``|x|²/k ≈ |g|²``) — for
    giving them the same relative damping as ours."""
    from traceprop_frames.attribution.gradients import per_sample_output_grads

    _, G = per_sample_output_grads(module, torch.as_tensor(np.asarray(X)), params=params)
    return float((G.double() ** 2).sum()) / G.shape[1]
