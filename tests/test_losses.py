"""Objectives and importance-sampling diagnostics against closed-form values."""

from __future__ import annotations

import math

import pytest
import torch

from manifoldflows.distributions import DiagNormal, StandardNormal
from manifoldflows.errors import InvalidInput, NonFiniteOutput
from manifoldflows.losses import ess, forward_kl, log_importance_weights, log_partition, reverse_kl


def gaussian_energy(mu: torch.Tensor, sigma: torch.Tensor):
    """u(x) = |(x - mu) / sigma|^2 / 2, whose log Z = sum log(sigma sqrt(2 pi))."""

    def u(x):
        return 0.5 * (((x - mu) / sigma) ** 2).sum(-1)

    log_z = float(torch.log(sigma).sum() + 0.5 * mu.numel() * math.log(2 * math.pi))
    return u, log_z


def gaussian_kl(m1, s1, m2, s2) -> float:
    """KL(N(m1, s1^2) || N(m2, s2^2)) for diagonal Gaussians."""
    return float((torch.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5).sum())


class EnergyObject:
    def __init__(self, fn):
        self.fn = fn

    def energy(self, x):
        return self.fn(x)


# ------------------------------------------------------------------ forward KL


def test_forward_kl_equals_gaussian_cross_entropy(dtype, device):
    loc, scale = torch.tensor([0.5, -1.0]), torch.tensor([2.0, 0.5])
    q = DiagNormal(2, loc=loc, scale=scale).to(dtype=dtype, device=device)
    x = torch.tensor([[0.0, 0.0], [1.0, -1.0], [3.0, 2.0]], dtype=torch.float64)
    m, log_s = q.loc.detach().cpu().double(), q.log_scale.detach().cpu().double()
    z = (x - m) / log_s.exp()
    expected = (0.5 * z**2 + log_s + 0.5 * math.log(2 * math.pi)).sum(-1).mean()
    loss = forward_kl(q, x.to(dtype=dtype, device=device))
    assert loss.shape == ()
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert abs(loss.item() - expected.item()) < tol


def test_forward_kl_gradient_is_the_mle_gradient():
    q = DiagNormal(1, loc=0.0, scale=1.0).double()
    x = torch.tensor([[1.0], [2.0], [4.0]], dtype=torch.float64)
    forward_kl(q, x).backward()
    # d/dm of mean NLL = -(mean(x) - m) / s^2
    assert torch.allclose(q.loc.grad, torch.tensor([-(7.0 / 3.0)], dtype=torch.float64))


def test_forward_kl_rejects_empty_and_non_tensor_data():
    q = StandardNormal(2)
    with pytest.raises(InvalidInput, match="forward_kl: expected at least one data point"):
        forward_kl(q, torch.zeros(0, 2))
    with pytest.raises(InvalidInput, match="forward_kl: expected a tensor"):
        forward_kl(q, [[0.0, 0.0]])


# ------------------------------------------------------------------ reverse KL


@pytest.mark.parametrize("as_object", [False, True], ids=["callable", "energy_object"])
def test_reverse_kl_matches_kl_minus_log_z(as_object, device):
    f64 = torch.float64
    mu, sigma = torch.tensor([1.0, -2.0], dtype=f64), torch.tensor([0.7, 1.5], dtype=f64)
    u, log_z = gaussian_energy(mu.to(device), sigma.to(device))
    target = EnergyObject(u) if as_object else u
    m, s = torch.tensor([0.0, 0.5], dtype=f64), torch.tensor([1.0, 1.2], dtype=f64)
    q = DiagNormal(2, loc=m, scale=s).double().to(device)
    expected = gaussian_kl(m, s, mu, sigma) - log_z
    n = 20000
    g = torch.Generator(device=device).manual_seed(1)
    loss = reverse_kl(q, target, n, generator=g)
    # Monte-Carlo error bar from the per-sample terms (same draws: same generator seed).
    g = torch.Generator(device=device).manual_seed(1)
    x, log_q = q.sample_and_log_prob((n,), generator=g)
    terms = (log_q + u(x)).detach()
    se = terms.std().item() / math.sqrt(n)
    assert abs(terms.mean().item() - loss.item()) < 1e-10
    assert abs(loss.item() - expected) < 5 * se


def test_reverse_kl_pathwise_gradient():
    mu, sigma = torch.tensor([1.0], dtype=torch.float64), torch.tensor([2.0], dtype=torch.float64)
    u, _ = gaussian_energy(mu, sigma)
    q = DiagNormal(1, loc=0.0, scale=1.0).double()
    reverse_kl(q, u, 50000, generator=torch.Generator().manual_seed(0)).backward()
    # dKL/dm = (m - mu) / sigma^2 = -0.25; dKL/dlog s = s^2 / sigma^2 - 1 = -0.75
    assert abs(q.loc.grad.item() + 0.25) < 0.01
    assert abs(q.log_scale.grad.item() + 0.75) < 0.02


def test_reverse_kl_with_context_samples_per_context_row():
    q = DiagNormal(2, context_dim=3)
    seen = {}

    def u(x):
        seen["shape"] = tuple(x.shape)
        return 0.5 * (x**2).sum(-1)

    loss = reverse_kl(q, u, 7, torch.zeros(4, 3))
    assert seen["shape"] == (7, 4, 2)
    assert loss.shape == ()


def test_reverse_kl_reports_non_finite_energies():
    q = StandardNormal(2)

    def u(x):
        return torch.where(x[..., 0] > 1.0, torch.full_like(x[..., 0], math.inf), x[..., 0] ** 2)

    n = 200
    bad = int((q.sample((n,), generator=torch.Generator().manual_seed(3))[:, 0] > 1.0).sum())
    assert 0 < bad < n
    with pytest.raises(NonFiniteOutput, match=f"reverse_kl: .* NaN/inf at {bad} of {n} samples"):
        reverse_kl(q, u, n, generator=torch.Generator().manual_seed(3))


def test_reverse_kl_rejects_bad_energy_shape_and_n():
    q = StandardNormal(2)
    with pytest.raises(InvalidInput, match=r"batch shape \(5,\), got \(5, 1\)"):
        reverse_kl(q, lambda x: (x**2).sum(-1, keepdim=True), 5)
    with pytest.raises(InvalidInput, match="positive integer number of samples"):
        reverse_kl(q, lambda x: (x**2).sum(-1), 0)
    with pytest.raises(TypeError, match="expected a target"):
        reverse_kl(q, 3.0, 5)


class FakeStochasticFlow(torch.nn.Module):
    """Minimal stand-in for a flow with stochastic layers: only sample_and_log_weight."""

    stochastic = True

    def __init__(self):
        super().__init__()
        self.base = StandardNormal(1)

    def sample_and_log_prob(self, *args, **kwargs):
        raise AssertionError("a stochastic flow has no exact density")

    def sample_and_log_weight(self, target, shape, context=None, generator=None):
        x, log_p = self.base.sample_and_log_prob(shape, context, generator)
        path_weight = torch.full_like(log_p, 0.25)
        return x, -target(x) - (log_p - path_weight)


def test_reverse_kl_uses_path_weights_for_stochastic_flows():
    model = FakeStochasticFlow()
    u = lambda x: 0.5 * (x**2).sum(-1)  # noqa: E731
    loss = reverse_kl(model, u, 100)
    # log p_base(x) + u(x) = -log sqrt(2 pi) exactly; minus the path weight 0.25
    assert abs(loss.item() - (-0.5 * math.log(2 * math.pi) - 0.25)) < 1e-5


# ------------------------------------------------------------------ importance weights


def test_log_importance_weights_are_log_z_when_q_is_the_target(device):
    mu, sigma = torch.tensor([0.3, -0.2]), torch.tensor([1.5, 0.5])
    u, log_z = gaussian_energy(mu.to(device), sigma.to(device))
    q = DiagNormal(2, loc=mu, scale=sigma).to(device)
    g = torch.Generator(device=device).manual_seed(0)
    x, log_w = log_importance_weights(q, u, 64, generator=g)
    assert x.shape == (64, 2) and log_w.shape == (64,)
    assert not x.requires_grad and not log_w.requires_grad
    assert torch.allclose(log_w, torch.full_like(log_w, log_z), atol=1e-4)
    assert ess(log_w).item() == pytest.approx(1.0, abs=1e-5)


# ------------------------------------------------------------------ ESS


def test_ess_equal_weights_is_one_and_dominant_weight_is_one_over_n(dtype):
    n = 50
    assert ess(torch.full((n,), -3.7, dtype=dtype)).item() == pytest.approx(1.0, abs=1e-6)
    lw = torch.full((n,), -1e3, dtype=dtype)
    lw[7] = 0.0
    assert ess(lw).item() == pytest.approx(1.0 / n, rel=1e-6)
    lw[:] = -math.inf
    lw[3] = 5.0
    assert ess(lw).item() == pytest.approx(1.0 / n, rel=1e-6)


def test_ess_matches_direct_formula_and_is_shift_invariant():
    lw = torch.randn(1000, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2
    w = lw.exp()
    direct = w.sum() ** 2 / (w.numel() * (w**2).sum())
    assert ess(lw).item() == pytest.approx(direct.item(), rel=1e-12)
    # a huge offset overflows exp() but not the log-space formula
    assert ess(lw + 5000.0).item() == pytest.approx(direct.item(), rel=1e-9)
    assert ess(lw - 5000.0).item() == pytest.approx(direct.item(), rel=1e-9)


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.tensor([0.0, math.nan]), "1 NaN"),
        (torch.zeros(()), r"1-D tensor .* got shape \(\)"),
        (torch.zeros(0), r"at least 1 log weight\(s\), got shape \(0,\)"),
        (torch.tensor([0.0, math.inf]), r"\+inf"),
        (torch.full((3,), -math.inf), "all 3 weights are zero"),
        (torch.zeros(3, dtype=torch.long), "floating-point"),
    ],
)
def test_ess_rejects_bad_input(bad, message):
    with pytest.raises(InvalidInput, match=f"ess: .*{message}"):
        ess(bad)


# ------------------------------------------------------------------ log Z


def test_log_partition_recovers_known_log_z(device):
    f64 = torch.float64
    mu, sigma = torch.tensor([0.5, 0.0], dtype=f64), torch.tensor([1.0, 0.8], dtype=f64)
    u, log_z = gaussian_energy(mu.to(device), sigma.to(device))
    proposal = DiagNormal(2, loc=0.0, scale=1.5).double().to(device)
    _, log_w = log_importance_weights(
        proposal, u, 20000, generator=torch.Generator(device=device).manual_seed(2)
    )
    est, se = log_partition(log_w)
    assert 0 < se.item() < 0.02
    assert abs(est.item() - log_z) < 4 * se.item()
    # the delta-method error agrees with the ESS: se^2 ~ (1/ESS - 1)/n
    n = log_w.numel()
    assert se.item() ** 2 == pytest.approx((1 / ess(log_w).item() - 1) / n, rel=1e-3)


def test_log_partition_constant_weights_and_validation():
    est, se = log_partition(torch.full((10,), 2.5, dtype=torch.float64))
    assert est.item() == pytest.approx(2.5, abs=1e-12) and se.item() == 0.0
    est, _ = log_partition(torch.tensor([0.0, math.log(3.0)], dtype=torch.float64))
    assert est.item() == pytest.approx(math.log(2.0), abs=1e-12)  # log mean(1, 3)
    with pytest.raises(InvalidInput, match="log_partition: expected a 1-D tensor of at least 2"):
        log_partition(torch.zeros(1))
