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


def soft_clamp(x: Tensor, bound: float) -> Tensor:
    """Smoothly squash ``x`` into ``(-bound, bound)``: ``bound * tanh(x / bound)``."""
    return bound * torch.tanh(x / bound)
