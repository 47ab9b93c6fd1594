"""Checker cases for invertible residual blocks (exact log-determinants)."""

from __future__ import annotations

from manifoldflows.transforms import InvertibleResidual

from . import Case

__all__ = ["CASES"]

# A larger perturbation makes the spectral normalisation active (weights with norm > coeff),
# so the checks exercise the normalised, strongly non-linear regime.
PERTURB = {"perturb": 0.3}

CASES = [
    Case(
        "residual-lipswish",
        InvertibleResidual,
        lambda: InvertibleResidual(3, hidden=(16,), logdet="exact"),
        PERTURB,
    ),
    Case(
        "residual-elu-context",
        InvertibleResidual,
        lambda: InvertibleResidual(
            2, hidden=(8, 8), context_dim=2, activation="elu", logdet="exact"
        ),
        PERTURB,
    ),
    Case(
        "residual-tanh-exact-norm",
        InvertibleResidual,
        lambda: InvertibleResidual(
            4, hidden=(12,), activation="tanh", norm="exact", coeff=0.9, logdet="exact"
        ),
        PERTURB,
    ),
]
