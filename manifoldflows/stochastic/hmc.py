r"""Hamiltonian Monte Carlo layers on ``R^d`` and the torus."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..functional import sphere as sphere_geometry
from ..spaces import Euclidean, Space, Sphere, Torus
from ..targets import Target
from .base import StochasticTransform, metropolis_accept, metropolis_move, randn_like

__all__ = ["HMC", "hmc_step"]


class HMC(StochasticTransform):
    r"""Hamiltonian Monte Carlo steps with leapfrog integration (a stochastic layer).

    Each step draws fresh momenta ``p ~ N(0, I)``, integrates Hamilton's equations for
    ``H(x, p) = u(x) + |p|^2 / 2`` with ``L`` leapfrog steps of (per-dimension) size
    :math:`\epsilon`,

    .. math::

        p \leftarrow p - \tfrac{\epsilon}{2} \nabla u(x), \quad
        x \leftarrow x + \epsilon\, p, \quad
        p \leftarrow p - \tfrac{\epsilon}{2} \nabla u(x) \qquad (L \text{ times}),

    and accepts the end point with probability ``min(1, exp(H(x, p) - H(x', p')))``. Leapfrog
    is volume preserving and reversible under momentum flip for any (constant, diagonal) step
    size, so the position kernel is in detailed balance with ``exp(-u)`` and, with the same
    kernel as its backward kernel, the path weight of Wu et al. is exactly

    .. math:: \Delta S = u(y) - u(x)

    summed over the steps (0 for rejected moves). If the base equals the target, the log
    importance weights of the chain are therefore exactly constant. A per-dimension step size
    is equivalent to a diagonal mass matrix.

    On ``Torus(n)`` (a flat manifold) the positions are wrapped to ``[-pi, pi)`` after every
    drift; leapfrog stays volume preserving and reversible, so the same holds for periodic
    energies.

    ``grad u`` comes from autograd (built with ``create_graph`` when gradients are enabled, so
    the whole trajectory is differentiable). The step size is ``softplus(raw_step)``, learnable
    by default; gradients flow through the accepted trajectories, while the accept/reject
    decision is not differentiable (its dependence on the step size is ignored). Contexts are
    ignored. Cost: ``steps * leapfrog_steps + 1`` energy and gradient evaluations per call.

    Arguments:
        space: ``Euclidean(d)``, ``Torus(n)``, ``Sphere(n)`` (geodesic leapfrog, scalar step)
            or a dimension ``d``.
        energy: the target, a callable ``x -> u(x)`` (reduced energy, batch shape) or an object
            with ``.energy(x)``; differentiable (and periodic on the torus).
        steps: number of HMC steps (momentum refreshes) per call.
        leapfrog_steps: ``L``, leapfrog steps per HMC step.
        step_size: ``eps``, a positive scalar or a ``(d,)`` tensor.
        learnable: make the step size a parameter (else a buffer).

    Shapes:
        forward: ``x (*batch, d) -> (y (*batch, d), delta_s (*batch))``.

    References:
        S. Duane, A. D. Kennedy, B. J. Pendleton, D. Roweth, "Hybrid Monte Carlo", Phys. Lett.
        B 195 (1987) 216-222.
        R. M. Neal, "MCMC using Hamiltonian dynamics", Handbook of MCMC (2011),
        arXiv:1206.1901.
        H. Wu, J. Koehler, F. Noe, "Stochastic normalizing flows", NeurIPS 2020,
        arXiv:2002.06707.

    Example:
        >>> hmc = HMC(2, lambda x: 0.5 * (x**2).sum(-1), leapfrog_steps=3, step_size=0.2)
        >>> x = torch.randn(4, 2)
        >>> y, delta_s = hmc(x)
        >>> torch.allclose(delta_s, 0.5 * (y**2).sum(-1) - 0.5 * (x**2).sum(-1), atol=1e-5)
        True
    """

    needs_grad = True
    spaces = (Euclidean, Torus, Sphere)

    def __init__(
        self,
        space: Space | int,
        energy: Target,
        steps: int = 1,
        leapfrog_steps: int = 5,
        step_size: float | Tensor = 0.1,
        learnable: bool = True,
    ):
        super().__init__(space, energy, steps)
        if (
            isinstance(leapfrog_steps, bool)
            or not isinstance(leapfrog_steps, int)
            or leapfrog_steps < 1
        ):
            raise ValueError(
                f"HMC: expected a positive integer number of leapfrog steps, got {leapfrog_steps!r}"
            )
        self.leapfrog_steps = leapfrog_steps
        sphere = isinstance(self.domain, Sphere)
        self._register_positive("step", step_size, learnable, per_dim=not sphere)

    @property
    def step_size(self) -> Tensor:
        """``eps = softplus(raw_step)``, scalar or ``(d,)``."""
        return self._positive(self.raw_step)

    def extra_repr(self) -> str:
        return f"{self.domain!r}, steps={self.steps}, leapfrog_steps={self.leapfrog_steps}"

    def _step(
        self, x: Tensor, u: Tensor, g: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor, Tensor]:
        return hmc_step(
            self.domain,
            self.energy_and_grad,
            x,
            u,
            g,
            self.step_size,
            self.leapfrog_steps,
            generator,
        )


def hmc_step(
    space: Space,
    energy_and_grad: Callable[[Tensor], tuple[Tensor, Tensor]],
    x: Tensor,
    u: Tensor,
    g: Tensor,
    eps: Tensor,
    leapfrog_steps: int,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor | None, Tensor, Tensor]:
    """One HMC step (momentum refresh, ``leapfrog_steps`` leapfrog steps, accept/reject).

    On ``R^d`` and tori the drift is ``x + eps p`` (wrapped on tori). On spheres it is the
    geodesic leapfrog of Byrne & Girolami (2013, arXiv:1304.1920): the momentum lives in the
    tangent space, kicks use the tangential part of the gradient, and the drift follows the
    great circle exactly (position and momentum rotate in the plane they span). Either
    integrator is reversible and volume preserving, so the accept/reject step makes the kernel
    exact for ``exp(-u)`` w.r.t. the space's volume; the path weight of an accepted move is
    ``u(y) - u(x)``. With one leapfrog step of size ``sqrt(2 tau)`` it is the
    Metropolis-adjusted Langevin kernel of step ``tau``.

    Returns:
        ``(y, u(y), grad u(y), delta_s, accepted)`` like the layers' ``_step``.
    """
    sphere = isinstance(space, Sphere)

    def tangent(point: Tensor, v: Tensor) -> Tensor:
        return sphere_geometry.proju(point, v) if sphere else v

    p = tangent(x, randn_like(x, generator))
    h0 = u + 0.5 * (p * p).sum(-1)
    y, u_y, g_y = x, u, g
    p = p - 0.5 * eps * tangent(y, g_y)
    for i in range(leapfrog_steps):
        y, p = _drift(space, y, p, eps)
        u_y, g_y = energy_and_grad(y)
        if i < leapfrog_steps - 1:
            p = p - eps * tangent(y, g_y)
    p = p - 0.5 * eps * tangent(y, g_y)
    h1 = u_y + 0.5 * (p * p).sum(-1)
    return metropolis_move(metropolis_accept(h0 - h1, generator), x, y, u, u_y, g, g_y)


def _drift(space: Space, x: Tensor, p: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Free motion for time ``t``: straight (wrapped on tori), or along the great circle."""
    if not isinstance(space, Sphere):
        y = x + t * p
        return (space.projx(y) if isinstance(space, Torus) else y), p
    # ``x`` and ``p / |p|`` rotate by the angle ``|p| t``; the momentum keeps its length
    speed = sphere_geometry.safe_norm(p)[..., None]
    angle = speed * t
    y = torch.cos(angle) * x + t * sphere_geometry.sinc(angle) * p
    q = torch.cos(angle) * p - torch.sin(angle) * speed * x
    return sphere_geometry.projx(y), q
