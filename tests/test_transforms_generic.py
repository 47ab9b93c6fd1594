"""Every exported layer passes the generic checker in float64 and float32."""

from __future__ import annotations

import inspect

import pytest

import manifoldflows
import manifoldflows.stochastic as S
import manifoldflows.transforms as T
from manifoldflows.testing import check_transform

from .cases import all_cases

CASES = all_cases()


# Abstract bases: exported for users who write layers, never instantiated themselves.
ABSTRACT = {manifoldflows.Transform, S.StochasticTransform}


def exported_transform_classes() -> set[type]:
    found = set()
    for module in (manifoldflows, T, S):
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) and issubclass(obj, manifoldflows.Transform):
                found.add(obj)
    return found - ABSTRACT


def test_every_exported_transform_has_a_case():
    covered = {case.cls for case in CASES}
    missing = sorted(c.__name__ for c in exported_transform_classes() - covered)
    assert not missing, f"exported Transform subclasses without a checker case: {missing}"


def test_case_names_are_unique():
    names = [case.name for case in CASES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_generic_checker(case, dtype, device):
    layer = case.factory()
    assert type(layer) is case.cls, f"case {case.name} builds {type(layer).__name__}"
    check_transform(layer, dtype=dtype, device=device, **case.check)
