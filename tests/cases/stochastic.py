"""Checker cases for the stochastic (MCMC) layers of :mod:`manifoldflows.stochastic`.

The generic checker skips the inverse and Jacobian checks for stochastic layers but checks
shapes, codomain membership, gradients (every parameter, here the step sizes, must get a
finite non-zero gradient) and save/load. Energies are module-level functions so that
``torch.save`` of the whole layer can pickle them.
"""

from __future__ import annotations

import torch

from manifoldflows.spaces import Sphere, Torus
from manifoldflows.stochastic import HMC, MetropolisHastings, OverdampedLangevin

from . import Case


def double_well(x: torch.Tensor) -> torch.Tensor:
    """``x1^4 - 6 x1^2 - 0.5 x1 + (x2^2 + ...)/2``: the 2-D double well, extended to R^d."""
    x1 = x[..., 0]
    return x1**4 - 6.0 * x1**2 - 0.5 * x1 + 0.5 * (x[..., 1:] ** 2).sum(-1)


def torus_energy(x: torch.Tensor) -> torch.Tensor:
    """Minus a correlated von Mises log-density (periodic)."""
    return -2.0 * torch.cos(x[..., 0] - 1.0) - torch.cos(x.sum(-1))


def sphere_energy(x: torch.Tensor) -> torch.Tensor:
    """A bimodal Watson-like energy on the sphere."""
    return -3.0 * x[..., -1] ** 2 - x[..., 0]


CASES = [
    Case(
        "langevin-ula",
        OverdampedLangevin,
        lambda: OverdampedLangevin(3, double_well, steps=3, step_size=0.01),
    ),
    Case(
        "langevin-mala-per-dim-step",
        OverdampedLangevin,
        lambda: OverdampedLangevin(
            2, double_well, steps=3, step_size=torch.tensor([0.01, 0.1]), metropolis=True
        ),
    ),
    Case(
        "metropolis-euclidean",
        MetropolisHastings,
        lambda: MetropolisHastings(2, double_well, steps=4, proposal_scale=0.3),
    ),
    Case(
        "metropolis-torus",
        MetropolisHastings,
        lambda: MetropolisHastings(Torus(2), torus_energy, steps=4, proposal_scale=1.0),
    ),
    Case(
        "metropolis-sphere",
        MetropolisHastings,
        lambda: MetropolisHastings(Sphere(2), sphere_energy, steps=4, proposal_scale=0.5),
    ),
    Case(
        "hmc-euclidean",
        HMC,
        lambda: HMC(2, double_well, steps=2, leapfrog_steps=3, step_size=0.05),
    ),
    Case(
        "hmc-torus",
        HMC,
        lambda: HMC(Torus(3), torus_energy, steps=2, leapfrog_steps=3, step_size=0.3),
    ),
    Case(
        "mala-sphere-geodesic",
        OverdampedLangevin,
        lambda: OverdampedLangevin(
            Sphere(2), sphere_energy, steps=3, step_size=0.05, metropolis=True
        ),
    ),
    Case(
        "hmc-sphere-geodesic",
        HMC,
        lambda: HMC(Sphere(2), sphere_energy, steps=2, leapfrog_steps=3, step_size=0.3),
    ),
]
