"""Circle layers: diffeomorphisms of ``S^1`` applied to every angle of ``Torus(n)``.

Each layer maps ``Torus(n)`` to itself angle by angle with a circle map from
:mod:`manifoldflows.transforms.maps.circle` (Rezende et al. 2020, arXiv:2002.02428): Moebius maps
and their convex combinations, circular rational-quadratic splines, rotations and the
non-compact projection. They are :class:`~manifoldflows.transforms.pointwise.Elementwise` layers
on ``Torus(n)`` with a fixed map; the angles are the torus's intrinsic coordinates (identity
tangent basis), so the logdet is ``sum_i log |dy_i/dx_i|``, measured in arc length.
"""

from __future__ import annotations

from typing import Any

from .._checks import positive_int
from ..spaces import Torus
from .maps.circle import CircularSplineMap, MoebiusMap, NonCompactMap, ShiftMap
from .pointwise import Elementwise

__all__ = [
    "MoebiusCircle",
    "CircularSpline",
    "CircularShift",
    "NonCompactProjection",
]


def _torus(dim: int, who: str) -> Torus:
    return Torus(positive_int(dim, "number of angles dim", who))


class MoebiusCircle(Elementwise):
    """Moebius layer on ``Torus(n)``: a convex combination of ``K`` Moebius maps per angle.

    ``K = 1`` is the plain Moebius map of the circle (with ``shift``, any orientation-preserving
    one with ``|w| < max_radius``); ``K > 1`` mixes the lifted angle functions of ``K`` Moebius
    maps that fix ``-pi`` (Rezende et al. 2020), then rotates. See :class:`MoebiusMap`.

    Arguments:
        dim: number of angles ``n``.
        components: number ``K`` of Moebius maps.
        shift: add a learnable rotation.
        max_radius: bound on the centres' norm.
        **options: ``context_dim``, ``hidden``, ``activation`` (see
            :class:`~manifoldflows.transforms.pointwise.Elementwise`).

    Example:
        >>> layer = MoebiusCircle(1, components=3)
        >>> x = torch.rand(6, 1) * 6 - 3
        >>> y, logdet = layer(x)
        >>> torch.allclose(layer.inverse(y)[0], x, atol=1e-5)
        True
    """

    def __init__(
        self,
        dim: int,
        *,
        components: int = 1,
        shift: bool = True,
        max_radius: float = 0.99,
        **options: Any,
    ):
        circle_map = MoebiusMap(components, shift=shift, max_radius=max_radius)
        super().__init__(_torus(dim, type(self).__name__), circle_map, **options)


class CircularSpline(Elementwise):
    """Circular rational-quadratic spline on every angle (Rezende et al. 2020).

    Periodic boundary conditions (``f(+-pi) = +-pi``, equal derivatives at ``-pi`` and ``pi``)
    make it a ``C^1`` circle diffeomorphism whose density is continuous across the seam;
    ``shift`` adds a learnable rotation so the seam's image can move. See
    :class:`CircularSplineMap`.

    Arguments:
        dim: number of angles ``n``.
        bins: number of bins.
        shift: add a learnable rotation.
        **options: ``context_dim``, ``hidden``, ``activation``.

    Example:
        >>> layer = CircularSpline(2, bins=5, context_dim=1, hidden=(8,))
        >>> layer(torch.zeros(3, 2), context=torch.ones(3, 1))[0].shape
        torch.Size([3, 2])
    """

    def __init__(self, dim: int, *, bins: int = 8, shift: bool = True, **options: Any):
        super().__init__(
            _torus(dim, type(self).__name__), CircularSplineMap(bins, shift=shift), **options
        )


class CircularShift(Elementwise):
    """Rotation of every angle, ``y_i = wrap(x_i + s_i)``; volume preserving.

    Arguments:
        dim: number of angles ``n``.
        **options: ``context_dim``, ``hidden``, ``activation``.

    Example:
        >>> layer = CircularShift(2)
        >>> float(layer(torch.zeros(4, 2))[1].abs().sum())
        0.0
    """

    def __init__(self, dim: int, **options: Any):
        super().__init__(_torus(dim, type(self).__name__), ShiftMap(), **options)


class NonCompactProjection(Elementwise):
    """Non-compact projection on every angle: ``y = 2 atan(a tan(x / 2) + b)``.

    Chart the circle onto the real line, apply an increasing affine map, chart back
    (Rezende et al. 2020); computed without forming ``tan(pi / 2)``, see
    :func:`~manifoldflows.functional.circle.noncompact_projection`.

    Arguments:
        dim: number of angles ``n``.
        scale_bound, shift_bound: soft bounds on ``log a`` and ``b``.
        **options: ``context_dim``, ``hidden``, ``activation``.

    Example:
        >>> layer = NonCompactProjection(3)
        >>> x = torch.rand(2, 3) * 6 - 3
        >>> torch.allclose(layer.inverse(layer(x)[0])[0], x)
        True
    """

    def __init__(
        self, dim: int, *, scale_bound: float = 5.0, shift_bound: float = 10.0, **options: Any
    ):
        super().__init__(
            _torus(dim, type(self).__name__),
            NonCompactMap(scale_bound, shift_bound),
            **options,
        )
