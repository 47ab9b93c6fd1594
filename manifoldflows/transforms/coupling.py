"""Coupling layers: half the coordinates parameterise a monotone map of the other half.

``y_A = x_A``, ``y_B = tau(x_B; theta(x_A, context))``. The Jacobian is triangular, so the
logdet is the sum of the elementwise log-derivatives of ``tau``, and the inverse costs one
conditioner pass. (Dinh et al. 2014, NICE, arXiv:1410.8516; Dinh et al. 2016, RealNVP,
arXiv:1605.08803; Durkan et al. 2019, Neural Spline Flows, arXiv:1906.04032.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..core import Transform
from ..nn.mlp import MLP, concat_context
from ..spaces import Euclidean
from .monotone import AdditiveMap, AffineMap, MonotoneMap, SplineMap

__all__ = ["Coupling", "AdditiveCoupling", "AffineCoupling", "SplineCoupling"]


class Coupling(Transform):
    """Generic coupling layer on ``R^d`` with any :class:`~.monotone.MonotoneMap`.

    The first ``split`` coordinates (or the last ``d - split`` with ``swap=True``) pass through
    unchanged and, together with the context, feed an MLP that outputs the parameters of the
    monotone map applied to the remaining coordinates. The last linear layer is initialised to
    zero, so a new layer is the identity.

    Arguments:
        features: dimension ``d`` (at least 2).
        monotone_map: the elementwise map applied to the transformed half.
        context_dim: context size (``None`` for an unconditional layer).
        hidden: hidden layer sizes of the conditioner MLP.
        activation: activation of the conditioner.
        split: number of coordinates in the first block (default ``d // 2``).
        swap: transform the first block instead of the second.

    Example:
        >>> from manifoldflows.transforms.monotone import AffineMap
        >>> layer = Coupling(3, AffineMap(), hidden=(8,))
        >>> x = torch.randn(4, 3)
        >>> y, logdet = layer(x)
        >>> torch.equal(y[:, :1], x[:, :1])
        True
    """

    def __init__(
        self,
        features: int,
        monotone_map: MonotoneMap,
        *,
        context_dim: int | None = None,
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
        split: int | None = None,
        swap: bool = False,
    ):
        if features < 2:
            raise ValueError(f"{type(self).__name__}: needs at least 2 features, got {features}")
        split = features // 2 if split is None else int(split)
        if not 0 < split < features:
            raise ValueError(
                f"{type(self).__name__}: split must be in [1, {features - 1}], got {split}"
            )
        super().__init__(Euclidean(features), context_dim=context_dim)
        self.features, self.split, self.swap = features, split, bool(swap)
        self.monotone_map = monotone_map
        # sizes of the (conditioning, transformed) blocks
        first, second = split, features - split
        self.n_cond, self.n_trans = (second, first) if swap else (first, second)
        self.conditioner = MLP(
            self.n_cond + (context_dim or 0),
            self.n_trans * monotone_map.params_per_dim,
            hidden,
            activation,
            zero_last=True,
        )

    def extra_repr(self) -> str:
        extra = f"map={self.monotone_map!r}, split={self.split}, swap={self.swap}"
        return f"{super().extra_repr()}, {extra}"

    def _blocks(self, x: Tensor) -> tuple[Tensor, Tensor]:
        a, b = x[..., : self.split], x[..., self.split :]
        return (b, a) if self.swap else (a, b)

    def _merge(self, cond: Tensor, trans: Tensor) -> Tensor:
        batch = trans.shape[:-1]
        cond = cond.expand(*batch, cond.shape[-1])
        return torch.cat((trans, cond) if self.swap else (cond, trans), dim=-1)

    def _params(self, cond: Tensor, context: Tensor | None) -> Tensor:
        raw = self.conditioner(concat_context(cond, context))
        p = self.monotone_map.params_per_dim
        if self.monotone_map.param_major:
            return raw.unflatten(-1, (p, self.n_trans)).transpose(-1, -2)
        return raw.unflatten(-1, (self.n_trans, p))

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        cond, trans = self._blocks(x)
        out, logdet = self.monotone_map.forward(trans, self._params(cond, context))
        return self._merge(cond, out), logdet.sum(-1)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        cond, trans = self._blocks(y)
        out, logdet = self.monotone_map.inverse(trans, self._params(cond, context))
        return self._merge(cond, out), logdet.sum(-1)


class AdditiveCoupling(Coupling):
    """Volume-preserving coupling ``y_B = x_B + t(x_A)`` (NICE, arXiv:1410.8516).

    Example:
        >>> layer = AdditiveCoupling(4)
        >>> float(layer(torch.randn(2, 4))[1].abs().sum())
        0.0
    """

    def __init__(self, features: int, **options):
        super().__init__(features, AdditiveMap(), **options)


class AffineCoupling(Coupling):
    """Affine coupling ``y_B = x_B exp(s(x_A)) + t(x_A)`` (RealNVP, arXiv:1605.08803).

    Arguments:
        features: dimension ``d``.
        scale_bound: log-scales are softly clamped to ``(-scale_bound, scale_bound)``.
        **options: see :class:`Coupling` (``context_dim``, ``hidden``, ``split``, ``swap``...).

    Example:
        >>> layer = AffineCoupling(2, context_dim=1)
        >>> y, logdet = layer(torch.randn(5, 2), context=torch.randn(5, 1))
        >>> logdet.shape
        torch.Size([5])
    """

    def __init__(self, features: int, *, scale_bound: float = 5.0, **options):
        super().__init__(features, AffineMap(scale_bound), **options)


class SplineCoupling(Coupling):
    """Rational-quadratic spline coupling (Neural Spline Flows, arXiv:1906.04032).

    Monotone splines with ``bins`` bins on ``[-bound, bound]``, identity outside.

    Example:
        >>> layer = SplineCoupling(2, bins=4)
        >>> x = torch.tensor([[0.5, 1e6]])
        >>> layer.inverse(layer(x)[0])[0].allclose(x)
        True
    """

    def __init__(self, features: int, *, bins: int = 8, bound: float = 5.0, **options):
        super().__init__(features, SplineMap(bins, bound), **options)
