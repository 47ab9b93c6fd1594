"""Invertible residual blocks, their Lipschitz networks and log-determinant estimators."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from manifoldflows.core import Flow, Inverse
from manifoldflows.distributions import StandardNormal
from manifoldflows.functional import residual as F
from manifoldflows.losses import forward_kl, reverse_kl
from manifoldflows.nn.lipschitz import LipschitzMLP, SpectralNormLinear
from manifoldflows.presets import ResidualFlow
from manifoldflows.testing import perturb_parameters
from manifoldflows.transforms import (
    ActNorm,
    ConvergenceError,
    InvertibleResidual,
    initialize_actnorm,
)

DOC = Path(__file__).resolve().parent.parent / "docs" / "layers" / "residual.md"


@pytest.fixture(autouse=True)
def _one_thread():
    # These tests run many passes over tiny tensors, for which intra-op threads only add
    # overhead (and contention on a shared machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _contraction(d: int, norm: float, seed: int = 0) -> torch.Tensor:
    """A random non-symmetric ``d x d`` matrix with spectral norm ``norm`` (float64)."""
    a = torch.randn(d, d, generator=_gen(seed), dtype=torch.float64)
    return norm * a / torch.linalg.matrix_norm(a, ord=2)


def _strong_block(features: int = 3, **options) -> InvertibleResidual:
    """A float64 block whose weights are large, so every spectral normalisation is active."""
    layer = InvertibleResidual(features, **options).double()
    perturb_parameters(layer, 1.0, _gen(3))
    return layer


# ---------------------------------------------------------------------- Lipschitz networks
@pytest.mark.parametrize("norm", ["power", "exact"])
def test_spectral_norm_linear_bounds_the_norm(norm):
    layer = SpectralNormLinear(6, 9, coeff=0.8, norm=norm).double()
    with torch.no_grad():
        layer.weight.mul_(20.0)
    exact = torch.linalg.matrix_norm(layer.weight, ord=2)
    # the estimate equals the largest singular value (power iteration is run to convergence)
    assert torch.allclose(layer.spectral_norm(), exact, rtol=1e-9)
    # active normalisation: the normalised weight has spectral norm exactly coeff
    assert torch.linalg.matrix_norm(layer.normalized_weight(), ord=2).item() == pytest.approx(
        0.8, rel=1e-9
    )
    # an already small weight is left alone
    with torch.no_grad():
        layer.weight.mul_(0.3 / exact)
    assert torch.allclose(layer.normalized_weight(), layer.weight)


def test_power_iteration_buffer_is_updated_only_in_training_mode():
    layer = SpectralNormLinear(5, 7).double()
    with torch.no_grad():
        layer.weight.copy_(torch.randn(7, 5, generator=_gen(), dtype=torch.float64))
    start = layer.u.clone()
    layer.eval()
    w1 = layer.normalized_weight()
    assert torch.equal(layer.u, start)
    assert torch.equal(layer.normalized_weight(), w1)  # deterministic in eval mode
    layer.train()
    w2 = layer.normalized_weight()
    assert not torch.equal(layer.u, start)
    assert torch.allclose(w1, w2, rtol=1e-10, atol=1e-12)  # both converged to the same map
    # warm start: the stored vector is the top left singular vector
    left = torch.linalg.svd(layer.weight.detach())[0][:, 0]
    assert abs(torch.dot(left, layer.u).item()) == pytest.approx(1.0, abs=1e-8)


@pytest.mark.parametrize("activation", ["lipswish", "elu", "tanh"])
def test_lipschitz_mlp_is_a_contraction(activation):
    net = LipschitzMLP(3, (32, 32), context_dim=2, activation=activation, coeff=0.9).double()
    perturb_parameters(net, 2.0, _gen(1))
    weights = net.normalized_weights()
    norms = [torch.linalg.matrix_norm(w, ord=2).item() for w in weights]
    assert max(norms) <= 0.9 * (1 + 1e-9)
    assert max(norms) >= 0.9 * (1 - 1e-9)  # the normalisation is active
    assert net.lipschitz_bound() <= 0.9**3 * (1 + 1e-8)
    # finite differences on random pairs, with a shared (arbitrary) context
    gen = _gen(2)
    a = torch.randn(4000, 3, generator=gen, dtype=torch.float64)
    b = a + 0.3 * torch.randn(4000, 3, generator=gen, dtype=torch.float64)
    c = 3.0 * torch.randn(4000, 2, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        ratio = (net(a, c) - net(b, c)).norm(dim=-1) / (a - b).norm(dim=-1)
    assert ratio.max().item() < 0.9**3
    assert ratio.max().item() > 0.01  # g is not trivially flat


@pytest.mark.parametrize("activation", ["lipswish", "elu", "tanh"])
def test_closed_form_jacobian_matches_autograd(activation):
    net = LipschitzMLP(3, (8, 5), context_dim=1, activation=activation).double()
    perturb_parameters(net, 0.5, _gen(4))
    x = torch.randn(6, 3, generator=_gen(5), dtype=torch.float64)
    c = torch.randn(6, 1, generator=_gen(6), dtype=torch.float64)
    weights = net.normalized_weights()
    out, jac = net.evaluate_with_jacobian(x, c, weights)
    assert torch.allclose(out, net.evaluate(x, c, weights))
    for i in range(6):
        ref = torch.autograd.functional.jacobian(
            lambda v, i=i: net.evaluate(v, c[i], weights), x[i]
        )
        assert torch.allclose(jac[i], ref, atol=1e-12)


# ---------------------------------------------------------------------- log-determinants
def test_power_series_converges_to_the_exact_logdet():
    jac = _contraction(4, 0.8)
    exact = F.exact_logdet(jac).item()
    errors = []
    for n in (1, 2, 5, 10, 20, 40, 80):
        err = abs(F.power_series_logdet(jac, n).item() - exact)
        bound = 4 * 0.8 ** (n + 1) / ((n + 1) * (1 - 0.8))
        assert err <= bound + 1e-14
        errors.append(err)
    assert errors[-1] < 1e-8
    assert errors[0] > 1e-2  # the first terms alone are visibly wrong


def test_russian_roulette_estimator_is_unbiased():
    jac = _contraction(4, 0.6, seed=1)
    exact = F.exact_logdet(jac).item()

    def vjp(w, create_graph):
        return w @ jac

    probes = torch.zeros(64, 4, dtype=torch.float64)
    gen = _gen(7)

    def calls(**options) -> torch.Tensor:
        # independent draws: one series length per call, averaged over 64 probes
        return torch.stack(
            [
                F.russian_roulette_logdet(
                    vjp, F.hutchinson_noise(probes, generator=gen), generator=gen, **options
                ).mean()
                for _ in range(600)
            ]
        )

    draws = calls()
    mean, se = draws.mean().item(), draws.std().item() / math.sqrt(len(draws))
    assert abs(mean - exact) < 4 * se
    # The test has power: the two always-computed terms without the roulette are biased by
    # far more than the standard error.
    truncated = calls(stop_prob=1.0)
    assert abs(truncated.mean().item() - exact) > 10 * se


@pytest.mark.parametrize("neumann_grad", [True, False])
def test_russian_roulette_expectation_over_the_series_length_is_exact(neumann_grad):
    # Probing with every basis vector gives exact traces, so averaging over the law of the
    # number of extra terms, P(K = j) = p (1 - p)^j, must give the exact logdet and gradient
    # up to the (negligible) mass beyond j = 150: no Monte Carlo noise at all.
    a = _contraction(4, 1.0, seed=3)
    theta = torch.tensor(0.6, dtype=torch.float64, requires_grad=True)
    eye = torch.eye(4, dtype=torch.float64)
    exact = F.exact_logdet(theta * a)
    (exact_grad,) = torch.autograd.grad(exact, theta)

    def vjp(w, create_graph):
        return w @ (theta * a)

    p = 0.4
    value, grad = 0.0, 0.0
    for extra in range(150):
        est = F.russian_roulette_logdet(
            vjp, eye, stop_prob=p, neumann_grad=neumann_grad, n_extra_terms=extra
        ).sum()
        (g,) = torch.autograd.grad(est, theta)
        value += p * (1 - p) ** extra * est.item()
        grad += p * (1 - p) ** extra * g.item()
    assert value == pytest.approx(exact.item(), abs=1e-12)
    assert grad == pytest.approx(exact_grad.item(), abs=1e-12)
    # without the reweighting by 1 / P(N >= k), the two exact terms alone are far off
    truncated = F.russian_roulette_logdet(vjp, eye, stop_prob=1.0).sum().item()
    assert abs(truncated - exact.item()) > 1e-2


def test_russian_roulette_neumann_gradient_is_unbiased():
    a = _contraction(3, 1.0, seed=2)
    theta = torch.tensor(0.55, dtype=torch.float64, requires_grad=True)
    eye = torch.eye(3, dtype=torch.float64)
    exact_grad = torch.trace(torch.linalg.solve(eye + theta.detach() * a, a)).item()

    def vjp(w, create_graph):
        return w @ (theta * a)

    probes = torch.zeros(64, 3, dtype=torch.float64)
    gen = _gen(8)
    grads = []
    for _ in range(400):
        v = F.hutchinson_noise(probes, "gaussian", generator=gen)
        est = F.russian_roulette_logdet(vjp, v, generator=gen).mean()
        (g,) = torch.autograd.grad(est, theta)
        grads.append(g)
    grads = torch.stack(grads)
    mean, se = grads.mean().item(), grads.std().item() / math.sqrt(len(grads))
    assert abs(mean - exact_grad) < 4 * se
    assert se < 0.05 * abs(exact_grad)


def test_layer_estimator_is_unbiased_for_the_exact_logdet():
    layer = _strong_block(3, hidden=(16,), coeff=0.7)
    points = torch.randn(3, 3, generator=_gen(9), dtype=torch.float64)
    y = points.repeat_interleave(32, dim=0)
    layer.logdet_mode = "exact"
    z_exact, exact = layer.inverse(points)
    layer.logdet_mode = "russian_roulette"
    draws = []
    with torch.no_grad():  # the estimator also runs without autograd enabled
        for _ in range(200):
            z, ld = layer.inverse(y)
            draws.append(ld.reshape(3, 32).mean(-1))
    assert torch.allclose(z.reshape(3, 32, 3)[:, 0], z_exact)  # the map is deterministic
    draws = torch.stack(draws)
    mean, se = draws.mean(0), draws.std(0) / math.sqrt(len(draws))
    assert bool(((mean - exact).abs() < 4 * se).all()), (mean, exact, se)
    assert bool((se < 0.05).all())


# ---------------------------------------------------------------------- the block
def test_fixed_point_inverse_is_accurate(dtype):
    layer = _strong_block(4, hidden=(32, 32), context_dim=2).to(dtype)
    z = 3.0 * torch.randn(200, 4, generator=_gen(10), dtype=torch.float64).to(dtype)
    c = torch.randn(200, 2, generator=_gen(11), dtype=torch.float64).to(dtype)
    y, ld = layer(z, c)
    with torch.no_grad():
        weights = layer.net.normalized_weights()
        residual = y + layer.net.evaluate(y, c, weights) - z
    tol = 1e-9 if dtype == torch.float64 else 2e-5
    assert residual.abs().max().item() < tol * (1 + z.abs().max().item())
    z2, ld2 = layer.inverse(y, c)
    assert torch.allclose(z2, z, atol=tol * 10, rtol=0)
    assert torch.allclose(ld + ld2, torch.zeros_like(ld), atol=tol * 10)
    assert (y - z).abs().max().item() > 0.5  # far from the identity
    assert ld.abs().max().item() > 0.01  # a non-trivial volume change


def test_iteration_cap_raises_a_clear_error():
    layer = _strong_block(3, hidden=(16,), max_iterations=2)
    with pytest.raises(ConvergenceError, match="did not converge in 2 iterations"):
        layer(torch.randn(5, 3, generator=_gen(), dtype=torch.float64))


def test_forward_parameter_gradients_match_finite_differences():
    layer = _strong_block(2, hidden=(8,), context_dim=1)
    z = torch.randn(5, 2, generator=_gen(12), dtype=torch.float64)
    c = torch.randn(5, 1, generator=_gen(13), dtype=torch.float64)
    w = torch.randn(5, 2, generator=_gen(14), dtype=torch.float64)

    def loss() -> torch.Tensor:
        y, ld = layer(z, c)
        return (y * w).sum() + ld.sum()

    layer.zero_grad()
    loss().backward()
    eps = 1e-6
    for name, p in layer.named_parameters():
        for index in [(0,) * p.dim(), tuple(s - 1 for s in p.shape)]:
            with torch.no_grad():
                p[index] += eps
                up = loss().item()
                p[index] -= 2 * eps
                down = loss().item()
                p[index] += eps
            numeric = (up - down) / (2 * eps)
            assert p.grad[index].item() == pytest.approx(numeric, rel=1e-4, abs=1e-6), name


def test_eval_mode_is_deterministic_and_survives_state_dict():
    layer = _strong_block(3, hidden=(16,))
    layer(torch.randn(4, 3, dtype=torch.float64))  # converge the power iterations
    layer.eval()
    x = torch.randn(10, 3, generator=_gen(15), dtype=torch.float64)
    y1, ld1 = layer(x)
    y2, ld2 = layer(x)
    assert torch.equal(y1, y2) and torch.equal(ld1, ld2)
    fresh = InvertibleResidual(3, hidden=(16,)).double().eval()
    fresh.load_state_dict(layer.state_dict())
    y3, ld3 = fresh(x)
    assert torch.equal(y1, y3) and torch.equal(ld1, ld3)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"coeff": 1.0}, "coeff in \\(0, 1\\)"),
        ({"logdet": "trace"}, "logdet must be one of"),
        ({"n_exact_terms": 0}, "n_exact_terms >= 1"),
        ({"stop_prob": 0.0}, "stop_prob in \\(0, 1\\]"),
        ({"activation": "relu"}, "activation must be one of"),
        ({"max_iterations": 0}, "max_iterations >= 1"),
        ({"noise": "uniform"}, "noise must be"),
    ],
)
def test_bad_arguments_raise_value_errors(options, message):
    with pytest.raises(ValueError, match=message):
        InvertibleResidual(3, **options)
    with pytest.raises(ValueError, match="InvertibleResidual"):
        InvertibleResidual(0)


def test_auto_logdet_mode_depends_on_the_dimension():
    assert InvertibleResidual(16, hidden=(4,)).logdet_mode == "exact"
    assert InvertibleResidual(17, hidden=(4,)).logdet_mode == "russian_roulette"


# ---------------------------------------------------------------------- flows
def test_residual_flow_density_integrates_to_one():
    torch.manual_seed(0)
    flow = ResidualFlow(2, layers=2, hidden=(16,), logdet="exact", actnorm=True).double()
    perturb_parameters(flow, 0.5, _gen(16))
    data = torch.randn(256, 2, generator=_gen(17), dtype=torch.float64) * 1.5 + 0.5
    initialize_actnorm(flow, data)
    assert all(bool(m.initialized) for m in flow.modules() if isinstance(m, ActNorm))
    flow.eval()
    scale, n = 4.0, 20000
    x = scale * torch.randn(n, 2, generator=_gen(18), dtype=torch.float64)
    log_proposal = StandardNormal(2).double().log_prob(x / scale) - 2 * math.log(scale)
    with torch.no_grad():
        weights = torch.exp(flow.log_prob(x) - log_proposal)
    mean, se = weights.mean().item(), weights.std().item() / math.sqrt(n)
    assert abs(mean - 1.0) < 4 * se
    assert se < 0.03
    # sampling and density agree: sample_and_log_prob (fixed points) vs log_prob (explicit)
    with torch.no_grad():
        y, log_q = flow.sample_and_log_prob((64,), generator=_gen(19))
        assert torch.allclose(flow.log_prob(y), log_q, atol=1e-8)


@pytest.mark.parametrize("neumann_grad", [True, False])
def test_estimator_forward_kl_is_finite_and_differentiable(neumann_grad):
    flow = ResidualFlow(
        3, layers=2, hidden=(16,), logdet="russian_roulette", neumann_grad=neumann_grad
    )
    x = torch.randn(32, 3, generator=_gen(20))
    loss = forward_kl(flow, x)
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in flow.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert all(bool((g != 0).any()) for g in grads)


def test_estimator_reverse_kl_through_fixed_points_is_differentiable():
    # sampling runs the fixed-point direction: implicit gradients plus the estimator at y
    flow = ResidualFlow(2, layers=2, hidden=(16,), logdet="russian_roulette")
    loss = reverse_kl(flow, lambda x: 0.5 * (x**2).sum(-1), 16, generator=_gen(21))
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in flow.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert all(bool((g != 0).any()) for g in grads)


def test_conditional_preset_and_reverse_direction():
    flow = ResidualFlow(2, context_dim=3, layers=2, hidden=(8,))
    c = torch.randn(3)
    x, log_q = flow.sample_and_log_prob((5,), context=c)
    assert torch.allclose(flow.log_prob(x, c.expand(5, 3)), log_q, atol=1e-4)
    # Inverse(block): explicit map for sampling, fixed point for densities
    block = InvertibleResidual(2, hidden=(8,))
    rev = Flow(StandardNormal(2), Inverse(block))
    y, log_q = rev.sample_and_log_prob((5,))
    assert torch.allclose(rev.log_prob(y), log_q, atol=1e-4)
