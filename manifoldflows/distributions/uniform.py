"""The uniform distribution on any compact space."""

from __future__ import annotations

import torch
from torch import Tensor

from ..spaces import Interval, Space
from .base import Distribution

__all__ = ["Uniform"]


class Uniform(Distribution):
    """Uniform distribution on a compact space (a box, and later circles, tori, spheres, SO(3)).

    Arguments:
        space: a compact :class:`~manifoldflows.spaces.Space`, or ``low`` when ``high`` and
            ``dim`` follow (shorthand for ``Uniform(Interval(low, high, dim))``).

    Example:
        >>> u = Uniform(0.0, 2.0, 3)
        >>> round(float(u.log_prob(torch.ones(3))), 6)  # -3 log 2
        -2.079442
    """

    def __init__(self, space: Space | float, high: float | None = None, dim: int = 1):
        if not isinstance(space, Space):
            if high is None:
                raise ValueError("Uniform: give a compact space or (low, high, dim)")
            space = Interval(float(space), float(high), dim)
        if not space.is_compact:
            raise ValueError(f"Uniform: {space!r} is not compact, it has no uniform distribution")
        super().__init__(space)
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
        return self.space.random_uniform(shape, dtype=a.dtype, device=a.device, generator=generator)

    def _log_prob(self, x: Tensor, context: Tensor | None) -> Tensor:
        return self.space.uniform_log_prob(x)
