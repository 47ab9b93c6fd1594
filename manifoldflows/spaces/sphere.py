"""The n-sphere ``S^n`` embedded in ``R^(n+1)`` as unit vectors."""

from __future__ import annotations

import math

import geoopt
import torch
from torch import Tensor

from ..errors import InvalidInput
from .base import Space

__all__ = ["Sphere"]

_GEOOPT_SPHERE = geoopt.manifolds.Sphere()


def _sinc(r: Tensor) -> Tensor:
    """``sin(r) / r`` with the limit 1 at 0 (smooth, differentiable everywhere)."""
    return torch.sinc(r / math.pi)


def _safe_norm(u: Tensor) -> Tensor:
    """Euclidean norm over the last axis whose gradient at ``u = 0`` is 0 instead of NaN."""
    sq = (u * u).sum(-1)
    tiny = sq <= torch.finfo(u.dtype).tiny
    return torch.where(
        tiny, torch.zeros_like(sq), torch.where(tiny, torch.ones_like(sq), sq).sqrt()
    )


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

    The projections and the inner product come from :class:`geoopt.manifolds.Sphere`. The
    exponential map, logarithmic map and distance are written here because geoopt clamps the
    cosine at ``1 - 1e-4`` in float32 (``dist(x, x)`` would be ``0.014``) and switches to a
    retraction for small steps; the ``atan2`` forms above are accurate at all distances.

    :meth:`check_point` refuses points whose norm differs from 1 by more than
    :meth:`tolerance` (``max(100 eps, 1e-10)``: about ``1e-5`` in float32, ``1e-10`` in
    float64); :meth:`projx` normalises.

    Arguments:
        n: intrinsic dimension (a positive integer); points live in ``R^(n+1)``.

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
    """

    is_compact = True

    def __init__(self, n: int = 2):
        if isinstance(n, bool) or int(n) != n or n < 1:
            raise ValueError(f"Sphere: expected a positive integer dimension n, got {n!r}")
        self.n = int(n)
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
        return _GEOOPT_SPHERE.projx(x)

    def random_uniform(self, shape=(), *, dtype=None, device=None, generator=None) -> Tensor:
        """Uniform samples: normalised standard Gaussian vectors."""
        z = torch.randn(*shape, self.n + 1, dtype=dtype, device=device, generator=generator)
        return z / torch.linalg.vector_norm(z, dim=-1, keepdim=True)

    def random(self, shape=(), *, dtype=None, device=None, generator=None) -> Tensor:
        return self.random_uniform(shape, dtype=dtype, device=device, generator=generator)

    # ----------------------------------------------------------------- tangent spaces
    def proju(self, x: Tensor, u: Tensor) -> Tensor:
        """Remove the component of ``u`` along ``x``: ``u - <x, u> x``."""
        return _GEOOPT_SPHERE.proju(x, u)

    def inner(self, x: Tensor, u: Tensor, v: Tensor) -> Tensor:
        return (u * v).sum(-1)

    def tangent_basis(self, x: Tensor) -> Tensor:
        """Orthonormal basis of ``x^perp``, shape ``batch + (n+1, n)`` (see the class doc)."""
        n = self.n
        v = x.clone()
        v[..., n] = v[..., n] + 1.0  # v = x + e_(n+1); H = I - 2 v v^T / |v|^2 maps e to -x
        sq = (v * v).sum(-1).clamp_min(torch.finfo(x.dtype).tiny)
        eye = torch.eye(n + 1, n, dtype=x.dtype, device=x.device)
        scale = (2.0 / sq)[..., None, None]
        return eye - scale * v[..., :, None] * v[..., None, :n]

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        r = _safe_norm(u)[..., None]
        return torch.cos(r) * x + _sinc(r) * u

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        v = y - (x * y).sum(-1, keepdim=True) * x
        vn = _safe_norm(v)[..., None]
        theta = self.dist(x, y)[..., None]
        ratio = torch.where(vn > 0, theta / torch.where(vn > 0, vn, torch.ones_like(vn)), 1.0)
        return ratio * v

    def dist(self, x: Tensor, y: Tensor) -> Tensor:
        return 2.0 * torch.atan2(_safe_norm(x - y), _safe_norm(x + y))

    def expmap_log_volume(self, x: Tensor, u: Tensor) -> Tensor:
        """``(n - 1) log|sin|u| / |u||`` (0 on the circle ``n = 1`` and at ``u = 0``)."""
        r = _safe_norm(u)
        value = (self.n - 1) * torch.log(_sinc(r).abs())
        shape = torch.broadcast_shapes(x.shape[:-1], value.shape)
        return value.expand(shape)

    # ----------------------------------------------------------------- volume
    def log_volume(self) -> float:
        """``log(2 pi^((n+1)/2) / Gamma((n+1)/2))``."""
        h = 0.5 * (self.n + 1)
        return math.log(2.0) + h * math.log(math.pi) - math.lgamma(h)
