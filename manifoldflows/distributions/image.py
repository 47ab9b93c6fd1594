"""The standard normal distribution on image-shaped spaces ``Image(C, H, W)``."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..spaces.image import Image
from .base import Distribution

__all__ = ["ImageStandardNormal"]

LOG_2PI = math.log(2.0 * math.pi)


class ImageStandardNormal(Distribution):
    """``N(0, I)`` on ``Image(C, H, W) = R^(C x H x W)``: every pixel and channel i.i.d.

    ``log p(x) = -|x|^2 / 2 - (C H W / 2) log(2 pi)``, summed over the last three dimensions.
    This is the base distribution of :func:`~manifoldflows.presets.Glow`.

    Arguments:
        channels, height, width: the image shape ``(C, H, W)``.

    Example:
        >>> base = ImageStandardNormal(1, 2, 2)
        >>> x, log_p = base.sample_and_log_prob((3,))
        >>> x.shape, log_p.shape
        (torch.Size([3, 1, 2, 2]), torch.Size([3]))
        >>> round(base.log_prob(torch.zeros(1, 2, 2)).item(), 4)  # -2 log(2 pi)
        -3.6758
    """

    def __init__(self, channels: int, height: int, width: int):
        super().__init__(Image(channels, height, width))
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def extra_repr(self) -> str:
        return repr(self.space)

    def _rsample(
        self,
        shape: tuple[int, ...],
        context: Tensor | None,
        generator: torch.Generator | None,
    ) -> Tensor:
        a = self._anchor
        return torch.randn(
            *shape, *self.space.event_shape, dtype=a.dtype, device=a.device, generator=generator
        )

    def _log_prob(self, x: Tensor, context: Tensor | None) -> Tensor:
        return -0.5 * (x * x).flatten(-3).sum(-1) - 0.5 * self.space.dim * LOG_2PI
