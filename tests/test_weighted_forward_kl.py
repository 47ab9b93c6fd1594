"""Weighted maximum likelihood (losses.weighted_forward_kl) and the forward KL from the model's
own reweighted samples (losses.importance_weighted_forward_kl), against closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from manifoldflows.distributions import DiagNormal, GaussianMixture, StandardNormal
from manifoldflows.errors import InvalidInput, NonFiniteOutput, StochasticFlowError
from manifoldflows.losses import forward_kl, importance_weighted_forward_kl, weighted_forward_kl
from manifoldflows.presets import SNF

DT = torch.float64
MU = torch.tensor([1.0, -0.5], dtype=DT)


def target_u(x):
    """N(MU, I) up to its normalisation."""
    return 0.5 * ((x - MU.to(x.dtype)) ** 2).sum(-1)


def test_equal_weights_give_plain_maximum_likelihood(dtype):
    model = DiagNormal(2, loc=0.3, scale=1.7).to(dtype)
    x = torch.randn(64, 2, dtype=dtype)
    log_w = torch.full((64,), -3.2, dtype=dtype)  # any constant: normalisation removes it
    assert torch.allclose(weighted_forward_kl(model, x, log_w), forward_kl(model, x))


def test_weights_act_as_multiplicities():
    model = StandardNormal(2).to(DT)
    x = torch.randn(5, 2, dtype=DT)
    counts = torch.tensor([1.0, 3.0, 0.0, 2.0, 1.0], dtype=DT)
    repeated = x.repeat_interleave(counts.long(), 0)
    value = weighted_forward_kl(model, x, counts.log())  # a zero count is a -inf log weight
    assert torch.isfinite(value)
    assert torch.allclose(value, forward_kl(model, repeated))


def test_zero_weight_sample_outside_the_support_gives_no_nan():
    # a zero-weight point where log q = -inf (outside a bounded model) must not poison the sum
    from manifoldflows.distributions import Uniform
    from manifoldflows.spaces import Interval

    model = Uniform(Interval(0.0, 2.0))
    x = torch.tensor([[0.5], [1.5]])
    log_w = torch.tensor([0.0, -math.inf])
    assert weighted_forward_kl(model, x, log_w).item() == pytest.approx(math.log(2.0))


def test_gradient_is_the_forward_kl_gradient():
    # model N(0, 2^2 I), target N(MU, I): d/d loc E_p[-log q] = -(MU - loc) / 4 and
    # d/d log_scale E_p[-log q] = -(E_p[(x - loc)^2] / 4 - 1) = 1 - (1 + MU^2) / 4
    torch.manual_seed(0)
    model = DiagNormal(2, loc=0.0, scale=2.0).to(DT)
    loss = importance_weighted_forward_kl(model, target_u, 400_000)
    loss.backward()
    assert torch.allclose(model.loc.grad, -MU / 4.0, atol=0.01)
    assert torch.allclose(model.log_scale.grad, 1.0 - (1.0 + MU**2) / 4.0, atol=0.02)
    # and the value estimates the cross-entropy E_p[-log q]
    exact = float((torch.log(torch.tensor(2.0 * math.sqrt(2 * math.pi))) * 2).sum()) + float(
        ((1.0 + MU**2) / 8.0).sum()
    )
    assert loss.item() == pytest.approx(exact, abs=0.01)


def test_training_corrects_mode_masses_that_reverse_kl_would_not_see():
    # model: two fixed Gaussians with learnable weights; target: the same modes, weights 0.8/0.2
    loc = torch.tensor([[-4.0, 0.0], [4.0, 0.0]], dtype=DT)

    def u(x):
        comps = -0.5 * ((x.unsqueeze(-2) - loc) ** 2).sum(-1)
        return -torch.logsumexp(comps + torch.log(torch.tensor([0.8, 0.2], dtype=DT)), -1)

    torch.manual_seed(1)
    model = GaussianMixture(2, loc=loc.float(), scale=1.0).to(DT)
    model.loc.requires_grad_(False)
    model.log_scale.requires_grad_(False)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        importance_weighted_forward_kl(model, u, 512).backward()
        opt.step()
    weights = torch.softmax(model.logits, -1).detach()
    assert torch.allclose(weights, torch.tensor([0.8, 0.2], dtype=DT), atol=0.03), weights


def test_context_rows_are_normalised_separately():
    model = DiagNormal(2, context_dim=1, hidden=(8,)).to(DT)
    x = torch.randn(6, 3, 2, dtype=DT)
    context = torch.randn(3, 1, dtype=DT)
    log_w = torch.randn(6, 3, dtype=DT)
    value = weighted_forward_kl(model, x, log_w, context)
    per_row = [
        weighted_forward_kl(model, x[:, j], log_w[:, j], context[j].expand(6, 1)) for j in range(3)
    ]
    assert torch.allclose(value, torch.stack(per_row).mean())


@pytest.mark.parametrize(
    "log_w, match",
    [
        (torch.zeros(3), "batch shape"),
        (torch.tensor([0.0, math.nan, 0.0, 0.0]), "NaN or \\+inf"),
        (torch.tensor([0.0, math.inf, 0.0, 0.0]), "NaN or \\+inf"),
        (torch.full((4,), -math.inf), "all weights"),
    ],
)
def test_bad_log_weights(log_w, match):
    with pytest.raises(InvalidInput, match=match):
        weighted_forward_kl(StandardNormal(2), torch.zeros(4, 2), log_w)


def test_non_tensor_input():
    with pytest.raises(InvalidInput, match="expected tensors"):
        weighted_forward_kl(StandardNormal(2), [[0.0, 0.0]], torch.zeros(1))


def test_nan_energies_are_reported():
    def u(x):
        return torch.where(x[:, 0] > 0, torch.full_like(x[:, 0], math.nan), target_u(x))

    with pytest.raises(NonFiniteOutput, match="NaN or -inf"):
        importance_weighted_forward_kl(StandardNormal(2).to(DT), u, 64)


def test_infinite_energy_is_a_zero_weight():
    def u(x):
        return torch.where(x[:, 0] > 0, torch.full_like(x[:, 0], math.inf), target_u(x))

    assert torch.isfinite(importance_weighted_forward_kl(StandardNormal(2).to(DT), u, 64))


def test_stochastic_flow_is_refused():
    snf = SNF(2, target_u, flow_layers=1, blocks=1, steps=2, hidden=(8,))
    with pytest.raises(StochasticFlowError, match="reverse_kl"):
        importance_weighted_forward_kl(snf, target_u, 16)
