"""Spaces on which flows and distributions live (see :class:`Space`)."""

from .base import COORDINATE_KINDS, Coordinate, Space
from .circle import Circle, Torus
from .euclidean import Euclidean, Interval
from .image import Image
from .product import Product
from .sphere import Sphere

__all__ = [
    "Space",
    "Coordinate",
    "COORDINATE_KINDS",
    "Euclidean",
    "Interval",
    "Product",
    "Image",
    "Torus",
    "Circle",
    "Sphere",
]
