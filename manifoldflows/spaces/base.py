"""The :class:`Space` base class: where the points of a layer or distribution live.

A space knows the shape of one point (``event_shape``), its intrinsic dimension (``dim``), how to
check and project points, and, for manifolds, the tangent-space arithmetic the flows need. Every
point is a tensor whose trailing ``len(event_shape)`` dimensions are the point; the leading ones
are batch dimensions.

Densities on a space are always taken with respect to its Riemannian volume, and the log-det of
a layer is measured between the orthonormal tangent bases returned by :meth:`Space.tangent_basis`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import InvalidInput

__all__ = ["Space", "Coordinate", "COORDINATE_KINDS"]

#: What a coordinate can be: a real number, a number in a bounded interval, an angle in
#: ``[-pi, pi)``, or one ambient coordinate of an embedded manifold (a sphere's x, y, z), which
#: conditioners read as it is but no element-wise map can move on its own.
COORDINATE_KINDS = ("real", "interval", "angle", "embedded")


@dataclass(frozen=True)
class Coordinate:
    """One coordinate of a space's points, as conditioners and element-wise maps see it.

    ``kind`` (one of :data:`COORDINATE_KINDS`) decides which element-wise maps can act on it
    (``manifoldflows.transforms.maps``) and how a conditioner reads it
    (:class:`~manifoldflows.nn.embedding.CoordinateEmbedding`: identity for real and embedded
    coordinates, rescaled to ``[-1, 1]`` on a bounded interval, ``(cos, sin)`` for angles).

    Example:
        >>> Coordinate("interval", 0.0, 3.0)
        Coordinate(kind='interval', low=0.0, high=3.0)
    """

    kind: str
    low: float = -math.inf
    high: float = math.inf

    def __post_init__(self) -> None:
        if self.kind not in COORDINATE_KINDS:
            raise ValueError(
                f"Coordinate: kind must be one of {COORDINATE_KINDS}, got {self.kind!r}"
            )


def _all_finite(x: Tensor) -> bool:
    # One reduction decides the common case (see manifoldflows._checks.all_finite).
    return bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())


class Space:
    """Base class of all spaces.

    Subclasses set ``event_shape`` and ``dim`` and override what applies to them. The defaults
    describe a flat, unbounded embedding: identity projection, identity tangent basis.

    Attributes:
        event_shape: shape of one point, e.g. ``(d,)``.
        dim: intrinsic dimension (``d`` for ``R^d``, ``n`` for the n-sphere in ``R^(n+1)``).
        is_compact: whether the space has finite volume (then ``uniform_log_prob`` exists).
    """

    event_shape: tuple[int, ...] = ()
    dim: int = 0
    is_compact: bool = False
    #: Tolerance (in units of the dtype's resolution) used by :meth:`check_point`.
    tolerance_factor: float = 100.0

    # ----------------------------------------------------------------- identity
    def _key(self) -> tuple:
        """What makes two instances equal (same set, same coordinates)."""
        return (type(self).__name__, self.event_shape)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Space) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    @property
    def event_ndim(self) -> int:
        """Number of trailing dimensions that make up one point."""
        return len(self.event_shape)

    @property
    def ambient_dim(self) -> int:
        """Number of coordinates of one point (the product of ``event_shape``)."""
        return math.prod(self.event_shape)

    @property
    def coordinates(self) -> tuple[Coordinate, ...]:
        """What each of the ``ambient_dim`` coordinates of a point is (see :class:`Coordinate`).

        A space that provides this (and element-wise maps for its kinds) gets couplings,
        autoregressive layers and presets for free. Products concatenate their factors'.
        """
        raise NotImplementedError(
            f"{self!r} does not describe its coordinates, so coupling and autoregressive layers "
            "cannot act on it"
        )

    def embed(self, x: Tensor) -> Tensor:
        """Conditioner features of points ``x``: identity on ``R^d``, ``(cos, sin)`` of angles,
        intervals rescaled to ``[-1, 1]``, the point itself on spheres.

        The features follow from :attr:`coordinates` alone (the non-angle coordinates first,
        then a ``(cos, sin)`` pair per angle; see
        :class:`~manifoldflows.nn.embedding.CoordinateEmbedding`), and the layers build the same
        embedding from them: a new space changes what conditioners read through the kinds of
        its coordinates, not by overriding this method.

        Example:
            >>> from manifoldflows.spaces import Euclidean, Product, Torus
            >>> Product(Euclidean(1), Torus(1)).embed(torch.tensor([2.0, 0.0])).tolist()
            [2.0, 1.0, 0.0]
        """
        from ..nn.embedding import coordinate_embedding  # nn builds on spaces, not the reverse

        return coordinate_embedding(self.coordinates)(x)

    def batch_shape(self, x: Tensor) -> torch.Size:
        """Leading (batch) dimensions of ``x``."""
        return x.shape[: x.dim() - self.event_ndim]

    # ----------------------------------------------------------------- points
    def check_shape(self, x: Tensor, who: str = "") -> None:
        """Raise :class:`InvalidInput` unless ``x`` ends in ``event_shape``."""
        prefix = f"{who}: " if who else ""
        if not isinstance(x, Tensor):
            raise InvalidInput(
                f"{prefix}expected a torch.Tensor on {self!r}, got {type(x).__name__}"
            )
        n = self.event_ndim
        if x.dim() < n or tuple(x.shape[x.dim() - n :]) != tuple(self.event_shape):
            raise InvalidInput(
                f"{prefix}expected points of {self!r} with trailing shape "
                f"{tuple(self.event_shape)}, got a tensor of shape {tuple(x.shape)}"
            )

    def check_point(self, x: Tensor, who: str = "") -> None:
        """Raise :class:`InvalidInput` unless every point in ``x`` lies in the space.

        The base implementation checks the shape and that all values are finite; subclasses add
        their constraints (bounds, unit norm, ...). ``who`` names the caller in the message.
        """
        self.check_shape(x, who)
        if not torch.is_floating_point(x):
            prefix = f"{who}: " if who else ""
            raise InvalidInput(f"{prefix}expected a floating-point tensor, got dtype {x.dtype}")
        if not _all_finite(x):
            prefix = f"{who}: " if who else ""
            bad = int((~torch.isfinite(x)).sum())
            raise InvalidInput(
                f"{prefix}expected finite points of {self!r}, got {bad} NaN/inf value(s) "
                f"in a tensor of shape {tuple(x.shape)}"
            )

    def tolerance(self, dtype: torch.dtype) -> float:
        """Absolute tolerance for membership tests in ``dtype``."""
        return self.tolerance_factor * torch.finfo(dtype).eps

    def contains(self, x: Tensor) -> Tensor:
        """Boolean tensor of batch shape: which points lie in the space (within tolerance)."""
        return (
            torch.isfinite(x).flatten(x.dim() - self.event_ndim).all(-1)
            if self.event_ndim
            else torch.isfinite(x)
        )

    def projx(self, x: Tensor) -> Tensor:
        """Project ambient coordinates onto the space (identity by default)."""
        return x

    def random(
        self,
        shape: tuple[int, ...] | torch.Size = (),
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Random points for tests and initialisation (not a calibrated distribution)."""
        raise NotImplementedError(f"{type(self).__name__}.random is not implemented")

    # ----------------------------------------------------------------- tangent spaces
    def proju(self, x: Tensor, u: Tensor) -> Tensor:
        """Project an ambient vector ``u`` onto the tangent space at ``x`` (identity by default)."""
        return u

    def tangent_basis(self, x: Tensor) -> Tensor:
        """Orthonormal basis of the tangent space at ``x``.

        Returns a tensor of shape ``batch + (ambient_dim, dim)`` whose columns are orthonormal
        ambient vectors spanning the tangent space. The default is the identity (flat spaces).
        """
        eye = torch.eye(self.ambient_dim, dtype=x.dtype, device=x.device)
        return eye.expand(*self.batch_shape(x), self.ambient_dim, self.dim)

    def inner(self, x: Tensor, u: Tensor, v: Tensor) -> Tensor:
        """Riemannian inner product of tangent vectors ``u`` and ``v`` at ``x``."""
        return (u * v).flatten(u.dim() - self.event_ndim).sum(-1)

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        """Exponential map at ``x`` applied to the tangent vector ``u``."""
        raise NotImplementedError(f"{type(self).__name__} has no exponential map")

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        """Inverse of :meth:`expmap`: the tangent vector at ``x`` pointing to ``y``."""
        raise NotImplementedError(f"{type(self).__name__} has no logarithmic map")

    def dist(self, x: Tensor, y: Tensor) -> Tensor:
        """Geodesic distance between ``x`` and ``y``."""
        return self.inner(x, self.logmap(x, y), self.logmap(x, y)).sqrt()

    def expmap_log_volume(self, x: Tensor, u: Tensor) -> Tensor:
        """``log|det d expmap_x(u)|`` between orthonormal tangent bases (0 on flat spaces)."""
        raise NotImplementedError(f"{type(self).__name__} has no exponential-map volume term")

    # ----------------------------------------------------------------- volume
    def log_volume(self) -> float:
        """Log of the total Riemannian volume (compact spaces only)."""
        raise NotImplementedError(f"{self!r} is not compact: it has no finite volume")

    def uniform_log_prob(self, x: Tensor) -> Tensor:
        """Log-density of the uniform distribution (compact spaces only), of batch shape."""
        value = -self.log_volume()
        return torch.full(self.batch_shape(x), value, dtype=x.dtype, device=x.device)

    def random_uniform(
        self,
        shape: tuple[int, ...] | torch.Size = (),
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Samples from the uniform distribution (compact spaces only)."""
        raise NotImplementedError(f"{self!r} is not compact: it has no uniform distribution")
