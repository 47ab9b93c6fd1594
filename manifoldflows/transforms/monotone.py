"""Elementwise monotone maps parameterised by a conditioner's output.

Coupling and autoregressive layers split into a *conditioner* (a network producing parameters)
and an elementwise *monotone map* ("transformer" in the autoregressive-flow literature) that
turns each coordinate ``x_i`` into ``y_i`` given its parameter vector. The maps below are small
picklable objects (not modules): ``params_per_dim`` says how many numbers each coordinate needs,
``forward(x, params)`` / ``inverse(y, params)`` take ``params`` of shape ``x.shape + (P,)`` and
return ``(output, elementwise logabsdet)``. All-zero parameters give the identity map.
"""

from __future__ import annotations

from torch import Tensor

from ..functional.affine import affine, affine_inverse, soft_clamp
from ..functional.splines import rational_quadratic_spline

__all__ = ["MonotoneMap", "AdditiveMap", "AffineMap", "SplineMap", "make_monotone_map"]


class MonotoneMap:
    """Base class: an elementwise bijection ``R -> R`` with ``params_per_dim`` parameters."""

    params_per_dim: int = 0

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class AdditiveMap(MonotoneMap):
    """``y = x + t`` (NICE; Dinh et al. 2014, arXiv:1410.8516). Volume preserving."""

    params_per_dim = 1

    def forward(self, x, params):
        y = x + params[..., 0]
        return y, y.new_zeros(()).expand(y.shape)

    def inverse(self, y, params):
        x = y - params[..., 0]
        return x, x.new_zeros(()).expand(x.shape)


class AffineMap(MonotoneMap):
    """``y = x exp(s) + t`` with ``s = c tanh(raw / c)`` softly clamped to ``(-c, c)``.

    RealNVP (Dinh et al. 2016, arXiv:1605.08803). The soft clamp keeps early training stable.
    """

    params_per_dim = 2

    def __init__(self, scale_bound: float = 5.0):
        self.scale_bound = float(scale_bound)

    def __repr__(self) -> str:
        return f"AffineMap(scale_bound={self.scale_bound})"

    def _split(self, params: Tensor) -> tuple[Tensor, Tensor]:
        return params[..., 0], soft_clamp(params[..., 1], self.scale_bound)

    def forward(self, x, params):
        shift, log_scale = self._split(params)
        return affine(x, shift, log_scale)

    def inverse(self, y, params):
        shift, log_scale = self._split(params)
        return affine_inverse(y, shift, log_scale)


class SplineMap(MonotoneMap):
    """Rational-quadratic spline on ``[-bound, bound]`` with identity tails.

    ``3 * bins - 1`` parameters per coordinate: ``bins`` widths, ``bins`` heights and
    ``bins - 1`` interior derivatives (Durkan et al. 2019, Neural Spline Flows,
    arXiv:1906.04032). See :func:`manifoldflows.functional.splines.rational_quadratic_spline`.
    """

    def __init__(self, bins: int = 8, bound: float = 5.0):
        if bins < 2:
            raise ValueError(f"SplineMap: expected at least 2 bins, got {bins}")
        self.bins, self.bound = int(bins), float(bound)
        self.params_per_dim = 3 * self.bins - 1

    def __repr__(self) -> str:
        return f"SplineMap(bins={self.bins}, bound={self.bound})"

    def _call(self, x: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        k = self.bins
        return rational_quadratic_spline(
            x,
            params[..., :k],
            params[..., k : 2 * k],
            params[..., 2 * k :],
            inverse=inverse,
            bound=self.bound,
        )

    def forward(self, x, params):
        return self._call(x, params, inverse=False)

    def inverse(self, y, params):
        return self._call(y, params, inverse=True)


def make_monotone_map(kind: str | MonotoneMap, **options) -> MonotoneMap:
    """Build a map from its name (``"additive"``, ``"affine"``, ``"spline"``) and options."""
    if isinstance(kind, MonotoneMap):
        return kind
    table = {"additive": AdditiveMap, "affine": AffineMap, "spline": SplineMap}
    if kind not in table:
        raise ValueError(f"unknown monotone map {kind!r}; choose from {sorted(table)}")
    return table[kind](**options)
