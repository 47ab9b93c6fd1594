"""Registry of generic-checker cases: one or more per exported Transform subclass.

Each module in this package defines ``CASES``, a list of :class:`Case`. They are collected
here; ``tests/test_transforms_generic.py`` runs :func:`manifoldflows.testing.check_transform`
on each in float64 and float32, and a meta-test fails when an exported ``Transform`` subclass
has no case.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Case:
    """A named way to build a layer for the generic checker.

    ``cls`` is the exported class it covers (the factory must return exactly that type);
    ``check`` holds extra keyword arguments for ``check_transform``; ``prepare`` (optional)
    runs on the built layer before the checks (e.g. a data-dependent initialisation).
    """

    name: str
    cls: type
    factory: Callable[[], Any]
    check: dict = field(default_factory=dict)


def all_cases() -> list[Case]:
    cases: list[Case] = []
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        cases.extend(getattr(module, "CASES", []))
    return cases
