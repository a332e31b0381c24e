"""TrainingContext: fill a GradientStore from a custom torch training loop.

The context hooks the model's forward pass (it captures the batch input and the per-sample outputs,
and for the "LL" variant the last layer's input activations), so the loop only swaps
``loss.backward()`` for ``ctx.backward(loss, batch_idx=idx)``::

    with TrainingContext(model, store, lineage=train) as ctx:
        for epoch in range(epochs):
            for idx, (xb, yb) in loader:     # idx: positions of the batch rows in the training frame
                optimizer.zero_grad()
                ctx.backward(criterion(model(xb), yb), batch_idx=idx)
                optimizer.step()
            ctx.checkpoint()                  # optional: keep this epoch's features as a checkpoint

Requirements: the model returns one scalar per sample (``(B,)`` or ``(B, 1)``, e.g. a logit); the loss
is a sum or mean (``reduction=``) of per-sample losses of that output, and the last ``model(...)`` call
before ``ctx.backward`` is the batch ``batch_idx``. Each sample's row holds its features from its last
visit, so after training a store row reflects the final epoch. The per-sample loss derivative
``g = ∂ℓ/∂f`` is read from the backward pass itself (a hook on the captured output, any loss); the
kernel weight ``h = ∂²ℓ/∂f²`` is ``σ(f)(1 − σ(f))`` (logistic loss) or, with
``output_hessian="autograd"``, a second differentiation of the given loss.
"""

from __future__ import annotations

import numpy as np
import torch

from traceprop_frames.attribution.gradients import last_linear_name, per_sample_output_grads
from traceprop_frames.attribution.replay_loop import LoopRecord, replay_loop
from traceprop_frames.attribution.store import GradientStore, StoreError
from traceprop_frames.errors import ReplayError


def _as_lineage(lineage):
    if lineage is None:
        return None
    try:
        import pandas as pd

        if isinstance(lineage, pd.DataFrame):
            from traceprop_frames.frames import resolve

            return resolve(lineage)
    except ImportError:  # pragma: no cover
        pass
    return lineage


class TrainingContext:
    """Context manager that writes projected per-sample gradients to ``store`` during training.

    Parameters
    ----------
    model : torch.nn.Module
    store : GradientStore
    lineage : traced DataFrame, RowLineage or None
        The training rows (row ``i`` = sample ``i``); gives the store its provenance answers.
    n_samples : int or None
        Number of training samples (default: ``len(lineage)``).
    reduction : {"mean", "sum"}, default="mean"
        How the loss passed to :meth:`backward` combines per-sample losses.
    damping : float, default=0.0
        The model's L2 strength in the unnormalised objective (kernel damping ``λ``).
    rel_damping : float, default=1e-6
        Extra damping relative to the kernel's mean diagonal (recorded in the manifest; non-convex
        models score better with much more, e.g. 0.3 — see :class:`TorchMLPClassifier`).
    output_hessian : {"bce", "autograd"}, default="bce"
        ``h = ∂²ℓ/∂f²`` for the kernel weighting: ``"bce"`` uses ``σ(f)(1 − σ(f))`` (logistic loss on a logit
        output; ``g = ∂ℓ/∂f`` is always read from the backward pass itself, for any loss); ``"autograd"``
        differentiates the given loss twice (any per-sample loss, one extra backward per step).
    buffer_bytes : int, default=256 MiB
        "LL": while the raw last-layer features of all samples fit in this many bytes they are kept in
        memory and projected in large chunks when a checkpoint closes (cheaper than per step).
    optimizer : torch.optim.Adam, torch.optim.SGD or None
        The loop's optimizer, for :meth:`replay_scores` (the context also records the initial parameters,
        every step's batch and the final parameters; a few bytes per step).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        store: GradientStore,
        lineage=None,
        n_samples: int | None = None,
        reduction: str = "mean",
        damping: float = 0.0,
        rel_damping: float = 1e-6,
        buffer_bytes: int = 256 << 20,
        output_hessian: str = "bce",
        optimizer=None,
    ) -> None:
        if reduction not in ("mean", "sum"):
            raise ValueError("reduction must be 'mean' or 'sum'")
        self.model, self.store = model, store
        self.lineage = _as_lineage(lineage)
        if n_samples is None and self.lineage is not None:
            n_samples = len(self.lineage)
        # None: learned from the first batch, whose rows carry their samples and lineage
        # (tpf.tensor(...).to_torch() in a TensorDataset / DataLoader)
        self.n_samples = None if n_samples is None else int(n_samples)
        self.reduction, self.damping = reduction, damping
        self.rel_damping = rel_damping
        self.buffer_bytes = buffer_bytes
        if output_hessian not in ("bce", "autograd"):
            raise ValueError("output_hessian must be 'bce' or 'autograd'")
        self.output_hessian = output_hessian
        self._buffer = None
        self._hooks: list = []
        self._x = self._out = self._act = None
        self._c = -1
        self._written = 0
        self.optimizer = optimizer
        self.loop_record: LoopRecord | None = None

    # ----------------------------------------------------------------- hooks
    def __enter__(self) -> TrainingContext:
        self._begun = False
        fresh = self.optimizer is None or not any(self.optimizer.state.values())
        theta0 = torch.cat([p.detach().reshape(-1).clone() for p in self.model.parameters()])
        self.loop_record = LoopRecord(theta0) if fresh else None  # an optimizer with history: no replay
        if self.n_samples is not None:
            self._begin()

        def root_hook(_m, args, out):
            self._x, self._out = args[0], out
            if not self._begun:
                self._begin_from_batch(args[0])

        self._hooks.append(self.model.register_forward_hook(root_hook))
        if self.store.variant == "LL":
            name = last_linear_name(self.model)
            layer = self.model.get_submodule(name)
            self._ll_fast = layer.out_features == 1

            def ll_hook(_m, args, _out):
                self._act = args[0]

            self._hooks.append(layer.register_forward_hook(ll_hook))
            self._ll_bias = layer.bias is not None
        return self

    def _begin(self) -> None:
        self.store.begin(self.model, self.n_samples, self.lineage, damping=self.damping)
        self._open_slot()
        self._begun = True

    def _begin_from_batch(self, x) -> None:
        from traceprop_frames.tensor.torch_rows import batch_samples

        if batch_samples(x) is None:
            raise StoreError(
                "TrainingContext(model, store) without lineage= or n_samples= learns the training samples "
                "from the batches, but this batch is a plain tensor. Build the dataset from "
                "tpf.tensor(...).to_torch() (or tpf.tensor_from_csv(...).to_torch()), or pass lineage=/n_samples=."
            )
        self.lineage = x.root_lineage
        self.n_samples = len(self.lineage)
        self._begin()

    def __exit__(self, *exc) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []
        if self.loop_record is not None:
            self.loop_record.final = torch.cat(
                [p.detach().reshape(-1).clone() for p in self.model.parameters()]
            )
        if exc[0] is not None or not self._begun:
            return
        if self._written == 0 and len(self.store.checkpoints) > 1:
            self.store.checkpoints.pop()
        else:
            self._flush()
            self.store.set_params(self._c, self._params())
        self.store.finalize(self.model, extra={"rel_damping": float(self.rel_damping)})

    def _params(self) -> dict:
        return {n: p.detach().clone() for n, p in self.model.named_parameters()}

    def _open_slot(self) -> None:
        self._c = self.store.add_checkpoint(self._params(), n_rows=0)
        self._written = 0
        self._buffer = None
        d = self.store.projector.d
        if self.store.variant == "LL" and d * self.n_samples * 4 <= self.buffer_bytes:
            n = self.n_samples
            self._buffer = (torch.zeros(n, d), torch.zeros(n), torch.zeros(n), np.zeros(n, dtype=bool))

    def _flush(self) -> None:
        """Project the buffered last-layer features of this checkpoint in large chunks and write them."""
        if self._buffer is None:
            return
        G, g, h, seen = self._buffer
        rows = np.flatnonzero(seen)
        for lo in range(0, len(rows), 8192):
            r = rows[lo : lo + 8192]
            self.store.write(self._c, r, self.store.projector.project(G[r]), g[r], h[r])
        self._buffer = None

    def checkpoint(self) -> None:
        """Close the current checkpoint (its test features will use the current parameters), open a new one."""
        if self._written == 0:
            return
        self._flush()
        self.store.set_params(self._c, self._params())
        self._open_slot()

    # ----------------------------------------------------------------- replay
    def replay_scores(self, X, y, X_test, segment: int | None = None) -> np.ndarray:
        """``(n_test, n_samples)`` exact derivatives of the test logits with respect to every sample's weight
        through the recorded loop (:mod:`~traceprop_frames.attribution.replay`); positive: including the
        sample raises the logit.

        Needs ``optimizer=`` (Adam or SGD, constant lr), a model of ``Linear`` layers and one of ReLU /
        Softplus / Tanh, a loss that is the batch mean of BCE-with-logits, and ``X``, ``y``: all training
        samples in the order of ``batch_idx``. The replayed run must reproduce the trained parameters;
        otherwise a ReplayError says what the context could not record.
        """
        if self.loop_record is None:
            raise ReplayError(
                "nothing to replay: use the context as `with TrainingContext(..., optimizer=opt) as ctx:` "
                "with a fresh optimizer (its state was not empty when the context opened)"
            )
        if self.loop_record.final is None:
            raise ReplayError("the context is still open: call replay_scores after the `with` block")
        return replay_loop(self.model, self.optimizer, self.loop_record, X, y, X_test, segment).scores

    # ----------------------------------------------------------------- backward
    def backward(self, loss: torch.Tensor, batch_idx=None) -> None:
        """``loss.backward()`` plus the store rows of this batch's samples.

        ``batch_idx``: the samples' positions in the training data; or, when the batch carries its rows
        (a :class:`~traceprop_frames.tensor.torch_rows.RowTensor` from a DataLoader), ``None`` or the
        batch number (an ``int``, as in ``for i, (xb, yb) in enumerate(loader)``) - then the samples come
        from the batch itself.
        """
        from traceprop_frames.tensor.torch_rows import batch_samples

        if self._out is None:
            raise StoreError("no forward pass seen: call model(xb) inside the context before ctx.backward")
        carried = batch_samples(self._x)
        if batch_idx is None or isinstance(batch_idx, (int, np.integer)):
            if carried is None:
                raise StoreError(
                    f"ctx.backward(loss, {batch_idx!r}): a batch number needs a batch that carries its rows, "
                    "but model(...) got a plain tensor. Build the dataset from tpf.tensor(...).to_torch(), or "
                    "pass the batch's sample indices (e.g. a TensorDataset of (X, y, torch.arange(n)))."
                )
            idx = carried
        else:
            idx = np.asarray(
                batch_idx.cpu() if isinstance(batch_idx, torch.Tensor) else batch_idx, dtype=np.int64
            )
        if self.loop_record is not None:
            self.loop_record.batches.append(idx.copy())
            if self.optimizer is not None:
                self.loop_record.lrs.append(float(self.optimizer.param_groups[0]["lr"]))
        store, P = self.store, self.store.projector
        if store.variant == "BM":
            params = [p for p in self.model.parameters() if p.requires_grad]
            before = [None if p.grad is None else p.grad.clone() for p in params]
            loss.backward()
            g = torch.cat(
                [
                    (p.grad if b is None else p.grad - b).reshape(-1)
                    if p.grad is not None
                    else torch.zeros(p.numel())
                    for p, b in zip(params, before)
                ]
            )
            scale = 1.0 if self.reduction == "mean" else 1.0 / len(idx)
            store.append_batch(self._c, idx, P.project(g.reshape(1, -1) * scale)[0])
        else:
            out = self._out
            scale = float(len(idx)) if self.reduction == "mean" else 1.0
            if self.output_hessian == "autograd":
                (gout,) = torch.autograd.grad(loss, out, create_graph=True, retain_graph=True)
                if gout.requires_grad:
                    (hout,) = torch.autograd.grad(gout.sum(), out, retain_graph=True)
                else:
                    hout = torch.zeros_like(out)
                loss.backward()
                g = gout.detach().reshape(-1) * scale
                h = hout.detach().reshape(-1) * scale
            else:  # "bce": dl/df from the same backward pass (a tensor hook), d2l/df2 = p(1 - p)
                box = []
                handle = out.register_hook(lambda grad_out: box.append(grad_out.detach()))
                try:
                    loss.backward()
                finally:
                    handle.remove()
                g = (box[0] if box else torch.zeros_like(out)).reshape(-1) * scale
                p = torch.sigmoid(out.detach().reshape(-1))
                h = p * (1 - p)
            if store.variant == "LL" and self._ll_fast:
                a = self._act.detach().reshape(len(idx), -1)
                G = torch.cat([a, torch.ones(len(idx), 1, dtype=a.dtype)], 1) if self._ll_bias else a
            else:
                _, G = per_sample_output_grads(self.model, self._x.detach(), names=store.param_names)
            if G.shape[0] != len(idx):
                raise StoreError(
                    f"the last forward pass had {G.shape[0]} samples but batch_idx has {len(idx)}"
                )
            ck = store.checkpoints[self._c]
            if ck.n_rows < store.n_samples:
                ck.grow(store.n_samples)
            if self._buffer is not None:  # narrow raw features: keep them, project once per checkpoint
                self._buffer[0][idx] = G.to(torch.float32)
                self._buffer[1][idx] = g.to(torch.float32)
                self._buffer[2][idx] = h.to(torch.float32)
                self._buffer[3][idx] = True
            else:
                store.write(self._c, idx, P.project(G), g, h)
        self._written += 1
        self._x = self._out = self._act = None
