"""Estimates from flows (physics.sampling): exactness against analytic targets, error bars that
match the spread over repeated runs, IMH and AIS correctness, and clear errors on bad input.

Targets are defined here with their exact references (closed form for Gaussians, scipy
quadrature for the double well), so these tests do not depend on the reference values stored
in physics.toy; one test checks the sign convention against physics.toy.DoubleWell.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import integrate

from manifoldflows.distributions import DiagNormal, GaussianMixture, StandardNormal
from manifoldflows.errors import InvalidInput, NonFiniteOutput, SpaceMismatch, StochasticFlowError
from manifoldflows.presets import SNF, RealNVP
from manifoldflows.spaces import Euclidean
from physics.sampling import (
    Estimate,
    Samples,
    annealed_importance_sampling,
    effective_sample_size,
    free_energy_difference,
    free_energy_profile,
    importance_weights,
    independence_metropolis,
    log_partition,
    reweighted_mean,
)

DT = torch.float64

# ----------------------------------------------------------------------------- targets
MU = torch.tensor([1.0, -0.5], dtype=DT)
SIGMA = torch.tensor([0.8, 1.2], dtype=DT)
OFFSET = 0.7  # an arbitrary constant in the energy: log Z moves by -OFFSET


def gauss_u(x):
    return 0.5 * (((x - MU) / SIGMA) ** 2).sum(-1) + OFFSET


GAUSS_LOG_Z = float(torch.log(SIGMA * math.sqrt(2 * math.pi)).sum()) - OFFSET

# double well u = a x1 + b x1^2 + c x1^4 + x2^2 / 2 (FAB's parameters)
A, B, C = -0.5, -6.0, 1.0


def quartic(t):
    return A * t + B * t * t + C * t**4


def dw_u(x):
    return quartic(x[..., 0]) + 0.5 * x[..., 1] ** 2


def _dw_integral(lo, hi, shift):
    return integrate.quad(lambda t: math.exp(-quartic(t) - shift), lo, hi, limit=200)[0]


SHIFT = -quartic(1.7)  # about the depth of the deeper well, keeps the integrand O(1)
Z_LEFT = _dw_integral(-8.0, 0.0, SHIFT)
Z_RIGHT = _dw_integral(0.0, 8.0, SHIFT)
DW_LOG_Z = math.log(Z_LEFT + Z_RIGHT) + SHIFT + 0.5 * math.log(2 * math.pi)
DW_DF = math.log(Z_RIGHT) - math.log(Z_LEFT)  # F_left - F_right


def right(x):
    return x[:, 0] > 0


def left(x):
    return x[:, 0] < 0


def proposal_gauss():
    """A deliberately mismatched Gaussian: wrong mean, wider in every direction."""
    return DiagNormal(2, loc=torch.tensor([0.3, 0.2]), scale=torch.tensor([1.3, 1.8])).to(DT)


def proposal_dw():
    """A 'reasonable' proposal for the double well: both wells, wrong weights and widths."""
    loc = torch.tensor([[-1.7, 0.0], [1.7, 0.0]])
    return GaussianMixture(2, loc=loc, scale=torch.tensor([0.35, 1.3]), learnable=False).to(DT)


def broad_dw():
    return DiagNormal(2, scale=torch.tensor([2.0, 1.5])).to(DT)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_references_are_sane():
    # Guard the quadrature itself: the published FAB values of the same double well.
    assert abs(DW_LOG_Z - 10.293480) < 1e-5
    assert abs(DW_DF - 1.690631) < 1e-5


# ----------------------------------------------------------------------------- log Z
def test_log_partition_recovers_exact_gaussian_log_z():
    s = importance_weights(proposal_gauss(), gauss_u, 5000, batch_size=1500, generator=gen(1))
    assert s.x.shape == (5000, 2) and s.log_w.shape == (5000,) and s.x.dtype == DT
    est = log_partition(s.log_w)
    assert isinstance(est, Estimate)
    assert 0.0 < float(est.stderr) < 0.05
    assert abs(float(est) - GAUSS_LOG_Z) < 4 * float(est.stderr)
    assert 0.1 < float(effective_sample_size(s.log_w)) < 0.95  # mismatched, but not hopeless


def test_log_partition_stderr_matches_spread_over_repeats():
    g = gen(2)
    values, errors = [], []
    for _ in range(30):
        est = importance_weights(proposal_gauss(), gauss_u, 1000, generator=g).log_partition()
        values.append(float(est.value))
        errors.append(float(est.stderr))
    values = torch.tensor(values, dtype=DT)
    spread = float(values.std())
    ratio = spread / (sum(errors) / len(errors))
    assert 0.6 < ratio < 1.6, ratio
    # unbiased up to the O(se^2) log bias: the mean of 30 runs is within 4 of its own errors
    assert abs(float(values.mean()) - GAUSS_LOG_Z) < 4 * spread / math.sqrt(30)


def test_ess_relative_and_absolute():
    lw = torch.tensor([0.0, math.log(3.0), -math.inf, 0.0], dtype=DT)
    # (1 + 3 + 0 + 1)^2 / (1 + 9 + 0 + 1) = 25 / 11
    assert abs(float(effective_sample_size(lw, relative=False)) - 25 / 11) < 1e-12
    assert abs(float(effective_sample_size(lw)) - 25 / 44) < 1e-12
    s = importance_weights(StandardNormal(2).to(DT), lambda x: 0.5 * (x**2).sum(-1), 50)
    assert float(s.ess()) == pytest.approx(1.0)  # q = p


# ----------------------------------------------------------------------------- observables
def test_reweighted_mean_of_gaussian_moments():
    s = importance_weights(proposal_gauss(), gauss_u, 20000, generator=gen(3))
    est = reweighted_mean(s.x, s.log_w)
    assert est.value.shape == (2,) and est.stderr.shape == (2,)
    assert bool(((est.value - MU).abs() < 4 * est.stderr).all()), str(est)
    # second moments: E[x^2] = mu^2 + sigma^2
    est2 = reweighted_mean(s.x**2, s.log_w)
    assert bool(((est2.value - (MU**2 + SIGMA**2)).abs() < 4 * est2.stderr).all()), str(est2)
    # the raw proposal mean is far off: the reweighting does the work
    assert float((s.x.mean(0) - MU).abs().max()) > 10 * float(est.stderr.max())


def test_reweighted_mean_stderr_matches_spread():
    g = gen(4)
    values, errors = [], []
    for _ in range(30):
        s = importance_weights(proposal_gauss(), gauss_u, 1000, generator=g)
        est = reweighted_mean(s.x[:, 0], s.log_w)
        values.append(float(est.value))
        errors.append(float(est.stderr))
    ratio = float(torch.tensor(values).std()) / (sum(errors) / len(errors))
    assert 0.6 < ratio < 1.6, ratio


# ----------------------------------------------------------------------------- free energies
def test_free_energy_difference_double_well_matches_quadrature():
    s = importance_weights(proposal_dw(), dw_u, 20000, generator=gen(5))
    est = free_energy_difference(s.x, s.log_w, right, left)  # F_left - F_right
    assert 0.0 < float(est.stderr) < 0.05
    assert abs(float(est) - DW_DF) < 4 * float(est.stderr), (str(est), DW_DF)
    # masks instead of callables, and the reversed difference
    rev = free_energy_difference(None, s.log_w, left(s.x), right(s.x))
    assert float(rev.value) == pytest.approx(-float(est.value))
    assert float(rev.stderr) == pytest.approx(float(est.stderr))
    # overlapping regions: F_all - F_right = -log P(right)
    everywhere = torch.ones(len(s), dtype=torch.bool)
    est_all = free_energy_difference(s.x, s.log_w, right, everywhere)
    prob_right = Z_RIGHT / (Z_LEFT + Z_RIGHT)
    assert abs(float(est_all) - math.log(prob_right)) < 4 * float(est_all.stderr)


def test_free_energy_difference_stderr_matches_spread():
    g = gen(6)
    values, errors = [], []
    for _ in range(30):
        s = importance_weights(proposal_dw(), dw_u, 1000, generator=g)
        est = free_energy_difference(s.x, s.log_w, right, left)
        values.append(float(est.value))
        errors.append(float(est.stderr))
    values = torch.tensor(values, dtype=DT)
    ratio = float(values.std()) / (sum(errors) / len(errors))
    assert 0.6 < ratio < 1.6, ratio
    assert abs(float(values.mean()) - DW_DF) < 4 * float(values.std()) / math.sqrt(30)


def test_free_energy_difference_sign_convention_of_physics_double_well():
    from physics.toy import DoubleWell

    target = DoubleWell(A, B, C)
    q = proposal_dw()
    s = importance_weights(q, target, 8000, generator=gen(7))
    est = free_energy_difference(s.x, s.log_w, right, left)
    assert abs(float(est) - target.delta_F) < 4 * float(est.stderr)
    log_z = log_partition(s.log_w)
    assert abs(float(log_z) - target.log_Z) < 4 * float(log_z.stderr)


def test_free_energy_profile_matches_exact_marginal():
    s = importance_weights(proposal_dw(), dw_u, 20000, generator=gen(8))
    edges = torch.linspace(-2.5, 2.5, 21, dtype=DT)
    centres, free, se = free_energy_profile(s.x[:, 0], s.log_w, edges, zero_min=False)
    assert centres.shape == free.shape == se.shape == (20,)
    z = Z_LEFT + Z_RIGHT
    exact = torch.tensor(
        [
            -math.log(_dw_integral(float(lo), float(hi), SHIFT) / z / float(hi - lo))
            for lo, hi in zip(edges[:-1], edges[1:])
        ],
        dtype=DT,
    )
    populated = torch.isfinite(free) & (exact < 6.0)
    assert int(populated.sum()) >= 8
    z_scores = ((free - exact).abs() / se)[populated]
    assert float(z_scores.max()) < 4.5, z_scores
    # shifted version: minimum at zero, same differences
    _, shifted, se2 = free_energy_profile(s.x[:, 0], s.log_w, edges)
    assert float(shifted[torch.isfinite(shifted)].min()) == 0.0
    finite = torch.isfinite(free)
    assert torch.allclose(shifted[finite] - free[finite], (shifted - free)[finite][:1])
    assert torch.equal(se2, se)


def test_free_energy_profile_empty_bins_and_integer_bins():
    s = torch.tensor([0.1, 0.15, 0.9], dtype=DT)
    centres, free, se = free_energy_profile(s, torch.zeros(3, dtype=DT), 4, limits=(0.0, 1.0))
    assert torch.allclose(centres, torch.tensor([0.125, 0.375, 0.625, 0.875], dtype=DT))
    assert math.isinf(free[1]) and math.isinf(se[1]) and math.isinf(free[2])
    assert float(free[0]) == 0.0 and float(free[3]) == pytest.approx(math.log(2.0))
    # default limits: the range of the values, right edge included
    _, free_default, _ = free_energy_profile(s, torch.zeros(3, dtype=DT), 2)
    assert bool(torch.isfinite(free_default).all())


# ----------------------------------------------------------------------------- IMH
def test_independence_metropolis_accepts_everything_when_proposal_is_target():
    q = DiagNormal(2, loc=MU, scale=SIGMA).to(DT)
    res = independence_metropolis(q, gauss_u, 50, n_chains=20, generator=gen(9))
    assert res.samples.shape == (50, 20, 2) and res.log_w.shape == (50, 20)
    assert res.acceptance_rate == 1.0
    assert bool(res.accepted.all())
    assert torch.allclose(res.log_w, torch.full_like(res.log_w, GAUSS_LOG_Z), atol=1e-10)


def test_independence_metropolis_converges_to_target_moments():
    q = proposal_gauss()  # wider than the target: bounded weights, uniformly ergodic chain
    res = independence_metropolis(q, gauss_u, 300, n_chains=100, generator=gen(10))
    assert 0.3 < res.acceptance_rate < 0.95
    kept = res.samples[50:]  # (250, 100, 2); chains are independent of each other
    chain_means = kept.mean(0)  # (100, 2)
    mean = chain_means.mean(0)
    se_mean = chain_means.std(0) / math.sqrt(100)
    assert bool(((mean - MU).abs() < 4 * se_mean).all()), (mean, se_mean)
    chain_vars = kept.var(0)
    var = chain_vars.mean(0)
    se_var = chain_vars.std(0) / math.sqrt(100)
    assert bool(((var - SIGMA**2).abs() < 4 * se_var).all()), (var, se_var)
    # the proposal alone is far from the target mean: the chain corrects it
    raw = q.sample((25000,))
    assert float((raw.mean(0) - MU).abs().max()) > 10 * float(se_mean.max())
    assert res.flatten(burn_in=50).shape == (25000, 2)


def test_independence_metropolis_from_given_initial_states():
    init = torch.full((30, 2), 4.0, dtype=DT)
    res = independence_metropolis(
        proposal_gauss(), gauss_u, 200, n_chains=30, initial=init, generator=gen(11)
    )
    # chains leave the bad start and then sample the target
    assert float((res.samples[0] == 4.0).all(-1).double().mean()) < 1.0
    assert not bool((res.samples[-1] == 4.0).all(-1).any())
    mean = res.samples[100:].reshape(-1, 2).mean(0)
    assert float((mean - MU).abs().max()) < 0.25
    with pytest.raises(InvalidInput, match=r"initial states of shape \(30, 2\)"):
        independence_metropolis(proposal_gauss(), gauss_u, 5, n_chains=30, initial=init[:3])


# ----------------------------------------------------------------------------- AIS
def test_ais_with_exact_flow_gives_constant_weights():
    q = DiagNormal(2, loc=MU, scale=SIGMA).to(DT)
    for transition in ("mh", "langevin"):
        s = annealed_importance_sampling(
            q, gauss_u, 100, 5, transition=transition, step_size=0.3, generator=gen(12)
        )
        # every intermediate density is the target: increments sum to exactly log Z
        assert torch.allclose(s.log_w, torch.full_like(s.log_w, GAUSS_LOG_Z), atol=1e-10)
        assert s.acceptance.shape == (5,) and bool((s.acceptance > 0.3).all())


@pytest.mark.parametrize("transition, step", [("mh", 0.4), ("langevin", 0.08)])
def test_ais_log_z_on_double_well_and_beats_importance_sampling(transition, step):
    q = broad_dw()
    n = 2000
    plain = importance_weights(q, dw_u, n, generator=gen(13))
    ais = annealed_importance_sampling(
        q, dw_u, n, 40, transition=transition, step_size=step, batch_size=700, generator=gen(14)
    )
    assert ais.x.shape == (n, 2) and ais.log_w.shape == (n,)
    assert bool((ais.acceptance > 0.3).all()) and float(ais.acceptance.mean()) < 0.95
    est = ais.log_partition()
    assert abs(float(est) - DW_LOG_Z) < 4 * float(est.stderr), (str(est), DW_LOG_Z)
    assert float(ais.ess()) > 1.5 * float(plain.ess()), (float(ais.ess()), float(plain.ess()))
    # the AIS samples are properly weighted: dF from them too
    df = free_energy_difference(ais.x, ais.log_w, right, left)
    assert abs(float(df) - DW_DF) < 4 * float(df.stderr)


def test_ais_log_z_is_consistent_over_repeats():
    g = gen(15)
    values, errors = [], []
    for _ in range(20):
        s = annealed_importance_sampling(proposal_dw(), dw_u, 300, 10, step_size=0.3, generator=g)
        est = s.log_partition()
        values.append(float(est.value))
        errors.append(float(est.stderr))
    values = torch.tensor(values, dtype=DT)
    assert abs(float(values.mean()) - DW_LOG_Z) < 4 * float(values.std()) / math.sqrt(20)
    ratio = float(values.std()) / (sum(errors) / len(errors))
    assert 0.5 < ratio < 2.0, ratio


# ----------------------------------------------------------------------------- flows
def test_estimates_with_a_real_flow_and_a_stochastic_flow():
    flow = RealNVP(2, layers=2, hidden=(8,)).to(DT)
    s = importance_weights(flow, gauss_u, 300, batch_size=128, generator=gen(16))
    assert s.x.shape == (300, 2) and bool(torch.isfinite(s.log_w).all())
    ais = annealed_importance_sampling(flow, gauss_u, 64, 3, step_size=0.3, generator=gen(17))
    assert bool(torch.isfinite(ais.log_w).all())
    assert all(p.grad is None for p in flow.parameters())

    # a pure MCMC stochastic flow from N(0, I): path weights give unbiased log Z
    def std_u(x):
        return 0.5 * (((x - 0.5) / 1.2) ** 2).sum(-1)

    snf = SNF(2, std_u, flow_layers=0, blocks=2, stochastic="mh", steps=3).to(DT)
    assert snf.stochastic
    s = importance_weights(snf, std_u, 3000, generator=gen(18))
    est = s.log_partition()
    assert abs(float(est) - 2 * math.log(1.2 * math.sqrt(2 * math.pi))) < 4 * float(est.stderr)
    res = independence_metropolis(snf, std_u, 5, n_chains=8, generator=gen(19))
    assert res.samples.shape == (5, 8, 2)
    with pytest.raises(StochasticFlowError, match="annealed_importance_sampling"):
        annealed_importance_sampling(snf, std_u, 10, 2)
    with pytest.raises(StochasticFlowError, match="initial"):
        independence_metropolis(snf, std_u, 5, n_chains=2, initial=torch.zeros(2, 2, dtype=DT))


def test_conditional_flow_samples_per_context_row():
    q = DiagNormal(2, context_dim=3).to(DT)
    ctx = torch.randn(4, 3, dtype=DT)
    s = importance_weights(q, lambda x: 0.5 * (x**2).sum(-1), 50, batch_size=20, context=ctx)
    assert s.x.shape == (50, 4, 2) and s.log_w.shape == (50, 4)
    assert log_partition(s.log_w[:, 2]).value.shape == ()
    # one estimate per context row, equal to the estimate of that column alone
    per_row = log_partition(s.log_w)
    assert per_row.value.shape == (4,) and per_row.stderr.shape == (4,)
    assert torch.allclose(per_row.value[2], log_partition(s.log_w[:, 2]).value)
    assert torch.allclose(per_row.stderr[2], log_partition(s.log_w[:, 2]).stderr)


def test_progress_bar_and_str(capsys):
    s = importance_weights(StandardNormal(2), lambda x: 0.5 * (x**2).sum(-1), 20, progress=True)
    assert len(s) == 20
    assert "importance_weights" in capsys.readouterr().err
    assert str(Estimate(torch.tensor(1.23456), torch.tensor(0.0123))) == "1.235 ± 0.012"
    assert str(Estimate(torch.tensor([1.0, 2.0]), torch.tensor([0.5, 0.25]))) == (
        "[1.00 ± 0.50, 2.00 ± 0.25]"
    )


# ----------------------------------------------------------------------------- bad input
def test_nan_and_inf_log_weights_are_counted_and_refused():
    lw = torch.tensor([0.0, math.nan, 1.0, math.nan])
    for fn in (log_partition, effective_sample_size):
        with pytest.raises(InvalidInput, match="2 NaN value"):
            fn(lw)
    with pytest.raises(InvalidInput, match="2 NaN"):
        reweighted_mean(torch.ones(4), lw)
    with pytest.raises(InvalidInput, match=r"1 of 3 \+inf"):
        log_partition(torch.tensor([0.0, math.inf, 1.0]))
    with pytest.raises(InvalidInput, match="all 3 weights are zero"):
        log_partition(torch.full((3,), -math.inf))
    with pytest.raises(InvalidInput, match="1-D"):
        log_partition(torch.zeros(()))
    with pytest.raises(InvalidInput, match="floating-point"):
        log_partition(torch.zeros(3, dtype=torch.long))


def test_nonfinite_energies_raise_or_get_zero_weight():
    def u_bad(x):
        u = 0.5 * (x**2).sum(-1)
        return torch.where(x[:, 0] > 1.0, torch.full_like(u, math.nan), u)

    q = StandardNormal(2).to(DT)
    with pytest.raises(NonFiniteOutput, match=r"of 400 log weights are NaN"):
        importance_weights(q, u_bad, 400, generator=gen(20))
    s = importance_weights(q, u_bad, 400, generator=gen(20), nonfinite="zero")
    bad = s.x[:, 0] > 1.0
    assert s.n_nonfinite == int(bad.sum()) > 0
    assert bool((s.log_w[bad] == -math.inf).all()) and bool(torch.isfinite(s.log_w[~bad]).all())
    assert 0.0 < float(s.ess()) < 1.0
    ais = annealed_importance_sampling(q, u_bad, 100, 3, generator=gen(21), nonfinite="zero")
    assert ais.n_nonfinite > 0 and bool(torch.isfinite(ais.log_w).any())
    with pytest.raises(NonFiniteOutput):
        annealed_importance_sampling(q, u_bad, 100, 3, generator=gen(21))
    with pytest.raises(InvalidInput, match="nonfinite"):
        importance_weights(q, u_bad, 10, nonfinite="ignore")


def test_mismatched_shapes_and_empty_regions_raise():
    x = torch.randn(10, 2)
    lw = torch.zeros(10)
    with pytest.raises(InvalidInput, match=r"shape \(10, \.\.\.\), got \(9,\)"):
        reweighted_mean(torch.ones(9), lw)
    with pytest.raises(InvalidInput, match=r"finite observable values, got NaN/inf at 1 of 10"):
        reweighted_mean(torch.tensor([math.nan] + [0.0] * 9), lw)
    # NaN observables at zero-weight samples are harmless
    lw0 = torch.tensor([-math.inf] + [0.0] * 9)
    assert float(reweighted_mean(torch.tensor([math.nan] + [1.0] * 9), lw0).value) == 1.0
    with pytest.raises(InvalidInput, match=r"region_a of shape \(10,\)"):
        free_energy_difference(x, lw, torch.ones(9, dtype=torch.bool), right)
    with pytest.raises(InvalidInput, match="boolean mask"):
        free_energy_difference(x, lw, torch.ones(10), right)
    with pytest.raises(InvalidInput, match="callable, so expected samples x"):
        free_energy_difference(None, lw, right, left)
    with pytest.raises(InvalidInput, match="region_b holds 0 of 10 samples"):
        free_energy_difference(x, lw, right, lambda x: x[:, 0] > 100.0)
    zero_right = torch.where(right(x), torch.full_like(lw, -math.inf), lw)
    with pytest.raises(InvalidInput, match=r"region_a holds \d+ of 10 samples and none"):
        free_energy_difference(x, zero_right, right, left)
    with pytest.raises(InvalidInput, match="strictly increasing edges"):
        free_energy_profile(x[:, 0], lw, torch.tensor([0.0, 1.0, 0.5]))
    with pytest.raises(InvalidInput, match="pass limits="):
        free_energy_profile(torch.ones(10), lw, 5)
    with pytest.raises(InvalidInput, match=r"cv_values of shape \(10,\)"):
        free_energy_profile(x, lw, 5)


def test_bad_arguments_and_space_mismatch_raise():
    q = StandardNormal(2)
    u = gauss_u

    class ThreeD:
        space = Euclidean(3)

        def energy(self, x):
            return (x**2).sum(-1)

    with pytest.raises(SpaceMismatch, match=r"Euclidean.*ThreeD"):
        importance_weights(q, ThreeD(), 10)
    with pytest.raises(SpaceMismatch):
        annealed_importance_sampling(q, ThreeD(), 10, 2)
    with pytest.raises(InvalidInput, match="positive integer number of samples n, got 0"):
        importance_weights(q, u, 0)
    with pytest.raises(InvalidInput, match="batch_size"):
        importance_weights(q, u, 10, batch_size=2.5)
    with pytest.raises(InvalidInput, match="n_chains"):
        independence_metropolis(q, u, 5, n_chains=0)
    with pytest.raises(InvalidInput, match="transition"):
        annealed_importance_sampling(q, u, 10, 2, transition="gibbs")
    with pytest.raises(InvalidInput, match="step_size"):
        annealed_importance_sampling(q, u, 10, 2, step_size=-0.1)
    with pytest.raises(InvalidInput, match="strictly increasing values from 0 to 1"):
        annealed_importance_sampling(q, u, 10, 2, betas=[0.0, 0.7, 0.5])
    s = annealed_importance_sampling(q, u, 10, 2, betas=torch.tensor([0.0, 0.2, 1.0]))
    assert s.log_w.shape == (10,)
    with pytest.raises(InvalidInput, match="sample_and_log_prob"):
        importance_weights(object(), u, 10)
    with pytest.raises(InvalidInput, match="burn_in"):
        independence_metropolis(q, u, 3, n_chains=2).flatten(burn_in=3)
    assert isinstance(Samples(torch.zeros(2, 1), torch.zeros(2)).log_partition(), Estimate)


def test_dtype_and_device(dtype, device):
    mu, sigma = MU.to(device, dtype), SIGMA.to(device, dtype)

    def u(x):
        return 0.5 * (((x - mu) / sigma) ** 2).sum(-1) + OFFSET

    q = proposal_gauss().to(device, dtype)
    g = torch.Generator(device=device).manual_seed(22)
    s = importance_weights(q, u, 4000, batch_size=1500, generator=g)
    assert s.x.dtype == s.log_w.dtype == dtype and s.x.device.type == device.type
    est = log_partition(s.log_w)
    assert est.value.dtype == dtype and abs(float(est) - GAUSS_LOG_Z) < 4 * float(est.stderr)
    mean = reweighted_mean(s.x, s.log_w)
    assert bool(((mean.value - mu).abs() < 4 * mean.stderr).all())
    df = free_energy_difference(s.x, s.log_w, right, left)
    assert df.value.device.type == device.type
    centres, free, se = free_energy_profile(s.x[:, 0], s.log_w, 10)
    assert free.dtype == dtype and free.device.type == device.type
    res = independence_metropolis(q, u, 20, n_chains=16, generator=g)
    assert res.samples.dtype == dtype and 0.0 < res.acceptance_rate < 1.0
    for transition in ("mh", "langevin"):
        ais = annealed_importance_sampling(
            q, u, 500, 5, transition=transition, step_size=0.1, generator=g
        )
        assert ais.log_w.dtype == dtype and ais.acceptance.device.type == device.type
        est = ais.log_partition()
        assert abs(float(est) - GAUSS_LOG_Z) < 4 * float(est.stderr)
