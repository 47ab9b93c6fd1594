"""Checker cases for planar, radial and Sylvester flows (unconditional and conditional)."""

from __future__ import annotations

import torch

from manifoldflows.transforms import PlanarFlow, RadialFlow, SylvesterFlow

from . import Case

__all__ = ["CASES"]

# The layers start as the identity; a large perturbation makes every map clearly non-trivial
# (u_hat, beta and R are then of order one).
STRONG = {"perturb": 0.8}


def _gen(seed: int = 3) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


CASES = [
    Case("planar", PlanarFlow, lambda: PlanarFlow(3, generator=_gen()), STRONG),
    Case("planar-1d", PlanarFlow, lambda: PlanarFlow(1, generator=_gen()), STRONG),
    Case(
        "planar-context",
        PlanarFlow,
        lambda: PlanarFlow(3, context_dim=2, hidden=(8,), generator=_gen()),
        STRONG,
    ),
    Case("radial", RadialFlow, lambda: RadialFlow(3, generator=_gen()), STRONG),
    Case(
        "radial-context",
        RadialFlow,
        lambda: RadialFlow(2, context_dim=2, hidden=(8,), generator=_gen()),
        STRONG,
    ),
    Case(
        "sylvester-orthogonal",
        SylvesterFlow,
        lambda: SylvesterFlow(4, kind="orthogonal", generator=_gen()),
        STRONG,
    ),
    Case(
        "sylvester-orthogonal-reduced",
        SylvesterFlow,
        lambda: SylvesterFlow(4, kind="orthogonal", num_ortho_vectors=2, generator=_gen()),
        STRONG,
    ),
    Case(
        "sylvester-householder",
        SylvesterFlow,
        lambda: SylvesterFlow(3, kind="householder", num_householder=2, generator=_gen()),
        STRONG,
    ),
    Case(
        "sylvester-triangular",
        SylvesterFlow,
        lambda: SylvesterFlow(3, kind="triangular"),
        STRONG,
    ),
    Case(
        "sylvester-triangular-reverse",
        SylvesterFlow,
        lambda: SylvesterFlow(3, kind="triangular", reverse=True),
        STRONG,
    ),
    Case(
        "sylvester-orthogonal-context",
        SylvesterFlow,
        lambda: SylvesterFlow(
            3, kind="orthogonal", num_ortho_vectors=2, context_dim=2, hidden=(8,), generator=_gen()
        ),
        STRONG,
    ),
    Case(
        "sylvester-householder-context",
        SylvesterFlow,
        lambda: SylvesterFlow(3, kind="householder", context_dim=1, hidden=(8,), generator=_gen()),
        STRONG,
    ),
    Case(
        "sylvester-triangular-context",
        SylvesterFlow,
        lambda: SylvesterFlow(2, kind="triangular", reverse=True, context_dim=2, hidden=(8,)),
        STRONG,
    ),
]
