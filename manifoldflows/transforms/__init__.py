"""Invertible layers. Each maps ``domain -> codomain`` and returns ``(y, logdet)``."""

from ..core import Chain, Inverse, Transform
from . import maps
from .autoregressive import (
    MaskedAffineAutoregressive,
    MaskedAutoregressive,
    MaskedSplineAutoregressive,
)
from .charts import AngleToCircle, Stereographic
from .circular import (
    CircularShift,
    CircularSpline,
    MoebiusCircle,
    NonCompactProjection,
)
from .coupling import AdditiveCoupling, AffineCoupling, Coupling, SplineCoupling
from .elementwise import Exp, IntervalToReal, Logit, Sigmoid, Softplus, Tanh
from .flowpp import LogisticMixtureCoupling
from .linear import LULinear, Permutation, RandomPermutation, Reverse
from .multiscale import ActNorm2d, AffineCoupling2d, InvertibleConv1x1, SplitPrior, Squeeze
from .neural_autoregressive import NeuralAutoregressive
from .normalization import ActNorm, initialize_actnorm
from .planar import PlanarFlow, RadialFlow, SylvesterFlow
from .pointwise import Elementwise
from .residual import ConvergenceError, InvertibleResidual
from .sphere import ExpMapRadial, MoebiusSphere, RecursiveSphereFlow, SphereRotation

__all__ = [
    "maps",
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
    "NeuralAutoregressive",
    "LogisticMixtureCoupling",
    "Permutation",
    "Reverse",
    "RandomPermutation",
    "LULinear",
    "ActNorm",
    "initialize_actnorm",
    "Squeeze",
    "ActNorm2d",
    "InvertibleConv1x1",
    "AffineCoupling2d",
    "SplitPrior",
    "Sigmoid",
    "Logit",
    "Tanh",
    "Softplus",
    "Exp",
    "IntervalToReal",
    "PlanarFlow",
    "RadialFlow",
    "SylvesterFlow",
    "InvertibleResidual",
    "ConvergenceError",
    "Elementwise",
    "MoebiusCircle",
    "CircularSpline",
    "CircularShift",
    "NonCompactProjection",
    "SphereRotation",
    "MoebiusSphere",
    "ExpMapRadial",
    "RecursiveSphereFlow",
    "Stereographic",
    "AngleToCircle",
]
