"""Cartesian products of spaces stored as one flat tensor."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..errors import InvalidInput
from .base import Coordinate, Space

__all__ = ["Product"]


class Product(Space):
    """The product ``S_1 x ... x S_k`` of spaces with flat (vector) points.

    A point is the concatenation of the components' coordinates along the last dimension; use
    :meth:`split` and :meth:`merge` to go between the two views. The Riemannian volume is the
    product volume and the tangent basis is block-diagonal.

    Example:
        >>> from manifoldflows.spaces import Euclidean, Interval
        >>> space = Product(Euclidean(2), Interval(0, 1, 3))
        >>> space.event_shape, space.dim
        ((5,), 5)
        >>> a, b = space.split(space.random((4,)))
        >>> a.shape, b.shape
        (torch.Size([4, 2]), torch.Size([4, 3]))
    """

    def __init__(self, *spaces: Space):
        if not spaces:
            raise ValueError("Product: expected at least one space")
        for s in spaces:
            if not isinstance(s, Space) or s.event_ndim != 1:
                raise ValueError(f"Product: components must be spaces of vectors, got {s!r}")
        self.spaces = tuple(spaces)
        self.sizes = tuple(s.ambient_dim for s in spaces)
        self.event_shape = (sum(self.sizes),)
        self.dim = sum(s.dim for s in spaces)
        self.is_compact = all(s.is_compact for s in spaces)

    def _key(self) -> tuple:
        return ("Product",) + tuple(s._key() for s in self.spaces)

    def __repr__(self) -> str:
        return "Product(" + ", ".join(repr(s) for s in self.spaces) + ")"

    @property
    def coordinates(self) -> tuple[Coordinate, ...]:
        return sum((s.coordinates for s in self.spaces), ())

    def split(self, x: Tensor) -> list[Tensor]:
        """Split a point (or tangent vector) into its components."""
        return list(torch.split(x, self.sizes, dim=-1))

    def merge(self, parts: list[Tensor] | tuple[Tensor, ...]) -> Tensor:
        """Inverse of :meth:`split`."""
        return torch.cat(list(parts), dim=-1)

    def _map(self, fn: Callable[..., Tensor], *tensors: Tensor) -> Tensor:
        split = [self.split(t) for t in tensors]
        return self.merge([fn(s, *parts) for s, *parts in zip(self.spaces, *split)])

    def _sum(self, fn: Callable[..., Tensor], *tensors: Tensor) -> Tensor:
        split = [self.split(t) for t in tensors]
        return sum(fn(s, *parts) for s, *parts in zip(self.spaces, *split))

    def check_point(self, x: Tensor, who: str = "") -> None:
        self.check_shape(x, who)
        for i, (s, part) in enumerate(zip(self.spaces, self.split(x))):
            try:
                s.check_point(part, who)
            except InvalidInput as err:
                raise InvalidInput(f"{err} (component {i} of {self!r})") from None

    def contains(self, x: Tensor) -> Tensor:
        parts = [s.contains(p) for s, p in zip(self.spaces, self.split(x))]
        return torch.stack(parts, -1).all(-1)

    def projx(self, x: Tensor) -> Tensor:
        return self._map(lambda s, p: s.projx(p), x)

    def proju(self, x: Tensor, u: Tensor) -> Tensor:
        return self._map(lambda s, p, v: s.proju(p, v), x, u)

    def random(
        self,
        shape: tuple[int, ...] | torch.Size = (),
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        return self.merge(
            [s.random(shape, dtype=dtype, device=device, generator=generator) for s in self.spaces]
        )

    def tangent_basis(self, x: Tensor) -> Tensor:
        blocks = [s.tangent_basis(p) for s, p in zip(self.spaces, self.split(x))]
        batch = self.batch_shape(x)
        out = x.new_zeros(*batch, self.ambient_dim, self.dim)
        r = c = 0
        for b in blocks:
            out[..., r : r + b.shape[-2], c : c + b.shape[-1]] = b
            r, c = r + b.shape[-2], c + b.shape[-1]
        return out

    def inner(self, x: Tensor, u: Tensor, v: Tensor) -> Tensor:
        return self._sum(lambda s, p, a, b: s.inner(p, a, b), x, u, v)

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        return self._map(lambda s, p, v: s.expmap(p, v), x, u)

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        return self._map(lambda s, p, q: s.logmap(p, q), x, y)

    def expmap_log_volume(self, x: Tensor, u: Tensor) -> Tensor:
        return self._sum(lambda s, p, v: s.expmap_log_volume(p, v), x, u)

    def log_volume(self) -> float:
        if not self.is_compact:
            return super().log_volume()
        return sum(s.log_volume() for s in self.spaces)

    def uniform_log_prob(self, x: Tensor) -> Tensor:
        return self._sum(lambda s, p: s.uniform_log_prob(p), x)

    def random_uniform(
        self,
        shape: tuple[int, ...] | torch.Size = (),
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        return self.merge(
            [
                s.random_uniform(shape, dtype=dtype, device=device, generator=generator)
                for s in self.spaces
            ]
        )
