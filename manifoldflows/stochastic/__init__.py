"""Stochastic (MCMC) layers for stochastic normalizing flows.

Every layer here is a :class:`~manifoldflows.core.Transform` with ``stochastic = True`` that
takes the target energy as an argument (a callable ``x -> u(x)`` or an object with
``.energy(x)``) and returns the exact path weight ``log q_back(x|y) - log q_fwd(y|x)`` of Wu,
Koehler & Noe (2020, arXiv:2002.06707) in the logdet slot, so that flows containing them give
unbiased importance weights through :meth:`~manifoldflows.core.Flow.sample_and_log_weight`.

* :class:`OverdampedLangevin`: unadjusted (ULA) or Metropolis-adjusted (MALA) Langevin on R^d
  and the torus.
* :class:`MetropolisHastings`: random-walk Metropolis on R^d, the torus (wrapped Gaussian) and
  the sphere (geodesic Gaussian).
* :class:`HMC`: Hamiltonian Monte Carlo on R^d and the torus.
* :class:`AnnealedEnergy`: ``(1 - lambda) u_0 + lambda u`` for intermediate blocks.
* :func:`annealed_importance_sampling`: AIS from a flow to a target with these layers as
  transitions (so on tori and spheres as well).
"""

from .annealing import annealed_importance_sampling
from .base import AnnealedEnergy, StochasticTransform, metropolis_accept
from .hmc import HMC
from .langevin import OverdampedLangevin
from .metropolis import MetropolisHastings

__all__ = [
    "OverdampedLangevin",
    "MetropolisHastings",
    "HMC",
    "AnnealedEnergy",
    "StochasticTransform",
    "metropolis_accept",
    "annealed_importance_sampling",
]
