"""Element-wise diffeomorphisms of the circle (angles in ``[-pi, pi)``).

Moebius maps and their convex combinations, circular rational-quadratic splines, rotations and
the non-compact projection of Rezende et al. 2020 (arXiv:2002.02428); kernels in
:mod:`manifoldflows.functional.circle`. Log-derivatives are in arc length.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..._checks import positive_int
from ...functional.affine import soft_clamp
from ...functional.circle import (
    circular_rational_quadratic_spline,
    circular_shift,
    disk_point,
    moebius_circle,
    noncompact_projection,
    wrap,
)
from .base import ElementwiseMap, Params, register_map
from .real import DEFAULT_SLOPE_BOUND

__all__ = ["ShiftMap", "MoebiusMap", "CircularSplineMap", "NonCompactMap"]


@register_map
class ShiftMap(ElementwiseMap):
    """Rotation ``y = wrap(x + s)``: one parameter, logdet 0.

    Example:
        >>> y, ld = ShiftMap().forward(torch.tensor([3.0]), {"shift": torch.tensor([1.0])})
        >>> round(y.item(), 4), ld.item()
        (-2.2832, 0.0)
    """

    name, kind = "shift", "angle"

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {"shift": ()}

    def forward(self, x: Tensor, params: Params) -> tuple[Tensor, Tensor]:
        return circular_shift(x, params["shift"])

    def inverse(self, y: Tensor, params: Params) -> tuple[Tensor, Tensor]:
        return circular_shift(y, params["shift"], inverse=True)


class _Rotated(ElementwiseMap):
    """A map that fixes ``-pi``, optionally followed by a learnable rotation."""

    kind = "angle"

    def __init__(self, shift: bool):
        self.shift = bool(shift)

    def _fixed_shapes(self) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = self._fixed_shapes()
        if self.shift:
            shapes["rotation"] = ()
        return shapes

    def _fixed(self, x: Tensor, params: Params, inverse: bool) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def forward(self, x: Tensor, params: Params) -> tuple[Tensor, Tensor]:
        y, logdet = self._fixed(x, params, inverse=False)
        if self.shift:
            y = wrap(y + params["rotation"])
        return y, logdet

    def inverse(self, y: Tensor, params: Params) -> tuple[Tensor, Tensor]:
        if self.shift:
            y = wrap(y - params["rotation"])
        return self._fixed(y, params, inverse=True)


def _component_offsets(k: int, like: Tensor) -> Tensor:
    """``(k, 2)`` fixed points on a circle of radius 0.5 (zeros when ``k = 1``).

    Added to the unconstrained centres so that the components of a Moebius mixture start at
    distinct points: with a zero-initialised conditioner they would otherwise receive identical
    gradients forever. They sum to zero, so the mixture starts close to the identity.
    """
    if k == 1:
        return like.new_zeros(1, 2)
    angle = torch.arange(k, dtype=like.dtype, device=like.device) * (2.0 * math.pi / k)
    return 0.5 * torch.stack([torch.cos(angle), torch.sin(angle)], dim=-1)


@register_map
class MoebiusMap(_Rotated):
    """Convex combination of ``K`` Moebius maps of the circle (Rezende et al. 2020).

    Parameters per angle: ``centres`` (``K`` unconstrained points mapped into the disk of
    radius ``max_radius`` by :func:`~manifoldflows.functional.circle.disk_point`, plus fixed
    symmetry-breaking offsets when ``K > 1``), mixture ``logits`` when ``K > 1``, and a
    ``rotation`` when ``shift``. With ``K = 1`` and ``shift`` it spans all orientation
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
        >>> x = torch.rand(4) * 6 - 3
        >>> params = {k: torch.randn(4, *s) for k, s in m.shapes.items()}
        >>> y, ld = m.forward(x, params)
        >>> torch.allclose(m.inverse(y, params)[0], x, atol=1e-5)
        True
    """

    name = "moebius"

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
        self.components = positive_int(components, "number of components", who)
        if not 0.0 < max_radius < 1.0:
            raise ValueError(f"{who}: expected 0 < max_radius < 1, got {max_radius!r}")
        self.max_radius = float(max_radius)
        self.iterations = (
            None if iterations is None else positive_int(iterations, "iterations", who)
        )

    def __repr__(self) -> str:
        return f"MoebiusMap(components={self.components}, shift={self.shift})"

    def _fixed_shapes(self) -> dict[str, tuple[int, ...]]:
        k = self.components
        shapes = {"centres": (k, 2)}
        if k > 1:
            shapes["logits"] = (k,)
        return shapes

    def _fixed(self, x: Tensor, params: Params, inverse: bool) -> tuple[Tensor, Tensor]:
        k = self.components
        raw = params["centres"] + _component_offsets(k, params["centres"])
        w = disk_point(raw, self.max_radius)
        logits = params["logits"] if k > 1 else None
        return moebius_circle(x, w, logits, inverse=inverse, iterations=self.iterations)


@register_map
class CircularSplineMap(_Rotated):
    """Circular rational-quadratic spline with ``bins`` bins (Rezende et al. 2020).

    Parameters per angle: ``bins`` widths, ``bins`` heights, ``bins`` knot derivatives (the
    derivative at ``pi`` equals the one at ``-pi``), and a ``rotation`` when ``shift``. The raw
    parameters are softly bounded, so every knot derivative and every bin's mean slope lies in
    ``[1/slope_bound, slope_bound]`` whatever the conditioner outputs (``slope_bound=None``:
    derivatives in ``[min_derivative, max_derivative]``, bins at least
    ``min_bin_width``/``min_bin_height``). Kernel:
    :func:`~manifoldflows.functional.circle.circular_rational_quadratic_spline`.

    Example:
        >>> m = CircularSplineMap(6)
        >>> x = torch.rand(4) * 6 - 3
        >>> params = {k: torch.randn(4, *s) for k, s in m.shapes.items()}
        >>> y, ld = m.forward(x, params)
        >>> torch.allclose(m.inverse(y, params)[0], x, atol=1e-5)
        True
    """

    name = "spline"

    def __init__(
        self,
        bins: int = 8,
        *,
        shift: bool = True,
        slope_bound: float | None = DEFAULT_SLOPE_BOUND,
        min_bin_width: float = 1e-3,
        min_bin_height: float = 1e-3,
        min_derivative: float = 1e-3,
        max_derivative: float = 1e3,
    ):
        super().__init__(shift)
        who = type(self).__name__
        self.bins = positive_int(bins, "number of bins", who)
        for name, value in (("min_bin_width", min_bin_width), ("min_bin_height", min_bin_height)):
            if not 0.0 < value * self.bins <= 1.0:
                raise ValueError(f"{who}: expected 0 < {name} <= 1/bins, got {value!r}")
        if not 0.0 < min_derivative < 1.0 < max_derivative:
            raise ValueError(
                f"{who}: expected 0 < min_derivative < 1 < max_derivative, got "
                f"{min_derivative!r} and {max_derivative!r}"
            )
        if slope_bound is not None and not slope_bound > 1.0:
            raise ValueError(f"{who}: expected slope_bound > 1, got {slope_bound!r}")
        self.slope_bound = None if slope_bound is None else float(slope_bound)
        self.min_bin_width, self.min_bin_height = float(min_bin_width), float(min_bin_height)
        self.min_derivative, self.max_derivative = float(min_derivative), float(max_derivative)

    def __repr__(self) -> str:
        return f"CircularSplineMap(bins={self.bins}, shift={self.shift})"

    def _fixed_shapes(self) -> dict[str, tuple[int, ...]]:
        k = self.bins
        return {"widths": (k,), "heights": (k,), "derivatives": (k,)}

    def _fixed(self, x: Tensor, params: Params, inverse: bool) -> tuple[Tensor, Tensor]:
        return circular_rational_quadratic_spline(
            x,
            params["widths"],
            params["heights"],
            params["derivatives"],
            inverse=inverse,
            min_bin_width=self.min_bin_width,
            min_bin_height=self.min_bin_height,
            min_derivative=self.min_derivative,
            max_derivative=self.max_derivative,
            slope_bound=self.slope_bound,
        )


@register_map
class NonCompactMap(ElementwiseMap):
    """Non-compact projection ``y = 2 atan(a tan(x / 2) + b)`` (Rezende et al. 2020).

    Parameters per angle: ``log_scale`` (``log a``) softly clamped to
    ``(-scale_bound, scale_bound)`` and ``shift`` (``b``) softly clamped to
    ``(-shift_bound, shift_bound)``. Kernel:
    :func:`~manifoldflows.functional.circle.noncompact_projection`.

    Example:
        >>> m = NonCompactMap()
        >>> x = torch.rand(4) * 6 - 3
        >>> params = {"log_scale": torch.randn(4), "shift": torch.randn(4)}
        >>> torch.allclose(m.inverse(m.forward(x, params)[0], params)[0], x, atol=1e-5)
        True
    """

    name, kind = "noncompact", "angle"

    def __init__(self, scale_bound: float = 5.0, shift_bound: float = 10.0):
        if not (scale_bound > 0 and shift_bound > 0):
            raise ValueError(
                f"NonCompactMap: expected positive bounds, got {scale_bound!r}, {shift_bound!r}"
            )
        self.scale_bound, self.shift_bound = float(scale_bound), float(shift_bound)

    def __repr__(self) -> str:
        return f"NonCompactMap(scale_bound={self.scale_bound}, shift_bound={self.shift_bound})"

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {"log_scale": (), "shift": ()}

    def _split(self, params: Params) -> tuple[Tensor, Tensor]:
        return (
            soft_clamp(params["log_scale"], self.scale_bound),
            soft_clamp(params["shift"], self.shift_bound),
        )

    def forward(self, x: Tensor, params: Params) -> tuple[Tensor, Tensor]:
        return noncompact_projection(x, *self._split(params))

    def inverse(self, y: Tensor, params: Params) -> tuple[Tensor, Tensor]:
        return noncompact_projection(y, *self._split(params), inverse=True)
