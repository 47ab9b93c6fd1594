"""Coupling layers over any space: some coordinates parameterise element-wise maps of the others.

``y_A = x_A``, ``y_B = tau(x_B; theta(embed(x_A), context))``. The Jacobian is triangular in the
space's coordinates, so the logdet is the sum of the element-wise log-derivatives of ``tau``, and
the inverse costs one conditioner pass. On a product space each factor's coordinates get a map
suited to them (spline with tails on ``R``, interval spline on an interval, circular spline on
angles) and the conditioner reads the space's embedding (``(cos, sin)`` of angles, ...).
(Dinh et al. 2014, NICE, arXiv:1410.8516; Dinh et al. 2016, RealNVP, arXiv:1605.08803;
Durkan et al. 2019, Neural Spline Flows, arXiv:1906.04032; Rezende et al. 2020, flows on tori
and spheres, arXiv:2002.02428.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .._checks import positive_int
from ..functional.circle import wrap
from ..nn.conditioner import Conditioner
from ..nn.embedding import CoordinateEmbedding
from ..spaces import Euclidean, Space
from .map_groups import MapGroups, MapGroupsLayer
from .maps.base import MapSpec
from .maps.real import spline_options

__all__ = ["Coupling", "AdditiveCoupling", "AffineCoupling", "SplineCoupling", "as_space"]


def as_space(space: Space | int, who: str) -> Space:
    """``space`` itself, or ``Euclidean(space)`` for an integer dimension."""
    if isinstance(space, Space):
        return space
    return Euclidean(positive_int(space, "dimension (or a Space)", who))


def _coupling_mask(
    who: str,
    space: Space,
    mask: Sequence[bool] | Tensor | None,
    split: int | None,
    swap: bool,
) -> torch.Tensor:
    d = space.ambient_dim
    if mask is None:
        split = d // 2 if split is None else int(split)
        if not 0 < split < d:
            raise ValueError(f"{who}: split must be in [1, {d - 1}], got {split}")
        mask = torch.arange(d) >= split
    else:
        if split is not None:
            raise ValueError(f"{who}: give either mask or split, not both")
        mask = torch.as_tensor(mask)
        if mask.shape != (d,) or mask.dtype != torch.bool:
            raise ValueError(f"{who}: expected a boolean mask of {d} entries, got {mask.tolist()}")
    if swap:
        mask = ~mask
    if bool(mask.all()) or not bool(mask.any()):
        raise ValueError(
            f"{who}: the mask must transform some coordinates and keep others, got {mask.tolist()}"
        )
    return mask


def _contiguous(idx: list[int]) -> slice | None:
    """A slice when the indices are contiguous (a view instead of a gather), else ``None``."""
    if idx == list(range(idx[0], idx[-1] + 1)):
        return slice(idx[0], idx[-1] + 1)
    return None


class Coupling(MapGroupsLayer):
    """Coupling layer on any space with coordinates (``R^d``, intervals, tori, products).

    The coordinates where ``mask`` is ``False`` pass through unchanged and, embedded by the
    space and together with the context, feed an MLP that outputs the parameters of the
    element-wise maps of the others. The MLP's last layer starts at zero, so a new layer is the
    identity (near the identity for Moebius mixtures).

    Arguments:
        space: the space (an integer ``d`` means ``Euclidean(d)``).
        map: element-wise map: a registered name resolved per coordinate kind (``"spline"``,
            ``"affine"``, ``"additive"``, ``"moebius"``, ...), an
            :class:`~manifoldflows.transforms.maps.ElementwiseMap`, or ``{kind: map}``.
        mask: booleans over the point's coordinates, ``True`` where transformed (may cut across
            the factors of a product; a sphere factor must stay on the conditioning side).
            Default: the last ``d - split`` coordinates.
        split: size of the conditioning block when ``mask`` is not given (default ``d // 2``).
        swap: transform the complement of the mask.
        context_dim: context size (``None`` for an unconditional layer).
        hidden: hidden sizes of the conditioner MLP.
        activation: activation of the conditioner.
        **map_options: options of the maps (``bins``, ``bound``, ``components``, ...).

    Example:
        >>> import math
        >>> from manifoldflows.spaces import Euclidean, Interval, Product, Torus
        >>> space = Product(Euclidean(2), Interval(0, math.pi, 1), Torus(2))
        >>> layer = Coupling(space, "spline", mask=[True, False, True, False, True], bins=4)
        >>> x = space.random((6,))
        >>> y, logdet = layer(x)
        >>> torch.allclose(layer.inverse(y)[0], x, atol=1e-5), logdet.shape
        (True, torch.Size([6]))
    """

    def __init__(
        self,
        space: Space | int,
        map: MapSpec = "spline",
        *,
        mask: Sequence[bool] | Tensor | None = None,
        split: int | None = None,
        swap: bool = False,
        context_dim: int | None = None,
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
        **map_options: Any,
    ):
        who = type(self).__name__
        space = as_space(space, who)
        if space.ambient_dim < 2:
            raise ValueError(f"{who}: needs at least 2 coordinates, got {space!r}")
        coordinates = space.coordinates
        mask = _coupling_mask(who, space, mask, split, swap)
        super().__init__(space, context_dim=context_dim)
        transformed = torch.nonzero(mask).flatten().tolist()
        conditioning = torch.nonzero(~mask).flatten().tolist()
        self.register_buffer("transformed", torch.tensor(transformed), persistent=False)
        self.register_buffer("conditioning", torch.tensor(conditioning), persistent=False)
        self._trans, self._cond = _contiguous(transformed), _contiguous(conditioning)
        self._merge_needed = self._trans is None or self._cond is None
        self.register_buffer(
            "_merge", torch.argsort(torch.tensor(conditioning + transformed)), persistent=False
        )
        self._cond_first = conditioning[0] < transformed[0]
        self.groups = MapGroups(
            who, [coordinates[i] for i in transformed], map, map_options, coordinates
        )
        cond_coords = [coordinates[i] for i in conditioning]
        self.embedding = CoordinateEmbedding(cond_coords)
        angles = [c.kind == "angle" for c in cond_coords]
        self._wrap = "all" if all(angles) else ("some" if any(angles) else "none")
        self.register_buffer("_cond_angles", torch.tensor(angles), persistent=False)
        self.conditioner = Conditioner(
            self.embedding.features,
            self.groups.layout.shapes,
            context_dim=context_dim,
            hidden=hidden,
            activation=activation,
        )

    def _pass_through(self, cond: Tensor) -> Tensor:
        if self._wrap == "none":
            return cond
        if self._wrap == "all":
            return wrap(cond)  # pi (accepted on input) -> -pi
        return torch.where(self._cond_angles, wrap(cond), cond)

    def _run(self, x: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        cond = x[..., self.conditioning if self._cond is None else self._cond]
        trans = x[..., self.transformed if self._trans is None else self._trans]
        params = self.conditioner(self.embedding(cond), context)
        out, logdet = self.groups.apply(trans, params, inverse)
        cond = self._pass_through(cond)
        cond = cond.expand(*out.shape[:-1], cond.shape[-1])
        if not self._merge_needed:
            parts = (cond, out) if self._cond_first else (out, cond)
            return torch.cat(parts, dim=-1), logdet
        return torch.cat([cond, out], dim=-1)[..., self._merge], logdet

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._run(x, context, inverse=False)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._run(y, context, inverse=True)


class AdditiveCoupling(Coupling):
    """Volume-preserving coupling ``y_B = x_B + t(x_A)`` on ``R^d`` (NICE, arXiv:1410.8516).

    Example:
        >>> layer = AdditiveCoupling(4)
        >>> float(layer(torch.randn(2, 4))[1].abs().sum())
        0.0
    """

    def __init__(self, space: Space | int, **options: Any):
        super().__init__(space, "additive", **options)


class AffineCoupling(Coupling):
    """Affine coupling ``y_B = x_B exp(s(x_A)) + t(x_A)`` (RealNVP, arXiv:1605.08803).

    Arguments:
        space: ``R^d`` (an integer ``d``) or a product whose transformed coordinates are real.
        scale_bound: log-scales are softly clamped to ``(-scale_bound, scale_bound)``.
        **options: see :class:`Coupling` (``context_dim``, ``hidden``, ``mask``, ``swap``...).

    Example:
        >>> layer = AffineCoupling(2, context_dim=1)
        >>> y, logdet = layer(torch.randn(5, 2), context=torch.randn(5, 1))
        >>> logdet.shape
        torch.Size([5])
    """

    def __init__(self, space: Space | int, *, scale_bound: float = 5.0, **options: Any):
        super().__init__(space, "affine", scale_bound=scale_bound, **options)


class SplineCoupling(Coupling):
    """Rational-quadratic spline coupling (Neural Spline Flows, arXiv:1906.04032).

    On ``R^d``: monotone splines with ``bins`` bins on ``[-bound, bound]``, identity outside;
    on other coordinates the spline suited to them (interval, circular).

    Example:
        >>> layer = SplineCoupling(2, bins=4)
        >>> x = torch.tensor([[0.5, 1e6]])
        >>> layer.inverse(layer(x)[0])[0].allclose(x)
        True
    """

    def __init__(self, space: Space | int, *, bins: int = 8, bound: float = 5.0, **options: Any):
        space = as_space(space, "SplineCoupling")
        super().__init__(
            space, "spline", **spline_options(space.coordinates, bins, bound), **options
        )
