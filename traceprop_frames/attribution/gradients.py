"""Per-sample gradients of a scalar model output with ``torch.func`` (``vmap(grad(...))``).

The model maps a batch ``(n, ...)`` to one scalar per sample (shape ``(n,)`` or ``(n, 1)``): for a
binary classifier, the logit of the positive class. Three feature variants:

- ``"TRAK"``: the gradient of the output with respect to every parameter;
- ``"LL"``: the gradient with respect to the last ``nn.Linear`` layer only (``[activation, 1]``);
- ``"BM"``: one row per *batch*, the gradient of the batch's mean loss (no per-sample work at all).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch.func import functional_call, grad, vmap

VARIANTS = ("TRAK", "LL", "BM")


def check_variant(variant: str) -> str:
    v = str(variant).upper()
    if v not in VARIANTS:
        raise ValueError(f"unknown gradient variant {variant!r}; use one of {VARIANTS}")
    return v


def last_linear_name(module: torch.nn.Module) -> str:
    """Qualified name of the last ``nn.Linear`` submodule (the "last layer")."""
    names = [n for n, m in module.named_modules() if isinstance(m, torch.nn.Linear)]
    if not names:
        raise ValueError("the model has no nn.Linear layer; the last-layer variant needs one")
    return names[-1]


def param_names(module: torch.nn.Module, variant: str) -> list[str]:
    """Names of the parameters whose gradients form the features of ``variant``."""
    variant = check_variant(variant)
    names = [n for n, p in module.named_parameters() if p.requires_grad]
    if variant == "LL":
        prefix = last_linear_name(module)
        prefix = prefix + "." if prefix else ""
        names = [n for n in names if n.startswith(prefix) and "." not in n[len(prefix) :]]
    return names


def n_coords(module: torch.nn.Module, names: list[str]) -> int:
    params = dict(module.named_parameters())
    return int(sum(params[n].numel() for n in names))


def fingerprint(module: torch.nn.Module) -> str:
    """sha256 over the model's parameters and buffers (names, dtypes, shapes and bytes, in order)."""
    h = hashlib.sha256()
    for name, t in list(module.state_dict().items()):
        a = t.detach().cpu().contiguous().numpy()
        h.update(f"{name}:{a.dtype}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _scalar_out(out: torch.Tensor) -> torch.Tensor:
    if out.dim() == 2 and out.shape[1] == 1:
        out = out[:, 0]
    if out.dim() != 1:
        raise ValueError(
            f"the model must return one scalar per sample (shape (n,) or (n, 1)); got {tuple(out.shape)}"
        )
    return out


def _split_params(module: torch.nn.Module, names, params):
    """(names, differentiated params, constant params, buffers, dtype) for a ``functional_call``;
    ``params`` overrides the module's values (e.g. a stored checkpoint)."""
    all_params = {n: p.detach() for n, p in module.named_parameters()}
    if params is not None:
        all_params.update({n: v.detach() for n, v in params.items()})
    buffers = {n: b.detach() for n, b in module.named_buffers()}
    names = list(all_params) if names is None else list(names)
    diff = {n: all_params[n] for n in names}
    const = {n: v for n, v in all_params.items() if n not in diff}
    return names, diff, const, buffers, next(iter(all_params.values())).dtype


def per_sample_output_grads(
    module: torch.nn.Module,
    X: torch.Tensor,
    names: list[str] | None = None,
    params: dict[str, torch.Tensor] | None = None,
    batch_size: int = 512,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs ``f(x_i)`` (n,) and per-sample gradients ``∇_θ f(x_i)`` flattened to ``(n, p)``.

    ``names`` selects the parameters differentiated (default: all); ``params`` overrides the module's
    parameter values (e.g. a stored checkpoint). The columns follow ``names`` order, each parameter
    flattened row-major. Uses ``torch.func.vmap(torch.func.grad(...))`` over chunks of ``batch_size``;
    a model that sets ``per_sample_independent = True`` and is built from Linear and element-wise layers
    (``MLPLogit``) gets the same numbers from one backward pass by the outer-product rule."""
    names, diff, const, buffers, dtype = _split_params(module, names, params)
    if _linear_only(module, names) and torch.as_tensor(X).dim() == 2:
        live = {n: v.detach().requires_grad_(True) for n, v in diff.items()}
        fast = _linear_output_grads(module, torch.as_tensor(X).to(dtype), names, {**const, **live}, buffers)
        if fast is not None:
            return fast

    def f(dparams, x):
        out = functional_call(module, ({**const, **dparams}, buffers), (x.unsqueeze(0),))
        out = out.reshape(-1)[0]
        return out, out

    g_fn = vmap(grad(f, has_aux=True), in_dims=(None, 0))
    X = torch.as_tensor(X).to(dtype)
    outs, grads = [], []
    for lo in range(0, X.shape[0], batch_size):
        g, o = g_fn(diff, X[lo : lo + batch_size])
        grads.append(torch.cat([g[n].reshape(g[n].shape[0], -1) for n in names], dim=1))
        outs.append(o)
    if not grads:
        return torch.zeros(0, dtype=dtype), torch.zeros(0, n_coords(module, names), dtype=dtype)
    return torch.cat(outs), torch.cat(grads)


# modules that act on each sample (row) alone; a model built only from these (and declaring the same of
# its own forward with ``per_sample_independent = True``) gets per-sample gradients by the outer-product rule
_ROWWISE = (
    torch.nn.Linear, torch.nn.Sequential, torch.nn.ReLU, torch.nn.LeakyReLU, torch.nn.Tanh, torch.nn.Sigmoid,
    torch.nn.GELU, torch.nn.SiLU, torch.nn.ELU, torch.nn.Softplus, torch.nn.Identity,
)  # fmt: skip


def _linear_only(module: torch.nn.Module, names: list[str]) -> bool:
    """True when the outer-product rule is exact: samples never interact (every submodule is row-wise and
    the root declares ``per_sample_independent``) and every differentiated parameter is a Linear's."""
    if not getattr(module, "per_sample_independent", False):
        return False
    mods = dict(module.named_modules())
    if not all(isinstance(m, _ROWWISE) for n, m in mods.items() if n):
        return False
    owners = {n.rpartition(".")[0]: n.rpartition(".")[2] for n in names}
    return all(
        isinstance(mods.get(o), torch.nn.Linear) and a in ("weight", "bias") for o, a in owners.items()
    )


def _linear_output_grads(module, X, names, params, buffers):
    """Per-sample gradients of ``f(x_i)`` for Linear parameters by one forward and one backward pass:
    ``∂f_i/∂W = δ_i a_iᵀ`` and ``∂f_i/∂b = δ_i``, with ``a_i`` the layer's input row and ``δ_i = ∂f_i/∂z_i``
    its output row's gradient (``∂(Σ_j f_j)/∂z_i``, since sample ``i``'s output depends on its row only).
    ``None`` when a layer is not called exactly once on 2-D rows (shared weights, sequences): use vmap."""
    mods = dict(module.named_modules())
    layers = sorted({n.rpartition(".")[0] for n in names})
    seen: dict[str, list] = {name: [] for name in layers}
    hooks = [
        mods[name].register_forward_hook(lambda m, inp, out, name=name: seen[name].append((inp[0], out)))
        for name in layers
    ]
    try:
        with torch.enable_grad():
            out = _scalar_out(functional_call(module, (params, buffers), (X,)))
            if any(len(v) != 1 or v[0][0].dim() != 2 or len(v[0][0]) != len(X) for v in seen.values()):
                return None
            deltas = torch.autograd.grad(out.sum(), [seen[n][0][1] for n in layers])
    finally:
        for h in hooks:
            h.remove()
    delta = dict(zip(layers, deltas))
    cols = []
    for n in names:
        layer, _, attr = n.rpartition(".")
        d, a = delta[layer].detach(), seen[layer][0][0].detach()
        cols.append((d[:, :, None] * a[:, None, :]).reshape(len(d), -1) if attr == "weight" else d)
    return out.detach(), torch.cat(cols, dim=1)


def batch_mean_loss_grads(
    module: torch.nn.Module,
    loss_fn,
    X: torch.Tensor,
    y: torch.Tensor,
    batches: list[np.ndarray],
    names: list[str] | None = None,
    params: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """One row per batch: the gradient of the batch's mean loss ``loss_fn(out, y) -> (b,)``."""
    names, diff, const, buffers, dtype = _split_params(module, names, params)
    X = torch.as_tensor(X).to(dtype)
    y = torch.as_tensor(y).to(dtype)

    def mean_loss(dparams, xb, yb):
        out = _scalar_out(functional_call(module, ({**const, **dparams}, buffers), (xb,)))
        return loss_fn(out, yb).mean()

    g_fn = grad(mean_loss)
    rows = []
    for b in batches:
        g = g_fn(diff, X[b], y[b])
        rows.append(torch.cat([g[n].reshape(-1) for n in names]))
    return torch.stack(rows) if rows else torch.zeros(0, n_coords(module, names), dtype=dtype)


def bce_derivatives(out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First and second derivative of ``BCEWithLogits(f, y)`` in ``f``: ``σ(f) − y`` and ``σ(f)(1 − σ(f))``."""
    p = torch.sigmoid(out)
    return p - y.to(p.dtype), p * (1 - p)
