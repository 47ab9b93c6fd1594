"""Masked autoregressive layers over any space: MAF and IAF with any element-wise maps.

One MADE pass (Germain et al. 2015, arXiv:1502.03509) gives the parameters of every coordinate's
element-wise map. In ``mode="maf"`` (Papamakarios et al. 2017, arXiv:1705.07057) the parameters
are computed from the *data* side, so ``inverse`` (density evaluation) is one pass and
``forward`` (sampling) needs ``d`` (cheap, incremental) passes; in ``mode="iaf"`` (Kingma et al.
2016, arXiv:1606.04934) they are computed from the *latent* side, so sampling is one pass and
density evaluation needs ``d``. The MADE reads the space's embedding (``(cos, sin)`` of angles,
rescaled intervals), so the same layer is a torus flow (Rezende et al. 2020, arXiv:2002.02428)
or a flow on a product of lines, intervals and circles. Splines: Durkan et al. 2019,
arXiv:1906.04032.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..nn.embedding import CoordinateEmbedding
from ..nn.made import MADE
from ..spaces import Space
from .coupling import as_space
from .map_groups import MapGroups, MapGroupsLayer
from .maps.base import MapSpec
from .maps.real import spline_options

__all__ = [
    "MODES",
    "MaskedAutoregressive",
    "MaskedAffineAutoregressive",
    "MaskedSplineAutoregressive",
]

MODES = ("maf", "iaf")


class MaskedAutoregressive(MapGroupsLayer):
    """Autoregressive layer: ``y_i = tau_i(x_i; theta_i(coordinates before i, context))``.

    Arguments:
        space: the space (an integer ``d`` means ``Euclidean(d)``); every coordinate is moved,
            so it may not contain a sphere factor.
        map: element-wise map (name resolved per coordinate kind, object, or ``{kind: map}``;
            see :class:`~manifoldflows.transforms.Coupling`).
        mode: ``"maf"`` (one-pass density) or ``"iaf"`` (one-pass sampling).
        context_dim: context size.
        hidden: MADE hidden sizes.
        activation: MADE activation.
        order: autoregressive order as degrees, a permutation of ``1..d`` (default: natural
            order). Alternating orders between layers replaces explicit permutation layers.
        **map_options: options of the maps (``bins``, ``bound``, ``components``, ...).

    Example:
        >>> from manifoldflows.transforms.maps import AffineMap
        >>> layer = MaskedAutoregressive(3, AffineMap(), hidden=(16,))
        >>> x = torch.randn(4, 3)
        >>> torch.allclose(layer.inverse(layer(x)[0])[0], x, atol=1e-6)
        True
        >>> from manifoldflows.spaces import Torus
        >>> torus = MaskedAutoregressive(Torus(3), "moebius", components=2, hidden=(16,))
        >>> x = Torus(3).random((4,))
        >>> torch.allclose(torus.inverse(torus(x)[0])[0], x, atol=1e-4)
        True
    """

    def __init__(
        self,
        space: Space | int,
        map: MapSpec = "spline",
        *,
        mode: str = "maf",
        context_dim: int | None = None,
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
        order: Sequence[int] | Tensor | None = None,
        **map_options: Any,
    ):
        who = type(self).__name__
        if mode not in MODES:
            raise ValueError(f"{who}: mode must be one of {MODES}, got {mode!r}")
        space = as_space(space, who)
        coordinates = space.coordinates
        super().__init__(space, context_dim=context_dim)
        self.mode = mode
        self.groups = MapGroups(who, coordinates, map, map_options)
        d = len(coordinates)
        embedding = None
        if any(c.kind != "real" for c in coordinates):
            embedding = CoordinateEmbedding(coordinates)
        self.made = MADE(
            d,
            self.groups.output_coordinates(list(range(d))),
            hidden,
            context_dim=context_dim,
            activation=activation,
            order=None if order is None else torch.as_tensor(order),
            embedding=embedding,
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mode={self.mode!r}"

    def _one_pass(self, x: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        """Parameters from ``x`` itself (the side the MADE reads)."""
        params = self.groups.layout.unpack(self.made(x, context))
        return self.groups.apply(x, params, inverse)

    def _sequential(
        self, x: Tensor, context: Tensor | None, inverse: bool
    ) -> tuple[Tensor, Tensor]:
        """Solve ``out_i = tau_i(x_i; made(out)_i)`` coordinate by coordinate (MADE.solve)."""
        return self.made.solve(x, context, self.groups.stepper(inverse))

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        if self.mode == "iaf":
            return self._one_pass(x, context, inverse=False)
        return self._sequential(x, context, inverse=False)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        if self.mode == "maf":
            return self._one_pass(y, context, inverse=True)
        return self._sequential(y, context, inverse=True)


class MaskedAffineAutoregressive(MaskedAutoregressive):
    """Affine MAF/IAF layer: ``y_i = x_i exp(s_i) + t_i``.

    Example:
        >>> layer = MaskedAffineAutoregressive(2, mode="iaf", context_dim=1)
        >>> layer(torch.randn(3, 2), context=torch.randn(3, 1))[0].shape
        torch.Size([3, 2])
    """

    def __init__(self, space: Space | int, *, scale_bound: float = 5.0, **options: Any):
        super().__init__(space, "affine", scale_bound=scale_bound, **options)


class MaskedSplineAutoregressive(MaskedAutoregressive):
    """Rational-quadratic spline MAF/IAF layer (autoregressive Neural Spline Flow).

    Example:
        >>> layer = MaskedSplineAutoregressive(2, bins=4)
        >>> layer.inverse(torch.randn(3, 2))[1].shape
        torch.Size([3])
    """

    def __init__(self, space: Space | int, *, bins: int = 8, bound: float = 5.0, **options: Any):
        space = as_space(space, type(self).__name__)
        super().__init__(
            space, "spline", **spline_options(space.coordinates, bins, bound), **options
        )
