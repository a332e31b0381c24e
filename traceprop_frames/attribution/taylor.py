"""Truncated Taylor polynomials of tensors: forward-mode derivatives of every order in one pass.

A :class:`Jet` is ``a₀ + a₁ z + … + a_d z^d`` (mod ``z^{d+1}``): ``a₀`` is a real tensor of shape ``S``
(the ordinary value), ``a_k`` for ``k ≥ 1`` are complex tensors of shape ``(m, *S)`` — the ``k``-th
Taylor coefficient (``k``-th derivative / ``k!``) along each of ``m`` directions at once. The constant
term is shared by all directions, so a computation carried in jets costs one plain run plus
``O(d²)`` work per direction, instead of one nested ``jvp`` per order (``2^d`` dual components).

Operations follow the usual recurrences of power-series arithmetic (products by Cauchy convolution,
``1/b``, ``√a`` and ``σ(a)`` by their coefficient recurrences); ``relu`` is piecewise linear and takes
its mask from the constant term, so the series is exact only while no pre-activation crosses zero.

Examples
--------
>>> import torch
>>> x = Jet([torch.tensor(2.0), torch.ones(1, dtype=torch.complex128)])   # 2 + z
>>> y = sqrt(x * x)                                                       # = 2 + z
>>> [complex(c.reshape(-1)[0]).real for c in y.coeffs]
[2.0, 1.0]
"""

from __future__ import annotations

import torch


class Jet:
    """``coeffs[0]`` real of shape ``S``; ``coeffs[k]`` complex of shape ``(m, *S)`` (broadcastable)."""

    __slots__ = ("coeffs",)

    def __init__(self, coeffs: list[torch.Tensor]) -> None:
        self.coeffs = list(coeffs)

    @property
    def degree(self) -> int:
        return len(self.coeffs) - 1

    @property
    def value(self) -> torch.Tensor:
        return self.coeffs[0]

    def __add__(self, other):
        return add(self, other)

    __radd__ = __add__

    def __sub__(self, other):
        return add(self, neg(other))

    def __rsub__(self, other):
        return add(neg(self), other)

    def __mul__(self, other):
        return mul(self, other)

    __rmul__ = __mul__

    def __neg__(self):
        return neg(self)

    def __getitem__(self, idx):
        """Index the value's dimensions (``idx`` applies after the direction axis of higher terms)."""
        idx = idx if isinstance(idx, tuple) else (idx,)
        return Jet([self.coeffs[0][idx]] + [c[(slice(None), *idx)] for c in self.coeffs[1:]])

    def map(self, fn0, fnk=None) -> Jet:
        """Apply a linear map to every coefficient (``fnk`` for the higher ones; default ``fn0``)."""
        fnk = fnk or fn0
        return Jet([fn0(self.coeffs[0])] + [fnk(c) for c in self.coeffs[1:]])


def _c(t: torch.Tensor) -> torch.Tensor:
    return t if t.is_complex() else t.to(torch.complex128 if t.dtype == torch.float64 else torch.complex64)


def neg(a):
    return a.map(torch.neg) if isinstance(a, Jet) else -a


def _lift(a: Jet, b) -> Jet:
    """``a`` with its direction axis moved in front of the broadcast dimensions of a higher-rank ``b``."""
    r = (b.dim() if isinstance(b, torch.Tensor) else 0) - a.coeffs[0].dim()
    if r <= 0:
        return a
    return Jet([a.coeffs[0]] + [c.reshape(c.shape[0], *([1] * r), *c.shape[1:]) for c in a.coeffs[1:]])


def _align(a: Jet, b: Jet) -> tuple[list, list]:
    """Coefficient lists whose direction axis lines up when the values have different ranks."""
    ra, rb = a.coeffs[0].dim(), b.coeffs[0].dim()

    def lift(cs, r):
        return [cs[0]] + [c.reshape(c.shape[0], *([1] * r), *c.shape[1:]) for c in cs[1:]]

    if ra < rb:
        return lift(a.coeffs, rb - ra), b.coeffs
    if rb < ra:
        return a.coeffs, lift(b.coeffs, ra - rb)
    return a.coeffs, b.coeffs


def add(a, b):
    """Sum; plain tensors and numbers act as constants (two plain operands give a plain result)."""
    if not isinstance(a, Jet) and not isinstance(b, Jet):
        return a + b
    if not isinstance(a, Jet):
        a, b = b, a
    if not isinstance(b, Jet):
        a = _lift(a, b)
        return Jet([a.coeffs[0] + b] + a.coeffs[1:])
    ca, cb = _align(a, b)
    return Jet([x + y for x, y in zip(ca, cb)])


def _conv(a: list, b: list, op) -> list:
    """Cauchy product of two coefficient lists under the bilinear ``op`` (``*`` or ``@``)."""
    d = len(a) - 1
    out = [op(a[0], b[0])]
    for k in range(1, d + 1):
        s = op(a[0], b[k]) + op(a[k], b[0])
        for j in range(1, k):
            s = s + op(a[j], b[k - j])
        out.append(s)
    return out


def mul(a, b):
    """Elementwise product (either factor may be a plain tensor or number)."""
    if not isinstance(a, Jet) and not isinstance(b, Jet):
        return a * b
    if not isinstance(a, Jet):
        a, b = b, a
    if not isinstance(b, Jet):
        return _lift(a, b).map(lambda c: c * b)
    return Jet(_conv(*_align(a, b), torch.mul))


def _mm(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x @ y`` where either side may be complex; a real 2-D side is folded into one real GEMM."""
    if not x.is_complex() and not y.is_complex():
        return x @ y
    if not x.is_complex() and x.dim() == 2:  # (p, q) @ (..., q, r): one (p, q) @ (q, ... r 2) product
        yr = torch.view_as_real(y)
        lead, q, r = yr.shape[:-3], yr.shape[-3], yr.shape[-2]
        z = x @ yr.movedim(-3, 0).reshape(q, -1)
        return torch.view_as_complex(z.reshape(x.shape[0], *lead, r, 2).movedim(0, -3).contiguous())
    if not y.is_complex() and y.dim() == 2:  # (..., p, q) @ (q, r)
        xr = torch.view_as_real(x)  # (..., p, q, 2)
        z = xr.transpose(-1, -2) @ y  # (..., p, 2, r)
        return torch.view_as_complex(z.transpose(-1, -2).contiguous())
    return _c(x) @ _c(y)  # (real-view products take a slow strided path; native complex is fast)


def matmul(a, b):
    """Matrix product; a constant side is applied to every coefficient."""
    if not isinstance(a, Jet) and not isinstance(b, Jet):
        return a @ b
    if not isinstance(a, Jet):
        return b.map(lambda c: _mm(a, c))
    if not isinstance(b, Jet):
        return a.map(lambda c: _mm(c, b))
    return Jet(_conv(a.coeffs, b.coeffs, _mm))


def reciprocal(b):
    """``1/b`` by ``r_k = −(Σ_{j=1..k} b_j r_{k−j}) / b₀``."""
    if not isinstance(b, Jet):
        return 1.0 / b
    inv0 = 1.0 / b.coeffs[0]
    out = [inv0]
    for k in range(1, b.degree + 1):
        s = b.coeffs[1] * out[k - 1]
        for j in range(2, k + 1):
            s = s + b.coeffs[j] * out[k - j]
        out.append(-s * inv0)
    return Jet(out)


def sqrt(a):
    """``√a`` (``a₀ > 0``) by ``y_k = (a_k − Σ_{j=1..k−1} y_j y_{k−j}) / (2 y₀)``."""
    if not isinstance(a, Jet):
        return torch.sqrt(a)
    y0 = torch.sqrt(a.coeffs[0])
    half = 0.5 / y0
    out = [y0]
    for k in range(1, a.degree + 1):
        s = a.coeffs[k]
        for j in range(1, k):
            s = s - out[j] * out[k - j]
        out.append(s * half)
    return Jet(out)


def sigmoid(a) -> Jet:
    """``σ(a)`` from ``σ' = σ(1−σ)``: ``k y_k = Σ_{j=1..k} j a_j g_{k−j}`` with ``g = y − y²``."""
    if not isinstance(a, Jet):
        return torch.sigmoid(a)
    y = [torch.sigmoid(a.coeffs[0])]
    g = [y[0] * (1 - y[0])]
    for k in range(1, a.degree + 1):
        s = a.coeffs[1] * g[k - 1]
        for j in range(2, k + 1):
            s = s + j * a.coeffs[j] * g[k - j]
        y.append(s / k)
        yy = 2 * y[0] * y[k]  # (y²)_k
        for j in range(1, k):
            yy = yy + y[j] * y[k - j]
        g.append(y[k] - yy)
    return Jet(y)


def tanh(a):
    """``tanh(a) = 2σ(2a) − 1``."""
    if not isinstance(a, Jet):
        return torch.tanh(a)
    return add(mul(sigmoid(mul(a, 2.0)), 2.0), -1.0)


def softplus(a):
    """``log(1 + eᵃ)`` from ``y' = σ(a) a'``: ``k y_k = Σ_{j=1..k} j a_j s_{k−j}`` with ``s = σ(a)``."""
    if not isinstance(a, Jet):
        return torch.nn.functional.softplus(a)
    s = sigmoid(a).coeffs
    y = [torch.nn.functional.softplus(a.coeffs[0])]
    for k in range(1, a.degree + 1):
        t = a.coeffs[1] * s[k - 1]
        for j in range(2, k + 1):
            t = t + j * a.coeffs[j] * s[k - j]
        y.append(t / k)
    return Jet(y)


def relu(a):
    """``max(a, 0)`` with the mask of the constant term (one-sided: exact while no sign flips)."""
    if not isinstance(a, Jet):
        return torch.relu(a)
    mask = a.coeffs[0] > 0
    return a.map(lambda c: c * mask)


def sum_(a, dim=None):
    """Sum over value dimensions ``dim`` (of the value's shape), or all of them."""
    if not isinstance(a, Jet):
        return a.sum() if dim is None else a.sum(dim)
    if dim is None:
        return Jet([a.coeffs[0].sum()] + [c.reshape(c.shape[0], -1).sum(1) for c in a.coeffs[1:]])
    dk = dim + 1 if dim >= 0 else dim
    return Jet([a.coeffs[0].sum(dim)] + [c.sum(dk) for c in a.coeffs[1:]])


def transpose(a):
    return a.map(lambda c: c.transpose(-1, -2)) if isinstance(a, Jet) else a.transpose(-1, -2)
