"""Spaces on which flows and distributions live (see :class:`Space`)."""

from .base import Space
from .euclidean import Euclidean, Interval
from .product import Product

__all__ = ["Space", "Euclidean", "Interval", "Product"]
