"""Checker cases for circle layers (Moebius, circular splines, shifts, non-compact projection)
and torus coupling / autoregressive layers."""

from manifoldflows.spaces import Torus
from manifoldflows.transforms import (
    CircularShift,
    CircularSpline,
    Coupling,
    Elementwise,
    MaskedAutoregressive,
    MoebiusCircle,
    NonCompactProjection,
)
from manifoldflows.transforms.maps import MoebiusMap, NonCompactMap

from . import Case

# Splines and Moebius mixtures get larger perturbations so that they are far from the identity.
STRONG = {"perturb": 0.5}
# Conditional autoregressive splines: 0.5 (with N(0, 1) contexts) makes slopes down to e^-15, whose
# sequential inverse is ill-conditioned in float32; 0.3 as for the Euclidean spline MAF cases.
AUTOREGRESSIVE_CONTEXT = {"perturb": 0.3}

CASES = [
    Case("moebius-circle", MoebiusCircle, lambda: MoebiusCircle(2), STRONG),
    Case(
        "moebius-circle-mixture-fixed-seam",
        MoebiusCircle,
        lambda: MoebiusCircle(1, components=3, shift=False),
        {"perturb": 1.0},
    ),
    Case(
        "moebius-circle-mixture-context",
        MoebiusCircle,
        lambda: MoebiusCircle(2, components=2, context_dim=2, hidden=(8,)),
    ),
    Case("circular-spline", CircularSpline, lambda: CircularSpline(3, bins=5), STRONG),
    Case(
        "circular-spline-fixed-seam-context",
        CircularSpline,
        lambda: CircularSpline(1, bins=4, shift=False, context_dim=2, hidden=(8,)),
        STRONG,
    ),
    Case("circular-shift", CircularShift, lambda: CircularShift(2)),
    Case(
        "circular-shift-context",
        CircularShift,
        lambda: CircularShift(1, context_dim=3, hidden=(8,)),
    ),
    Case("noncompact-projection", NonCompactProjection, lambda: NonCompactProjection(2), STRONG),
    Case(
        "noncompact-projection-context",
        NonCompactProjection,
        lambda: NonCompactProjection(1, context_dim=2, hidden=(8,)),
    ),
    Case(
        "circular-elementwise-generic",
        Elementwise,
        lambda: Elementwise(Torus(2), NonCompactMap(scale_bound=2.0)),
        STRONG,
    ),
    Case(
        "torus-coupling-spline",
        Coupling,
        lambda: Coupling(Torus(3), "spline", bins=4, hidden=(16,)),
        STRONG,
    ),
    Case(
        "torus-coupling-moebius-context-swap",
        Coupling,
        lambda: Coupling(Torus(2), "moebius", components=3, context_dim=2, hidden=(16,), swap=True),
        STRONG,
    ),
    Case(
        "torus-coupling-mask-map-object",
        Coupling,
        lambda: Coupling(Torus(4), MoebiusMap(1), mask=[True, False, True, False], hidden=(16,)),
        STRONG,
    ),
    Case(
        "torus-autoregressive-spline",
        MaskedAutoregressive,
        lambda: MaskedAutoregressive(Torus(3), "spline", bins=4, hidden=(16,)),
        STRONG,
    ),
    Case(
        "torus-autoregressive-spline-iaf-context-order",
        MaskedAutoregressive,
        lambda: MaskedAutoregressive(
            Torus(3), "spline", bins=3, hidden=(16,), mode="iaf", context_dim=2, order=[3, 1, 2]
        ),
        AUTOREGRESSIVE_CONTEXT,
    ),
    Case(
        "torus-autoregressive-moebius",
        MaskedAutoregressive,
        lambda: MaskedAutoregressive(Torus(2), "moebius", components=2, hidden=(16,)),
        STRONG,
    ),
]
