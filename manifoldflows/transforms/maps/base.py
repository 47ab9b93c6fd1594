"""The element-wise map protocol and the one registry of named maps.

Coupling, autoregressive and element-wise layers split into a *conditioner* (a network producing
parameters) and an *element-wise map* ("transformer" in the autoregressive-flow literature) that
moves each coordinate ``x_i`` to ``y_i`` given its parameters. A map is a small picklable object
(not a module) that declares

* ``kind``: the kind of coordinate it acts on (``"real"``: a bijection of the real line,
  ``"interval"``: of a bounded interval, ``"angle"``: a diffeomorphism of the circle), matching
  :attr:`manifoldflows.spaces.Space.coordinates`;
* ``shapes``: the shape of each named parameter per coordinate (zuko-style);
* ``forward(x, params)`` / ``inverse(y, params)`` with ``params[name]`` of shape
  ``x.shape + shapes[name]``, returning ``(value, element-wise log|derivative|)``.

All-zero raw parameters give the identity (a near-identity map for mixtures, whose components
need distinct starting points). A new space needs its coordinate kind, maps registered for that
kind with :func:`register_map`, and nothing else.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import ClassVar

from torch import Tensor

from ...spaces.base import Coordinate

__all__ = ["ElementwiseMap", "MapSpec", "Params", "register_map", "make_map", "registered_maps"]


#: Named parameters handed to a map: ``name -> tensor of shape x.shape + shapes[name]``.
Params = Mapping[str, Tensor]


class ElementwiseMap:
    """Base class of element-wise maps (see the module docstring)."""

    #: registry name (``"spline"``, ``"affine"``, ...); the same name may exist for several kinds
    name: ClassVar[str] = ""
    #: coordinate kind it acts on
    kind: ClassVar[str] = "real"

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """``name -> shape`` of the parameters of one coordinate."""
        raise NotImplementedError

    @property
    def params_per_dim(self) -> int:
        """Total number of raw parameters per coordinate."""
        total = 0
        for shape in self.shapes.values():
            size = 1
            for n in shape:
                size *= n
            total += size
        return total

    def unpack(self, flat: Tensor) -> dict[str, Tensor]:
        """Cut ``(..., params_per_dim)`` raw parameters into the named ones."""
        from ...nn.conditioner import ParameterLayout

        return ParameterLayout(self.shapes).unpack(flat)

    def forward(self, x: Tensor, params: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def inverse(self, y: Tensor, params: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def accepts(self, coordinate: Coordinate) -> bool:
        """Whether the map can act on ``coordinate``."""
        return coordinate.kind == self.kind

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


_REGISTRY: dict[tuple[str, str], type[ElementwiseMap]] = {}

#: A map given by name, as an object, or per coordinate kind (``{"real": "affine", ...}``).
MapSpec = str | ElementwiseMap | Mapping[str, "str | ElementwiseMap"]


def register_map(cls: type[ElementwiseMap]) -> type[ElementwiseMap]:
    """Class decorator: ``make_map(cls.name, <coordinate of kind cls.kind>)`` builds ``cls``."""
    key = (cls.name, cls.kind)
    if key in _REGISTRY and _REGISTRY[key] is not cls:
        raise ValueError(f"register_map: {key} is already registered to {_REGISTRY[key].__name__}")
    _REGISTRY[key] = cls
    return cls


def registered_maps() -> dict[tuple[str, str], type[ElementwiseMap]]:
    """``(name, kind) -> class`` of every registered map."""
    return dict(_REGISTRY)


def _accepted_options(cls: type, options: Mapping[str, object]) -> dict[str, object]:
    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in options.items() if k in params}


def option_names(cls: type) -> set[str]:
    """Keyword options a map class takes."""
    return set(inspect.signature(cls.__init__).parameters) - {"self"}


def make_map(spec: MapSpec, coordinate: Coordinate, **options: object) -> ElementwiseMap:
    """The element-wise map ``spec`` for coordinates like ``coordinate``.

    ``spec`` is a registered name (resolved per kind: ``"spline"`` is a spline with identity
    tails on the real line, an interval spline on a bounded interval, a circular spline on an
    angle), a map object (returned as it is after a kind check), or a mapping from coordinate
    kind to either. ``options`` are passed to the map class where it takes them (``bins`` to
    every spline, ``bound`` only to the real-line one, ...); interval maps also receive the
    coordinate's bounds. Options no class takes are the caller's to reject (see
    :func:`check_options`).

    Example:
        >>> from manifoldflows.spaces import Coordinate
        >>> make_map("spline", Coordinate("angle"), bins=4)
        CircularSplineMap(bins=4, shift=True)
        >>> make_map("spline", Coordinate("interval", 0.0, 3.0), bins=4)
        IntervalSplineMap(bins=4, low=0, high=3)
    """
    if isinstance(spec, Mapping):
        if coordinate.kind not in spec:
            raise ValueError(
                f"make_map: no map given for {coordinate.kind} coordinates; the mapping covers "
                f"{sorted(spec)}"
            )
        spec = spec[coordinate.kind]
    if isinstance(spec, ElementwiseMap):
        if not spec.accepts(coordinate):
            raise ValueError(
                f"make_map: {spec!r} acts on {spec.kind} coordinates, not on {coordinate}"
            )
        return spec
    key = (spec, coordinate.kind)
    if key not in _REGISTRY:
        names = sorted(n for n, k in _REGISTRY if k == coordinate.kind)
        raise ValueError(
            f"make_map: no element-wise map {spec!r} for {coordinate.kind} coordinates; "
            f"choose from {names}"
        )
    cls = _REGISTRY[key]
    kwargs = _accepted_options(cls, options)
    if coordinate.kind == "interval":
        kwargs.update(low=coordinate.low, high=coordinate.high)
    return cls(**kwargs)


def check_options(
    who: str, spec: MapSpec, coordinates: Iterable[Coordinate], options: Mapping[str, object]
) -> None:
    """Raise unless every option is taken by the map ``spec`` names for one of ``coordinates``."""
    taken: set[str] = set()
    for coordinate in coordinates:
        name = spec.get(coordinate.kind) if isinstance(spec, Mapping) else spec
        if isinstance(name, str) and (name, coordinate.kind) in _REGISTRY:
            taken |= option_names(_REGISTRY[(name, coordinate.kind)])
    unused = sorted(set(options) - taken)
    if unused:
        raise ValueError(f"{who}: options {unused} are not taken by any of its element-wise maps")
