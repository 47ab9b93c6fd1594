"""Elementwise affine maps ``y = x * exp(log_scale) + shift``."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["affine", "affine_inverse", "soft_clamp"]


def affine(x: Tensor, shift: Tensor, log_scale: Tensor) -> tuple[Tensor, Tensor]:
    """``y = x e^s + t`` with elementwise ``log|dy/dx| = s``.

    Example:
        >>> y, ld = affine(torch.tensor([1.0]), torch.tensor([2.0]), torch.tensor([0.0]))
        >>> y.item(), ld.item()
        (3.0, 0.0)
    """
    y = torch.addcmul(shift, x, torch.exp(log_scale))
    return y, log_scale.expand(y.shape)


def affine_inverse(y: Tensor, shift: Tensor, log_scale: Tensor) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`affine`: ``x = (y - t) e^(-s)``, ``log|dx/dy| = -s``."""
    x = (y - shift) * torch.exp(-log_scale)
    return x, (-log_scale).expand(x.shape)


class _SoftClamp(torch.autograd.Function):
    """``x / (1 + c |x|)`` keeping only ``x`` for the backward pass.

    Autograd would keep the denominator too (one extra tensor per call: spline layers call
    this three times per layer); ``x`` is usually the conditioner's output, alive anyway, and
    the derivative ``1 / (1 + c |x|)^2`` is recomputed from it. The backward is written with
    differentiable operations, so double backward (``create_graph=True``) still works.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor, scale: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.scale = scale
        return x / x.abs().mul_(scale).add_(1.0)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:
        (x,) = ctx.saved_tensors
        denominator = 1.0 + ctx.scale * x.abs()
        return grad / (denominator * denominator), None


#: From this many elements on, saving the denominator for backward costs more (memory) than the
#: Python overhead of the custom function; below it plain autograd is faster.
_LARGE = 1 << 16


def soft_clamp(x: Tensor, bound: float) -> Tensor:
    """Smoothly squash ``x`` into ``(-bound, bound)``: ``x / (1 + |x| / bound)``.

    Odd, increasing, slope 1 at 0 and saturating at ``+-bound``. (A softsign rather than
    ``bound * tanh(x / bound)``: same shape near 0, and about five times cheaper on CPU, which
    matters because every affine and spline layer evaluates it.) Under autograd, for large
    tensors only ``x`` is kept for the backward pass.

    Example:
        >>> soft_clamp(torch.tensor([0.0, 1.0, 1e6]), 5.0)
        tensor([0.0000, 0.8333, 5.0000])
        >>> x = torch.randn(1 << 16, dtype=torch.float64, requires_grad=True)
        >>> g = torch.autograd.grad(soft_clamp(x, 2.0).sum(), x)[0]
        >>> torch.allclose(g, 1 / (1 + x.detach().abs() / 2) ** 2)
        True
    """
    if torch.is_grad_enabled() and x.requires_grad and x.numel() >= _LARGE:
        return _SoftClamp.apply(x, 1.0 / bound)
    # ``1 + |x| / bound`` is a fresh temporary, so it is built in place
    return x / x.abs().mul_(1.0 / bound).add_(1.0)
