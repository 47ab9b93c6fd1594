"""Checker cases for the sphere layers and the sphere/circle chart layers."""

from __future__ import annotations

import torch

from manifoldflows.transforms import (
    AngleToCircle,
    ExpMapRadial,
    MoebiusSphere,
    RecursiveSphereFlow,
    SphereRotation,
    Stereographic,
)

from . import Case

__all__ = ["CASES"]

# The layers start at (or near) the identity; a large perturbation makes every map clearly
# non-trivial (Moebius centres with |w| ~ 0.5, spline knots and derivatives far from uniform).
STRONG = {"perturb": 0.5}
SMALL_NET = (8,)


def _gen(seed: int = 3) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


CASES = [
    Case("sphere-rotation-s2", SphereRotation, lambda: SphereRotation(2, generator=_gen())),
    Case("sphere-rotation-s5", SphereRotation, lambda: SphereRotation(5, generator=_gen())),
    Case(
        "sphere-rotation-context",
        SphereRotation,
        lambda: SphereRotation(3, context_dim=2, hidden=SMALL_NET),
        STRONG,
    ),
    Case("moebius-sphere-s1", MoebiusSphere, lambda: MoebiusSphere(1), STRONG),
    Case(
        "moebius-sphere-s1-mixture",
        MoebiusSphere,
        lambda: MoebiusSphere(1, components=3),
        STRONG,
    ),
    Case("moebius-sphere-s2", MoebiusSphere, lambda: MoebiusSphere(2), {"perturb": 1.0}),
    Case("moebius-sphere-s5", MoebiusSphere, lambda: MoebiusSphere(5), {"perturb": 1.0}),
    Case(
        "moebius-sphere-context",
        MoebiusSphere,
        lambda: MoebiusSphere(3, context_dim=2, hidden=SMALL_NET),
        STRONG,
    ),
    Case(
        "expmap-radial-s1",
        ExpMapRadial,
        lambda: ExpMapRadial(1, components=2, generator=_gen()),
        STRONG,
    ),
    Case(
        "expmap-radial-s2",
        ExpMapRadial,
        lambda: ExpMapRadial(2, components=4, generator=_gen()),
        STRONG,
    ),
    Case(
        "expmap-radial-s4",
        ExpMapRadial,
        lambda: ExpMapRadial(4, components=3, generator=_gen()),
        STRONG,
    ),
    Case(
        "expmap-radial-context",
        ExpMapRadial,
        lambda: ExpMapRadial(2, components=2, context_dim=2, hidden=SMALL_NET, generator=_gen()),
        STRONG,
    ),
    Case(
        "recursive-sphere-s1", RecursiveSphereFlow, lambda: RecursiveSphereFlow(1, bins=5), STRONG
    ),
    Case(
        "recursive-sphere-s2",
        RecursiveSphereFlow,
        lambda: RecursiveSphereFlow(2, bins=5, hidden=SMALL_NET),
        STRONG,
    ),
    Case(
        "recursive-sphere-s3-moebius",
        RecursiveSphereFlow,
        lambda: RecursiveSphereFlow(3, bins=4, circle="moebius", components=2, hidden=SMALL_NET),
        STRONG,
    ),
    Case(
        "recursive-sphere-s5",
        RecursiveSphereFlow,
        lambda: RecursiveSphereFlow(5, bins=4, hidden=SMALL_NET),
        STRONG,
    ),
    Case(
        "recursive-sphere-context",
        RecursiveSphereFlow,
        lambda: RecursiveSphereFlow(3, bins=4, context_dim=2, hidden=SMALL_NET),
        STRONG,
    ),
    Case("stereographic-s1", Stereographic, lambda: Stereographic(1)),
    Case("stereographic-s2", Stereographic, lambda: Stereographic(2)),
    Case("stereographic-s5", Stereographic, lambda: Stereographic(5)),
    Case("angle-to-circle", AngleToCircle, lambda: AngleToCircle()),
]
