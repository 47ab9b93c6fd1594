"""Randomised quasi-Monte Carlo sampling (distributions.QuasiRandomSampler) and its use in
importance sampling and AIS: exact densities, even coverage, unbiased and less variable
estimates, and clear errors."""

from __future__ import annotations

import math

import pytest
import torch

from manifoldflows.distributions import (
    DiagNormal,
    GaussianMixture,
    QuasiRandomSampler,
    StandardNormal,
)
from manifoldflows.errors import InvalidInput, StochasticFlowError
from manifoldflows.presets import NSF, SNF
from physics.sampling import annealed_importance_sampling, importance_weights

DT = torch.float64
MU = torch.tensor([1.0, -0.5], dtype=DT)
SIGMA = torch.tensor([0.8, 1.2], dtype=DT)
LOG_Z = float(torch.log(SIGMA * math.sqrt(2 * math.pi)).sum())


def gauss_u(x):
    return 0.5 * (((x - MU.to(x.dtype)) / SIGMA.to(x.dtype)) ** 2).sum(-1)


def proposal():
    return DiagNormal(2, loc=torch.tensor([0.6, 0.0]), scale=torch.tensor([1.2, 1.6])).to(DT)


def test_log_density_is_the_flows(dtype):
    torch.manual_seed(0)
    flow = NSF(3, layers=2, hidden=(16,)).to(dtype)
    x, log_q = QuasiRandomSampler(flow, seed=3).sample_and_log_prob(64)
    assert x.dtype == dtype and x.shape == (64, 3)
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    assert torch.allclose(log_q, flow.log_prob(x), atol=tol, rtol=0)


def test_points_cover_the_base_more_evenly_than_independent_draws():
    n = 4096
    z, log_p = QuasiRandomSampler(StandardNormal(2).to(DT), seed=1).sample_and_log_prob(n)
    assert torch.isfinite(z).all() and torch.allclose(log_p, StandardNormal(2).to(DT).log_prob(z))
    # the independent-sampling error of the mean is 1/sqrt(n) = 0.016 per coordinate
    assert float(z.mean(0).abs().max()) < 0.003
    assert torch.allclose(z.T.cov(), torch.eye(2, dtype=DT), atol=0.01)
    # quadrant counts are exactly balanced for a power-of-2 number of Sobol points
    counts = torch.bincount(2 * (z[:, 0] > 0).long() + (z[:, 1] > 0).long(), minlength=4)
    assert counts.tolist() == [n // 4] * 4


def test_diag_normal_base_uses_its_location_and_scale():
    base = DiagNormal(2, loc=torch.tensor([3.0, -1.0]), scale=torch.tensor([0.5, 2.0])).to(DT)
    z, log_p = QuasiRandomSampler(base, seed=2).sample_and_log_prob(2048)
    assert torch.allclose(z.mean(0), base.loc, atol=0.01)
    assert torch.allclose(z.std(0), base.log_scale.exp(), atol=0.01)
    assert torch.allclose(log_p, base.log_prob(z))


def test_batches_continue_one_sequence_and_seeds_reproduce():
    flow = NSF(2, layers=1, hidden=(8,)).to(DT)
    whole, _ = QuasiRandomSampler(flow, seed=5).sample_and_log_prob(96)
    sampler = QuasiRandomSampler(flow, seed=5)
    parts = torch.cat([sampler.sample_and_log_prob(b)[0] for b in (32, 64)])
    assert torch.equal(whole, parts)
    other, _ = QuasiRandomSampler(flow, seed=6).sample_and_log_prob(96)
    assert not torch.allclose(whole, other)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    a = QuasiRandomSampler(flow, generator=g1).sample_and_log_prob(8)[0]
    b = QuasiRandomSampler(flow, generator=g2).sample_and_log_prob(8)[0]
    assert torch.equal(a, b)


def test_generator_on_the_flows_device_draws_the_seed_there(device):
    """A generator on the model's device (CUDA with --device cuda) works, reproducibly."""
    flow = NSF(2, layers=1, hidden=(8,)).to(device=device, dtype=DT)
    sampler = QuasiRandomSampler(flow, generator=torch.Generator(device=device).manual_seed(3))
    again = QuasiRandomSampler(flow, generator=torch.Generator(device=device).manual_seed(3))
    assert sampler.seed == again.seed
    x, log_q = sampler.sample_and_log_prob(16)
    assert x.device.type == torch.device(device).type and x.dtype == DT
    torch.testing.assert_close(log_q, flow.log_prob(x))


def test_seed_is_drawn_on_the_generators_device(monkeypatch):
    """The draw names the generator's device (torch refuses a CUDA generator for a CPU draw)."""
    devices = []
    randint = torch.randint
    gen = torch.Generator().manual_seed(0)

    def spy(*args, **kwargs):
        if kwargs.get("generator") is gen:  # SobolEngine draws its own scrambling too
            devices.append(kwargs.get("device"))
        return randint(*args, **kwargs)

    monkeypatch.setattr(torch, "randint", spy)
    QuasiRandomSampler(StandardNormal(2), generator=gen)
    assert devices == [gen.device]


def test_gradients_reach_the_flow_parameters():
    flow = NSF(2, layers=1, hidden=(8,)).to(DT)
    x, log_q = QuasiRandomSampler(flow, seed=0).sample_and_log_prob(16)
    (x.sum() + log_q.sum()).backward()
    grads = [p.grad for p in flow.parameters() if p.requires_grad]
    assert any(g is not None and bool(g.abs().sum() > 0) for g in grads)


def _spread(estimates):
    t = torch.tensor(estimates, dtype=DT)
    return float(t.mean()), float(t.std())


def test_importance_sampling_stays_unbiased_and_varies_less():
    mc, qmc = [], []
    g = torch.Generator().manual_seed(0)
    for _ in range(40):
        for out, flag in ((mc, False), (qmc, True)):
            s = importance_weights(proposal(), gauss_u, 1024, generator=g, qmc=flag)
            out.append(float(s.log_partition().value))
    mean_mc, sd_mc = _spread(mc)
    mean_qmc, sd_qmc = _spread(qmc)
    assert abs(mean_mc - LOG_Z) < 4 * sd_mc / math.sqrt(40)
    assert abs(mean_qmc - LOG_Z) < 4 * sd_qmc / math.sqrt(40) + 1e-4
    assert sd_qmc < 0.3 * sd_mc, (sd_qmc, sd_mc)


def test_ais_with_quasi_random_starts():
    g = torch.Generator().manual_seed(1)
    estimates = []
    for _ in range(10):
        s = annealed_importance_sampling(
            proposal(), gauss_u, 512, 5, step_size=0.5, generator=g, qmc=True
        )
        assert s.x.shape == (512, 2) and s.acceptance.shape == (5,)
        estimates.append(float(s.log_partition().value))
    mean, sd = _spread(estimates)
    assert abs(mean - LOG_Z) < 4 * sd / math.sqrt(10) + 1e-3


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: GaussianMixture(2, components=2), "GaussianMixture"),
        (lambda: DiagNormal(2, context_dim=1), "unconditional"),
    ],
)
def test_unsupported_bases(make, match):
    with pytest.raises(InvalidInput, match=match):
        QuasiRandomSampler(make(), seed=0)


def test_stochastic_flow_is_refused():
    snf = SNF(2, gauss_u, flow_layers=1, blocks=1, steps=2, hidden=(8,))
    with pytest.raises(StochasticFlowError, match="sample_and_log_weight"):
        QuasiRandomSampler(snf)


@pytest.mark.parametrize("n", [0, -3, 2.5, True])
def test_bad_number_of_points(n):
    with pytest.raises(InvalidInput, match="positive integer"):
        QuasiRandomSampler(StandardNormal(2), seed=0).sample_and_log_prob(n)


def test_bad_seed_and_context():
    with pytest.raises(InvalidInput, match="integer seed"):
        QuasiRandomSampler(StandardNormal(2), seed=1.5)
    flow = NSF(2, layers=1, hidden=(8,), context_dim=1)
    with pytest.raises(InvalidInput, match="context"):
        importance_weights(flow, gauss_u, 8, context=torch.zeros(3, 1), qmc=True)
