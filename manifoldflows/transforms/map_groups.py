"""Coordinates grouped by the element-wise map that moves them (shared by the map layers).

A layer over ``Product(Euclidean(3), Interval(0, pi, 2), Torus(4))`` moves real coordinates with
a spline with tails, the interval coordinates with an interval spline and the angles with a
circular spline: one map per distinct :class:`~manifoldflows.spaces.Coordinate`. This module
builds those maps once, lays out their parameters for one conditioner
(:class:`~manifoldflows.nn.conditioner.ParameterLayout`) and applies them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..core import Transform
from ..nn.conditioner import ParameterLayout
from ..spaces.base import Coordinate
from .maps.base import ElementwiseMap, MapSpec, check_options, make_map

__all__ = ["MapGroups", "MapGroupsLayer"]


class MapGroups(nn.Module):
    """The element-wise maps of some coordinates, grouped by coordinate.

    Arguments:
        who: the owning layer's name (for error messages).
        coordinates: the coordinates to move, in the order the layer hands them over.
        spec: map name, map object, or ``{kind: name or map}`` (see
            :func:`~manifoldflows.transforms.maps.make_map`).
        options: map options (``bins``, ``bound``, ``components``, ...); each must be taken by
            at least one of the maps for ``space_coordinates`` (default: ``coordinates``), so
            a layer of a product may get options for factors it happens not to move.

    Attributes:
        maps: one :class:`~manifoldflows.transforms.maps.ElementwiseMap` per group.
        layout: parameter layout of all groups, names ``"<group>_<name>"`` (the maps' own names
            with a single group) with shapes ``(n_group, *shape)``.
    """

    def __init__(
        self,
        who: str,
        coordinates: Sequence[Coordinate],
        spec: MapSpec,
        options: Mapping,
        space_coordinates: Sequence[Coordinate] | None = None,
    ):
        super().__init__()
        embedded = [i for i, c in enumerate(coordinates) if c.kind == "embedded"]
        if embedded:
            raise ValueError(
                f"{who}: coordinates {embedded} belong to an embedded manifold (e.g. a sphere "
                "factor) and cannot be moved one by one; keep them on the conditioning side"
            )
        keys: dict[Coordinate, list[int]] = {}
        for i, c in enumerate(coordinates):
            keys.setdefault(c, []).append(i)
        movable = {c for c in (space_coordinates or coordinates) if c.kind != "embedded"}
        check_options(who, spec, movable, options)
        try:
            self.maps: list[ElementwiseMap] = [make_map(spec, c, **options) for c in keys]
        except ValueError as err:
            raise type(err)(f"{who}: {err}") from None
        positions = list(keys.values())
        self.sizes = [len(p) for p in positions]
        for g, p in enumerate(positions):
            self.register_buffer(f"_positions{g}", torch.tensor(p), persistent=False)
        order = [i for p in positions for i in p]
        self.register_buffer("_merge", torch.argsort(torch.tensor(order)), persistent=False)
        self._single = len(positions) == 1
        self.group_of = [0] * len(coordinates)
        for g, p in enumerate(positions):
            for i in p:
                self.group_of[i] = g
        self.layout = ParameterLayout(
            {
                self._name(g, name): (n, *shape)
                for g, (m, n) in enumerate(zip(self.maps, self.sizes))
                for name, shape in m.shapes.items()
            }
        )
        self.single_layouts = [ParameterLayout(m.shapes) for m in self.maps]

    def extra_repr(self) -> str:
        return ", ".join(f"{m!r} x {n}" for m, n in zip(self.maps, self.sizes))

    def output_coordinates(self, coordinate_ids: Sequence[int]) -> Tensor:
        """For each row of the flat layout, the id of the coordinate it parameterises."""
        rows = []
        for g, m in enumerate(self.maps):
            ids = [coordinate_ids[i] for i in getattr(self, f"_positions{g}").tolist()]
            for shape in m.shapes.values():
                size = 1
                for n in shape:
                    size *= n
                rows += [i for i in ids for _ in range(size)]
        return torch.tensor(rows, dtype=torch.long)

    def _name(self, g: int, name: str) -> str:
        """Layout name of parameter ``name`` of group ``g`` (plain with a single group)."""
        return name if self._single else f"{g}_{name}"

    def _group_params(self, params: Mapping[str, Tensor], g: int) -> Mapping[str, Tensor]:
        if self._single:
            return params
        prefix = f"{g}_"
        return {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}

    def apply(
        self, x: Tensor, params: Mapping[str, Tensor], inverse: bool
    ) -> tuple[Tensor, Tensor]:
        """Move ``x`` ``(..., n)`` with the maps; returns ``(out, logdet summed over n)``."""
        if self._single:
            m = self.maps[0]
            out, logdet = (m.inverse if inverse else m.forward)(x, self._group_params(params, 0))
            return out, logdet.sum(-1)
        outs, total = [], None
        for g, m in enumerate(self.maps):
            part = x[..., getattr(self, f"_positions{g}")]
            out, logdet = (m.inverse if inverse else m.forward)(part, self._group_params(params, g))
            outs.append(out)
            logdet = logdet.sum(-1)
            total = logdet if total is None else total + logdet
        batch = torch.broadcast_shapes(*(o.shape[:-1] for o in outs))
        out = torch.cat([o.expand(*batch, o.shape[-1]) for o in outs], dim=-1)
        return out[..., self._merge], total

    def stepper(self, inverse: bool) -> Callable[[int, Tensor, Tensor], tuple[Tensor, Tensor]]:
        """``step(i, x_i, flat)`` for autoregressive solves (a direct call with one group)."""
        if self._single:
            move = self.maps[0].inverse if inverse else self.maps[0].forward
            unpack = self.single_layouts[0].unpack
            return lambda i, x_i, flat: move(x_i, unpack(flat))
        return lambda i, x_i, flat: self.step(i, x_i, flat, inverse)

    def step(self, i: int, x_i: Tensor, flat: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        """Move coordinate ``i`` alone given its flat parameter rows (autoregressive solves)."""
        g = self.group_of[i]
        m = self.maps[g]
        params = self.single_layouts[g].unpack(flat)
        return (m.inverse if inverse else m.forward)(x_i, params)


class MapGroupsLayer(Transform):
    """Base of the layers that move coordinates with :class:`MapGroups` (``self.groups``):
    :class:`~manifoldflows.transforms.Coupling`,
    :class:`~manifoldflows.transforms.MaskedAutoregressive` and
    :class:`~manifoldflows.transforms.pointwise.Elementwise`."""

    groups: MapGroups

    @property
    def elementwise_map(self) -> ElementwiseMap:
        """The element-wise map (of the first group, when the coordinates need several)."""
        return self.groups.maps[0]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, maps=[{self.groups.extra_repr()}]"
