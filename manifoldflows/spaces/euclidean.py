"""Flat spaces: ``Euclidean(d)`` and boxes ``Interval(low, high, d)``."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import InvalidInput
from ..functional.elementwise import interval_to_real, real_to_interval
from .base import Coordinate, Space

__all__ = ["Euclidean", "Interval"]


class Euclidean(Space):
    """The flat space ``R^d`` with the Lebesgue measure.

    Example:
        >>> space = Euclidean(3)
        >>> space.random((5,)).shape
        torch.Size([5, 3])
        >>> space == Euclidean(3), space == Euclidean(2)
        (True, False)
    """

    def __init__(self, dim: int):
        if int(dim) != dim or dim < 1:
            raise ValueError(f"Euclidean: expected a positive integer dimension, got {dim!r}")
        self.d = int(dim)
        self.event_shape = (self.d,)
        self.dim = self.d

    def _key(self) -> tuple:
        return ("Interval", self.event_shape, -math.inf, math.inf)

    def __repr__(self) -> str:
        return f"Euclidean({self.d})"

    @property
    def coordinates(self) -> tuple[Coordinate, ...]:
        return (Coordinate("real"),) * self.d

    def random(
        self,
        shape: tuple[int, ...] | torch.Size = (),
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        return torch.randn(*shape, self.d, dtype=dtype, device=device, generator=generator)

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        return x + u

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        return y - x

    def dist(self, x: Tensor, y: Tensor) -> Tensor:
        return torch.linalg.vector_norm(y - x, dim=-1)

    def expmap_log_volume(self, x: Tensor, u: Tensor) -> Tensor:
        return torch.zeros(u.shape[:-1], dtype=u.dtype, device=u.device)


class Interval(Euclidean):
    """The box ``[low, high]^d`` (bounds may be infinite: half-lines or the whole line).

    Carries a fixed bijection to ``R^d`` (:meth:`to_real` / :meth:`from_real`): a scaled
    sigmoid for finite bounds, ``low + exp`` for a half-line, the identity for the whole line.
    ``Interval(-inf, inf, d)`` equals ``Euclidean(d)``.

    Example:
        >>> box = Interval(0.0, 2.0, 2)
        >>> x, logdet = box.from_real(torch.zeros(4, 2))
        >>> x[0].tolist(), round(float(logdet[0]), 6)  # 2 * log(2 * 1/4)
        ([1.0, 1.0], -1.386294)
        >>> round(box.uniform_log_prob(x)[0].item(), 6)  # -2 log 2
        -1.386294
    """

    def __init__(self, low: float, high: float, dim: int = 1):
        super().__init__(dim)
        low, high = float(low), float(high)
        if not low < high or math.isnan(low) or math.isnan(high):
            raise ValueError(f"Interval: expected low < high, got low={low}, high={high}")
        self.low, self.high = low, high
        self.is_compact = math.isfinite(low) and math.isfinite(high)

    def _key(self) -> tuple:
        return ("Interval", self.event_shape, self.low, self.high)

    def __repr__(self) -> str:
        return f"Interval({self.low:g}, {self.high:g}, {self.d})"

    def contains(self, x: Tensor) -> Tensor:
        tol = self.tolerance(x.dtype) * max(
            1.0, *(abs(b) for b in (self.low, self.high) if math.isfinite(b))
        )
        inside = (x >= self.low - tol) & (x <= self.high + tol) & torch.isfinite(x)
        return inside.all(-1)

    def check_point(self, x: Tensor, who: str = "") -> None:
        super().check_shape(x, who)
        if self.low == -math.inf and self.high == math.inf:
            return super().check_point(x, who)
        if not torch.is_floating_point(x):
            raise InvalidInput(
                f"{who + ': ' if who else ''}expected a floating-point tensor, got {x.dtype}"
            )
        inside = self.contains(x)
        if not bool(inside.all()):
            bad = x[(x < self.low) | (x > self.high) | ~torch.isfinite(x)]
            raise InvalidInput(
                f"{who + ': ' if who else ''}expected points of {self!r}, "
                f"got {int((~inside).sum())} point(s) outside, with offending values in "
                f"[{bad.min().item():g}, {bad.max().item():g}]"
            )

    @property
    def coordinates(self) -> tuple[Coordinate, ...]:
        if self.low == -math.inf and self.high == math.inf:
            return (Coordinate("real"),) * self.d
        return (Coordinate("interval", self.low, self.high),) * self.d

    def projx(self, x: Tensor) -> Tensor:
        return x.clamp(self.low, self.high)

    def random(
        self,
        shape: tuple[int, ...] | torch.Size = (),
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        z = torch.randn(*shape, self.d, dtype=dtype, device=device, generator=generator)
        return self.from_real(z)[0]

    def to_real(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Map points of the box to ``R^d``; returns ``(z, logdet)`` with batch-shaped logdet."""
        z, ld = interval_to_real(x, self.low, self.high)
        return z, ld.sum(-1)

    def from_real(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Map ``R^d`` onto the box; returns ``(x, logdet)`` with batch-shaped logdet."""
        x, ld = real_to_interval(z, self.low, self.high)
        return x, ld.sum(-1)

    def log_volume(self) -> float:
        if not self.is_compact:
            return super().log_volume()
        return self.d * math.log(self.high - self.low)

    def random_uniform(
        self,
        shape: tuple[int, ...] | torch.Size = (),
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        if not self.is_compact:
            return super().random_uniform(shape)
        u = torch.rand(*shape, self.d, dtype=dtype, device=device, generator=generator)
        return self.low + (self.high - self.low) * u
