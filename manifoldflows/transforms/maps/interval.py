"""Element-wise bijections of a bounded interval onto itself."""

from __future__ import annotations

import math

from torch import Tensor

from ..._checks import positive_int
from ...functional.splines import interval_rational_quadratic_spline
from ...spaces.base import Coordinate
from .base import ElementwiseMap, Params, register_map
from .real import DEFAULT_SLOPE_BOUND

__all__ = ["IntervalSplineMap"]


@register_map
class IntervalSplineMap(ElementwiseMap):
    """Rational-quadratic spline of ``[low, high]`` onto itself (Durkan et al. 2019).

    The end points are fixed, all ``bins + 1`` knot derivatives are free, and every knot
    derivative and bin's mean slope lies in ``[1/slope_bound, slope_bound]`` whatever the
    conditioner outputs. The map for bond
    angles in ``(0, pi)`` and any other bounded coordinate; presets pick it for the
    :class:`~manifoldflows.spaces.Interval` factors of a space. See
    :func:`~manifoldflows.functional.splines.interval_rational_quadratic_spline`.

    Arguments:
        bins: number of bins.
        low, high: the interval (finite).
        slope_bound: bound ``B > 1`` on knot derivatives and bin slopes.

    Example:
        >>> m = IntervalSplineMap(4, low=0.0, high=math.pi)
        >>> x = torch.tensor([0.5, 3.0])
        >>> params = {k: torch.randn(2, *s) for k, s in m.shapes.items()}
        >>> y, ld = m.forward(x, params)
        >>> bool(((y >= 0) & (y <= math.pi)).all()), torch.allclose(m.inverse(y, params)[0], x)
        (True, True)
    """

    name, kind = "spline", "interval"

    def __init__(
        self,
        bins: int = 8,
        low: float = 0.0,
        high: float = 1.0,
        slope_bound: float = DEFAULT_SLOPE_BOUND,
    ):
        who = type(self).__name__
        self.bins = positive_int(bins, "number of bins", who)
        self.low, self.high = float(low), float(high)
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ValueError(f"{who}: expected a finite interval low < high, got {low}, {high}")
        self.slope_bound = float(slope_bound)

    def __repr__(self) -> str:
        return f"IntervalSplineMap(bins={self.bins}, low={self.low:g}, high={self.high:g})"

    def accepts(self, coordinate: Coordinate) -> bool:
        return coordinate.kind == "interval" and (coordinate.low, coordinate.high) == (
            self.low,
            self.high,
        )

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        k = self.bins
        return {"widths": (k,), "heights": (k,), "derivatives": (k + 1,)}

    def _call(self, x: Tensor, params: Params, inverse: bool) -> tuple[Tensor, Tensor]:
        return interval_rational_quadratic_spline(
            x,
            params["widths"],
            params["heights"],
            params["derivatives"],
            low=self.low,
            high=self.high,
            inverse=inverse,
            slope_bound=self.slope_bound,
        )

    def forward(self, x: Tensor, params: Params) -> tuple[Tensor, Tensor]:
        return self._call(x, params, inverse=False)

    def inverse(self, y: Tensor, params: Params) -> tuple[Tensor, Tensor]:
        return self._call(y, params, inverse=True)
