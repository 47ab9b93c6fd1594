"""Checker cases for the basic Euclidean layers: permutations, LU linear, ActNorm, elementwise."""

from __future__ import annotations

import math

import torch

from manifoldflows.spaces import Interval
from manifoldflows.transforms import (
    ActNorm,
    Exp,
    IntervalToReal,
    Logit,
    LULinear,
    Permutation,
    RandomPermutation,
    Reverse,
    Sigmoid,
    Softplus,
    Tanh,
    initialize_actnorm,
)

from . import Case

__all__ = ["CASES"]


def _gen(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _actnorm() -> ActNorm:
    """An ActNorm initialised on data with non-trivial per-feature mean and scale."""
    layer = ActNorm(4)
    data = torch.randn(256, 4, generator=_gen(), dtype=torch.float64)
    data = data * torch.tensor([3.0, 0.5, 1.5, 0.1], dtype=torch.float64)
    data = data + torch.tensor([1.0, -2.0, 0.3, 5.0], dtype=torch.float64)
    return layer.initialize(data.to(torch.get_default_dtype()))


def _actnorm_via_inverse() -> ActNorm:
    """ActNorm initialised the way fit does it: initialize_actnorm on a data batch."""
    layer = ActNorm(3)
    data = torch.randn(64, 3, generator=_gen(2)) * 2.0 - 1.0
    initialize_actnorm(layer, data)
    return layer


# The parameter-free layers are checked with perturb=0 (perturbing no parameters is a no-op).
CASES = [
    Case("Permutation", Permutation, lambda: Permutation([2, 0, 3, 1]), check={"perturb": 0}),
    Case("Reverse", Reverse, lambda: Reverse(5), check={"perturb": 0}),
    Case(
        "RandomPermutation",
        RandomPermutation,
        lambda: RandomPermutation(6, generator=_gen()),
        check={"perturb": 0},
    ),
    Case("LULinear-identity", LULinear, lambda: LULinear(4)),
    Case(
        "LULinear-rotation",
        LULinear,
        lambda: LULinear(5, identity_init=False, generator=_gen()),
    ),
    Case("LULinear-nobias", LULinear, lambda: LULinear(3, bias=False, identity_init=False)),
    Case("ActNorm", ActNorm, _actnorm),
    Case("ActNorm-inverse-init", ActNorm, _actnorm_via_inverse),
    Case("Sigmoid", Sigmoid, lambda: Sigmoid(3), check={"perturb": 0}),
    Case("Sigmoid-scaled", Sigmoid, lambda: Sigmoid(2, low=-2.0, high=3.0), check={"perturb": 0}),
    Case("Logit", Logit, lambda: Logit(3), check={"perturb": 0}),
    Case("Logit-scaled", Logit, lambda: Logit(2, low=-1.0, high=4.0), check={"perturb": 0}),
    Case("Tanh", Tanh, lambda: Tanh(3), check={"perturb": 0}),
    Case("Softplus", Softplus, lambda: Softplus(3), check={"perturb": 0}),
    Case("Exp", Exp, lambda: Exp(3), check={"perturb": 0}),
    Case(
        "IntervalToReal-box",
        IntervalToReal,
        lambda: IntervalToReal(Interval(-1.0, 2.0, 3)),
        check={"perturb": 0},
    ),
    Case(
        "IntervalToReal-lower",
        IntervalToReal,
        lambda: IntervalToReal(Interval(0.5, math.inf, 2)),
        check={"perturb": 0},
    ),
    Case(
        "IntervalToReal-upper",
        IntervalToReal,
        lambda: IntervalToReal(Interval(-math.inf, 1.0, 2)),
        check={"perturb": 0},
    ),
]
