"""Element-wise layers over any space: one learned (or context-dependent) map per coordinate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from ..nn.conditioner import Conditioner
from ..spaces import Space
from .coupling import as_space
from .map_groups import MapGroups, MapGroupsLayer
from .maps.base import MapSpec

__all__ = ["Elementwise"]


class Elementwise(MapGroupsLayer):
    """Move every coordinate with its element-wise map: ``y_i = tau_i(x_i; theta_i)``.

    ``logdet = sum_i log tau_i'(x_i)`` (arc length on angles). Without context the parameters
    ``theta`` are learned directly (initialised at zero: the identity); with ``context_dim`` they
    are the output of an MLP of the context whose last layer starts at zero (see
    :class:`~manifoldflows.nn.conditioner.Conditioner`).

    Arguments:
        space: the space (an integer ``d`` means ``Euclidean(d)``).
        map: element-wise map (name resolved per coordinate kind, object, or ``{kind: map}``).
        context_dim: context size (``None`` for an unconditional layer).
        hidden: hidden sizes of the context MLP.
        activation: activation of the context MLP.
        **map_options: options of the maps.

    References:
        D. J. Rezende et al., "Normalizing Flows on Tori and Spheres", ICML 2020,
        arXiv:2002.02428.

    Example:
        >>> from manifoldflows.spaces import Torus
        >>> layer = Elementwise(Torus(2), "spline", bins=4, context_dim=3, hidden=(8,))
        >>> y, logdet = layer(torch.rand(5, 2) * 6 - 3, context=torch.randn(5, 3))
        >>> y.shape, logdet.shape
        (torch.Size([5, 2]), torch.Size([5]))
    """

    def __init__(
        self,
        space: Space | int,
        map: MapSpec,
        *,
        context_dim: int | None = None,
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
        **map_options: Any,
    ):
        who = type(self).__name__
        space = as_space(space, who)
        super().__init__(space, context_dim=context_dim)
        self.groups = MapGroups(who, space.coordinates, map, map_options)
        self.conditioner = Conditioner(
            0,
            self.groups.layout.shapes,
            context_dim=context_dim,
            hidden=hidden,
            activation=activation,
        )

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self.groups.apply(x, self.conditioner(None, context), inverse=False)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self.groups.apply(y, self.conditioner(None, context), inverse=True)
