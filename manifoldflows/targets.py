r"""The target protocol: what a Boltzmann target is, and how models and estimators call it.

A *target* is an unnormalised density ``p(x) = exp(-u(x)) / Z`` given by its reduced energy
``u``, in one of two forms:

* a plain callable ``x -> u(x)``, or ``(x, context) -> u(x | context)``;
* an object with an ``.energy(x)`` (or ``.energy(x, context=None)``) method, such as
  :class:`physics.energy.Energy` and the toy targets of :mod:`physics.toy_manifold`.

``u(x)`` has the batch shape of ``x``. The meaning of the names is fixed:

* ``energy(x, context=None)``: the reduced energy ``u``;
* ``log_prob(x, context=None)``: the *unnormalised* log density ``-u(x)``, always;
* ``log_Z``: the exact log normaliser where it is known (else ``None``), so that the
  normalised log density is ``log_prob(x) - log_Z`` (``normalized_log_prob`` where offered);
* ``space``: the :class:`~manifoldflows.spaces.Space` of the points, checked against the
  model's space by :func:`check_target_space`.

Conditional targets (a temperature, a coupling constant, ... per context row) take the
context of the model: a target receives ``context`` when its energy has a ``context``
parameter. A target without one does not depend on the context and is called as
``energy(x)``; so does an unconditional ``physics.Energy`` (``context_dim is None``), which
ignores a context it is given. The context has the
model's context shape ``(*cbatch, k)`` and the samples ``(n, *cbatch, *event_shape)``, so a
target broadcasts ``context[..., j]`` against the batch shape ``(n, *cbatch)``.

``manifoldflows`` never imports ``physics``: the protocol is duck-typed.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeAlias

from torch import Tensor

from .errors import InvalidInput, SpaceMismatch
from .spaces import Space

__all__ = ["energy_fn", "takes_context", "check_target_space", "target_energy"]


class HasEnergy(Protocol):
    """An object with an ``.energy(x)`` (or ``.energy(x, context=None)``) method."""

    def energy(self, x: Tensor, /, *args: Any, **kwargs: Any) -> Tensor: ...


#: What the functions of this module accept as a target (for type hints): a callable
#: ``x -> u(x)`` / ``(x, context) -> u(x | context)`` or an object with ``.energy``.
Target: TypeAlias = Callable[..., Tensor] | HasEnergy


def _callable_of(target: Target) -> Callable[..., Tensor]:
    energy = getattr(target, "energy", None)
    if energy is not None and callable(energy):
        return energy
    if callable(target):
        return target
    raise TypeError(
        "expected a target callable x -> u(x) or an object with .energy(x), "
        f"got {type(target).__name__}"
    )


def _has_context_parameter(fn: Callable[..., Tensor]) -> bool:
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False
    return "context" in parameters


def takes_context(target: Target) -> bool:
    """Whether a target's energy depends on (and is called with) the model's context.

    Objects with a ``context_dim`` attribute take the context when it is not ``None``; other
    targets when their energy has a parameter named ``context``.

    Example:
        >>> takes_context(lambda x: x.sum(-1)), takes_context(lambda x, context: x.sum(-1))
        (False, True)
    """
    if hasattr(target, "context_dim"):
        return target.context_dim is not None
    return _has_context_parameter(_callable_of(target))


def energy_fn(target: Target) -> Callable[..., Tensor]:
    """Turn a target into a function ``(x, context=None) -> u(x)`` (reduced energy).

    Accepts a plain callable or an object with an ``.energy`` method (the ``physics.Energy``
    protocol). An energy with a ``context`` parameter is returned as it is (an unconditional
    ``physics.Energy`` ignores a context it is given); one without is wrapped so that it is
    called as ``energy(x)``: it does not depend on the context.

    Example:
        >>> import torch
        >>> u = energy_fn(lambda x: 0.5 * (x**2).sum(-1))
        >>> u(torch.ones(3, 2), context=torch.zeros(3, 1)).tolist()  # context not used
        [1.0, 1.0, 1.0]
    """
    fn = _callable_of(target)
    if _has_context_parameter(fn):
        return fn

    def energy(x: Tensor, context: Tensor | None = None) -> Tensor:
        return fn(x)

    return energy


def check_target_space(model: object, target: Target, who: str) -> None:
    """Refuse a target whose ``space`` differs from the model's, naming both.

    Targets without a ``space`` attribute (plain callables) are accepted as they are.

    Example:
        >>> from manifoldflows.distributions import StandardNormal
        >>> class OnThree:
        ...     space = __import__("manifoldflows").spaces.Euclidean(3)
        >>> try:
        ...     check_target_space(StandardNormal(2), OnThree(), "demo")
        ... except ValueError as err:
        ...     print(str(err).split(", ")[0][-36:])
        target OnThree lives on Euclidean(3)
    """
    target_space, model_space = getattr(target, "space", None), getattr(model, "space", None)
    if isinstance(target_space, Space) and isinstance(model_space, Space):
        if target_space != model_space:
            raise SpaceMismatch(
                f"{who}: the model {type(model).__name__} samples points of {model_space!r} "
                f"but the target {type(target).__name__} lives on {target_space!r}, not on "
                f"{model_space!r}"
            )


def target_energy(
    target: Target,
    x: Tensor,
    batch_shape: Sequence[int],
    context: Tensor | None = None,
    who: str = "target",
) -> Tensor:
    """``u(x | context)``, checked to be a tensor with the given batch shape.

    Arguments:
        target: callable or object with ``.energy`` (see the module docstring).
        x: points ``(*batch, *event_shape)``.
        batch_shape: the expected shape of ``u`` (e.g. that of ``log q(x)``).
        context: the model's context, passed on to targets that take one.
        who: name used in error messages.

    Example:
        >>> import torch
        >>> target_energy(lambda x: (x**2).sum(-1), torch.ones(2, 3), (2,)).tolist()
        [3.0, 3.0]
    """
    u = energy_fn(target)(x, context)
    if not isinstance(u, Tensor):
        raise InvalidInput(
            f"{who}: expected the target energy to return a tensor, got {type(u).__name__}"
        )
    if u.shape != tuple(batch_shape):
        raise InvalidInput(
            f"{who}: expected the target energy to have the samples' batch shape "
            f"{tuple(batch_shape)}, got {tuple(u.shape)} (for samples of shape {tuple(x.shape)})"
        )
    return u
