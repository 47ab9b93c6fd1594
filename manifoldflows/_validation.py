"""The package-wide validation switch (like ``torch.distributions``' ``validate_args``).

Transforms, chains, flows and distributions check their inputs on every public call (shape,
dtype, device, finiteness, membership of the space, context) and their outputs (finiteness).
The checks cost a device synchronisation or two per call; once a model is known to work they
can be switched off for the whole package with :func:`set_validation`, or for a block of code
with the :func:`validation` context manager. Each object's ``validate`` attribute overrides the
switch for that object: ``True`` or ``False`` pins it, ``None`` (the default) follows the switch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["set_validation", "validation", "validation_enabled"]

_enabled = True


def validation_enabled() -> bool:
    """Whether input/output checks are on for objects that follow the switch (default ``True``)."""
    return _enabled


def set_validation(enabled: bool) -> None:
    """Switch the input/output checks of the whole package on or off.

    Objects whose ``validate`` attribute was set explicitly keep their own setting.

    Arguments:
        enabled: ``True`` to check (the default), ``False`` to skip the checks.

    Example:
        >>> import manifoldflows
        >>> manifoldflows.set_validation(False)
        >>> manifoldflows.validation_enabled()
        False
        >>> manifoldflows.set_validation(True)
    """
    global _enabled
    if not isinstance(enabled, bool):
        raise TypeError(f"set_validation: expected a bool, got {type(enabled).__name__}")
    _enabled = enabled


@contextmanager
def validation(enabled: bool) -> Iterator[None]:
    """Context manager: checks on (``True``) or off (``False``) inside the block.

    The previous setting is restored on exit, also when the block raises.

    Example:
        >>> import torch
        >>> import manifoldflows
        >>> from manifoldflows.transforms import Reverse
        >>> with manifoldflows.validation(False):
        ...     y, _ = Reverse(2)(torch.tensor([[float("nan"), 1.0]]))  # not checked
        >>> manifoldflows.validation_enabled()
        True
    """
    previous = _enabled
    set_validation(enabled)
    try:
        yield
    finally:
        set_validation(previous)


def _get(self: object) -> bool:
    """Whether this object checks its inputs and outputs on public calls.

    ``True``/``False`` when set on the object, otherwise (``None``, the default) the
    package-wide switch :func:`manifoldflows.set_validation`.
    """
    own = self.__dict__.get("_validate")
    return _enabled if own is None else own


def _set(self: object, value: bool | None) -> None:
    if value is not None and not isinstance(value, bool):
        raise TypeError(
            f"{type(self).__name__}.validate: expected True, False or None, "
            f"got {type(value).__name__}"
        )
    self.__dict__["_validate"] = value


def validate_flag() -> property:
    """The ``validate`` attribute of transforms and distributions (internal).

    Reads the object's own setting when one was given, else the package-wide switch; assigning
    ``True``/``False`` pins it, ``None`` makes the object follow the switch again.
    """
    return property(_get, _set)
