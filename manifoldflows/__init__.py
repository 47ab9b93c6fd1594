"""manifoldflows: normalizing flows on Euclidean spaces and manifolds.

The public protocol lives in :mod:`manifoldflows.core` (``Transform``, ``Chain``, ``Inverse``,
``Flow``); spaces in :mod:`manifoldflows.spaces`, base distributions in
:mod:`manifoldflows.distributions`, layers in :mod:`manifoldflows.transforms`, ready-made flows
in :mod:`manifoldflows.presets`.
"""

from . import distributions, functional, spaces, stochastic, transforms
from ._validation import set_validation, validation, validation_enabled
from .core import (
    Chain,
    Flow,
    Inverse,
    InverseNotAvailable,
    SpaceMismatch,
    StochasticFlowError,
    Transform,
)
from .errors import InvalidInput, NonFiniteOutput

__version__ = "0.1.0"

__all__ = [
    "Transform",
    "Chain",
    "Inverse",
    "Flow",
    "SpaceMismatch",
    "InverseNotAvailable",
    "InvalidInput",
    "NonFiniteOutput",
    "StochasticFlowError",
    "spaces",
    "distributions",
    "transforms",
    "stochastic",
    "functional",
    "set_validation",
    "validation",
    "validation_enabled",
]
