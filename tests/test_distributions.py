"""Base distributions and flows: consistency, normalisation, support."""

from __future__ import annotations

import math

import pytest
import torch

from manifoldflows import Flow
from manifoldflows.distributions import DiagNormal, GaussianMixture, StandardNormal, Uniform
from manifoldflows.presets import IAF, MAF, NSF, RealNVP
from manifoldflows.spaces import Interval
from manifoldflows.testing import check_distribution, perturb_parameters

DISTRIBUTIONS = {
    "standard-normal": lambda: StandardNormal(3),
    "diag-normal": lambda: DiagNormal(2, loc=torch.tensor([1.0, -1.0]), scale=0.5),
    "mixture": lambda: GaussianMixture(2, 4),
    "uniform-box": lambda: Uniform(-1.0, 2.0, 3),
    "uniform-space": lambda: Uniform(Interval(0, 1, 2)),
}


@pytest.mark.parametrize("name", list(DISTRIBUTIONS))
def test_check_distribution(name, dtype, device):
    check_distribution(DISTRIBUTIONS[name](), dtype=dtype, device=device)


def test_conditional_diag_normal(dtype, device):
    q = DiagNormal(2, context_dim=3)
    perturb_parameters(q, 0.5)
    check_distribution(q, dtype=dtype, device=device, context=torch.randn(4, 3))


def test_log_probs_match_torch_distributions():
    x = torch.randn(10, 2, dtype=torch.float64)
    q = DiagNormal(2, loc=torch.tensor([0.5, -1.0]), scale=torch.tensor([2.0, 0.3])).double()
    ref = torch.distributions.Normal(q.loc, q.log_scale.exp()).log_prob(x).sum(-1)
    torch.testing.assert_close(q.log_prob(x), ref)
    mix = GaussianMixture(
        2, loc=torch.tensor([[0.0, 0.0], [3.0, 1.0]]), scale=0.7, weights=torch.tensor([0.25, 0.75])
    ).double()
    comp = torch.distributions.Independent(
        torch.distributions.Normal(mix.loc, mix.log_scale.exp()), 1
    )
    ref = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(probs=torch.tensor([0.25, 0.75], dtype=torch.float64)), comp
    ).log_prob(x)
    torch.testing.assert_close(mix.log_prob(x), ref)
    assert torch.allclose(
        Uniform(-1.0, 2.0, 2).log_prob(torch.zeros(2)), torch.tensor(-2 * math.log(3))
    )


def test_bad_distribution_arguments():
    with pytest.raises(ValueError, match="positive scales"):
        DiagNormal(2, scale=-1.0)
    with pytest.raises(ValueError, match="not compact"):
        Uniform(Interval(0.0, math.inf, 1))
    with pytest.raises(ValueError, match="positive weights"):
        GaussianMixture(1, loc=torch.zeros(2, 1), weights=torch.tensor([1.0, -1.0]))


FLOWS = {
    "realnvp": lambda: RealNVP(2, layers=3, hidden=(16,)),
    "nsf-coupling": lambda: NSF(2, layers=3, hidden=(16,), bins=6, bound=3.0),
    "nsf-autoregressive": lambda: NSF(2, layers=2, hidden=(16,), autoregressive=True),
    "maf": lambda: MAF(2, layers=3, hidden=(16,)),
    "iaf": lambda: IAF(2, layers=3, hidden=(16,)),
}


@pytest.mark.parametrize("name", list(FLOWS))
def test_flow_density_integrates_to_one(name):
    """Defensive importance sampling: proposal m = (q + p) / 2 with p a broad Gaussian and q the
    flow (sampled through its forward pass). E_m[q / m] = 1 exactly when log_prob is the density
    of the samples and integrates to 1; the weights are bounded by 2, so heavy tails of q
    cannot hide mass from the estimate."""
    torch.manual_seed(1)
    flow = FLOWS[name]().double()
    perturb_parameters(flow, 0.3)
    broad = DiagNormal(2, scale=3.0).double()
    n = 50_000
    with torch.no_grad():
        x = torch.cat([flow.sample((n,)), broad.sample((n,))])
        log_q = flow.log_prob(x)
        log_m = torch.logaddexp(log_q, broad.log_prob(x)) - math.log(2.0)
        ratio = torch.exp(log_q - log_m)
    mean, stderr = ratio.mean().item(), ratio.std().item() / math.sqrt(ratio.numel())
    assert abs(mean - 1.0) < 4 * stderr + 1e-3, (mean, stderr)
    assert stderr < 0.01  # a 5% normalisation error would be detected


def test_one_dimensional_autoregressive_spline_integrates_to_one_by_quadrature():
    flow = NSF(1, layers=2, hidden=(8,), autoregressive=True, bins=5, bound=2.0).double()
    perturb_parameters(flow, 0.5)
    grid = torch.linspace(-40, 40, 400_001, dtype=torch.float64)[:, None]
    with torch.no_grad():
        density = flow.log_prob(grid).exp()
    total = torch.trapezoid(density, grid[:, 0]).item()
    assert abs(total - 1.0) < 1e-6


@pytest.mark.parametrize("name", list(FLOWS))
def test_flow_passes_check_distribution(name, dtype):
    flow = FLOWS[name]()
    perturb_parameters(flow, 0.1)
    check_distribution(flow, dtype=dtype)


def test_conditional_flow_passes_check_distribution():
    flow = NSF(2, layers=2, hidden=(8,), context_dim=2)
    perturb_parameters(flow, 0.2)
    check_distribution(flow, context=torch.randn(3, 2))
    assert isinstance(flow, Flow)
