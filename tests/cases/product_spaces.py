"""Checker cases for the one layer family on product spaces (lines, intervals, angles)."""

import math

from manifoldflows.spaces import Euclidean, Interval, Product, Sphere, Torus
from manifoldflows.transforms import Coupling, Elementwise, MaskedAutoregressive

from . import Case

STRONG = {"perturb": 0.5}
# Six coordinates solved in sequence: 0.3 (as for the 3-d spline MAF cases) leaves the f64
# forward + inverse logdet sum at ~1.2e-7, just above the checker's 1e-7; 0.2 keeps the bins
# far from uniform while the sequential solve stays well conditioned.
AUTOREGRESSIVE = {"perturb": 0.2}
MIXED = Product(Euclidean(2), Interval(0.0, math.pi, 2), Torus(2))

CASES = [
    Case(
        "product-coupling-spline-mask-across-factors",
        Coupling,
        lambda: Coupling(
            MIXED, "spline", mask=[True, False, True, False, True, False], bins=4, hidden=(16,)
        ),
        STRONG,
    ),
    Case(
        "product-coupling-context-swap",
        Coupling,
        lambda: Coupling(MIXED, "spline", bins=3, hidden=(16,), context_dim=2, swap=True),
        STRONG,
    ),
    Case(
        "product-coupling-map-per-kind",
        Coupling,
        lambda: Coupling(
            MIXED,
            {"real": "affine", "interval": "spline", "angle": "moebius"},
            mask=[False, True, True, False, False, True],
            hidden=(16,),
        ),
        STRONG,
    ),
    Case(
        "product-coupling-sphere-conditions",
        Coupling,
        lambda: Coupling(
            Product(Sphere(2), Torus(2)), "spline", mask=[False] * 3 + [True] * 2, hidden=(16,)
        ),
        STRONG,
    ),
    Case(
        "product-autoregressive-spline",
        MaskedAutoregressive,
        lambda: MaskedAutoregressive(
            MIXED, "spline", bins=4, hidden=(16,), order=[6, 1, 5, 2, 4, 3]
        ),
        AUTOREGRESSIVE,
    ),
    Case(
        "product-autoregressive-iaf-context",
        MaskedAutoregressive,
        lambda: MaskedAutoregressive(
            MIXED, "spline", bins=3, hidden=(16,), mode="iaf", context_dim=2
        ),
        AUTOREGRESSIVE,
    ),
    Case(
        "product-elementwise-context",
        Elementwise,
        lambda: Elementwise(MIXED, "spline", bins=4, context_dim=2, hidden=(8,)),
        STRONG,
    ),
    Case(
        "interval-elementwise",
        Elementwise,
        lambda: Elementwise(Interval(-1.0, 2.0, 3), "spline", bins=5),
        STRONG,
    ),
]
