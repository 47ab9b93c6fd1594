r"""Random-walk Metropolis-Hastings layers on ``R^d``, the torus and the sphere."""

from __future__ import annotations

import torch
from torch import Tensor

from ..spaces import Euclidean, Space, Sphere, Torus
from ..targets import Target
from .base import StochasticTransform, metropolis_accept, metropolis_move, randn_like

__all__ = ["MetropolisHastings"]


class MetropolisHastings(StochasticTransform):
    r"""Random-walk Metropolis-Hastings steps with symmetric Gaussian proposals (stochastic layer).

    Each step proposes ``y`` from a proposal ``q(y | x)`` that is *symmetric*,
    ``q(y | x) = q(x | y)`` with respect to the Riemannian volume of the space, and accepts it
    with probability ``min(1, exp(u(x) - u(y)))``. The proposals are

    * ``Euclidean(d)``: ``y = x + s * xi``, ``xi ~ N(0, I)`` (``s`` scalar or per dimension);
    * ``Torus(n)``: the wrapped Gaussian ``y = wrap(x + s * xi)``; its density
      ``sum_k N(y - x + 2 pi k; 0, s^2)`` depends on ``wrap(y - x)`` only through an even
      function, so it is symmetric (``s`` scalar or per angle);
    * ``Sphere(n)``: a geodesic Gaussian step ``y = exp_x(s * P_x xi)`` with
      ``P_x xi = xi - <x, xi> x`` an isotropic Gaussian vector in the tangent space (``s``
      scalar only). Its density w.r.t. the surface measure,

      .. math::

          q(y \mid x) = \sum_{v:\ \exp_x v = y}
              \frac{N(v; 0, s^2 I_n)}{|\det d\exp_x(v)|}, \qquad
              |\det d\exp_x(v)| = \left|\frac{\sin |v|}{|v|}\right|^{n-1},

      (all preimages ``|v| = theta + 2 pi k`` and ``2 pi - theta + 2 pi k`` included) is a
      function of the geodesic distance ``theta = d(x, y)`` only: the isotropic tangent Gaussian
      and the exponential map commute with the rotations of ``S^n``, which act transitively on
      pairs at a given distance. The expmap volume terms therefore cancel in
      ``q(x | y) / q(y | x) = 1`` and the Metropolis ratio ``exp(u(x) - u(y))`` is exact for
      every scale, with no truncation. (An anisotropic tangent scale would break this: there is
      no rotation-invariant tangent basis, so it is not offered.) Proposals are re-normalised
      (``projx``) against rounding.

    The kernel is in detailed balance with ``exp(-u)`` and is its own backward kernel, so the
    path weight of Wu et al. is exactly

    .. math:: \Delta S = \log\frac{q_\mathrm{back}(x \mid y)}{q_\mathrm{fwd}(y \mid x)}
              = u(y) - u(x)

    summed over the steps (0 for rejected moves). If the base equals the target, the log
    importance weights of the chain are therefore exactly constant.

    The proposal scale is ``softplus(raw_scale)``, learnable by default. Gradients flow through
    accepted proposals (``y = x + s xi`` is reparameterised); the accept/reject decision is not
    differentiable, so the gradient ignores the scale's effect on the acceptance probability.
    A proposal with NaN or ``+inf`` energy is rejected. Contexts are ignored.

    Arguments:
        space: ``Euclidean(d)``, ``Torus(n)`` (``Circle()`` included), ``Sphere(n)``, or a
            dimension ``d`` for ``Euclidean(d)``.
        energy: the target, a callable ``x -> u(x)`` (reduced energy, batch shape) or an object
            with ``.energy(x)`` (periodic on the torus).
        steps: number of Metropolis steps per call.
        proposal_scale: ``s``, a positive scalar, or a ``(d,)`` tensor on ``R^d`` and the torus.
        learnable: make the scale a parameter (else a buffer).

    Shapes:
        forward: ``x (*batch, *event) -> (y (*batch, *event), delta_s (*batch))``.

    References:
        N. Metropolis et al., "Equation of state calculations by fast computing machines",
        J. Chem. Phys. 21 (1953) 1087.
        H. Wu, J. Koehler, F. Noe, "Stochastic normalizing flows", NeurIPS 2020,
        arXiv:2002.06707.

    Example:
        >>> from manifoldflows.spaces import Sphere
        >>> mh = MetropolisHastings(Sphere(2), lambda x: -5.0 * x[..., 2], steps=4)
        >>> y, delta_s = mh(Sphere(2).random((6,)))
        >>> bool(Sphere(2).contains(y).all()), delta_s.shape
        (True, torch.Size([6]))
    """

    spaces = (Euclidean, Torus, Sphere)

    def __init__(
        self,
        space: Space | int,
        energy: Target,
        steps: int = 1,
        proposal_scale: float | Tensor = 0.5,
        learnable: bool = True,
    ):
        super().__init__(space, energy, steps)
        sphere = isinstance(self.domain, Sphere)
        self._register_positive("scale", proposal_scale, learnable, per_dim=not sphere)

    @property
    def proposal_scale(self) -> Tensor:
        """``s = softplus(raw_scale)``."""
        return self._positive(self.raw_scale)

    def extra_repr(self) -> str:
        return f"{self.domain!r}, steps={self.steps}"

    def propose(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One symmetric proposal from ``x`` (see the class docstring)."""
        s = self.proposal_scale
        noise = randn_like(x, generator)
        space = self.domain
        if isinstance(space, Sphere):
            v = s * space.proju(x, noise)
            return space.projx(space.expmap(x, v))
        if isinstance(space, Torus):
            return space.projx(x + s * noise)
        return x + s * noise

    def _step(
        self, x: Tensor, u: Tensor, g: Tensor | None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor, Tensor]:
        y = self.propose(x, generator)
        u_y = self.energy(y)
        return metropolis_move(metropolis_accept(u - u_y, generator), x, y, u, u_y)
