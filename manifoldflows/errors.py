"""Exceptions raised by manifoldflows.

Every error message names the layer (or space, or distribution) that refused the input, what it
expected and what it received, so that a failure deep inside a chain can be traced at a glance.
"""

from __future__ import annotations

__all__ = [
    "ManifoldFlowsError",
    "SpaceMismatch",
    "InverseNotAvailable",
    "InvalidInput",
    "NonFiniteOutput",
    "StochasticFlowError",
]


class ManifoldFlowsError(Exception):
    """Base class of every error raised by this package."""


class SpaceMismatch(ManifoldFlowsError, ValueError):
    """Two layers (or a distribution and a layer) that live on different spaces were joined."""


class InverseNotAvailable(ManifoldFlowsError, NotImplementedError):
    """The transform has no (closed-form or numerical) inverse."""


class InvalidInput(ManifoldFlowsError, ValueError):
    """A tensor handed to a layer or distribution has the wrong shape, dtype, device or values."""


class NonFiniteOutput(ManifoldFlowsError, FloatingPointError):
    """A layer produced NaN or infinite values from finite inputs."""


class StochasticFlowError(ManifoldFlowsError, RuntimeError):
    """An exact density was requested from a chain containing stochastic layers."""
