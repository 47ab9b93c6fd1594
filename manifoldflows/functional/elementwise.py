"""Elementwise bijections ``R -> interval`` and their log-derivatives.

Each kernel returns ``(y, logabsdet)`` where ``logabsdet`` is elementwise (same shape as the
input); callers sum over event dimensions. Written once here and reused by the elementwise layers
and by :class:`~manifoldflows.spaces.Interval`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "sigmoid",
    "logit",
    "tanh",
    "atanh",
    "softplus",
    "softplus_inverse",
    "exp",
    "log",
    "real_to_interval",
    "interval_to_real",
]


def sigmoid(x: Tensor) -> tuple[Tensor, Tensor]:
    """``y = 1 / (1 + exp(-x))``; ``log y' = -softplus(-x) - softplus(x)``."""
    return torch.sigmoid(x), -F.softplus(-x) - F.softplus(x)


def _clamp_open_unit(y: Tensor) -> Tensor:
    """Clamp into the open interval (0, 1) at the dtype's resolution."""
    eps = torch.finfo(y.dtype).eps
    return y.clamp(eps, 1.0 - eps)


def logit(y: Tensor) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`sigmoid`; values at exactly 0 or 1 are moved in by one ulp-scale eps."""
    y = _clamp_open_unit(y)
    return torch.log(y) - torch.log1p(-y), -torch.log(y) - torch.log1p(-y)


def tanh(x: Tensor) -> tuple[Tensor, Tensor]:
    """``y = tanh x``; ``log y' = 2 (log 2 - x - softplus(-2x))`` (stable for all x)."""
    return torch.tanh(x), 2.0 * (math.log(2.0) - x - F.softplus(-2.0 * x))


def atanh(y: Tensor) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`tanh`; ``|y| = 1`` is moved in by eps."""
    eps = torch.finfo(y.dtype).eps
    y = y.clamp(-1.0 + eps, 1.0 - eps)
    return torch.atanh(y), -torch.log1p(-y) - torch.log1p(y)


def softplus(x: Tensor) -> tuple[Tensor, Tensor]:
    """``y = log(1 + e^x)``; ``log y' = log sigmoid(x) = -softplus(-x)``."""
    return F.softplus(x), -F.softplus(-x)


def softplus_inverse(y: Tensor) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`softplus`: ``x = y + log(-expm1(-y))`` for ``y > 0``."""
    y = y.clamp_min(torch.finfo(y.dtype).tiny)
    x = y + torch.log(-torch.expm1(-y))
    return x, F.softplus(-x)


def exp(x: Tensor) -> tuple[Tensor, Tensor]:
    """``y = e^x``; ``log y' = x``."""
    return torch.exp(x), x


def log(y: Tensor) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`exp` for ``y > 0``."""
    x = torch.log(y.clamp_min(torch.finfo(y.dtype).tiny))
    return x, -x


def real_to_interval(x: Tensor, low: float, high: float) -> tuple[Tensor, Tensor]:
    """Map ``R`` onto ``(low, high)`` elementwise.

    A scaled sigmoid for a bounded interval, ``low + e^x`` / ``high - e^(-x)`` for a half-line
    and the identity for the whole line.
    """
    if math.isfinite(low) and math.isfinite(high):
        s, ld = sigmoid(x)
        return low + (high - low) * s, ld + math.log(high - low)
    if math.isfinite(low):
        y, ld = exp(x)
        return low + y, ld
    if math.isfinite(high):
        y, ld = exp(-x)
        return high - y, ld
    return x, torch.zeros_like(x)


def interval_to_real(y: Tensor, low: float, high: float) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`real_to_interval`."""
    if math.isfinite(low) and math.isfinite(high):
        x, ld = logit((y - low) / (high - low))
        return x, ld - math.log(high - low)
    if math.isfinite(low):
        return log(y - low)
    if math.isfinite(high):
        x, ld = log(high - y)
        return -x, ld
    return y, torch.zeros_like(y)
