"""Checker cases for coupling and masked autoregressive layers."""

from manifoldflows.core import Chain, Inverse
from manifoldflows.transforms.autoregressive import (
    MaskedAffineAutoregressive,
    MaskedAutoregressive,
    MaskedSplineAutoregressive,
)
from manifoldflows.transforms.coupling import (
    AdditiveCoupling,
    AffineCoupling,
    Coupling,
    SplineCoupling,
)
from manifoldflows.transforms.maps import AffineMap, SplineMap

from . import Case

# Splines get a larger perturbation so that bins are far from uniform.
SPLINE = {"perturb": 0.3}

CASES = [
    Case("coupling-generic", Coupling, lambda: Coupling(3, AffineMap(), hidden=(16,), split=1)),
    Case("additive-coupling", AdditiveCoupling, lambda: AdditiveCoupling(4, hidden=(16,))),
    Case("affine-coupling", AffineCoupling, lambda: AffineCoupling(5, hidden=(16, 16))),
    Case(
        "affine-coupling-swap-context",
        AffineCoupling,
        lambda: AffineCoupling(3, hidden=(16,), swap=True, context_dim=2),
    ),
    Case(
        "spline-coupling", SplineCoupling, lambda: SplineCoupling(4, bins=5, hidden=(16,)), SPLINE
    ),
    Case(
        "spline-coupling-context",
        SplineCoupling,
        lambda: SplineCoupling(3, bins=4, bound=2.0, hidden=(16,), context_dim=2, swap=True),
        SPLINE,
    ),
    Case(
        "autoregressive-generic",
        MaskedAutoregressive,
        lambda: MaskedAutoregressive(3, SplineMap(4, 3.0), hidden=(16,)),
        SPLINE,
    ),
    Case(
        "maf-affine",
        MaskedAffineAutoregressive,
        lambda: MaskedAffineAutoregressive(4, hidden=(16, 16)),
    ),
    Case(
        "iaf-affine-context",
        MaskedAffineAutoregressive,
        lambda: MaskedAffineAutoregressive(3, hidden=(16,), mode="iaf", context_dim=2),
    ),
    Case(
        "maf-spline-context",
        MaskedSplineAutoregressive,
        lambda: MaskedSplineAutoregressive(3, bins=4, hidden=(16,), context_dim=1),
        SPLINE,
    ),
    Case(
        "iaf-spline",
        MaskedSplineAutoregressive,
        lambda: MaskedSplineAutoregressive(3, bins=6, bound=3.0, hidden=(16,), mode="iaf"),
        SPLINE,
    ),
]

CASES += [
    Case(
        "chain",
        Chain,
        lambda: Chain(
            AffineCoupling(3, hidden=(8,), context_dim=1),
            SplineCoupling(3, hidden=(8,), bins=4, swap=True),
        ),
        SPLINE,
    ),
    Case("inverse", Inverse, lambda: Inverse(MaskedAffineAutoregressive(3, hidden=(8,)))),
]
