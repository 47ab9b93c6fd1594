"""Independent distributions on the factors of a product space."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..spaces import Product
from .base import Distribution

__all__ = ["ProductDistribution"]


class ProductDistribution(Distribution):
    """``p(x_1, ..., x_k) = p_1(x_1) ... p_k(x_k)`` on ``Product(S_1, ..., S_k)``.

    The density is taken w.r.t. the product of the factors' Riemannian volumes (the product
    space's volume), so it is the sum of the factors' log-densities. Presets use it as the base
    of flows on product spaces: normal on lines, uniform on intervals and tori.

    Arguments:
        factors: one distribution per factor (unconditional, or all with the same
            ``context_dim``).

    Example:
        >>> import math
        >>> from manifoldflows.distributions import StandardNormal, Uniform
        >>> from manifoldflows.spaces import Torus
        >>> p = ProductDistribution([StandardNormal(2), Uniform(Torus(1))])
        >>> p.space
        Product(Euclidean(2), Torus(1))
        >>> x, log_p = p.sample_and_log_prob((4,))
        >>> torch.allclose(log_p, p.log_prob(x)), x.shape
        (True, torch.Size([4, 3]))
    """

    def __init__(self, factors: Sequence[Distribution]):
        factors = list(factors)
        if not factors or not all(isinstance(f, Distribution) for f in factors):
            raise ValueError("ProductDistribution: expected a non-empty list of distributions")
        dims = {f.context_dim for f in factors} - {None}
        if len(dims) > 1:
            raise ValueError(
                f"ProductDistribution: factors expect different context sizes {sorted(dims)}"
            )
        super().__init__(
            Product(*(f.space for f in factors)), context_dim=dims.pop() if dims else None
        )
        self.factors = nn.ModuleList(factors)

    def _context(self, factor: Distribution, context: Tensor | None) -> Tensor | None:
        return context if factor.context_dim is not None else None

    def _rsample(
        self, shape: tuple[int, ...], context: Tensor | None, generator: torch.Generator | None
    ) -> Tensor:
        parts = [f._rsample(shape, self._context(f, context), generator) for f in self.factors]
        return torch.cat(parts, dim=-1)

    def _log_prob(self, x: Tensor, context: Tensor | None) -> Tensor:
        parts = self.space.split(x)
        return sum(f._log_prob(p, self._context(f, context)) for f, p in zip(self.factors, parts))

    def _sample_and_log_prob(
        self, shape: tuple[int, ...], context: Tensor | None, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        xs, total = [], None
        for f in self.factors:
            x, log_p = f._sample_and_log_prob(shape, self._context(f, context), generator)
            xs.append(x)
            total = log_p if total is None else total + log_p
        return torch.cat(xs, dim=-1), total
