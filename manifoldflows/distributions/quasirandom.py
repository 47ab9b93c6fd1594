r"""Randomised quasi-Monte Carlo (RQMC) samples of Gaussian bases and of flows built on them.

Scrambled Sobol points ``u_i`` in ``(0, 1)^d`` fill the cube far more evenly than independent
uniforms; mapped through the inverse normal CDF, ``z_i = loc + scale * Phi^{-1}(u_i)``, and
pushed through the flow, ``x_i = T(z_i)``, they are samples of the flow with the exact density
``log q(x_i) = log p_base(z_i) - log|det dT/dz|``. Each scrambled point is marginally exactly
``q``-distributed, so averages over them stay unbiased (importance weights included, since
``E[w] = Z`` needs only the marginal); their variance is lower than with independent samples
when the averaged function is smooth in ``z``, and never worse than a small constant factor
times it for scrambled nets (Owen 1997). Works best with ``n`` a power of 2 and in low to
moderate dimension (Sobol sequences exist up to ``d = 21201``).

Standard errors computed from one RQMC point set as if its points were independent do not
measure the RQMC error: repeat the estimate with independent seeds for an error bar.

References:
    A. B. Owen, "Scrambled net variance for integrals of smooth functions", Annals of
    Statistics 25 (1997) 1541-1562. P. L'Ecuyer, C. Lemieux, "Recent advances in randomized
    quasi-Monte Carlo methods", in Modeling Uncertainty (2002). I. M. Sobol', "On the
    distribution of points in a cube", USSR Comput. Math. Math. Phys. 7 (1967) 86-112.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import positive_int
from ..errors import InvalidInput, StochasticFlowError
from .base import Distribution
from .normal import DiagNormal, StandardNormal

__all__ = ["QuasiRandomSampler"]

_TINY = 2.0**-53  # keeps Phi^{-1}(u) finite at the cube's faces


class QuasiRandomSampler:
    r"""Scrambled-Sobol samples (with log densities) of a Gaussian base or a flow on one.

    Successive calls continue one Sobol sequence, so drawing ``n`` points in batches gives the
    same points as drawing them at once. Gradients flow to the flow's parameters (the points
    are reparameterised), so the sampler can also feed reparameterised objectives.

    Arguments:
        distribution: a :class:`~manifoldflows.distributions.StandardNormal`, an unconditional
            :class:`~manifoldflows.distributions.DiagNormal`, or a deterministic
            :class:`~manifoldflows.core.Flow` whose base is one of those.
        seed: seed of the scrambling (the randomisation); drawn from ``generator`` (or torch's
            global generator) when omitted.
        generator: optional generator the seed is drawn from, on any device (the seed is drawn
            on the generator's own device, so a CUDA generator works as well as a CPU one).

    Raises:
        InvalidInput: for another kind of base, a conditional base, or ``d > 21201``.
        StochasticFlowError: for a flow with stochastic layers (no tractable density).

    Example:
        >>> sampler = QuasiRandomSampler(StandardNormal(2), seed=0)
        >>> z, log_p = sampler.sample_and_log_prob(1024)
        >>> z.shape, log_p.shape
        (torch.Size([1024, 2]), torch.Size([1024]))
        >>> bool(z.mean(0).abs().max() < 0.01)  # independent draws: about 0.03
        True
    """

    def __init__(
        self,
        distribution: Distribution,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ):
        who = "QuasiRandomSampler"
        if getattr(distribution, "stochastic", False):
            raise StochasticFlowError(
                f"{who}: the flow has stochastic layers and no tractable density; sample it "
                "with sample_and_log_weight instead"
            )
        transform = getattr(distribution, "transform", None)
        base = distribution.base if transform is not None else distribution
        if not isinstance(base, (StandardNormal, DiagNormal)):
            raise InvalidInput(
                f"{who}: expected a StandardNormal or DiagNormal base (or a flow on one), got "
                f"{type(base).__name__}"
            )
        if getattr(base, "context_offsets", None) is not None:
            raise InvalidInput(f"{who}: expected an unconditional base, got a conditional one")
        dim = base.features
        if dim > torch.quasirandom.SobolEngine.MAXDIM:
            raise InvalidInput(
                f"{who}: Sobol sequences go up to {torch.quasirandom.SobolEngine.MAXDIM} "
                f"dimensions, got {dim}"
            )
        if seed is None:
            # draw on the generator's device: torch refuses a CUDA generator for a CPU draw
            device = None if generator is None else generator.device
            seed = int(torch.randint(0, 2**31 - 1, (), generator=generator, device=device))
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise InvalidInput(f"{who}: expected an integer seed, got {seed!r}")
        self.base = base
        self.transform = transform
        self.seed = seed
        self._engine = torch.quasirandom.SobolEngine(dim, scramble=True, seed=seed)

    def sample_and_log_prob(self, n: int) -> tuple[Tensor, Tensor]:
        """The next ``n`` points of the sequence: samples ``(n, d)`` and their ``log q``."""
        n = positive_int(n, "number of points", "QuasiRandomSampler")
        u = self._engine.draw(n, dtype=torch.float64).clamp(_TINY, 1.0 - _TINY)
        if isinstance(self.base, DiagNormal):
            loc, log_scale = self.base.parameters_for(None)
        else:
            loc = self.base._anchor
            log_scale = torch.zeros_like(loc)
        eps = torch.special.ndtri(u).to(dtype=loc.dtype, device=loc.device)
        z = loc + torch.exp(log_scale) * eps
        log_p = self.base._log_prob(z, None)
        if self.transform is None:
            return z, log_p
        x, logdet = self.transform(z, None)
        return x, log_p - logdet
