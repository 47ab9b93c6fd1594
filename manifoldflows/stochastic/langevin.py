r"""Overdamped Langevin layers: unadjusted (ULA) and Metropolis-adjusted (MALA)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..spaces import Euclidean, Space, Sphere, Torus
from ..targets import Target
from .base import StochasticTransform, metropolis_accept, metropolis_move, randn_like
from .hmc import hmc_step

__all__ = ["OverdampedLangevin"]

#: Images ``2 pi k``, ``|k| <= 3``, kept in the wrapped Gaussian kernel on the torus. The first
#: image left out contributes ``exp(-(7 pi)^2 / (4 var))`` relative to the main term: below
#: ``1e-50`` for kernel variances ``2 eps <= 2`` (step sizes up to 1).
_IMAGES = 3


def _log_wrapped_kernel(d: Tensor, var: Tensor) -> Tensor:
    r"""``sum_i log sum_k exp(-(d_i + 2 pi k)^2 / (2 var_i))``: the log of a wrapped Gaussian
    density on the torus up to its normaliser, which is the same in both directions."""
    d = torch.remainder(d + math.pi, 2.0 * math.pi) - math.pi
    k = torch.arange(-_IMAGES, _IMAGES + 1, dtype=d.dtype, device=d.device)
    shifted = d[..., None] + 2.0 * math.pi * k
    terms = -shifted.square() / (2.0 * var[..., None] if var.dim() else 2.0 * var)
    return torch.logsumexp(terms, -1).sum(-1)


class OverdampedLangevin(StochasticTransform):
    r"""Overdamped Langevin steps on ``R^d`` with their exact path weight (a stochastic layer).

    One step with (per-dimension) step size :math:`\epsilon` and target
    :math:`\pi \propto e^{-u}` proposes

    .. math::

        y = x - \epsilon \nabla u(x) + \sqrt{2\epsilon}\, \xi, \qquad \xi \sim N(0, I),

    i.e. ``q(y | x) = N(y; x - eps grad u(x), 2 eps)``. The backward kernel is the same
    Gaussian kernel started from ``y``, so the path weight of the unadjusted step (ULA) is

    .. math::

        \Delta S = \log N(x;\, y - \epsilon\nabla u(y),\, 2\epsilon)
                 - \log N(y;\, x - \epsilon\nabla u(x),\, 2\epsilon)
               = \frac{|\xi|^2}{2}
                 - \sum_i \frac{(x_i - y_i + \epsilon_i \partial_i u(y))^2}{4\epsilon_i},

    exact for any step size (the normalisers cancel). On ``Torus(n)`` the proposal is wrapped to
    ``[-pi, pi)`` and both kernels are wrapped Gaussians,
    ``q(y | x) = prod_i sum_k N(y_i + 2 pi k; x_i - eps_i d_i u(x), 2 eps_i)`` (images
    ``|k| <= 3``, exact to double precision for ``eps <= 1``), so the path weight and the
    MALA ratio stay exact for periodic energies. ULA does not leave ``pi`` invariant, but
    the importance weights of a flow containing it are still unbiased. As ``eps -> 0``,
    ``Delta S = u(y) - u(x) + O(eps) -> 0`` (the identity map's logdet).

    With ``metropolis=True`` (MALA) the proposal is accepted with probability
    ``min(1, exp(u(x) - u(y) + Delta S_ULA))`` (Metropolis-Hastings with the Langevin
    proposal); the kernel is then in detailed balance with ``pi`` and its path weight is exactly
    ``Delta S = u(y) - u(x)`` (0 for a rejected move).

    The gradient ``grad u`` comes from autograd (built with ``create_graph`` when gradients are
    enabled, so the layer is differentiable with respect to its input and step size). The step
    size is ``softplus(raw_step)`` (scalar or one per dimension, i.e. a constant diagonal
    preconditioner), learnable by default. For MALA, gradients flow through the accepted
    proposals (reparameterised); the accept/reject decision itself is not differentiable, so
    the gradient with respect to the step size ignores its effect on the acceptance rate.
    The kernel is its own backward kernel, so :meth:`inverse` runs the same steps (see
    :class:`~manifoldflows.stochastic.base.StochasticTransform`). Contexts are ignored.

    Arguments:
        space: ``Euclidean(d)``, ``Torus(n)``, ``Sphere(n)`` (Metropolis-adjusted only: one
            geodesic leapfrog step of size ``sqrt(2 eps)``) or the dimension ``d``.
        energy: the target, a callable ``x -> u(x)`` (reduced energy, batch shape) or an object
            with ``.energy(x)``; it must be differentiable.
        steps: number of Langevin steps per call.
        step_size: ``eps``, a positive scalar or a ``(d,)`` tensor.
        metropolis: accept/reject each step (MALA) instead of the unadjusted update (ULA).
        learnable: make the step size a parameter (else a buffer).

    Shapes:
        forward: ``x (*batch, d) -> (y (*batch, d), delta_s (*batch))``.

    References:
        H. Wu, J. Koehler, F. Noe, "Stochastic normalizing flows", NeurIPS 2020,
        arXiv:2002.06707.
        G. O. Roberts, R. L. Tweedie, "Exponential convergence of Langevin distributions and
        their discrete approximations", Bernoulli 2 (1996) 341-363.

    Example:
        >>> layer = OverdampedLangevin(2, lambda x: 0.5 * (x**2).sum(-1), steps=3, step_size=0.1)
        >>> y, delta_s = layer(torch.randn(5, 2))
        >>> y.shape, delta_s.shape, layer.stochastic
        (torch.Size([5, 2]), torch.Size([5]), True)
    """

    needs_grad = True
    spaces = (Euclidean, Torus, Sphere)

    def __init__(
        self,
        space: Space | int,
        energy: Target,
        steps: int = 1,
        step_size: float | Tensor = 0.01,
        metropolis: bool = False,
        learnable: bool = True,
    ):
        super().__init__(space, energy, steps)
        self.metropolis = bool(metropolis)
        sphere = isinstance(self.domain, Sphere)
        if sphere and not self.metropolis:
            raise ValueError(
                "OverdampedLangevin: the unadjusted kernel has no exact path weight on "
                f"{self.domain!r}; use metropolis=True (geodesic MALA)"
            )
        self._register_positive("step", step_size, learnable, per_dim=not sphere)

    @property
    def step_size(self) -> Tensor:
        """``eps = softplus(raw_step)``, scalar or ``(d,)``."""
        return self._positive(self.raw_step)

    def extra_repr(self) -> str:
        kind = "MALA" if self.metropolis else "ULA"
        return f"{self.domain!r}, steps={self.steps}, {kind}"

    def _step(
        self, x: Tensor, u: Tensor, g: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor, Tensor]:
        if isinstance(self.domain, Sphere):  # MALA = one geodesic leapfrog of sqrt(2 eps)
            h = torch.sqrt(2.0 * self.step_size)
            return hmc_step(self.domain, self.energy_and_grad, x, u, g, h, 1, generator)
        eps = self.step_size
        noise = randn_like(x, generator)
        y = x - eps * g + torch.sqrt(2.0 * eps) * noise
        torus = isinstance(self.domain, Torus)
        if torus:
            y = self.domain.projx(y)
        u_y, g_y = self.energy_and_grad(y)
        back = x - y + eps * g_y
        if torus:
            var = 2.0 * eps
            forward = _log_wrapped_kernel(torch.sqrt(2.0 * eps) * noise, var)
            delta = _log_wrapped_kernel(back, var) - forward
        else:
            delta = 0.5 * (noise * noise).sum(-1) - (back * back / (4.0 * eps)).sum(-1)
        if not self.metropolis:
            return y, u_y, g_y, delta, torch.ones_like(u, dtype=torch.bool)
        accept = metropolis_accept(delta - (u_y - u), generator)
        return metropolis_move(accept, x, y, u, u_y, g, g_y)
