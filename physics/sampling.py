r"""Unbiased estimates from a flow for Boltzmann targets: the estimators of
:mod:`manifoldflows.estimators` (re-exported here), reweighted free-energy profiles and
flow-proposal Metropolis-Hastings.

A trained flow ``q`` is only approximately the Boltzmann density ``p(x) = exp(-u(x)) / Z``.
Every estimate is made exact (asymptotically) by the importance weights
``w(x) = exp(-u(x)) / q(x)``, handled as log weights, with delta-method standard errors and,
for a conditional flow sampled with a context ``(*cbatch, k)``, one estimate per context row.

=========================================  ==================================================
:func:`importance_weights`                  samples and log weights (batched; stochastic flows)
:func:`effective_sample_size`               Kish ESS, relative (in ``(0, 1]``) or absolute
:func:`log_partition`                       ``log Z`` with standard error
:func:`reweighted_mean`                     ``E_p[f]`` by self-normalised importance sampling
:func:`free_energy_difference`              ``F_B - F_A`` between two regions, in ``kT``
:func:`annealed_importance_sampling`        AIS from the flow to the target (Neal 2001), with
                                            the stochastic layers as transitions
:func:`free_energy_profile`                 reweighted ``F(s)`` along a 1-D collective variable
:func:`independence_metropolis`             MCMC with the flow as independent proposal
=========================================  ==================================================

The first six live in :mod:`manifoldflows.estimators` and
:mod:`manifoldflows.stochastic` (one implementation; the names here are the same objects).
For free-energy differences between two rare-vs-common states with a good flow,
:func:`physics.stratified.stratified_free_energy_difference` beats the exact-sampling error of
:func:`free_energy_difference` at the same number of energy evaluations.

A *flow* is anything with ``sample_and_log_prob(shape, context, generator)`` and ``log_prob``
(every :class:`~manifoldflows.core.Flow` and base distribution), or a flow with stochastic layers
(``flow.stochastic`` true), whose importance weights come from ``sample_and_log_weight``. A
*target* follows :mod:`manifoldflows.targets`: a callable ``x -> u(x)`` (reduced energy) or an
object with ``.energy(x)`` such as :class:`physics.energy.Energy`; when both the flow and the
target have a ``space``, they must agree.

References:
    F. Noe, S. Olsson, J. Koehler, H. Wu, "Boltzmann generators: sampling equilibrium states of
    many-body systems with deep learning", Science 365 (2019), arXiv:1812.01729.
    A. B. Owen, "Monte Carlo theory, methods and examples", 2013, chapter 9 (importance
    sampling).
    R. M. Neal, "Annealed importance sampling", Statistics and Computing 11 (2001) 125-139,
    arXiv:physics/9803008.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from manifoldflows._checks import positive_int
from manifoldflows.distributions import Distribution
from manifoldflows.errors import InvalidInput, NonFiniteOutput, StochasticFlowError
from manifoldflows.estimators import (
    Estimate,
    Samples,
    check_log_weights,
    check_policy,
    check_values,
    effective_sample_size,
    free_energy_difference,
    importance_weights,
    log_partition,
    reweighted_mean,
)
from manifoldflows.stochastic import annealed_importance_sampling
from manifoldflows.targets import Target, energy_fn

__all__ = [
    "Estimate",
    "Samples",
    "ChainResult",
    "importance_weights",
    "effective_sample_size",
    "log_partition",
    "reweighted_mean",
    "free_energy_difference",
    "free_energy_profile",
    "independence_metropolis",
    "annealed_importance_sampling",
]


# ---------------------------------------------------------------------------- result types
@dataclass(eq=False)
class ChainResult:
    r"""Output of :func:`independence_metropolis`.

    Attributes:
        samples: chain states, shape ``(n_steps, n_chains, *event_shape)``; ``samples[t]`` is
            the state after step ``t``.
        log_w: log importance weight of each state, shape ``(n_steps, n_chains)``.
        accepted: whether step ``t`` of each chain accepted its proposal,
            ``(n_steps, n_chains)``.

    Example:
        >>> res = ChainResult(torch.zeros(3, 2, 1), torch.zeros(3, 2), torch.ones(3, 2) > 0)
        >>> res.acceptance_rate, res.flatten(burn_in=1).shape
        (1.0, torch.Size([4, 1]))
    """

    samples: Tensor
    log_w: Tensor
    accepted: Tensor

    @property
    def acceptance_rate(self) -> float:
        """Fraction of accepted proposals over all steps and chains."""
        return int(self.accepted.sum()) / self.accepted.numel()

    def flatten(self, burn_in: int = 0) -> Tensor:
        """States after the first ``burn_in`` steps, chains merged: ``(m, *event_shape)``."""
        burn_in = positive_int(burn_in, "burn_in", "ChainResult.flatten", minimum=0)
        if burn_in >= self.samples.shape[0]:
            raise InvalidInput(
                f"ChainResult.flatten: expected burn_in below the {self.samples.shape[0]} "
                f"steps, got {burn_in}"
            )
        kept = self.samples[burn_in:]
        return kept.reshape(-1, *kept.shape[2:])


def free_energy_profile(
    cv_values: Tensor,
    log_w: Tensor,
    bins: int | Tensor = 50,
    *,
    limits: tuple[float, float] | None = None,
    zero_min: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Reweighted free-energy profile ``F(s) = -log p(s)`` of a 1-D collective variable.

    With normalised weights ``w~_i`` and bins ``k`` of width ``h_k``:

    .. math::

        \hat P_k = \sum_{i:\, s_i \in k} \tilde w_i, \qquad
        F_k = -\log\frac{\hat P_k}{h_k}, \qquad
        \mathrm{se}(F_k) = \frac{1}{\hat P_k}
            \sqrt{\textstyle\sum_i \tilde w_i^2 \left(1_k(s_i) - \hat P_k\right)^2}

    (the self-normalised estimate of the bin probability and its delta-method error, see
    :func:`reweighted_mean`; ``se(log P) = se(P) / P``). ``P_k`` is the probability of the bin
    under the full distribution: samples outside the bins still count in the normalisation.
    Empty bins get ``F = +inf`` and ``stderr = +inf``. With ``zero_min`` the profile is shifted
    so that its minimum is 0; the errors are those of the unshifted ``F_k`` (relative to the
    total normalisation, not to the minimum bin).

    Arguments:
        cv_values: ``(n,)`` values ``s(x_i)`` of the collective variable.
        log_w: ``(n,)`` log importance weights.
        bins: number of equal-width bins over ``limits`` (default: the range of ``s`` over
            samples of positive weight), or a 1-D tensor of increasing bin edges.
        limits: ``(low, high)`` for an integer ``bins``.
        zero_min: shift ``F`` so that its minimum over non-empty bins is 0.

    Returns:
        ``(centres, F, stderr)``, each of shape ``(bins,)``, in units of ``kT``.

    References:
        Noe, Olsson, Koehler & Wu, "Boltzmann generators", Science 2019, arXiv:1812.01729.

    Example:
        >>> s = torch.tensor([0.1, 0.2, 0.6, 0.7, 0.8, 0.9])
        >>> centres, F, se = free_energy_profile(s, torch.zeros(6), 2, limits=(0.0, 1.0))
        >>> centres.tolist(), round(F[0].item(), 4), F[1].item()  # log(4/2) above the minimum
        ([0.25, 0.75], 0.6931, 0.0)
    """
    who = "free_energy_profile"
    lw = check_log_weights(log_w, who, min_size=2)
    n = lw.numel()
    if lw.dim() != 1:
        raise InvalidInput(
            f"{who}: expected log weights of shape (n,), got {tuple(lw.shape)}; for a "
            "conditional flow, compute one profile per context row (log_w[:, j])"
        )
    s = check_values(cv_values, lw, who, "collective-variable values")
    if s.dim() != 1:
        raise InvalidInput(f"{who}: expected cv_values of shape ({n},), got {tuple(s.shape)}")
    positive = lw > -math.inf
    if isinstance(bins, Tensor):
        edges = bins.detach().to(dtype=lw.dtype, device=lw.device)
        if limits is not None:
            raise InvalidInput(f"{who}: limits apply to an integer bins, got bin edges as well")
        if (
            edges.dim() != 1
            or edges.numel() < 2
            or not bool(torch.isfinite(edges).all())
            or not bool((edges[1:] > edges[:-1]).all())
        ):
            raise InvalidInput(
                f"{who}: expected bins as an integer or a 1-D tensor of at least 2 finite, "
                f"strictly increasing edges, got {edges.tolist()}"
            )
    else:
        n_bins = positive_int(bins, "number of bins", who)
        if limits is None:
            low, high = float(s[positive].min()), float(s[positive].max())
        else:
            if len(limits) != 2:
                raise InvalidInput(f"{who}: expected limits (low, high), got {limits!r}")
            low, high = float(limits[0]), float(limits[1])
        if not (math.isfinite(low) and math.isfinite(high) and high > low):
            raise InvalidInput(
                f"{who}: expected a finite range low < high for the bins, got ({low}, {high}); "
                "pass limits= when all values coincide"
            )
        edges = torch.linspace(low, high, n_bins + 1, dtype=lw.dtype, device=lw.device)
    n_bins = edges.numel() - 1
    index = torch.bucketize(s, edges, right=True) - 1
    index = torch.where(s == edges[-1], torch.full_like(index, n_bins - 1), index)
    inside = (index >= 0) & (index < n_bins) & positive
    wn = torch.softmax(lw, 0)
    prob = torch.zeros(n_bins, dtype=lw.dtype, device=lw.device)
    prob.index_add_(0, index[inside], wn[inside])
    square = torch.zeros_like(prob).index_add_(0, index[inside], wn[inside].square())
    var = (1.0 - prob).square() * square + prob.square() * (wn.square().sum() - square)
    widths = edges[1:] - edges[:-1]
    filled = prob > 0
    inf = torch.full_like(prob, math.inf)
    safe = torch.where(filled, prob, torch.ones_like(prob))
    free = torch.where(filled, -torch.log(safe / widths), inf)
    stderr = torch.where(filled, var.clamp(min=0.0).sqrt() / safe, inf)
    if zero_min and bool(filled.any()):
        free = free - free[filled].min()
    return 0.5 * (edges[1:] + edges[:-1]), free, stderr


# ---------------------------------------------------------------------------- MCMC with the flow
def independence_metropolis(
    flow: Distribution,
    target: Target,
    n_steps: int,
    *,
    n_chains: int = 64,
    initial: Tensor | None = None,
    batch_size: int = 8192,
    generator: torch.Generator | None = None,
    nonfinite: str = "raise",
    progress: bool = False,
) -> ChainResult:
    r"""Independence Metropolis-Hastings with the flow as proposal (vectorised over chains).

    Each step proposes ``x' ~ q`` independently of the current state ``x`` and accepts with

    .. math::

        \alpha(x \to x') = \min\left(1, \frac{p(x')\, q(x)}{p(x)\, q(x')}\right)
        = \min\left(1, \frac{w(x')}{w(x)}\right), \qquad w = e^{-u} / q,

    so the chain leaves ``p`` invariant and, when ``w`` is bounded, converges to ``p``
    geometrically fast from any start (Tierney 1994): the samples are exact asymptotically,
    unlike raw flow samples. When ``q = p`` every proposal is accepted. For a stochastic flow
    the weights of :meth:`~manifoldflows.core.Flow.sample_and_log_weight` are used (the chain
    then runs on the extended path space, whose ``x``-marginal is ``p``); this needs
    ``initial=None``. Proposals are drawn up front with :func:`importance_weights`; the state
    of each chain is the last accepted proposal.

    Arguments:
        flow: the proposal distribution (a flow or any distribution with
            ``sample_and_log_prob``).
        target: callable ``x -> u(x)`` or object with ``.energy(x)``.
        n_steps: Metropolis steps per chain.
        n_chains: independent chains run in parallel.
        initial: optional start states ``(n_chains, *event_shape)``; default: one draw from
            the flow per chain (then no burn-in is needed when ``q`` is close to ``p``).
        batch_size: proposals drawn per batch.
        generator: optional random generator (on the flow's device).
        nonfinite: policy for NaN/``+inf`` proposal weights (see :func:`importance_weights`).
        progress: progress bar while drawing proposals.

    Returns:
        A :class:`ChainResult` (``samples`` of shape ``(n_steps, n_chains, *event_shape)``,
        ``log_w``, ``accepted`` and ``acceptance_rate``).

    References:
        L. Tierney, "Markov chains for exploring posterior distributions", Ann. Statist. 22
        (1994) 1701-1728. Noe, Olsson, Koehler & Wu, "Boltzmann generators", Science 2019,
        arXiv:1812.01729. M. Gabrie, G. M. Rotskoff, E. Vanden-Eijnden, "Adaptive Monte Carlo
        augmented with normalizing flows", PNAS 2022, arXiv:2105.12603.

    Example:
        >>> from manifoldflows.distributions import StandardNormal
        >>> u = lambda x: 0.5 * (x**2).sum(-1)  # the proposal is exact: all accepted
        >>> g = torch.Generator().manual_seed(0)
        >>> res = independence_metropolis(StandardNormal(2), u, 10, n_chains=4, generator=g)
        >>> res.samples.shape, res.acceptance_rate
        (torch.Size([10, 4, 2]), 1.0)
    """
    who = "independence_metropolis"
    n_steps = positive_int(n_steps, "number of steps n_steps", who)
    n_chains = positive_int(n_chains, "number of chains n_chains", who)
    check_policy(nonfinite, who)
    extra = 1 if initial is None else 0
    if initial is not None and getattr(flow, "stochastic", False):
        raise StochasticFlowError(
            f"{who}: the flow has stochastic layers, so the weight of a given initial state is "
            "unknown; leave initial=None to start from flow samples"
        )
    proposals = importance_weights(
        flow,
        target,
        (n_steps + extra) * n_chains,
        batch_size=batch_size,
        generator=generator,
        nonfinite=nonfinite,
        progress=progress,
    )
    event_shape = proposals.x.shape[1:]
    xs = proposals.x.reshape(n_steps + extra, n_chains, *event_shape)
    lws = proposals.log_w.reshape(n_steps + extra, n_chains)
    if initial is None:
        x, lw = xs[0], lws[0]
        xs, lws = xs[1:], lws[1:]
    else:
        x, lw = _initial_state(flow, target, initial, n_chains, event_shape, xs, who)
    log_u = torch.log(
        torch.rand((n_steps, n_chains), generator=generator, dtype=lws.dtype, device=lws.device)
    )
    samples = torch.empty_like(xs)
    log_ws = torch.empty_like(lws)
    accepted = torch.empty(n_steps, n_chains, dtype=torch.bool, device=lws.device)
    expand = (n_chains,) + (1,) * len(event_shape)
    for t in range(n_steps):
        accept = log_u[t] < lws[t] - lw  # NaN ratios (both weights zero) are rejected
        x = torch.where(accept.reshape(expand), xs[t], x)
        lw = torch.where(accept, lws[t], lw)
        samples[t], log_ws[t], accepted[t] = x, lw, accept
    return ChainResult(samples, log_ws, accepted)


def _initial_state(
    flow: Distribution,
    target: Target,
    initial: Tensor,
    n_chains: int,
    event_shape: Sequence[int],
    like: Tensor,
    who: str,
) -> tuple[Tensor, Tensor]:
    if not isinstance(initial, Tensor) or initial.shape != (n_chains, *event_shape):
        got = tuple(initial.shape) if isinstance(initial, Tensor) else type(initial).__name__
        raise InvalidInput(
            f"{who}: expected initial states of shape {(n_chains, *tuple(event_shape))}, got {got}"
        )
    x = initial.detach().to(dtype=like.dtype, device=like.device)
    with torch.no_grad():
        lw = -energy_fn(target)(x) - flow.log_prob(x)
    bad = int((torch.isnan(lw) | (lw == math.inf)).sum())
    if bad:
        raise NonFiniteOutput(
            f"{who}: {bad} of {n_chains} initial states have a NaN or +inf log weight; start "
            "from states with finite energy and flow density"
        )
    return x, lw
