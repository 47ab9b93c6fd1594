"""Masked autoregressive layers: MAF and IAF with affine or spline monotone maps.

One MADE pass (Germain et al. 2015, arXiv:1502.03509) gives the parameters of every coordinate's
monotone map. In ``mode="maf"`` (Papamakarios et al. 2017, arXiv:1705.07057) the parameters are
computed from the *data* side, so ``inverse`` (density evaluation) is one pass and ``forward``
(sampling) needs ``d`` passes; in ``mode="iaf"`` (Kingma et al. 2016, arXiv:1606.04934) they are
computed from the *latent* side, so sampling is one pass and density evaluation needs ``d``.
Spline maps follow Durkan et al. 2019 (arXiv:1906.04032).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..core import Transform
from ..nn.made import MADE
from ..spaces import Euclidean
from .monotone import AffineMap, MonotoneMap, SplineMap

__all__ = [
    "AutoregressiveBase",
    "MaskedAutoregressive",
    "MaskedAffineAutoregressive",
    "MaskedSplineAutoregressive",
]

MODES = ("maf", "iaf")


class AutoregressiveBase(Transform):
    """Direction logic shared by autoregressive layers (Euclidean, torus, ...).

    Subclasses build ``self.made`` (a :class:`~manifoldflows.nn.made.MADE`, whose ``solve``
    handles the sequential direction) and ``self.elementwise_map`` (an object with
    ``forward(x, params)`` / ``inverse(y, params)`` returning elementwise logdets). In
    ``"maf"`` mode the MADE reads the data side (one-pass ``inverse``), in ``"iaf"`` mode the
    latent side (one-pass ``forward``).
    """

    mode: str

    def _one_pass(self, x: Tensor, context: Tensor | None, inverse: bool):
        """Parameters from ``x`` itself (the side the MADE reads)."""
        step = self.elementwise_map.inverse if inverse else self.elementwise_map.forward
        out, logdet = step(x, self.made(x, context))
        return out, logdet.sum(-1)

    def _sequential(self, x: Tensor, context: Tensor | None, inverse: bool):
        """Solve ``out_i = step(x_i; made(out)_i)`` coordinate by coordinate (see MADE.solve)."""
        step = self.elementwise_map.inverse if inverse else self.elementwise_map.forward
        return self.made.solve(x, context, step)

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        if self.mode == "iaf":
            return self._one_pass(x, context, inverse=False)
        return self._sequential(x, context, inverse=False)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        if self.mode == "maf":
            return self._one_pass(y, context, inverse=True)
        return self._sequential(y, context, inverse=True)


class MaskedAutoregressive(AutoregressiveBase):
    """Autoregressive layer on ``R^d``: ``y_i = tau(x_i; theta_i(x_<i or y_<i, context))``.

    Arguments:
        features: dimension ``d``.
        monotone_map: elementwise map ``tau``.
        mode: ``"maf"`` (one-pass density) or ``"iaf"`` (one-pass sampling).
        context_dim: context size.
        hidden: MADE hidden sizes.
        activation: MADE activation.
        order: autoregressive order as degrees, a permutation of ``1..d`` (default: natural
            order). Alternating orders between layers replaces explicit permutation layers.

    Example:
        >>> from manifoldflows.transforms.monotone import AffineMap
        >>> layer = MaskedAutoregressive(3, AffineMap(), hidden=(16,))
        >>> x = torch.randn(4, 3)
        >>> torch.allclose(layer.inverse(layer(x)[0])[0], x, atol=1e-6)
        True
    """

    def __init__(
        self,
        features: int,
        monotone_map: MonotoneMap,
        *,
        mode: str = "maf",
        context_dim: int | None = None,
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
        order: Sequence[int] | Tensor | None = None,
    ):
        if mode not in MODES:
            raise ValueError(f"{type(self).__name__}: mode must be one of {MODES}, got {mode!r}")
        super().__init__(Euclidean(features), context_dim=context_dim)
        self.features, self.mode = features, mode
        self.monotone_map = self.elementwise_map = monotone_map
        self.made = MADE(
            features,
            monotone_map.params_per_dim,
            hidden,
            context_dim=context_dim,
            activation=activation,
            order=None if order is None else torch.as_tensor(order),
            param_major=monotone_map.param_major,
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, map={self.monotone_map!r}, mode={self.mode!r}"


class MaskedAffineAutoregressive(MaskedAutoregressive):
    """Affine MAF/IAF layer: ``y_i = x_i exp(s_i) + t_i``.

    Example:
        >>> layer = MaskedAffineAutoregressive(2, mode="iaf", context_dim=1)
        >>> layer(torch.randn(3, 2), context=torch.randn(3, 1))[0].shape
        torch.Size([3, 2])
    """

    def __init__(self, features: int, *, scale_bound: float = 5.0, **options):
        super().__init__(features, AffineMap(scale_bound), **options)


class MaskedSplineAutoregressive(MaskedAutoregressive):
    """Rational-quadratic spline MAF/IAF layer (autoregressive Neural Spline Flow).

    Example:
        >>> layer = MaskedSplineAutoregressive(2, bins=4)
        >>> layer.inverse(torch.randn(3, 2))[1].shape
        torch.Size([3])
    """

    def __init__(self, features: int, *, bins: int = 8, bound: float = 5.0, **options):
        super().__init__(features, SplineMap(bins, bound), **options)
