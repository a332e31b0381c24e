"""Replay of a user's own training loop, from what a :class:`~.context.TrainingContext` records."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from traceprop_frames.attribution.replay import SGD, Adam, ReplayResult, replay_scores
from traceprop_frames.attribution.replay_models import MLPRun
from traceprop_frames.errors import ReplayError

# ---------------------------------------------------------------------- a user's own loop
_ACT_OF_MODULE = {torch.nn.ReLU: "relu", torch.nn.Softplus: "softplus", torch.nn.Tanh: "tanh"}


def mlp_spec(model: torch.nn.Module) -> tuple[list[torch.Size], str]:
    """``(parameter shapes, activation)`` of a model replay can rebuild: ``Linear`` layers (with biases)
    and one kind of ``ReLU`` / ``Softplus`` (default ``beta``) / ``Tanh`` between them, one output."""
    leaves = [m for m in model.modules() if not list(m.children())]
    acts = {_ACT_OF_MODULE.get(type(m)) for m in leaves if not isinstance(m, torch.nn.Linear)}
    linears = [m for m in leaves if isinstance(m, torch.nn.Linear)]
    bad = [
        type(m).__name__
        for m in leaves
        if not isinstance(m, torch.nn.Linear) and type(m) not in _ACT_OF_MODULE
    ]
    soft = [m for m in leaves if isinstance(m, torch.nn.Softplus) and (m.beta != 1 or m.threshold != 20)]
    if bad or soft or len(acts) > 1 or not linears or any(m.bias is None for m in linears):
        raise ReplayError(
            "replay rebuilds the model as Linear layers (with biases) and one activation among ReLU, "
            f"Softplus, Tanh; this model has {bad or soft or sorted(map(str, acts)) or 'no Linear layer'}"
        )
    if linears[-1].out_features != 1:
        raise ReplayError("replay needs one output per sample (a logit); the last Linear has more")
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    want = [s for m in linears for s in (m.weight.shape, m.bias.shape)]
    if shapes != want:
        raise ReplayError(f"the model's parameters {names} are not those of its Linear layers in order")
    return shapes, (acts.pop() if acts else "relu")


def optimizer_spec(optimizer) -> Adam | SGD:
    """:class:`Adam` / :class:`SGD` with a torch optimizer's settings, or a ReplayError naming the gap."""
    if optimizer is None:
        raise ReplayError(
            "replay needs the update rule: pass the optimizer, TrainingContext(..., optimizer=opt) "
            "(torch.optim.Adam or torch.optim.SGD)"
        )
    if len(optimizer.param_groups) != 1:
        raise ReplayError("replay supports one parameter group (one lr for all parameters)")
    g = optimizer.param_groups[0]
    if isinstance(optimizer, torch.optim.Adam):
        unsupported = {k: g.get(k) for k in ("weight_decay", "amsgrad", "maximize") if g.get(k)}
        if not unsupported:
            return Adam(float(g["lr"]), float(g["betas"][0]), float(g["betas"][1]), float(g["eps"]))
    elif isinstance(optimizer, torch.optim.SGD):
        unsupported = {k: g.get(k) for k in ("weight_decay", "dampening", "nesterov", "maximize") if g.get(k)}
        if not unsupported:
            return SGD(float(g["lr"]), float(g.get("momentum", 0.0)))
    else:
        raise ReplayError(
            f"replay knows torch.optim.Adam and torch.optim.SGD, not {type(optimizer).__name__}"
        )
    raise ReplayError(f"replay does not model these optimizer settings: {unsupported}")


@dataclass
class LoopRecord:
    """What a :class:`TrainingContext` records of a loop for replay: the initial parameters, each step's
    batch (row indices), the learning rate seen at each step, and the final parameters."""

    theta0: torch.Tensor
    batches: list = field(default_factory=list)
    lrs: list = field(default_factory=list)
    final: torch.Tensor | None = None


def replay_loop(
    model, optimizer, record: LoopRecord, X, y, X_test, segment: int | None = None
) -> ReplayResult:
    """Replay a recorded loop (mean BCE-with-logits per batch, no penalty) and check it reproduces the
    trained parameters before trusting its derivative."""
    shapes, activation = mlp_spec(model)
    opt = optimizer_spec(optimizer)
    if not record.batches:
        raise ReplayError("no training step was recorded: call ctx.backward(loss, batch_idx=...) in the loop")
    if len(set(record.lrs)) > 1:
        raise ReplayError(
            "the learning rate changed during training (a scheduler?): replay needs a constant lr"
        )
    dtype = torch.float64
    run = MLPRun(
        shapes, record.theta0.to(dtype), activation, 0.0, opt, [np.asarray(b) for b in record.batches]
    )
    res = replay_scores(run, X, y, np.ones(len(X)), X_test, segment)
    gap = float((res.final[: run.n_params] - record.final.to(dtype)).abs().max())
    scale = float(record.final.abs().max()) + 1e-12
    if gap > 1e-3 * scale:
        raise ReplayError(
            f"the replayed run does not reproduce the trained parameters (max difference {gap:.3g}): the "
            "loop does something the context cannot record — a loss other than the batch mean of "
            "BCE-with-logits on the model's output, gradient clipping, dropout, a changed lr or data order"
        )
    return res
