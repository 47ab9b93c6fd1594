"""Invertible layers. Each maps ``domain -> codomain`` and returns ``(y, logdet)``."""

from ..core import Chain, Inverse, Transform
from .autoregressive import (
    MaskedAffineAutoregressive,
    MaskedAutoregressive,
    MaskedSplineAutoregressive,
)
from .coupling import AdditiveCoupling, AffineCoupling, Coupling, SplineCoupling
from .elementwise import Exp, IntervalToReal, Logit, Sigmoid, Softplus, Tanh
from .linear import LULinear, Permutation, RandomPermutation, Reverse
from .normalization import ActNorm

__all__ = [
    "Transform",
    "Chain",
    "Inverse",
    "Coupling",
    "AdditiveCoupling",
    "AffineCoupling",
    "SplineCoupling",
    "MaskedAutoregressive",
    "MaskedAffineAutoregressive",
    "MaskedSplineAutoregressive",
    "Permutation",
    "Reverse",
    "RandomPermutation",
    "LULinear",
    "ActNorm",
    "Sigmoid",
    "Logit",
    "Tanh",
    "Softplus",
    "Exp",
    "IntervalToReal",
]
