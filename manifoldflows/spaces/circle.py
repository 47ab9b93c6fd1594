"""The circle and the flat torus, with points stored as angles in ``[-pi, pi)``."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import InvalidInput
from ..functional.circle import wrap
from .base import Coordinate, Space

__all__ = ["Torus", "Circle", "ANGLE"]

#: The coordinate of every angle: ``[-pi, pi)``, read by conditioners as ``(cos, sin)``.
ANGLE = Coordinate("angle", -math.pi, math.pi)


class Torus(Space):
    """The flat torus ``T^n = (S^1)^n`` with points stored as ``n`` angles in ``[-pi, pi)``.

    The angles are the intrinsic coordinates, so the tangent basis is the identity and the
    Riemannian volume is the Lebesgue measure on the angle box (arc length on each circle): the
    total volume is ``(2 pi)^n`` and the uniform density is ``(2 pi)^(-n)``. The exponential and
    logarithmic maps are the wrapped sum and difference,

    .. math:: \\exp_x(u) = \\operatorname{wrap}(x + u), \\qquad
              \\log_x(y) = \\operatorname{wrap}(y - x),

    and the geodesic distance is the Euclidean norm of ``log_x(y)`` (each component at most
    ``pi``). The volume change of the exponential map is zero (the torus is flat).

    :meth:`check_point` accepts angles in ``[-pi, pi]`` within the space's tolerance (``pi``
    itself, the limit of a wrapped value, is accepted); :meth:`projx` wraps any real angle.

    Arguments:
        dim: number of angles (a positive integer).

    References:
        Rezende et al., "Normalizing flows on tori and spheres", ICML 2020, arXiv:2002.02428.

    Example:
        >>> space = Torus(2)
        >>> x = space.random_uniform((5,), generator=torch.Generator().manual_seed(0))
        >>> x.shape, bool(space.contains(x).all())
        (torch.Size([5, 2]), True)
        >>> round(space.log_volume(), 6) == round(2 * math.log(2 * math.pi), 6)
        True
        >>> space.logmap(torch.tensor([3.0, 0.0]), torch.tensor([-3.0, 0.5]))  # the short way
        tensor([0.2832, 0.5000])
    """

    is_compact = True

    def __init__(self, dim: int = 1):
        if isinstance(dim, bool) or int(dim) != dim or dim < 1:
            raise ValueError(
                f"{type(self).__name__}: expected a positive integer number of angles dim, "
                f"got {dim!r}"
            )
        self.n = int(dim)
        self.event_shape = (self.n,)
        self.dim = self.n

    def _key(self) -> tuple:
        return ("Torus", self.event_shape)

    def __repr__(self) -> str:
        return f"Torus({self.n})"

    @property
    def coordinates(self) -> tuple[Coordinate, ...]:
        return (ANGLE,) * self.n

    # ----------------------------------------------------------------- points
    def tolerance(self, dtype: torch.dtype) -> float:
        """Absolute tolerance on the angles (``tolerance_factor * eps * pi``)."""
        return super().tolerance(dtype) * math.pi

    def contains(self, x: Tensor) -> Tensor:
        tol = self.tolerance(x.dtype)
        ok = (x >= -math.pi - tol) & (x <= math.pi + tol) & torch.isfinite(x)
        return ok.all(-1)

    def check_point(self, x: Tensor, who: str = "") -> None:
        super().check_point(x, who)
        inside = self.contains(x)
        if not bool(inside.all()):
            prefix = f"{who}: " if who else ""
            bad = x[~inside]
            raise InvalidInput(
                f"{prefix}expected points of {self!r} (angles in [-pi, pi]), got "
                f"{int((~inside).sum())} point(s) outside, with values in "
                f"[{bad.min().item():g}, {bad.max().item():g}]; wrap them with space.projx"
            )

    def projx(self, x: Tensor) -> Tensor:
        """Wrap angles to ``[-pi, pi)``."""
        return wrap(x)

    def random_uniform(
        self,
        shape: tuple[int, ...] | torch.Size = (),
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        u = torch.rand(*shape, self.n, dtype=dtype, device=device, generator=generator)
        return wrap(2.0 * math.pi * u - math.pi)

    def random(
        self,
        shape: tuple[int, ...] | torch.Size = (),
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        return self.random_uniform(shape, dtype=dtype, device=device, generator=generator)

    # ----------------------------------------------------------------- geometry
    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        return wrap(x + u)

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        return wrap(y - x)

    def dist(self, x: Tensor, y: Tensor) -> Tensor:
        return torch.linalg.vector_norm(self.logmap(x, y), dim=-1)

    def expmap_log_volume(self, x: Tensor, u: Tensor) -> Tensor:
        shape = torch.broadcast_shapes(x.shape, u.shape)[:-1]
        return torch.zeros(shape, dtype=u.dtype, device=u.device)

    def log_volume(self) -> float:
        """``n log(2 pi)``."""
        return self.n * math.log(2.0 * math.pi)


class Circle(Torus):
    """The circle ``S^1`` as one angle in ``[-pi, pi)``: the same space as ``Torus(1)``.

    Densities are taken with respect to arc length (total length ``2 pi``). Points have
    ``event_shape == (1,)``.

    References:
        Rezende et al., "Normalizing flows on tori and spheres", ICML 2020, arXiv:2002.02428.

    Example:
        >>> Circle() == Torus(1), Circle().event_shape
        (True, (1,))
        >>> round(math.exp(Circle().log_volume()), 6) == round(2 * math.pi, 6)
        True
    """

    def __init__(self) -> None:
        super().__init__(1)

    def __repr__(self) -> str:
        return "Circle()"
