"""Conditioner inputs of a space's coordinates: identity, rescaled interval, ``(cos, sin)``.

A conditioner that read raw angles would see a jump of ``2 pi`` at the seam ``-pi == pi`` and
parameterise a discontinuous map of the torus; it reads ``(cos x, sin x)`` instead (Rezende et al.
2020, arXiv:2002.02428). Bounded coordinates are rescaled to ``[-1, 1]`` so that a box of any
size looks the same to the network, and real (or embedded-manifold) coordinates pass unchanged.
Which rule applies is decided by the space (:attr:`manifoldflows.spaces.Space.coordinates`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..spaces.base import Coordinate
from .periodic import periodic_embedding

__all__ = ["CoordinateEmbedding", "coordinate_embedding"]

_WIDTH = {"real": 1, "embedded": 1, "interval": 1, "angle": 2}


def _interval_affine(c: Coordinate) -> tuple[float, float]:
    """``(centre, 1 / half-width)`` of a bounded coordinate; ``(0, 1)`` when unbounded."""
    if c.kind == "interval" and math.isfinite(c.low) and math.isfinite(c.high):
        return 0.5 * (c.low + c.high), 2.0 / (c.high - c.low)
    return 0.0, 1.0


class CoordinateEmbedding(nn.Module):
    """Map ``(..., n)`` coordinates to ``(..., F)`` conditioner features, coordinate by coordinate.

    Feature ``f`` depends on coordinate :attr:`feature_coordinate` ``[f]`` only, which is what
    masked (MADE) conditioners need; :meth:`embed_one` embeds a single coordinate for their
    sequential solve. All-real inputs are returned as they are (no copy).

    Arguments:
        coordinates: one :class:`~manifoldflows.spaces.Coordinate` per input column.

    Example:
        >>> from manifoldflows.spaces import Coordinate
        >>> emb = CoordinateEmbedding(
        ...     [Coordinate("real"), Coordinate("angle"), Coordinate("interval", 0.0, 2.0)]
        ... )
        >>> emb(torch.tensor([5.0, 0.0, 2.0])).tolist(), emb.feature_coordinate.tolist()
        ([5.0, 1.0, 1.0, 0.0], [0, 2, 1, 1])
    """

    def __init__(self, coordinates: Sequence[Coordinate]):
        super().__init__()
        self.coordinates = tuple(coordinates)
        kinds = [c.kind for c in self.coordinates]
        self.widths = tuple(_WIDTH[k] for k in kinds)
        self.features = sum(self.widths)
        affine = [_interval_affine(c) for c in self.coordinates]
        self.register_buffer("_centre", torch.tensor([a for a, _ in affine]), persistent=False)
        self.register_buffer("_scale", torch.tensor([b for _, b in affine]), persistent=False)
        self._rescale = any(a != 0.0 or b != 1.0 for a, b in affine)
        self._all_angles = all(k == "angle" for k in kinds)
        self._all_flat = all(k != "angle" for k in kinds)
        angle = [i for i, k in enumerate(kinds) if k == "angle"]
        flat = [i for i, k in enumerate(kinds) if k != "angle"]
        self.register_buffer("_angle", torch.tensor(angle, dtype=torch.long), persistent=False)
        self.register_buffer("_flat", torch.tensor(flat, dtype=torch.long), persistent=False)
        # column layout of the general case: flat coordinates first, then (cos, sin) pairs
        owner = flat + [i for i in angle for _ in range(2)]
        if self._all_angles:
            owner = [i for i in range(len(kinds)) for _ in range(2)]
        self.register_buffer(
            "feature_coordinate", torch.tensor(owner, dtype=torch.long), persistent=False
        )
        self._columns = [[f for f, c in enumerate(owner) if c == i] for i in range(len(kinds))]

    def extra_repr(self) -> str:
        return f"coordinates={len(self.coordinates)}, features={self.features}"

    def _flat_part(self, x: Tensor, centre: Tensor, scale: Tensor) -> Tensor:
        if not self._rescale:
            return x
        return (x - centre.to(x)) * scale.to(x)  # dtype and device of the input

    def forward(self, x: Tensor) -> Tensor:
        if self._all_flat:
            return self._flat_part(x, self._centre, self._scale)
        if self._all_angles:
            return periodic_embedding(x)
        flat = self._flat_part(
            x[..., self._flat], self._centre[self._flat], self._scale[self._flat]
        )
        return torch.cat([flat, periodic_embedding(x[..., self._angle])], dim=-1)

    def embed_one(self, i: int, x_i: Tensor) -> Tensor:
        """Features ``(..., w_i)`` of coordinate ``i`` alone, from its values ``(...)``."""
        if self.coordinates[i].kind == "angle":
            return torch.stack([torch.cos(x_i), torch.sin(x_i)], dim=-1)
        centre, scale = _interval_affine(self.coordinates[i])
        return ((x_i - centre) * scale).unsqueeze(-1) if self._rescale else x_i.unsqueeze(-1)

    def feature_columns(self, i: int) -> list[int]:
        """Columns of the output that belong to coordinate ``i`` (in the order of embed_one)."""
        return self._columns[i]


@functools.lru_cache(maxsize=64)
def _cached_embedding(coordinates: tuple[Coordinate, ...]) -> CoordinateEmbedding:
    return CoordinateEmbedding(coordinates)


def coordinate_embedding(coordinates: Sequence[Coordinate]) -> CoordinateEmbedding:
    """The :class:`CoordinateEmbedding` of the given coordinates (see ``Space.embed``), built
    once per distinct tuple of coordinates (it holds no learnable state)."""
    return _cached_embedding(tuple(coordinates))
