r"""Free-energy differences by importance sampling stratified over the two regions.

The plain estimator (:func:`physics.sampling.free_energy_difference`) reweights one pool of
flow samples. Even with a perfect flow its error cannot drop below that of exact sampling,
``se^2 = 1 / (n P_A P_B)`` for disjoint regions covering the space: the count of samples that
land in the rarer region fluctuates. That floor comes from the *proposal*, whose density is
known and whose samples cost no energy evaluation. Splitting

.. math::

    Z_R = \int_R e^{-u} = Q_R\, m_R, \qquad
    Q_R = \int_R q, \qquad m_R = \mathbb{E}_{x \sim q(\cdot \mid R)}\!\left[\frac{e^{-u(x)}}{q(x)}
    \right],

gives ``F_B - F_A = log Z_A - log Z_B = [log Q_A - log Q_B] + [log m_A - log m_B]``. The
first bracket is estimated by counting where ``N`` cheap flow samples land (no energy); the
second by importance sampling with ``n_A`` and ``n_B`` energy-evaluated samples drawn from the
flow *restricted* to each region (the first samples of the same stream that fall there).
Given the counts, the samples of a region are i.i.d. from ``q(. | R)``, so the two brackets are
independent and their delta-method variances add:

.. math::

    \mathrm{se}^2 = \frac{1}{c_A} + \frac{1}{c_B}
        + \sum_{R \in \{A, B\}} \frac{\widehat{\mathrm{Var}}(w \mid R)}{n_R\, \hat m_R^2},

with ``c_R`` the counts among the ``N`` proposal samples. With the energy budget split evenly
and a flow that is exact within each region, the error no longer depends on how rare a region
is: for ``P_B = 0.03`` and ``10^5`` evaluated samples the exact-sampling floor is 0.018 kT,
while the stratified error is that of the counts alone, ``sqrt(1/c_A + 1/c_B)``, which shrinks
with cheap samples.

References:
    A. B. Owen, "Monte Carlo theory, methods and examples", 2013, sections 8.4 (stratified
    sampling) and 9.2 (ratio estimates). F. Noe, S. Olsson, J. Koehler, H. Wu, "Boltzmann
    generators", Science 365 (2019), arXiv:1812.01729.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import tqdm
from torch import Tensor

from manifoldflows._checks import positive_int
from manifoldflows.distributions import Distribution
from manifoldflows.errors import InvalidInput, StochasticFlowError
from manifoldflows.estimators import (
    Estimate,
    check_model,
    check_policy,
    effective_sample_size,
    handle_nonfinite,
    log_partition,
    region_mask,
)
from manifoldflows.targets import Target, target_energy

__all__ = ["StratifiedEstimate", "stratified_free_energy_difference"]

Region = Callable[[Tensor], Tensor]


@dataclass(frozen=True, eq=False)
class StratifiedEstimate(Estimate):
    r"""``F_B - F_A`` with error bar, and the two independent terms it is made of.

    Attributes:
        value, stderr: the free-energy difference ``F_B - F_A`` (``kT``) and its standard
            error (see :class:`physics.sampling.Estimate`).
        mass_term: ``log Q_A - log Q_B`` from counting proposal samples.
        weight_term: ``log m_A - log m_B`` from the importance weights within each region.
        counts: proposal samples that landed in ``A`` and in ``B`` (out of ``n_proposal``).
        n_proposal: proposal samples drawn for the counts (no energy evaluated on them).
        evaluations: energy-evaluated samples in ``A`` and in ``B``.
        ess: relative Kish ESS of the weights within ``A`` and within ``B``.
        n_nonfinite: evaluated samples whose weight was NaN/``+inf`` and set to zero.
    """

    mass_term: Estimate
    weight_term: Estimate
    counts: tuple[int, int]
    n_proposal: int
    evaluations: tuple[int, int]
    ess: tuple[float, float]
    n_nonfinite: int = 0


def _mask(region: Region, x: Tensor, who: str, name: str) -> Tensor:
    if not callable(region):
        raise InvalidInput(
            f"{who}: expected {name} as a callable x -> boolean mask (the samples are drawn "
            f"inside), got {type(region).__name__}"
        )
    like = torch.zeros(x.shape[0], dtype=torch.float32, device=x.device)
    return region_mask(region, x, like, who, name)


def _one_condition(flow: Distribution, context: Tensor | None, who: str) -> Tensor | None:
    """The single context row to condition on, ``(context_dim,)``, or ``None``."""
    context_dim = getattr(flow, "context_dim", None)
    if context_dim is None:
        if context is not None:
            raise InvalidInput(
                f"{who}: got a context but the flow {type(flow).__name__} is unconditional"
            )
        return None
    if context is None:
        raise InvalidInput(
            f"{who}: the flow {type(flow).__name__} is conditional (context_dim={context_dim}); "
            f"the stratified estimator works at one condition at a time: pass context= of "
            f"shape ({context_dim},) and loop over the context rows"
        )
    if not isinstance(context, Tensor) or context.shape[-1:] != (context_dim,):
        got = tuple(context.shape) if isinstance(context, Tensor) else type(context).__name__
        raise InvalidInput(f"{who}: expected a context of shape ({context_dim},), got {got}")
    if context.reshape(-1, context_dim).shape[0] != 1:
        raise InvalidInput(
            f"{who}: the stratified estimator does not support several context rows at once "
            f"(got a context of shape {tuple(context.shape)}); call it once per row"
        )
    return context.reshape(context_dim)


def stratified_free_energy_difference(
    flow: Distribution,
    target: Target,
    region_a: Region,
    region_b: Region,
    n: int,
    *,
    n_proposal: int | None = None,
    fraction_a: float = 0.5,
    max_proposal: int | None = None,
    context: Tensor | None = None,
    batch_size: int = 65536,
    generator: torch.Generator | None = None,
    nonfinite: str = "raise",
    progress: bool = False,
) -> StratifiedEstimate:
    r"""Free-energy difference ``F_B - F_A`` (``kT``) from ``n`` energy evaluations, stratified.

    See the module docstring for the estimator and its variance. ``A`` and ``B`` must be
    disjoint (basins, states); they need not cover the space.

    Arguments:
        flow: the proposal, with ``sample_and_log_prob`` (a tractable density: stochastic flows
            are refused).
        target: callable ``x -> u(x)`` or object with ``.energy(x)``.
        region_a, region_b: callables ``x -> boolean mask`` of shape ``(batch,)``.
        n: energy-evaluated samples in total, ``round(fraction_a * n)`` of them in ``A``.
        n_proposal: flow samples counted for ``log Q_A - log Q_B`` (default ``20 n``; the
            count term's standard error is about ``sqrt((1/Q_A + 1/Q_B) / n_proposal)``).
        fraction_a: share of the energy evaluations spent in ``A`` (in ``(0, 1)``).
        max_proposal: stop with an error when a region still lacks samples after this many
            flow samples (default ``1000 * max(n, n_proposal)``).
        context: for a conditional flow (and target), the one condition to estimate at, shape
            ``(context_dim,)`` (or ``(1, context_dim)``). The estimator handles one context row
            at a time (the counts and the per-region samples are per condition): loop over
            rows for several; a conditional flow without a context is refused with a message
            saying so.
        batch_size: flow samples drawn per batch.
        generator: optional random generator (on the flow's device).
        nonfinite: ``"raise"`` or ``"zero"``, the policy for NaN/``+inf`` weights.
        progress: show a ``tqdm`` bar over proposal samples.

    Returns:
        A :class:`StratifiedEstimate` (an :class:`~physics.sampling.Estimate` with the two
        terms, counts and per-region ESS).

    Raises:
        InvalidInput: bad sizes, a region that is not a callable returning a boolean mask, a
            sample in both regions, a region the flow never reaches (message gives counts), a
            conditional flow without a context or with several context rows, or a context
            for an unconditional flow.
        StochasticFlowError: for flows with stochastic layers.
        SpaceMismatch: when the flow's and the target's spaces differ.

    Example:
        >>> from manifoldflows.distributions import DiagNormal
        >>> from physics import DoubleWell
        >>> well = DoubleWell(-0.5, -6.0, 1.0)
        >>> g = torch.Generator().manual_seed(0)
        >>> est = stratified_free_energy_difference(
        ...     DiagNormal(2, scale=1.6).double(), well,
        ...     lambda x: x[:, 0] > 0, lambda x: x[:, 0] < 0, 20_000, generator=g)
        >>> abs(est.value.item() - well.delta_F) < 4 * est.stderr.item()
        True
    """
    who = "stratified_free_energy_difference"
    n = positive_int(n, "number of energy-evaluated samples n", who)
    if n < 4:
        raise InvalidInput(f"{who}: expected n >= 4 (at least two samples per region), got {n}")
    if not (isinstance(fraction_a, (int, float)) and 0.0 < fraction_a < 1.0):
        raise InvalidInput(f"{who}: expected fraction_a in (0, 1), got {fraction_a!r}")
    need_a = min(n - 2, max(2, round(fraction_a * n)))
    need = {"region_a": need_a, "region_b": n - need_a}
    n_proposal = positive_int(20 * n if n_proposal is None else n_proposal, "n_proposal", who)
    limit = 1000 * max(n, n_proposal) if max_proposal is None else max_proposal
    limit = positive_int(limit, "max_proposal", who)
    if limit < n_proposal:
        raise InvalidInput(
            f"{who}: expected max_proposal >= n_proposal = {n_proposal}, got {limit}"
        )
    batch_size = positive_int(batch_size, "batch_size", who)
    check_policy(nonfinite, who)
    check_model(flow, target, who)
    if getattr(flow, "stochastic", False) or not hasattr(flow, "sample_and_log_prob"):
        raise StochasticFlowError(
            f"{who}: the flow {type(flow).__name__} has no tractable density, and counting "
            "where a stochastic flow lands costs energy evaluations; use "
            "physics.sampling.free_energy_difference on its weighted samples instead"
        )
    context = _one_condition(flow, context, who)
    regions = {"region_a": region_a, "region_b": region_b}
    counts = {"region_a": 0, "region_b": 0}
    kept = {"region_a": [], "region_b": []}  # (x, log_q) of samples still to be evaluated
    have = {"region_a": 0, "region_b": 0}
    drawn = 0
    with (
        torch.no_grad(),
        tqdm.tqdm(total=n_proposal, disable=not progress, desc=who, unit="samples") as bar,
    ):
        while drawn < n_proposal or any(have[k] < need[k] for k in need):
            if drawn >= limit:
                raise InvalidInput(
                    f"{who}: after {drawn} flow samples region_a has {have['region_a']} of "
                    f"the {need['region_a']} samples it needs and region_b "
                    f"{have['region_b']} of {need['region_b']}; the flow (almost) never "
                    "reaches a region — check the regions or raise max_proposal"
                )
            b = batch_size if drawn >= n_proposal else min(batch_size, n_proposal - drawn)
            b = min(b, max(1, limit - drawn))
            x, log_q = flow.sample_and_log_prob((b,), context, generator)
            masks = {k: _mask(r, x, who, k) for k, r in regions.items()}
            both = masks["region_a"] & masks["region_b"]
            if bool(both.any()):
                raise InvalidInput(
                    f"{who}: {int(both.sum())} of {b} samples lie in both region_a and "
                    "region_b; the stratified estimator needs disjoint regions"
                )
            for k, mask in masks.items():
                if drawn < n_proposal:
                    counts[k] += int(mask.sum())
                if have[k] < need[k]:
                    idx = mask.nonzero().squeeze(-1)[: need[k] - have[k]]
                    kept[k].append((x[idx], log_q[idx]))
                    have[k] += idx.numel()
            bar.update(min(b, max(0, n_proposal - drawn)))
            drawn += b
    for k, c in counts.items():
        if c == 0:
            raise InvalidInput(
                f"{who}: none of the {n_proposal} proposal samples fell in {k} (counts: "
                f"region_a {counts['region_a']}, region_b {counts['region_b']}), so its "
                "probability under the flow cannot be estimated; raise n_proposal"
            )
    log_means, ess, bad_total = {}, {}, 0
    with torch.no_grad():
        for k in ("region_a", "region_b"):
            x = torch.cat([p[0] for p in kept[k]])
            log_q = torch.cat([p[1] for p in kept[k]])
            u = torch.cat(
                [
                    target_energy(
                        target, x[i : i + batch_size], (len(x[i : i + batch_size]),), context, who
                    )
                    for i in range(0, len(x), batch_size)
                ]
            )
            log_w, bad = handle_nonfinite(-u - log_q, nonfinite, who)
            bad_total += bad
            if not bool(torch.isfinite(log_w).any()):
                raise InvalidInput(
                    f"{who}: all {log_w.numel()} evaluated samples of {k} have zero weight "
                    "(infinite energy); check the target in that region"
                )
            log_means[k] = log_partition(log_w)  # log of the mean weight, delta-method se
            ess[k] = float(effective_sample_size(log_w))
    dtype, device = log_means["region_a"].value.dtype, log_means["region_a"].value.device
    c_a, c_b = counts["region_a"], counts["region_b"]
    mass = Estimate(
        torch.tensor(math.log(c_a) - math.log(c_b), dtype=dtype, device=device),
        torch.tensor(math.sqrt(1.0 / c_a + 1.0 / c_b), dtype=dtype, device=device),
    )
    mean_a, mean_b = log_means["region_a"], log_means["region_b"]
    weight = Estimate(
        mean_a.value - mean_b.value, (mean_a.stderr.square() + mean_b.stderr.square()).sqrt()
    )
    return StratifiedEstimate(
        mass.value + weight.value,
        (mass.stderr.square() + weight.stderr.square()).sqrt(),
        mass_term=mass,
        weight_term=weight,
        counts=(c_a, c_b),
        n_proposal=n_proposal,
        evaluations=(need["region_a"], need["region_b"]),
        ess=(ess["region_a"], ess["region_b"]),
        n_nonfinite=bad_total,
    )
