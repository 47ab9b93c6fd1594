"""Image-shaped flat space: ``Image(channels, height, width)``, i.e. ``R^(C x H x W)``."""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import positive_int
from .base import Space

__all__ = ["Image"]


class Image(Space):
    """The flat space ``R^(C x H x W)`` of images, with the Lebesgue measure.

    A point is a tensor of shape ``(..., C, H, W)`` (channels first, as in ``torch.nn.Conv2d``);
    the intrinsic dimension is ``C * H * W`` and the tangent basis is the identity, so densities
    and logdets on it are the usual Euclidean ones on the flattened coordinates. ``Image`` is a
    different space from ``Euclidean(C * H * W)`` (same set, different coordinates/shape): go
    between them with a reshape.

    Arguments:
        channels: number of channels ``C``.
        height: number of rows ``H``.
        width: number of columns ``W``.

    Example:
        >>> space = Image(3, 4, 4)
        >>> space.random((2,)).shape, space.dim
        (torch.Size([2, 3, 4, 4]), 48)
        >>> space == Image(3, 4, 4), space == Image(4, 4, 3)
        (True, False)
    """

    def __init__(self, channels: int, height: int, width: int):
        self.channels = positive_int(channels, "number of channels", "Image")
        self.height = positive_int(height, "height", "Image")
        self.width = positive_int(width, "width", "Image")
        self.event_shape = (self.channels, self.height, self.width)
        self.dim = self.channels * self.height * self.width

    def __repr__(self) -> str:
        return f"Image({self.channels}, {self.height}, {self.width})"

    def random(
        self,
        shape: tuple[int, ...] | torch.Size = (),
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        return torch.randn(
            *shape, *self.event_shape, dtype=dtype, device=device, generator=generator
        )

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        return x + u

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        return y - x

    def dist(self, x: Tensor, y: Tensor) -> Tensor:
        return torch.linalg.vector_norm((y - x).flatten(-3), dim=-1)

    def expmap_log_volume(self, x: Tensor, u: Tensor) -> Tensor:
        return torch.zeros(u.shape[:-3], dtype=u.dtype, device=u.device)
