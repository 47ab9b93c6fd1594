"""Finite mixtures of distributions on one space."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .base import Distribution

__all__ = ["Mixture"]


class Mixture(Distribution):
    """Finite mixture ``p(x) = sum_k w_k p_k(x)`` of distributions on one space.

    ``log_prob`` is a log-sum-exp of the components' log-densities plus ``log_softmax`` of the
    mixture logits; sampling draws a component index per sample (categorical, with the given
    generator) and takes that component's sample. ``rsample`` is differentiable with respect
    to the components' parameters, not the weights (the choice is discrete). The context is
    handed to every component; conditional components must share one ``context_dim``.

    Arguments:
        components: the component distributions (all on the same space).
        weights: ``(K,)`` positive mixture weights (normalised; default uniform).
        learnable: whether the weights are trainable.

    References:
        McLachlan and Peel, "Finite Mixture Models", Wiley (2000).

    Example:
        >>> from manifoldflows.distributions import VonMisesFisher
        >>> north, south = torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.0, 0.0, -1.0])
        >>> mix = Mixture([VonMisesFisher(2, north, 5.0), VonMisesFisher(2, south, 5.0)])
        >>> mix.sample((4,), generator=torch.Generator().manual_seed(0)).shape
        torch.Size([4, 3])
    """

    def __init__(
        self,
        components: Sequence[Distribution],
        weights: Tensor | Sequence[float] | None = None,
        learnable: bool = True,
    ):
        components = list(components)
        if not components or not all(isinstance(c, Distribution) for c in components):
            raise ValueError(
                "Mixture: expected a non-empty sequence of Distribution objects, got "
                f"{[type(c).__name__ for c in components]}"
            )
        space = components[0].space
        for c in components[1:]:
            if c.space != space:
                raise ValueError(
                    f"Mixture: every component must live on {space!r}, got {c.space!r} ({c.name})"
                )
        dims = {c.context_dim for c in components if c.context_dim is not None}
        if len(dims) > 1:
            raise ValueError(f"Mixture: components have different context_dim {sorted(dims)}")
        super().__init__(space, context_dim=dims.pop() if dims else None)
        k = len(components)
        dtype = torch.get_default_dtype()
        w = (
            torch.full((k,), 1.0 / k, dtype=dtype)
            if weights is None
            else torch.as_tensor(weights, dtype=dtype).clone()
        )
        if w.shape != (k,) or not bool(torch.isfinite(w).all()) or not bool((w > 0).all()):
            raise ValueError(f"Mixture: expected {k} positive finite weights, got {w.tolist()}")
        self.components = nn.ModuleList(components)
        logits = (w / w.sum()).log()
        if learnable:
            self.logits = nn.Parameter(logits)
        else:
            self.register_buffer("logits", logits)

    def extra_repr(self) -> str:
        return f"{self.space!r}, components={len(self.components)}"

    @property
    def weights(self) -> Tensor:
        """Normalised mixture weights ``(K,)``."""
        return torch.softmax(self.logits, -1)

    def _log_prob(self, x: Tensor, context: Tensor | None) -> Tensor:
        parts = [c._log_prob(x, context) for c in self.components]
        batch = torch.broadcast_shapes(*(p.shape for p in parts))
        stacked = torch.stack([p.expand(batch) for p in parts], -1)
        return torch.logsumexp(stacked + torch.log_softmax(self.logits, -1), -1)

    def _rsample(
        self,
        shape: tuple[int, ...],
        context: Tensor | None,
        generator: torch.Generator | None,
    ) -> Tensor:
        samples = torch.stack([c._rsample(shape, context, generator) for c in self.components])
        n = math.prod(shape)
        probs = torch.softmax(self.logits.detach(), -1)
        idx = torch.multinomial(probs, max(n, 1), replacement=True, generator=generator)[:n]
        idx = idx.reshape(1, *shape, *([1] * self.space.event_ndim))
        idx = idx.expand(1, *shape, *self.space.event_shape)
        return samples.gather(0, idx)[0]
