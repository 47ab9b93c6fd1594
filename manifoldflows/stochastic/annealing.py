r"""Annealed importance sampling from a flow to a target, built on the stochastic layers.

The transitions are the MCMC layers of this package (:class:`MetropolisHastings`,
:class:`OverdampedLangevin` with Metropolis correction, :class:`HMC`), which move points with
the space's own geometry (wrapped steps on tori, geodesic steps through the exponential map on
spheres), so AIS works wherever those layers do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
import tqdm
from torch import Tensor

from .._checks import positive_float, positive_int
from ..errors import InvalidInput, StochasticFlowError
from ..estimators import Samples, check_model, check_policy, handle_nonfinite
from ..targets import energy_fn, target_energy
from .hmc import HMC
from .langevin import OverdampedLangevin
from .metropolis import MetropolisHastings

if TYPE_CHECKING:  # pragma: no cover
    from ..distributions.base import Distribution
    from ..spaces import Space
    from ..targets import Target
    from .base import StochasticTransform

__all__ = ["annealed_importance_sampling", "TRANSITIONS"]

#: The transition kernels of :func:`annealed_importance_sampling` and their layer classes.
TRANSITIONS = {"mh": MetropolisHastings, "langevin": OverdampedLangevin, "hmc": HMC}


class _AnnealedPath:
    r"""Energy of level ``beta`` of the geometric path: ``-(1 - beta) log q(x) + beta u(x)``.

    A plain object (not a module), so the flow is not registered inside the transition layer.
    """

    def __init__(self, flow: Distribution, target: Target, context: Tensor | None):
        self.flow = flow
        self.target = energy_fn(target)
        self.context = context
        self.beta = 0.0
        # (log q, u) of the last points evaluated and of the chain's current points
        self.last: tuple[Tensor | None, Tensor] | None = None
        self.current: tuple[Tensor | None, Tensor] | None = None

    def energy(self, x: Tensor) -> Tensor:
        u = self.target(x, self.context)
        if self.beta == 1.0:
            self.last = (None, u)
            return u
        log_q = self.flow.log_prob(x, self.context)
        self.last = (log_q, u)
        return self.combine(log_q, u)

    def combine(self, log_q: Tensor | None, u: Tensor) -> Tensor:
        """The level's energy from the two parts."""
        if self.beta == 1.0 or log_q is None:
            return u
        return -(1.0 - self.beta) * log_q + self.beta * u

    def follow(self, accept: Tensor) -> None:
        """Keep :attr:`current` in step with the chain: accepted points take the proposal's."""
        (lq, u), (lq_y, u_y) = self.current, self.last
        lq_new = None if lq is None or lq_y is None else torch.where(accept, lq_y, lq)
        self.current = (lq_new, torch.where(accept, u_y, u))


def _betas(n_steps: int, betas: Sequence[float] | Tensor | None, who: str) -> list[float]:
    if betas is None:
        return [k / n_steps for k in range(n_steps + 1)]
    values = [float(b) for b in (betas.tolist() if isinstance(betas, Tensor) else betas)]
    if (
        len(values) != n_steps + 1
        or values[0] != 0.0
        or values[-1] != 1.0
        or any(b1 <= b0 for b0, b1 in zip(values, values[1:]))
    ):
        raise InvalidInput(
            f"{who}: expected betas as {n_steps + 1} strictly increasing values from 0 to 1 "
            f"(n_steps + 1), got {values}"
        )
    return values


def _layer(
    transition: str,
    space: Space,
    path: _AnnealedPath,
    step: float,
    mcmc_steps: int,
    leapfrog: int,
    who: str,
) -> StochasticTransform:
    try:
        if transition == "mh":
            return MetropolisHastings(space, path, mcmc_steps, step, learnable=False)
        if transition == "langevin":
            return OverdampedLangevin(
                space, path, mcmc_steps, step, metropolis=True, learnable=False
            )
        return HMC(space, path, mcmc_steps, leapfrog, step, learnable=False)
    except ValueError as err:
        raise InvalidInput(
            f"{who}: transition {transition!r} cannot run on the flow's space {space!r} ({err})"
        ) from None


def annealed_importance_sampling(
    flow: Distribution,
    target: Target,
    n: int,
    n_steps: int,
    *,
    context: Tensor | None = None,
    transition: str = "mh",
    step_size: float = 0.1,
    mcmc_steps: int = 1,
    leapfrog_steps: int = 5,
    betas: Sequence[float] | Tensor | None = None,
    batch_size: int = 8192,
    generator: torch.Generator | None = None,
    nonfinite: str = "raise",
    progress: bool = False,
    qmc: bool = False,
) -> Samples:
    r"""Annealed importance sampling from the flow density to the target (Neal 2001).

    The geometric path ``pi_k(x) ∝ q(x)^(1 - beta_k) exp(-u(x))^beta_k``, i.e. the energies
    ``u_k(x) = -(1 - beta_k) log q(x) + beta_k u(x)`` with
    ``0 = beta_0 < beta_1 < ... < beta_K = 1`` (``K = n_steps``, linear by default), connects
    the flow ``q`` to the target. Starting from ``x_0 ~ q``, for ``k = 1..K`` the log weight
    gains the incremental ratio at the current point and the point then moves by ``mcmc_steps``
    transitions that leave ``pi_k`` invariant:

    .. math::

        \log w \mathrel{+}= \log\frac{\pi_k(x)}{\pi_{k-1}(x)} = u_{k-1}(x) - u_k(x),
        \qquad x \leftarrow T_k(x).

    The final ``w`` is an unbiased estimate of ``Z`` (``E[w] = Z``) and ``(x, w)`` is a
    properly weighted sample of ``p``, for any number of levels; more levels bring the weights
    closer to uniform. This is the path weight of a stochastic normalizing flow whose layers
    are the transitions (Wu et al. 2020), and the transitions *are* the stochastic layers of
    :mod:`manifoldflows.stochastic` with energy ``u_k``, so they move on the flow's space:

    * ``"mh"``: :class:`MetropolisHastings`, random walk of scale ``step_size`` on ``R^d``,
      wrapped on tori, geodesic (through the exponential map) on spheres;
    * ``"langevin"``: :class:`OverdampedLangevin` with ``metropolis=True`` (MALA), time step
      ``step_size``, on ``R^d``, tori and spheres (geodesic);
    * ``"hmc"``: :class:`HMC` with ``leapfrog_steps`` leapfrog steps of size ``step_size``, on
      ``R^d``, tori and spheres (geodesic leapfrog, Byrne & Girolami 2013, arXiv:1304.1920).

    Each energy evaluation costs one flow density (an inverse pass) and one target energy per
    particle (with gradients for MALA and HMC); every level evaluates the energy once per
    proposal, and the level's energy at the current points comes from the parts (``log q`` and
    ``u``) kept from earlier evaluations, so no point is evaluated twice (MALA and HMC also
    evaluate the current points once per level, for the gradient). The flow must have
    ``log_prob`` (stochastic flows are refused). No gradient flows to the flow's parameters.

    Arguments:
        flow: the initial distribution, with ``sample_and_log_prob`` and ``log_prob``.
        target: see :mod:`manifoldflows.targets` (receives ``context`` if it takes one).
        n: number of particles (per context row).
        n_steps: number of annealing levels ``K``.
        context: optional conditioning ``(*cbatch, context_dim)`` of a conditional flow (and
            target): one column of particles per context row, so the estimators give one
            estimate per row.
        transition: ``"mh"``, ``"langevin"`` or ``"hmc"``.
        step_size: proposal scale (``"mh"``), Langevin time step (``"langevin"``) or leapfrog
            step (``"hmc"``).
        mcmc_steps: transitions per level.
        leapfrog_steps: leapfrog steps per HMC transition.
        betas: optional custom schedule, ``K + 1`` strictly increasing values from 0 to 1.
        batch_size: particles annealed together (bounds memory).
        generator: optional random generator (on the flow's device) for the starting points,
            proposals and decisions: a seeded generator reproduces the run.
        nonfinite: policy for NaN/``+inf`` initial weights (see
            :func:`~manifoldflows.estimators.importance_weights`); proposals with NaN energy are
            rejected.
        progress: show a ``tqdm`` progress bar over particles.
        qmc: start the chains from randomised quasi-Monte Carlo samples of the flow (see
            :func:`~manifoldflows.estimators.importance_weights`); ``Z`` stays unbiased. Not
            with ``context``.

    Returns:
        :class:`~manifoldflows.estimators.Samples` with ``x`` ``(n, *cbatch, *event_shape)``,
        the AIS log weights ``log_w`` ``(n, *cbatch)`` (feed them to the estimators of
        :mod:`manifoldflows.estimators`) and ``acceptance`` ``(n_steps,)``, the acceptance
        rate at each level (tune ``step_size`` so that it is neither near 0 nor near 1).

    References:
        R. M. Neal, "Annealed importance sampling", Statistics and Computing 11 (2001)
        125-139, arXiv:physics/9803008. H. Wu, J. Koehler, F. Noe, "Stochastic normalizing
        flows", NeurIPS 2020, arXiv:2002.06707. Midgley et al., "Flow annealed importance
        sampling bootstrap", ICLR 2023, arXiv:2208.01893.

    Example:
        >>> from manifoldflows.distributions import DiagNormal
        >>> u = lambda x: 0.5 * ((x - 1.0) ** 2).sum(-1)
        >>> g = torch.Generator().manual_seed(0)
        >>> s = annealed_importance_sampling(DiagNormal(2, scale=2.0), u, 200, 10,
        ...                                  step_size=0.5, generator=g)
        >>> s.x.shape, s.log_w.shape, s.acceptance.shape
        (torch.Size([200, 2]), torch.Size([200]), torch.Size([10]))
    """
    who = "annealed_importance_sampling"
    n = positive_int(n, "number of particles n", who)
    n_steps = positive_int(n_steps, "number of annealing levels n_steps", who)
    mcmc_steps = positive_int(mcmc_steps, "number of transitions per level mcmc_steps", who)
    leapfrog_steps = positive_int(leapfrog_steps, "number of leapfrog steps", who)
    batch_size = positive_int(batch_size, "batch_size", who)
    step_size = positive_float(step_size, "step_size", who)
    check_policy(nonfinite, who)
    if transition not in TRANSITIONS:
        raise InvalidInput(
            f"{who}: expected transition in {tuple(TRANSITIONS)}, got {transition!r}"
        )
    check_model(flow, target, who)
    if getattr(flow, "stochastic", False):
        raise StochasticFlowError(
            f"{who}: the flow has stochastic layers and no tractable density q(x), which the "
            "intermediate densities q^(1-beta) p^beta need; use importance_weights or "
            "independence_metropolis instead"
        )
    if not hasattr(flow, "log_prob"):
        raise InvalidInput(f"{who}: expected a flow with log_prob, got {type(flow).__name__}")
    if qmc and context is not None:
        raise InvalidInput(f"{who}: qmc=True does not support a context; run per context row")
    schedule = _betas(n_steps, betas, who)
    path = _AnnealedPath(flow, target, context)
    layer = _layer(transition, flow.space, path, step_size, mcmc_steps, leapfrog_steps, who)
    if qmc:
        from ..distributions import QuasiRandomSampler

        start = QuasiRandomSampler(flow, generator=generator).sample_and_log_prob
    else:

        def start(b: int) -> tuple[Tensor, Tensor]:
            return flow.sample_and_log_prob((b,), context, generator)

    xs, lws = [], []
    accept_sum = torch.zeros(n_steps, dtype=torch.float64)
    count = 0
    done = 0
    with tqdm.tqdm(total=n, disable=not progress, desc=who, unit="particles") as bar:
        while done < n:
            b = min(batch_size, n - done)
            x, lw, rates, bad = _anneal(
                start, path, layer, b, schedule, context, generator, nonfinite, who
            )
            xs.append(x)
            lws.append(lw)
            count += bad
            accept_sum += b * rates
            done += b
            bar.update(b)
    log_w = torch.cat(lws)
    acceptance = (accept_sum / n).to(dtype=log_w.dtype, device=log_w.device)
    return Samples(torch.cat(xs), log_w, count, acceptance)


def _anneal(
    start: Callable[[int], tuple[Tensor, Tensor]],
    path: _AnnealedPath,
    layer: StochasticTransform,
    b: int,
    schedule: Sequence[float],
    context: Tensor | None,
    generator: torch.Generator | None,
    nonfinite: str,
    who: str,
) -> tuple[Tensor, Tensor, Tensor, int]:
    """Anneal one batch of ``b`` particles; returns ``(x, log_w, acceptance per level, bad)``."""
    with torch.no_grad():
        x, log_q = start(b)
        x, log_q = x.detach(), log_q.detach()
        u = target_energy(path.target, x, log_q.shape, context, who)
        ell, bad = handle_nonfinite(-u - log_q, nonfinite, who)
        layer.to(dtype=x.dtype, device=x.device)
        u_prev = -log_q  # energy of level 0 at the starting points
        path.current = (log_q, u)  # the parts of every later level's energy at these points
        log_w = torch.zeros_like(ell)
        rates = torch.zeros(len(schedule) - 1, dtype=torch.float64)
        for k in range(1, len(schedule)):
            path.beta = schedule[k]
            # the level's energy at the current points, from parts already computed
            known = None if layer.needs_grad else (path.combine(*path.current), None)
            x, u_start, u_end, _, accepted = layer.run(
                x, generator, start=known, on_step=path.follow
            )
            log_w = log_w + (u_prev - u_start)
            u_prev = u_end
            rates[k - 1] = float(accepted.mean())
    if bad:
        log_w = torch.where(torch.isfinite(ell), log_w, ell)
    return x, log_w, rates, bad
