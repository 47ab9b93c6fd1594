"""Gaussian base distributions on ``R^d``."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..nn.conditioner import Conditioner
from ..spaces import Euclidean
from .base import Distribution

__all__ = ["StandardNormal", "DiagNormal", "GaussianMixture"]

LOG_2PI = math.log(2.0 * math.pi)


def diag_normal_log_prob(x: Tensor, loc: Tensor, log_scale: Tensor) -> Tensor:
    """Log-density of ``N(loc, diag(exp(log_scale))^2)`` summed over the last dimension."""
    z = (x - loc) * torch.exp(-log_scale)
    return -0.5 * (z * z).sum(-1) - log_scale.sum(-1) - 0.5 * x.shape[-1] * LOG_2PI


class StandardNormal(Distribution):
    """``N(0, I)`` on ``R^d``.

    Example:
        >>> base = StandardNormal(2)
        >>> x, log_p = base.sample_and_log_prob((3,))
        >>> x.shape, log_p.shape
        (torch.Size([3, 2]), torch.Size([3]))
    """

    def __init__(self, dim: int):
        super().__init__(Euclidean(dim))
        self.features = dim
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def extra_repr(self) -> str:
        return f"dim={self.features}"

    def _rsample(
        self, shape: tuple[int, ...], context: Tensor | None, generator: torch.Generator | None
    ) -> Tensor:
        a = self._anchor
        return torch.randn(
            *shape, self.features, dtype=a.dtype, device=a.device, generator=generator
        )

    def _log_prob(self, x: Tensor, context: Tensor | None) -> Tensor:
        return -0.5 * (x * x).sum(-1) - 0.5 * self.features * LOG_2PI


class DiagNormal(Distribution):
    """Gaussian with learnable mean and diagonal scale, optionally conditional.

    With ``context_dim`` set, a :class:`~manifoldflows.nn.conditioner.Conditioner` maps the
    context to offsets of the mean and log-scale
    (zero-initialised, so training starts from the unconditional parameters).

    Arguments:
        dim: dimension ``d``.
        loc, scale: initial mean and standard deviation (scalars or ``(d,)`` tensors).
        learnable: whether ``loc`` and ``scale`` are parameters (else buffers).
        context_dim: context size for a conditional Gaussian.
        hidden: hidden sizes of the context network.

    Example:
        >>> q = DiagNormal(2, loc=1.0, scale=2.0)
        >>> round(q.log_prob(torch.ones(2)).item(), 4)
        -3.2242
    """

    def __init__(
        self,
        dim: int,
        loc: float | Tensor = 0.0,
        scale: float | Tensor = 1.0,
        *,
        learnable: bool = True,
        context_dim: int | None = None,
        hidden: tuple[int, ...] = (64,),
    ):
        super().__init__(Euclidean(dim), context_dim=context_dim)
        self.features = dim
        loc = torch.as_tensor(loc, dtype=torch.get_default_dtype()).expand(dim).clone()
        scale = torch.as_tensor(scale, dtype=torch.get_default_dtype()).expand(dim).clone()
        if not bool((scale > 0).all()):
            raise ValueError(f"DiagNormal: expected positive scales, got {scale.tolist()}")
        if learnable:
            self.loc = nn.Parameter(loc)
            self.log_scale = nn.Parameter(scale.log())
        else:
            self.register_buffer("loc", loc)
            self.register_buffer("log_scale", scale.log())
        shapes = {"loc": (dim,), "log_scale": (dim,)}
        self.context_offsets = (
            None
            if context_dim is None
            else Conditioner(0, shapes, context_dim=context_dim, hidden=hidden)
        )

    def extra_repr(self) -> str:
        return f"dim={self.features}"

    def parameters_for(self, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """Mean and log-scale, with the context's batch shape when conditional."""
        if self.context_offsets is None or context is None:
            return self.loc, self.log_scale
        offset = self.context_offsets(None, context)
        return self.loc + offset["loc"], self.log_scale + offset["log_scale"]

    def _rsample(
        self, shape: tuple[int, ...], context: Tensor | None, generator: torch.Generator | None
    ) -> Tensor:
        loc, log_scale = self.parameters_for(context)
        eps = torch.randn(
            *shape, self.features, dtype=loc.dtype, device=loc.device, generator=generator
        )
        return loc + torch.exp(log_scale) * eps

    def _log_prob(self, x: Tensor, context: Tensor | None) -> Tensor:
        loc, log_scale = self.parameters_for(context)
        return diag_normal_log_prob(x, loc, log_scale)


class GaussianMixture(Distribution):
    """Mixture of ``K`` diagonal Gaussians on ``R^d`` with learnable weights, means, scales.

    ``rsample`` is differentiable with respect to means and scales (not the weights: component
    choice is discrete).

    Arguments:
        dim: dimension ``d``.
        components: number ``K`` of components, or omitted when ``loc`` is given.
        loc: ``(K, d)`` initial means (default: standard normal draws).
        scale: initial standard deviation(s), broadcastable to ``(K, d)``.
        weights: ``(K,)`` initial mixture weights (default: uniform).
        learnable: whether the parameters are learnable.

    Example:
        >>> mix = GaussianMixture(1, loc=torch.tensor([[-2.0], [2.0]]), scale=0.5)
        >>> mix.sample((1000,)).shape
        torch.Size([1000, 1])
    """

    def __init__(
        self,
        dim: int,
        components: int | None = None,
        *,
        loc: Tensor | None = None,
        scale: float | Tensor = 1.0,
        weights: Tensor | None = None,
        learnable: bool = True,
    ):
        super().__init__(Euclidean(dim))
        dtype = torch.get_default_dtype()
        if loc is None:
            if components is None:
                raise ValueError("GaussianMixture: give the number of components or their means")
            loc = torch.randn(components, dim, dtype=dtype)
        loc = torch.as_tensor(loc, dtype=dtype)
        if loc.shape[-1] != dim or loc.dim() != 2:
            raise ValueError(
                f"GaussianMixture: expected loc of shape (K, {dim}), got {tuple(loc.shape)}"
            )
        k = loc.shape[0]
        scale = torch.as_tensor(scale, dtype=dtype).expand(k, dim).clone()
        weights = (
            torch.full((k,), 1.0 / k, dtype=dtype)
            if weights is None
            else torch.as_tensor(weights, dtype=dtype)
        )
        if weights.shape != (k,) or not bool((weights > 0).all()):
            raise ValueError(
                f"GaussianMixture: expected {k} positive weights, got {weights.tolist()}"
            )
        tensors = {"loc": loc.clone(), "log_scale": scale.log(), "logits": weights.log()}
        for name, value in tensors.items():
            if learnable:
                setattr(self, name, nn.Parameter(value))
            else:
                self.register_buffer(name, value)
        self.features, self.components = dim, k

    def extra_repr(self) -> str:
        return f"dim={self.features}, components={self.components}"

    def _log_prob(self, x: Tensor, context: Tensor | None) -> Tensor:
        log_w = torch.log_softmax(self.logits, -1)
        comp = diag_normal_log_prob(x.unsqueeze(-2), self.loc, self.log_scale)
        return torch.logsumexp(comp + log_w, dim=-1)

    def _rsample(
        self, shape: tuple[int, ...], context: Tensor | None, generator: torch.Generator | None
    ) -> Tensor:
        n = math.prod(shape)
        probs = torch.softmax(self.logits, -1)
        idx = torch.multinomial(probs.detach(), n, replacement=True, generator=generator)
        eps = torch.randn(
            n, self.features, dtype=self.loc.dtype, device=self.loc.device, generator=generator
        )
        x = self.loc[idx] + torch.exp(self.log_scale[idx]) * eps
        return x.reshape(*shape, self.features)
