"""Spaces on which flows and distributions live (see :class:`Space`)."""

from .base import Space
from .euclidean import Euclidean, Interval
from .image import Image
from .product import Product

__all__ = ["Space", "Euclidean", "Interval", "Product", "Image"]
