"""Input validation shared by transforms and distributions (internal)."""

from __future__ import annotations

import itertools
import math
import operator
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from .errors import InvalidInput

if TYPE_CHECKING:  # spaces import positive_int from here: no import cycle at run time
    from .spaces import Space

__all__ = [
    "all_finite",
    "reference_tensor",
    "check_points",
    "check_context",
    "context_batch_shape",
    "positive_int",
    "positive_float",
]


def all_finite(*tensors: Tensor) -> bool:
    """Whether every floating-point tensor given is free of NaN and inf.

    Fast path: a sum is finite when all terms are, so one reduction per tensor and a single
    device synchronisation decide the common case; only a non-finite sum (a bad value, or an
    overflow of large finite values) falls back to the exact elementwise test.
    """
    floats = [t for t in tensors if torch.is_floating_point(t) and t.numel()]
    if not floats:
        return True
    total = floats[0].sum() if len(floats) == 1 else torch.stack([t.sum() for t in floats]).sum()
    if bool(torch.isfinite(total)):
        return True
    return all(bool(torch.isfinite(t).all()) for t in floats)


def reference_tensor(module: nn.Module) -> Tensor | None:
    """First floating-point parameter or buffer of ``module`` (gives its dtype and device)."""
    for t in itertools.chain(module.parameters(), module.buffers()):
        if torch.is_floating_point(t):
            return t
    return None


def check_points(module: nn.Module, x: Tensor, space: Space, who: str) -> None:
    """Check that ``x`` is a batch of points of ``space`` matching ``module``'s dtype and device."""
    space.check_point(x, who)
    ref = reference_tensor(module)
    if ref is not None and torch.is_floating_point(x):
        if x.device != ref.device:
            raise InvalidInput(
                f"{who}: expected input on device {ref.device} (where the layer's parameters "
                f"are), got {x.device}"
            )
        if x.dtype != ref.dtype:
            raise InvalidInput(
                f"{who}: expected input of dtype {ref.dtype} (the layer's parameter dtype), "
                f"got {x.dtype}; convert the input or call .to({x.dtype}) on the layer"
            )


def check_context(
    context: Tensor | None, context_dim: int | None, batch_shape: torch.Size, x: Tensor, who: str
) -> None:
    """Check a context tensor against the expected feature size and the input's batch shape.

    An unconditional caller (``context_dim is None``) refuses any context rather than ignoring
    it, so that ``flow.log_prob(x, c)`` on a flow without context support cannot silently
    return the unconditional density.
    """
    if context_dim is None:
        if context is not None:
            shape = tuple(context.shape) if isinstance(context, Tensor) else type(context).__name__
            raise InvalidInput(
                f"{who}: got a context ({shape}) but it is unconditional (context_dim=None) and "
                "would ignore it; drop the context or build the model with context_dim"
            )
        return
    if context is None:
        raise InvalidInput(
            f"{who}: expected a context tensor with {context_dim} features, got None"
        )
    if not isinstance(context, Tensor):
        raise InvalidInput(f"{who}: expected a context tensor, got {type(context).__name__}")
    if context.dim() == 0 or context.shape[-1] != context_dim:
        raise InvalidInput(
            f"{who}: expected context of shape (..., {context_dim}), got {tuple(context.shape)}"
        )
    if context.device != x.device or context.dtype != x.dtype:
        raise InvalidInput(
            f"{who}: expected context with the input's dtype {x.dtype} on {x.device}, "
            f"got {context.dtype} on {context.device}"
        )
    try:
        torch.broadcast_shapes(context.shape[:-1], batch_shape)
    except RuntimeError:
        raise InvalidInput(
            f"{who}: context batch shape {tuple(context.shape[:-1])} does not broadcast with "
            f"the input batch shape {tuple(batch_shape)}"
        ) from None
    if not all_finite(context):
        raise InvalidInput(f"{who}: expected a finite context, got NaN/inf values")


def context_batch_shape(context: Tensor | None) -> torch.Size:
    """Batch shape carried by a context tensor (empty without one)."""
    return torch.Size() if context is None else context.shape[:-1]


def positive_int(value: object, what: str, who: str, *, minimum: int = 1) -> int:
    """Return ``value`` as an ``int`` if it is an integer ``>= minimum``, else raise.

    The one argument checker of the package: every layer, space, preset and estimator that takes
    a count (features, bins, layers, samples, steps, ...) calls it, so the messages read alike:
    ``"<who>: expected a positive integer <what>, got <value>"`` (``non-negative`` when
    ``minimum == 0``, ``an integer >= m`` otherwise). Booleans are refused; numpy and torch
    integer scalars are accepted.

    Example:
        >>> positive_int(3, "number of bins", "SplineMap")
        3
        >>> positive_int(0, "bins", "Spline")
        Traceback (most recent call last):
        ...
        manifoldflows.errors.InvalidInput: Spline: expected a positive integer bins, got 0
    """
    try:
        number = None if isinstance(value, bool) else operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        number = None
    if number is None or number < minimum:
        kind = {0: "a non-negative integer", 1: "a positive integer"}.get(
            minimum, f"an integer >= {minimum}"
        )
        raise InvalidInput(f"{who}: expected {kind} {what}, got {value!r}")
    return int(number)


def positive_float(value: object, what: str, who: str, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a finite ``float > 0`` (``>= 0`` with ``allow_zero``), else raise.

    Example:
        >>> positive_float(0.5, "step size", "HMC")
        0.5
    """
    number = None
    if not isinstance(value, bool):
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            number = None
    if (
        number is None
        or not math.isfinite(number)
        or number < 0
        or (number == 0 and not allow_zero)
    ):
        kind = "a non-negative" if allow_zero else "a positive"
        raise InvalidInput(f"{who}: expected {kind} finite number {what}, got {value!r}")
    return number
