"""Stratified free-energy differences (physics.stratified): exactness, calibrated error bars,
the exact-sampling floor beaten when the flow is right within each region, and bad input.

References are computed here (scipy quadrature for the double well, closed form for a
two-Gaussian mixture), independent of the values stored in physics.toy.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import integrate

from manifoldflows.distributions import GaussianMixture
from manifoldflows.errors import InvalidInput, SpaceMismatch, StochasticFlowError
from manifoldflows.presets import SNF, TorusNSF
from physics.sampling import free_energy_difference, importance_weights
from physics.stratified import StratifiedEstimate, stratified_free_energy_difference

DT = torch.float64
A, B, C = 1.0, -6.0, 1.0  # the double well whose left well holds only ~3 % of the mass


def quartic(t):
    return A * t + B * t * t + C * t**4


def dw_u(x):
    return quartic(x[..., 0]) + 0.5 * x[..., 1] ** 2


_SHIFT = -quartic(-1.8)
_Z_LEFT = integrate.quad(lambda t: math.exp(-quartic(t) - _SHIFT), -8.0, 0.0, limit=200)[0]
_Z_RIGHT = integrate.quad(lambda t: math.exp(-quartic(t) - _SHIFT), 0.0, 8.0, limit=200)[0]
DW_DF = math.log(_Z_RIGHT) - math.log(_Z_LEFT)  # F_left - F_right


def right(x):
    return x[:, 0] > 0


def left(x):
    return x[:, 0] < 0


def gen(seed):
    return torch.Generator().manual_seed(seed)


def proposal_dw():
    """Both wells, wrong weights and widths (the estimator must correct all of it)."""
    loc = torch.tensor([[-1.7, 0.0], [1.7, 0.0]])
    return GaussianMixture(2, loc=loc, scale=torch.tensor([0.4, 1.3]), learnable=False).to(DT)


# two far-apart Gaussians of mass 0.97 / 0.03: within each half-plane the conditional density
# of an equal-weight mixture proposal is the target's conditional up to a ~1e-9 tail
P_MINOR = 0.03
LOC = torch.tensor([[-6.0, 0.0], [6.0, 0.0]], dtype=DT)


def mixture_u(x):
    comps = -0.5 * ((x.unsqueeze(-2) - LOC.to(x.dtype)) ** 2).sum(-1)
    log_mix = torch.log(torch.tensor([1.0 - P_MINOR, P_MINOR], dtype=x.dtype))
    return -torch.logsumexp(comps + log_mix, -1)


MIXTURE_DF = math.log((1.0 - P_MINOR) / P_MINOR)  # F_right - F_left


def balanced_proposal(dtype=DT):
    return GaussianMixture(2, loc=LOC.float(), scale=1.0, learnable=False).to(dtype)


def test_double_well_matches_quadrature():
    est = stratified_free_energy_difference(
        proposal_dw(), dw_u, right, left, 20_000, n_proposal=200_000, generator=gen(0)
    )
    assert isinstance(est, StratifiedEstimate)
    assert est.value.dtype == DT and 0.0 < float(est.stderr) < 0.05
    assert abs(float(est) - DW_DF) < 4 * float(est.stderr), (str(est), DW_DF)
    # the parts add up and their errors add in quadrature
    assert float(est.value) == pytest.approx(float(est.mass_term.value + est.weight_term.value))
    var = float(est.mass_term.stderr) ** 2 + float(est.weight_term.stderr) ** 2
    assert float(est.stderr) == pytest.approx(math.sqrt(var))
    assert sum(est.counts) == est.n_proposal == 200_000
    assert est.evaluations == (10_000, 10_000)
    assert all(0.0 < e <= 1.0 for e in est.ess)


def test_stderr_matches_spread_over_repeats():
    g = gen(1)
    values, errors = [], []
    for _ in range(30):
        est = stratified_free_energy_difference(
            proposal_dw(), dw_u, right, left, 1000, n_proposal=5000, generator=g
        )
        values.append(float(est.value))
        errors.append(float(est.stderr))
    values = torch.tensor(values, dtype=DT)
    ratio = float(values.std()) / (sum(errors) / len(errors))
    assert 0.6 < ratio < 1.6, ratio
    assert abs(float(values.mean()) - DW_DF) < 4 * float(values.std()) / math.sqrt(30)


def test_beats_the_exact_sampling_floor_when_the_flow_is_right_within_regions():
    n = 2000
    est = stratified_free_energy_difference(
        balanced_proposal(), mixture_u, left, right, n, n_proposal=400_000, generator=gen(2)
    )
    assert abs(float(est) - MIXTURE_DF) < 4 * float(est.stderr), (str(est), MIXTURE_DF)
    # within each region the weights are constant: the weight term has (almost) no error
    assert min(est.ess) > 1 - 1e-6
    assert float(est.weight_term.stderr) < 1e-4
    # the same n energy evaluations of exact samples could not do better than this
    floor = 1.0 / math.sqrt(n * P_MINOR * (1.0 - P_MINOR))
    assert float(est.stderr) < 0.1 * floor
    # while plain importance sampling with the same proposal and n pays the count noise
    s = importance_weights(balanced_proposal(), mixture_u, n, generator=gen(3))
    plain = free_energy_difference(s.x, s.log_w, left, right)
    assert float(plain.stderr) > 5 * float(est.stderr)


def test_allocation_and_float32():
    est = stratified_free_energy_difference(
        balanced_proposal(torch.float32),
        mixture_u,
        left,
        right,
        1000,
        fraction_a=0.3,
        generator=gen(4),
    )
    assert est.evaluations == (300, 700)
    assert est.n_proposal == 20_000  # default: 20 n
    assert est.value.dtype == torch.float32
    assert abs(float(est) - MIXTURE_DF) < 4 * float(est.stderr)


def test_region_rarer_than_the_count_still_gets_its_evaluated_samples():
    # fewer proposal samples than needed evaluations: the stream continues for the weights only
    est = stratified_free_energy_difference(
        proposal_dw(), dw_u, right, left, 4000, n_proposal=1000, batch_size=500, generator=gen(5)
    )
    assert est.n_proposal == 1000 and sum(est.counts) == 1000
    assert est.evaluations == (2000, 2000)


# ----------------------------------------------------------------------------- bad input
def test_overlapping_regions_are_refused():
    with pytest.raises(InvalidInput, match="both region_a and region_b"):
        stratified_free_energy_difference(
            proposal_dw(), dw_u, right, lambda x: x[:, 0] > -1.0, 100, generator=gen(6)
        )


def test_unreachable_region_names_the_counts():
    with pytest.raises(InvalidInput, match="after 5000 flow samples .* region_b 0 of 50"):
        stratified_free_energy_difference(
            proposal_dw(),
            dw_u,
            right,
            lambda x: x[:, 0] > 100.0,
            100,
            n_proposal=1000,
            max_proposal=5000,
            generator=gen(7),
        )


@pytest.mark.parametrize(
    "region, match",
    [
        (lambda x: x[:, 0], "boolean mask"),
        (lambda x: (x[:, 0] > 0)[:-1], "boolean mask of shape"),
        (torch.ones(5, dtype=torch.bool), "callable"),
    ],
)
def test_bad_regions(region, match):
    with pytest.raises(InvalidInput, match=match):
        stratified_free_energy_difference(proposal_dw(), dw_u, left, region, 100)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n=3), "n >= 4"),
        (dict(n=0), "number of energy-evaluated samples"),
        (dict(fraction_a=1.0), "fraction_a"),
        (dict(n_proposal=0), "n_proposal"),
        (dict(nonfinite="ignore"), "nonfinite"),
        (dict(n_proposal=1000, max_proposal=999), "max_proposal >= n_proposal"),
    ],
)
def test_bad_sizes(kwargs, match):
    args = dict(n=100)
    args.update(kwargs)
    n = args.pop("n")
    with pytest.raises(InvalidInput, match=match):
        stratified_free_energy_difference(proposal_dw(), dw_u, left, right, n, **args)


def test_stochastic_flow_is_refused():
    snf = SNF(2, dw_u, flow_layers=1, blocks=1, steps=2, hidden=(8,))
    with pytest.raises(StochasticFlowError, match="free_energy_difference"):
        stratified_free_energy_difference(snf, dw_u, left, right, 100)


def test_target_on_another_space_is_refused():
    from physics import DoubleWell

    with pytest.raises(SpaceMismatch, match="Torus"):
        stratified_free_energy_difference(
            TorusNSF(2, layers=1, hidden=(8,)), DoubleWell(), left, right, 100
        )


def test_infinite_energy_in_a_whole_region_is_reported():
    def u(x):
        return torch.where(x[:, 0] < 0, torch.full_like(x[:, 0], math.inf), dw_u(x))

    with pytest.raises(InvalidInput, match="zero weight"):
        stratified_free_energy_difference(proposal_dw(), u, left, right, 100, generator=gen(8))
