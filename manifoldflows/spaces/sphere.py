"""The n-sphere ``S^n`` embedded in ``R^(n+1)`` as unit vectors."""

from __future__ import annotations

import math

import geoopt
import torch
from torch import Tensor

from ..errors import InvalidInput
from ..functional import sphere as geometry
from .base import Coordinate, Space

__all__ = ["Sphere"]


class Sphere(Space):
    """The unit n-sphere ``S^n = {x in R^(n+1) : |x| = 1}`` with its surface measure.

    Points are unit vectors (``event_shape == (n+1,)``, ``dim == n``); tangent vectors at ``x``
    are ambient vectors orthogonal to ``x``. The geometry is that of the round metric:

    .. math::
        \\exp_x(u) = \\cos|u|\\, x + \\frac{\\sin|u|}{|u|}\\, u, \\qquad
        \\log_x(y) = \\theta \\frac{y - \\langle x, y\\rangle x}{|y - \\langle x, y\\rangle x|},
        \\qquad d(x, y) = \\theta = 2 \\operatorname{atan2}(|x - y|, |x + y|),

    and the volume change of the exponential map between orthonormal tangent bases is
    ``log|det d exp_x(u)| = (n - 1) log(sin|u| / |u|)`` (limit 0 at ``u = 0``). The total
    volume is ``|S^n| = 2 pi^((n+1)/2) / Gamma((n+1)/2)`` (``2 pi``, ``4 pi``, ``2 pi^2`` for
    ``n = 1, 2, 3``); the uniform density is its inverse.

    :meth:`tangent_basis` returns the columns ``H e_1, ..., H e_n`` of the Householder
    reflection ``H`` that swaps the north pole ``e_(n+1)`` with ``-x``: an orthonormal basis of
    ``x^perp``, smooth everywhere except at the south pole ``x = -e_(n+1)`` (where ``H`` is
    undefined) and equal to the first ``n`` standard basis vectors at the north pole.

    **One geometry.** Every method delegates to :mod:`manifoldflows.functional.sphere`, the
    package's one implementation of the sphere's arithmetic, which the sphere layers and kernels
    call too. There the projections come from :class:`geoopt.manifolds.Sphere`; the
    exponential map, logarithmic map and distance are our own because geoopt clamps the cosine
    at ``1 - 1e-4`` in float32 (``dist(x, x)`` would be ``0.014``) and its exponential map has a
    NaN gradient at ``u = 0``; the ``atan2`` forms above are accurate at all distances.
    :meth:`manifold_parameter` makes learnable points of the sphere (``geoopt.ManifoldParameter``)
    that ``geoopt.optim.RiemannianAdam`` keeps on it.

    :meth:`check_point` refuses points whose norm differs from 1 by more than
    :meth:`tolerance` (``max(100 eps, 1e-10)``: about ``1e-5`` in float32, ``1e-10`` in
    float64); :meth:`projx` normalises.

    Arguments:
        dim: intrinsic dimension (a positive integer); points live in ``R^(n+1)``.

    References:
        Rezende et al., "Normalizing flows on tori and spheres", ICML 2020, arXiv:2002.02428.
        Kochurov, Karimov, Kozlukov, "Geoopt: Riemannian optimization in PyTorch",
        arXiv:2005.02819.

    Example:
        >>> space = Sphere(2)
        >>> x = space.random_uniform((4,), generator=torch.Generator().manual_seed(0))
        >>> x.shape, bool(space.contains(x).all())
        (torch.Size([4, 3]), True)
        >>> round(math.exp(space.log_volume()) / math.pi, 6)  # 4 pi
        4.0
        >>> y = space.expmap(x, space.proju(x, torch.ones(4, 3)))
        >>> torch.allclose(space.expmap(x, space.logmap(x, y)), y, atol=1e-6)
        True
        >>> float(space.dist(x, x).abs().max())  # geoopt's float32 dist would give 0.014
        0.0
    """

    is_compact = True

    def __init__(self, dim: int = 2):
        if isinstance(dim, bool) or int(dim) != dim or dim < 1:
            raise ValueError(f"Sphere: expected a positive integer dimension dim, got {dim!r}")
        self.n = int(dim)
        self.event_shape = (self.n + 1,)
        self.dim = self.n

    def _key(self) -> tuple:
        return ("Sphere", self.event_shape)

    def __repr__(self) -> str:
        return f"Sphere({self.n})"

    # ----------------------------------------------------------------- points
    def tolerance(self, dtype: torch.dtype) -> float:
        """Tolerance on ``| |x| - 1 |``: ``max(tolerance_factor * eps, 1e-10)``."""
        return max(super().tolerance(dtype), 1e-10)

    def contains(self, x: Tensor) -> Tensor:
        norm = torch.linalg.vector_norm(x, dim=-1)
        ok = (norm - 1.0).abs() <= self.tolerance(x.dtype)
        return ok & torch.isfinite(x).all(-1)

    def check_point(self, x: Tensor, who: str = "") -> None:
        super().check_point(x, who)
        inside = self.contains(x)
        if not bool(inside.all()):
            prefix = f"{who}: " if who else ""
            dev = (torch.linalg.vector_norm(x, dim=-1) - 1.0).abs()[~inside]
            raise InvalidInput(
                f"{prefix}expected points of {self!r} (unit vectors in R^{self.n + 1}, "
                f"| |x| - 1 | <= {self.tolerance(x.dtype):.1e}), got {int((~inside).sum())} "
                f"point(s) off the sphere, with | |x| - 1 | up to {dev.max().item():.3g}; "
                f"project them with space.projx"
            )

    def projx(self, x: Tensor) -> Tensor:
        """Normalise to unit length."""
        return geometry.projx(x)

    @property
    def coordinates(self) -> tuple[Coordinate, ...]:
        """Ambient coordinates: conditioners read the point as it is; none moves on its own."""
        return (Coordinate("embedded", -1.0, 1.0),) * (self.dim + 1)

    def random_uniform(
        self,
        shape: tuple[int, ...] | torch.Size = (),
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Uniform samples: normalised standard Gaussian vectors."""
        z = torch.randn(*shape, self.n + 1, dtype=dtype, device=device, generator=generator)
        return z / torch.linalg.vector_norm(z, dim=-1, keepdim=True)

    def random(
        self,
        shape: tuple[int, ...] | torch.Size = (),
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        return self.random_uniform(shape, dtype=dtype, device=device, generator=generator)

    # ----------------------------------------------------------------- tangent spaces
    def proju(self, x: Tensor, u: Tensor) -> Tensor:
        """Remove the component of ``u`` along ``x``: ``u - <x, u> x``."""
        return geometry.proju(x, u)

    def inner(self, x: Tensor, u: Tensor, v: Tensor) -> Tensor:
        return (u * v).sum(-1)

    def tangent_basis(self, x: Tensor) -> Tensor:
        """Orthonormal basis of ``x^perp``, shape ``batch + (n+1, n)`` (see the class doc)."""
        return geometry.tangent_basis(x)

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        return geometry.expmap(x, u)

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        return geometry.logmap(x, y)

    def dist(self, x: Tensor, y: Tensor) -> Tensor:
        return geometry.dist(x, y)

    def expmap_log_volume(self, x: Tensor, u: Tensor) -> Tensor:
        """``(n - 1) log|sin|u| / |u||`` (0 on the circle ``n = 1`` and at ``u = 0``)."""
        value = geometry.expmap_log_volume(u, self.n)
        shape = torch.broadcast_shapes(x.shape[:-1], value.shape)
        return value.expand(shape)

    # ----------------------------------------------------------------- learnable points
    def manifold_parameter(self, value: Tensor, requires_grad: bool = True) -> Tensor:
        """A learnable point (or array of points, along the last axis) of the sphere.

        Returns a :class:`geoopt.ManifoldParameter` on :class:`geoopt.manifolds.Sphere` holding
        ``projx(value)``; ``geoopt.optim.RiemannianAdam`` (or ``RiemannianSGD``) then takes
        Riemannian steps that keep it on the sphere, while plain optimisers treat it as an
        ordinary parameter. The data is copied into a plain tensor first: a
        ``geoopt.ManifoldTensor`` (e.g. from ``geoopt.Sphere().random(...)``) carries its own
        manifold instance, and wrapping it with another one raises "Manifolds do not match".

        Arguments:
            value: ``(..., n+1)`` initial point(s), normalised here.
            requires_grad: whether the parameter is learnable.

        Example:
            >>> p = Sphere(2).manifold_parameter(torch.tensor([0.0, 3.0, 4.0]))
            >>> type(p).__name__, p.tolist()
            ('ManifoldParameter', [0.0, 0.6000000238418579, 0.800000011920929])
        """
        data = geometry.projx(value.detach().as_subclass(torch.Tensor).clone())
        if data.shape[-1:] != torch.Size(self.event_shape):
            raise InvalidInput(
                f"{self!r}.manifold_parameter: expected points of shape (..., {self.n + 1}), "
                f"got {tuple(value.shape)}"
            )
        return geoopt.ManifoldParameter(
            data, manifold=geoopt.manifolds.Sphere(), requires_grad=requires_grad
        )

    # ----------------------------------------------------------------- volume
    def log_volume(self) -> float:
        """``log(2 pi^((n+1)/2) / Gamma((n+1)/2))``."""
        h = 0.5 * (self.n + 1)
        return math.log(2.0) + h * math.log(math.pi) - math.lgamma(h)
