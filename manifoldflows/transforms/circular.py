"""Circle layers: diffeomorphisms of ``S^1`` applied to every angle of ``Torus(n)``.

Each layer maps ``Torus(n)`` to itself angle by angle with a circle diffeomorphism from
:mod:`manifoldflows.functional.circle` (Rezende et al. 2020, arXiv:2002.02428): Moebius maps
and their convex combinations, circular rational-quadratic splines, rotations and the
non-compact projection. The angles are the torus's intrinsic coordinates (identity tangent
basis), so the logdet is ``sum_i log |dy_i/dx_i|``, measured in arc length.

The elementwise maps are small picklable objects (like
:class:`~manifoldflows.transforms.monotone.MonotoneMap`): ``params_per_dim`` numbers per angle,
``forward(x, params)`` and ``inverse(y, params)`` with ``params`` of shape ``x.shape + (P,)``.
All-zero parameters give the identity (a near-identity map for Moebius mixtures, whose
components need distinct starting points). The same maps drive the coupling and autoregressive
torus layers in :mod:`manifoldflows.transforms.torus`.

Unconditional layers hold the ``(n, P)`` parameters directly; with ``context_dim`` they come
from an MLP of the context whose last layer starts at zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..core import Transform
from ..functional.affine import soft_clamp
from ..functional.circle import (
    circular_rational_quadratic_spline,
    circular_shift,
    disk_point,
    moebius_circle,
    noncompact_projection,
    wrap,
)
from ..nn.mlp import MLP
from ..spaces import Torus

__all__ = [
    "CircleMap",
    "ShiftMap",
    "MoebiusMap",
    "CircularSplineMap",
    "NonCompactMap",
    "make_circle_map",
    "CircularElementwise",
    "MoebiusCircle",
    "CircularSpline",
    "CircularShift",
    "NonCompactProjection",
]


def _positive_int(value, name: str, who: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{who}: expected a positive integer {name}, got {value!r}")
    return value


# --------------------------------------------------------------------------------------------
# Elementwise circle maps


class CircleMap:
    """Base class: a diffeomorphism of the circle with ``params_per_dim`` parameters per angle."""

    params_per_dim: int = 0

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ShiftMap(CircleMap):
    """Rotation ``y = wrap(x + s)``: one parameter, logdet 0.

    Example:
        >>> y, ld = ShiftMap().forward(torch.tensor([3.0]), torch.tensor([[1.0]]))
        >>> round(y.item(), 4), ld.item()
        (-2.2832, 0.0)
    """

    params_per_dim = 1

    def forward(self, x, params):
        return circular_shift(x, params[..., 0])

    def inverse(self, y, params):
        return circular_shift(y, params[..., 0], inverse=True)


class _Rotated(CircleMap):
    """A map that fixes ``-pi``, optionally followed by a learnable rotation (last parameter)."""

    def __init__(self, shift: bool):
        self.shift = bool(shift)

    def _fixed(self, x: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def forward(self, x, params):
        y, logdet = self._fixed(x, params, inverse=False)
        if self.shift:
            y = wrap(y + params[..., -1])
        return y, logdet

    def inverse(self, y, params):
        if self.shift:
            y = wrap(y - params[..., -1])
        return self._fixed(y, params, inverse=True)


def _component_offsets(k: int, like: Tensor) -> Tensor:
    """``(k, 2)`` fixed points on a circle of radius 0.5 (zeros when ``k = 1``).

    Added to the unconstrained centres so that the components of a Moebius mixture start at
    distinct points: with a zero-initialised conditioner they would otherwise receive identical
    gradients forever. They are symmetric (they sum to zero), so the mixture starts close to
    the identity.
    """
    if k == 1:
        return like.new_zeros(1, 2)
    angle = torch.arange(k, dtype=like.dtype, device=like.device) * (2.0 * math.pi / k)
    return 0.5 * torch.stack([torch.cos(angle), torch.sin(angle)], dim=-1)


class MoebiusMap(_Rotated):
    """Convex combination of ``K`` Moebius maps of the circle (Rezende et al. 2020).

    Parameters per angle: ``2 K`` unconstrained centres (mapped into the disk of radius
    ``max_radius`` by :func:`~manifoldflows.functional.circle.disk_point`, plus fixed
    symmetry-breaking offsets when ``K > 1``), ``K`` mixture logits when ``K > 1``, and one
    rotation angle when ``shift``. With ``K = 1`` and ``shift`` it spans all orientation
    preserving Moebius maps of the circle with ``|w| < max_radius``. Kernel:
    :func:`~manifoldflows.functional.circle.moebius_circle` (numerical inverse for ``K > 1``).

    Arguments:
        components: number ``K`` of Moebius maps.
        shift: follow the map by a learnable rotation.
        max_radius: bound on ``|w|`` in ``(0, 1)``; it bounds the log-derivative by
            ``log((1 + r) / (1 - r))``.
        iterations: maximum root-finder iterations of the inverse (``K > 1``).

    Example:
        >>> m = MoebiusMap(3)
        >>> x, params = torch.rand(4) * 6 - 3, torch.randn(4, m.params_per_dim)
        >>> y, ld = m.forward(x, params)
        >>> torch.allclose(m.inverse(y, params)[0], x, atol=1e-5)
        True
    """

    def __init__(
        self,
        components: int = 1,
        *,
        shift: bool = True,
        max_radius: float = 0.99,
        iterations: int | None = None,
    ):
        super().__init__(shift)
        who = type(self).__name__
        self.components = _positive_int(components, "number of components", who)
        if not 0.0 < max_radius < 1.0:
            raise ValueError(f"{who}: expected 0 < max_radius < 1, got {max_radius!r}")
        self.max_radius = float(max_radius)
        self.iterations = (
            None if iterations is None else _positive_int(iterations, "iterations", who)
        )
        k = self.components
        self.params_per_dim = 2 * k + (k if k > 1 else 0) + int(self.shift)

    def __repr__(self) -> str:
        return f"MoebiusMap(components={self.components}, shift={self.shift})"

    def _fixed(self, x, params, inverse):
        k = self.components
        raw = params[..., : 2 * k].unflatten(-1, (k, 2)) + _component_offsets(k, params)
        w = disk_point(raw, self.max_radius)
        logits = params[..., 2 * k : 3 * k] if k > 1 else None
        return moebius_circle(x, w, logits, inverse=inverse, iterations=self.iterations)


class CircularSplineMap(_Rotated):
    """Circular rational-quadratic spline with ``bins`` bins (Rezende et al. 2020).

    Parameters per angle: ``bins`` widths, ``bins`` heights, ``bins`` knot derivatives (the
    derivative at ``pi`` equals the one at ``-pi``), and one rotation angle when ``shift``.
    Kernel: :func:`~manifoldflows.functional.circle.circular_rational_quadratic_spline`.

    Arguments:
        bins: number of bins ``K``.
        shift: follow the spline by a learnable rotation (lets the fixed seam point move).
        min_bin_width, min_bin_height, min_derivative, max_derivative: see the kernel.

    Example:
        >>> m = CircularSplineMap(6)
        >>> x, params = torch.rand(4) * 6 - 3, torch.randn(4, m.params_per_dim)
        >>> y, ld = m.forward(x, params)
        >>> torch.allclose(m.inverse(y, params)[0], x, atol=1e-5)
        True
    """

    def __init__(
        self,
        bins: int = 8,
        *,
        shift: bool = True,
        min_bin_width: float = 1e-3,
        min_bin_height: float = 1e-3,
        min_derivative: float = 1e-3,
        max_derivative: float = 1e3,
    ):
        super().__init__(shift)
        who = type(self).__name__
        self.bins = _positive_int(bins, "number of bins", who)
        for name, value in (
            ("min_bin_width", min_bin_width),
            ("min_bin_height", min_bin_height),
        ):
            if not 0.0 < value * self.bins <= 1.0:
                raise ValueError(f"{who}: expected 0 < {name} <= 1/bins, got {value!r}")
        if not 0.0 < min_derivative < 1.0 < max_derivative:
            raise ValueError(
                f"{who}: expected 0 < min_derivative < 1 < max_derivative, got "
                f"{min_derivative!r} and {max_derivative!r}"
            )
        self.min_bin_width, self.min_bin_height = float(min_bin_width), float(min_bin_height)
        self.min_derivative, self.max_derivative = float(min_derivative), float(max_derivative)
        self.params_per_dim = 3 * self.bins + int(self.shift)

    def __repr__(self) -> str:
        return f"CircularSplineMap(bins={self.bins}, shift={self.shift})"

    def _fixed(self, x, params, inverse):
        k = self.bins
        return circular_rational_quadratic_spline(
            x,
            params[..., :k],
            params[..., k : 2 * k],
            params[..., 2 * k : 3 * k],
            inverse=inverse,
            min_bin_width=self.min_bin_width,
            min_bin_height=self.min_bin_height,
            min_derivative=self.min_derivative,
            max_derivative=self.max_derivative,
        )


class NonCompactMap(CircleMap):
    """Non-compact projection ``y = 2 atan(a tan(x / 2) + b)`` (Rezende et al. 2020).

    Two parameters per angle: ``log a`` softly clamped to ``(-scale_bound, scale_bound)`` and
    ``b`` softly clamped to ``(-shift_bound, shift_bound)``. Kernel:
    :func:`~manifoldflows.functional.circle.noncompact_projection`.

    Example:
        >>> m = NonCompactMap()
        >>> x, params = torch.rand(4) * 6 - 3, torch.randn(4, 2)
        >>> torch.allclose(m.inverse(m.forward(x, params)[0], params)[0], x, atol=1e-5)
        True
    """

    params_per_dim = 2

    def __init__(self, scale_bound: float = 5.0, shift_bound: float = 10.0):
        if not (scale_bound > 0 and shift_bound > 0):
            raise ValueError(
                f"NonCompactMap: expected positive bounds, got {scale_bound!r}, {shift_bound!r}"
            )
        self.scale_bound, self.shift_bound = float(scale_bound), float(shift_bound)

    def __repr__(self) -> str:
        return f"NonCompactMap(scale_bound={self.scale_bound}, shift_bound={self.shift_bound})"

    def _split(self, params: Tensor) -> tuple[Tensor, Tensor]:
        return (
            soft_clamp(params[..., 0], self.scale_bound),
            soft_clamp(params[..., 1], self.shift_bound),
        )

    def forward(self, x, params):
        return noncompact_projection(x, *self._split(params))

    def inverse(self, y, params):
        return noncompact_projection(y, *self._split(params), inverse=True)


CIRCLE_MAPS = {
    "spline": CircularSplineMap,
    "moebius": MoebiusMap,
    "shift": ShiftMap,
    "noncompact": NonCompactMap,
}


def make_circle_map(kind: str | CircleMap, **options) -> CircleMap:
    """Build a circle map from its name (``"spline"``, ``"moebius"``, ``"shift"``,
    ``"noncompact"``) and options, or return a given :class:`CircleMap` unchanged.

    Example:
        >>> make_circle_map("spline", bins=4).params_per_dim  # 3 * 4 + rotation
        13
    """
    if isinstance(kind, CircleMap):
        if options:
            raise ValueError(f"make_circle_map: options {sorted(options)} given with a map object")
        return kind
    if kind not in CIRCLE_MAPS:
        raise ValueError(f"unknown circle map {kind!r}; choose from {sorted(CIRCLE_MAPS)}")
    return CIRCLE_MAPS[kind](**options)


# --------------------------------------------------------------------------------------------
# Layers


class CircularElementwise(Transform):
    """Apply a circle map to every angle of ``Torus(n)``, with (conditional) parameters.

    ``y_i = f(x_i; theta_i)``, ``logdet = sum_i log f'(x_i; theta_i)`` (arc length). Without
    context the ``(n, P)`` parameters ``theta`` are learned directly (initialised to zero: the
    identity); with ``context_dim`` they are the output of an MLP of the context whose last
    layer starts at zero.

    Arguments:
        features: number of angles ``n`` (domain ``Torus(n)``; ``Torus(1) == Circle()``).
        circle_map: the elementwise :class:`CircleMap`.
        context_dim: context size (``None`` for an unconditional layer).
        hidden: hidden sizes of the context MLP.
        activation: activation of the context MLP.

    References:
        D. J. Rezende et al., "Normalizing Flows on Tori and Spheres", ICML 2020,
        arXiv:2002.02428.

    Example:
        >>> layer = CircularElementwise(2, CircularSplineMap(4), context_dim=3, hidden=(8,))
        >>> y, logdet = layer(torch.rand(5, 2) * 6 - 3, context=torch.randn(5, 3))
        >>> y.shape, logdet.shape
        (torch.Size([5, 2]), torch.Size([5]))
    """

    def __init__(
        self,
        features: int,
        circle_map: CircleMap,
        *,
        context_dim: int | None = None,
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
    ):
        who = type(self).__name__
        features = _positive_int(features, "number of angles (features)", who)
        if not isinstance(circle_map, CircleMap):
            raise ValueError(f"{who}: expected a CircleMap, got {type(circle_map).__name__}")
        super().__init__(Torus(features), context_dim=context_dim)
        self.features = features
        self.circle_map = circle_map
        p = circle_map.params_per_dim
        if context_dim is None:
            self.params = nn.Parameter(torch.zeros(features, p))
            self.conditioner = None
        else:
            self.conditioner = MLP(context_dim, features * p, hidden, activation, zero_last=True)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, map={self.circle_map!r}"

    def _params(self, context: Tensor | None) -> Tensor:
        if self.conditioner is None:
            return self.params
        return self.conditioner(context).unflatten(-1, (self.features, -1))

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        y, logdet = self.circle_map.forward(x, self._params(context))
        return y, logdet.sum(-1)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        x, logdet = self.circle_map.inverse(y, self._params(context))
        return x, logdet.sum(-1)


class MoebiusCircle(CircularElementwise):
    """Moebius layer on ``Torus(n)``: a convex combination of ``K`` Moebius maps per angle.

    ``K = 1`` is the plain Moebius map of the circle (with ``shift``, any orientation-preserving
    one with ``|w| < max_radius``); ``K > 1`` mixes the lifted angle functions of ``K`` Moebius
    maps that fix ``-pi`` (Rezende et al. 2020), then rotates. See :class:`MoebiusMap`.

    Arguments:
        features: number of angles ``n``.
        components: number ``K`` of Moebius maps.
        shift: add a learnable rotation.
        max_radius: bound on the centres' norm.
        **options: ``context_dim``, ``hidden``, ``activation`` (see
            :class:`CircularElementwise`).

    Example:
        >>> layer = MoebiusCircle(1, components=3)
        >>> x = torch.rand(6, 1) * 6 - 3
        >>> y, logdet = layer(x)
        >>> torch.allclose(layer.inverse(y)[0], x, atol=1e-5)
        True
    """

    def __init__(
        self,
        features: int,
        *,
        components: int = 1,
        shift: bool = True,
        max_radius: float = 0.99,
        **options,
    ):
        circle_map = MoebiusMap(components, shift=shift, max_radius=max_radius)
        super().__init__(features, circle_map, **options)


class CircularSpline(CircularElementwise):
    """Circular rational-quadratic spline on every angle (Rezende et al. 2020).

    Periodic boundary conditions (``f(+-pi) = +-pi``, equal derivatives at ``-pi`` and ``pi``)
    make it a ``C^1`` circle diffeomorphism whose density is continuous across the seam;
    ``shift`` adds a learnable rotation so the seam's image can move. See
    :class:`CircularSplineMap`.

    Arguments:
        features: number of angles ``n``.
        bins: number of bins.
        shift: add a learnable rotation.
        **options: ``context_dim``, ``hidden``, ``activation``.

    Example:
        >>> layer = CircularSpline(2, bins=5, context_dim=1, hidden=(8,))
        >>> layer(torch.zeros(3, 2), context=torch.ones(3, 1))[0].shape
        torch.Size([3, 2])
    """

    def __init__(self, features: int, *, bins: int = 8, shift: bool = True, **options):
        super().__init__(features, CircularSplineMap(bins, shift=shift), **options)


class CircularShift(CircularElementwise):
    """Rotation of every angle, ``y_i = wrap(x_i + s_i)``; volume preserving.

    Arguments:
        features: number of angles ``n``.
        **options: ``context_dim``, ``hidden``, ``activation``.

    Example:
        >>> layer = CircularShift(2)
        >>> float(layer(torch.zeros(4, 2))[1].abs().sum())
        0.0
    """

    def __init__(self, features: int, **options):
        super().__init__(features, ShiftMap(), **options)


class NonCompactProjection(CircularElementwise):
    """Non-compact projection on every angle: ``y = 2 atan(a tan(x / 2) + b)``.

    Chart the circle onto the real line, apply an increasing affine map, chart back
    (Rezende et al. 2020); computed without forming ``tan(pi / 2)``, see
    :func:`~manifoldflows.functional.circle.noncompact_projection`.

    Arguments:
        features: number of angles ``n``.
        scale_bound, shift_bound: soft bounds on ``log a`` and ``b``.
        **options: ``context_dim``, ``hidden``, ``activation``.

    Example:
        >>> layer = NonCompactProjection(3)
        >>> x = torch.rand(2, 3) * 6 - 3
        >>> torch.allclose(layer.inverse(layer(x)[0])[0], x)
        True
    """

    def __init__(
        self, features: int, *, scale_bound: float = 5.0, shift_bound: float = 10.0, **options
    ):
        super().__init__(features, NonCompactMap(scale_bound, shift_bound), **options)
