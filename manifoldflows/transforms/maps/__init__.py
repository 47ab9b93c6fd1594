"""Element-wise maps: the one protocol (:class:`ElementwiseMap`) and the registry of named maps.

``make_map("spline", coordinate)`` gives a spline with identity tails on a real coordinate, an
interval spline on a bounded one and a circular spline on an angle; see :mod:`.base`.
"""

from .base import ElementwiseMap, MapSpec, make_map, register_map, registered_maps
from .circle import CircularSplineMap, MoebiusMap, NonCompactMap, ShiftMap
from .interval import IntervalSplineMap
from .real import (
    AdditiveMap,
    AffineMap,
    DeepSigmoidalMap,
    LogisticMixtureMap,
    SplineMap,
    spline_options,
)

__all__ = [
    "ElementwiseMap",
    "MapSpec",
    "make_map",
    "register_map",
    "registered_maps",
    "AdditiveMap",
    "AffineMap",
    "SplineMap",
    "spline_options",
    "LogisticMixtureMap",
    "DeepSigmoidalMap",
    "IntervalSplineMap",
    "ShiftMap",
    "MoebiusMap",
    "CircularSplineMap",
    "NonCompactMap",
]
