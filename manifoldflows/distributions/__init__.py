"""Base distributions on every space (densities w.r.t. the space's Riemannian volume)."""

from .base import Distribution
from .directional import VonMises, VonMisesFisher, WrappedNormal
from .image import ImageStandardNormal
from .mixture import Mixture
from .normal import DiagNormal, GaussianMixture, StandardNormal
from .product import ProductDistribution
from .quasirandom import QuasiRandomSampler
from .uniform import Uniform

__all__ = [
    "Distribution",
    "StandardNormal",
    "DiagNormal",
    "GaussianMixture",
    "Uniform",
    "ImageStandardNormal",
    "VonMises",
    "VonMisesFisher",
    "WrappedNormal",
    "Mixture",
    "QuasiRandomSampler",
    "ProductDistribution",
]
