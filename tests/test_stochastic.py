"""Stochastic layers (Langevin, Metropolis-Hastings, HMC), the SNF preset, and the objectives
alpha_divergence / mixed_kl / reverse_kl_path_gradient.

Every property asserted here can fail: exact constancy of log weights when the base equals an
invariant target, unbiasedness of ULA weights, the small-step limit of the ULA path weight,
stationary moments (which catch a wrong Metropolis ratio), importance-sampled log Z of the
double well against quadrature, and closed-form Gaussian values for the objectives.
"""

from __future__ import annotations

import copy
import inspect
import math

import pytest
import torch

import manifoldflows.stochastic as S
from manifoldflows import Chain, Flow, Inverse, StochasticFlowError, Transform
from manifoldflows.distributions import DiagNormal, StandardNormal, VonMises, VonMisesFisher
from manifoldflows.errors import InvalidInput
from manifoldflows.losses import (
    alpha_divergence,
    ess,
    forward_kl,
    log_importance_weights,
    log_partition,
    mixed_kl,
    reverse_kl,
    reverse_kl_path_gradient,
)
from manifoldflows.presets import SNF, RealNVP
from manifoldflows.spaces import Euclidean, Sphere, Torus
from manifoldflows.stochastic import HMC, AnnealedEnergy, MetropolisHastings, OverdampedLangevin
from manifoldflows.testing import perturb_parameters

from .cases.stochastic import CASES

F64 = torch.float64

# ------------------------------------------------------------------ analytic targets
MU = torch.tensor([0.5, -0.3], dtype=F64)
SIGMA = torch.tensor([1.0, 0.6], dtype=F64)
GAUSS_LOG_Z = float(torch.log(SIGMA).sum() + math.log(2 * math.pi))


def gauss_energy(x: torch.Tensor) -> torch.Tensor:
    """``|(x - MU) / SIGMA|^2 / 2``: N(MU, diag(SIGMA^2)) with log Z = GAUSS_LOG_Z."""
    mu, sigma = MU.to(x), SIGMA.to(x)
    return 0.5 * (((x - mu) / sigma) ** 2).sum(-1)


def double_well(x: torch.Tensor) -> torch.Tensor:
    """``x1^4 - 6 x1^2 - 0.5 x1 + x2^2 / 2``."""
    x1 = x[..., 0]
    return x1**4 - 6.0 * x1**2 - 0.5 * x1 + 0.5 * x[..., 1] ** 2


def double_well_log_z() -> float:
    """Exact log Z of :func:`double_well` by quadrature (x2 integrates to sqrt(2 pi))."""
    t = torch.linspace(-6.0, 6.0, 240_001, dtype=F64)
    f = torch.exp(-(t**4 - 6.0 * t**2 - 0.5 * t))
    return math.log(torch.trapezoid(f, t).item()) + 0.5 * math.log(2 * math.pi)


TORUS_LOC = torch.tensor([1.0, -2.5], dtype=F64)
TORUS_KAPPA = torch.tensor([2.0, 0.7], dtype=F64)


def torus_energy(x: torch.Tensor) -> torch.Tensor:
    """Minus the log of an independent von Mises density (unnormalised)."""
    return -(TORUS_KAPPA.to(x) * torch.cos(x - TORUS_LOC.to(x))).sum(-1)


SPHERE_MU = torch.tensor([0.0, 0.6, 0.8], dtype=F64)
SPHERE_KAPPA = 4.0


def sphere_energy(x: torch.Tensor) -> torch.Tensor:
    """``-kappa <mu, x>``: a von Mises-Fisher target on S^2."""
    return -SPHERE_KAPPA * (x * SPHERE_MU.to(x)).sum(-1)


def exact_double(dist, **values):
    """``dist`` in float64 with its parameters/buffers set exactly to ``values``."""
    dist = dist.double()
    with torch.no_grad():
        for name, value in values.items():
            getattr(dist, name).copy_(value)
    return dist


def gaussian_base() -> DiagNormal:
    return exact_double(DiagNormal(2, learnable=False), loc=MU, log_scale=SIGMA.log())


# ------------------------------------------------------------------ registry
def test_every_exported_stochastic_layer_has_a_checker_case():
    exported = {
        obj
        for name in S.__all__
        if inspect.isclass(obj := getattr(S, name))
        and issubclass(obj, Transform)
        and obj is not S.StochasticTransform
    }
    covered = {case.cls for case in CASES}
    missing = sorted(c.__name__ for c in exported - covered)
    assert exported and not missing, f"stochastic layers without a checker case: {missing}"


# ------------------------------------------------------------------ (1) invariance
INVARIANT_LAYERS = {
    "mh": lambda: MetropolisHastings(2, gauss_energy, steps=5, proposal_scale=0.8),
    "mh-per-dim": lambda: MetropolisHastings(
        2, gauss_energy, steps=5, proposal_scale=torch.tensor([1.0, 0.3])
    ),
    "mala": lambda: OverdampedLangevin(2, gauss_energy, steps=5, step_size=0.3, metropolis=True),
    "hmc": lambda: HMC(2, gauss_energy, steps=2, leapfrog_steps=4, step_size=0.4),
    "chain": lambda: Chain(
        MetropolisHastings(2, gauss_energy, steps=2),
        HMC(2, gauss_energy, leapfrog_steps=3, step_size=0.3),
        OverdampedLangevin(2, gauss_energy, steps=2, step_size=0.2, metropolis=True),
    ),
}


@pytest.mark.parametrize("name", list(INVARIANT_LAYERS))
def test_invariant_layers_give_exactly_constant_log_weights(name):
    layer = INVARIANT_LAYERS[name]().double()
    flow = Flow(gaussian_base(), layer)
    assert flow.stochastic
    z = flow.base.sample((500,))
    y, path = flow.transform(z)
    moved = (y != z).any(-1).float().mean().item()
    assert moved > 0.5, f"fraction of points moved: {moved}"
    x, log_w = flow.sample_and_log_weight(gauss_energy, (500,))
    assert torch.allclose(log_w, torch.full_like(log_w, GAUSS_LOG_Z), atol=1e-10, rtol=0)
    # The weights are those of the base sample: the path weight telescopes to u(y) - u(z).
    assert torch.allclose(path, gauss_energy(y) - gauss_energy(z), atol=1e-10)


def test_ula_weights_are_unbiased_but_not_constant():
    layer = OverdampedLangevin(2, gauss_energy, steps=3, step_size=0.2).double()
    flow = Flow(gaussian_base(), layer)
    _, log_w = flow.sample_and_log_weight(gauss_energy, (40_000,))
    w = torch.exp(log_w - GAUSS_LOG_Z)  # E[w] = 1 exactly
    se = w.std() / math.sqrt(w.numel())
    assert w.std() > 0.05  # ULA does not leave the target invariant
    assert abs(w.mean().item() - 1.0) < 4 * se.item()


def test_ula_path_weight_equals_the_gaussian_kernel_ratio():
    layer = OverdampedLangevin(2, double_well, step_size=torch.tensor([0.05, 0.2])).double()
    eps = layer.step_size.detach()
    x = torch.randn(100, 2, dtype=F64)
    y, delta = layer(x)

    def grad(v):
        g1 = 4 * v[..., 0] ** 3 - 12 * v[..., 0] - 0.5
        return torch.stack([g1, v[..., 1]], -1)

    std = torch.sqrt(2 * eps)
    fwd = torch.distributions.Normal(x - eps * grad(x), std).log_prob(y).sum(-1)
    back = torch.distributions.Normal(y - eps * grad(y), std).log_prob(x).sum(-1)
    assert torch.allclose(delta, back - fwd, atol=1e-9)


# ------------------------------------------------------------------ stationary moments
def _run_chain(layer, x, rounds):
    with torch.no_grad():
        for _ in range(rounds):
            x, _ = layer(x)
    return x


@pytest.mark.parametrize(
    "kind, expected_var",
    [
        ("ula", 1.0 / (1.0 - 0.5 / 2)),  # ULA on N(0, 1) is biased: var = 1 / (1 - eps / 2)
        ("mala", 1.0),
        ("mh", 1.0),
        ("hmc", 1.0),
    ],
)
def test_stationary_variance_of_the_kernels(kind, expected_var):
    def u(x):
        return 0.5 * (x**2).sum(-1)

    layer = {
        "ula": lambda: OverdampedLangevin(1, u, steps=10, step_size=0.5),
        "mala": lambda: OverdampedLangevin(1, u, steps=10, step_size=0.5, metropolis=True),
        "mh": lambda: MetropolisHastings(1, u, steps=10, proposal_scale=2.0),
        "hmc": lambda: HMC(1, u, steps=5, leapfrog_steps=3, step_size=1.2),
    }[kind]().double()
    x = _run_chain(layer, 3.0 + 0.1 * torch.randn(20_000, 1, dtype=F64), 4)
    var = x.var().item()
    se = var * math.sqrt(2 / x.numel())
    assert abs(x.mean().item()) < 5 * math.sqrt(var / x.numel())
    assert abs(var - expected_var) < 5 * se + 0.02


# ------------------------------------------------------------------ (2) small-step limit
def test_ula_small_step_limit():
    """Delta S -> 0 like sqrt(eps), and Delta S - (u(y) - u(x)) = O(eps^1.5)."""
    x = torch.randn(200, 2, dtype=F64)
    sizes, deltas, residuals = [1e-2, 1e-4, 1e-6], [], []
    for eps in sizes:
        layer = OverdampedLangevin(2, double_well, step_size=eps).double()
        torch.manual_seed(3)  # the same noise for every step size
        y, delta = layer(x)
        deltas.append(delta.abs().mean().item())
        residuals.append((delta - (double_well(y) - double_well(x))).abs().mean().item())
    slope_delta = math.log(deltas[0] / deltas[-1]) / math.log(sizes[0] / sizes[-1])
    slope_res = math.log(residuals[0] / residuals[-1]) / math.log(sizes[0] / sizes[-1])
    assert deltas[-1] < 1e-2
    assert abs(slope_delta - 0.5) < 0.1
    assert abs(slope_res - 1.5) < 0.2


# ------------------------------------------------------------------ (3) no density
def test_log_prob_on_a_stochastic_chain_raises():
    flow = Flow(StandardNormal(2), Chain(MetropolisHastings(2, gauss_energy)))
    x = torch.randn(3, 2)
    with pytest.raises(StochasticFlowError):
        flow.log_prob(x)
    with pytest.raises(StochasticFlowError):
        flow.sample_and_log_prob((3,))
    with pytest.raises(StochasticFlowError):
        reverse_kl_path_gradient(flow, gauss_energy, 4)
    assert Inverse(HMC(2, gauss_energy)).stochastic


def test_inverse_runs_the_same_kernel_backwards():
    layer = HMC(2, gauss_energy, leapfrog_steps=3, step_size=0.4).double()
    y = torch.randn(50, 2, dtype=F64)
    x, back = layer.inverse(y)
    assert not torch.equal(x, y)
    # The reverse path weight is log q_fwd(y|x) - log q_back(x|y) = u(x) - u(y).
    assert torch.allclose(back, gauss_energy(x) - gauss_energy(y), atol=1e-10)
    x2, back2 = Inverse(layer)(y)
    assert x2.shape == y.shape and back2.shape == (50,)


def test_bad_constructor_arguments_name_the_class():
    with pytest.raises(ValueError, match="MetropolisHastings"):
        MetropolisHastings(2, gauss_energy, steps=0)
    with pytest.raises(ValueError, match="MetropolisHastings.*scale"):
        MetropolisHastings(Sphere(2), sphere_energy, proposal_scale=torch.tensor([0.1, 0.2]))
    with pytest.raises(ValueError, match="OverdampedLangevin"):
        OverdampedLangevin(Sphere(2), sphere_energy)
    with pytest.raises(ValueError, match="HMC.*step"):
        HMC(2, gauss_energy, step_size=-0.1)
    with pytest.raises(ValueError, match="HMC.*energy"):
        HMC(2, 3.0)
    with pytest.raises(ValueError, match="SNF"):
        SNF(2, gauss_energy, stochastic="gibbs")
    with pytest.raises(InvalidInput, match="batch shape"):
        MetropolisHastings(2, lambda x: x)(torch.zeros(3, 2))


# ------------------------------------------------------------------ (4) log Z of the double well
def test_double_well_log_z_from_annealed_mh():
    """Pure annealed MH from N(0, I) (flow_layers=0): an AIS-like unbiased estimate."""
    log_z = double_well_log_z()
    assert abs(log_z - 10.293480) < 1e-5  # the reference value of the issue
    flow = SNF(2, double_well, flow_layers=0, blocks=4, stochastic="mh", steps=5).double()
    _, log_w = log_importance_weights(flow, double_well, 4000)
    est, se = log_partition(log_w)
    assert ess(log_w) > 0.05
    assert abs(est.item() - log_z) < 3 * se.item() + 0.02


def test_snf_trains_end_to_end_and_estimates_log_z():
    log_z = double_well_log_z()
    flow = SNF(
        2, double_well, flow_layers=2, blocks=2, hidden=(16,), stochastic="mala", steps=5
    ).double()
    start = {name: p.detach().clone() for name, p in flow.named_parameters()}
    opt = torch.optim.Adam(flow.parameters(), lr=5e-3)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = reverse_kl(flow, double_well, 128)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 0.3
    last = f"transform.layers.{len(flow.transform) - 1}.raw_step"
    for name, p in flow.named_parameters():
        # The final MALA block targets u itself: its path weight u(y) - u(x) cancels u(y) in
        # log w, so the objective does not depend on it. Everything else is trained.
        assert torch.equal(p, start[name]) == (name == last), name
    assert sum(losses[-10:]) / 10 > -log_z - 0.1  # reverse KL >= -log Z (up to noise)
    _, log_w = log_importance_weights(flow, double_well, 4000)
    est, se = log_partition(log_w)
    assert abs(est.item() - log_z) < 3 * se.item() + 0.02


@pytest.mark.parametrize("kind", ["langevin", "mh", "hmc"])
def test_snf_kinds_build_and_sample(kind):
    flow = SNF(2, double_well, flow_layers=1, blocks=2, hidden=(8,), stochastic=kind, steps=2)
    x, log_w = flow.sample_and_log_weight(double_well, (6,))
    assert x.shape == (6, 2) and log_w.shape == (6,) and bool(torch.isfinite(log_w).all())
    kinds = [type(layer) for layer in flow.transform if layer.stochastic]
    assert len(kinds) == 2
    assert isinstance(flow.transform[1].target, AnnealedEnergy)  # annealed intermediate block
    assert flow.transform[-1].target is double_well


# ------------------------------------------------------------------ (5) manifolds
def test_torus_mh_and_hmc_keep_von_mises_invariant():
    log_z = float(torch.log(2 * math.pi * torch.special.i0(TORUS_KAPPA)).sum())
    base = exact_double(
        VonMises(Torus(2), learnable=False),
        loc=TORUS_LOC,
        raw_concentration=TORUS_KAPPA + torch.log(-torch.expm1(-TORUS_KAPPA)),
    )
    for layer in (
        MetropolisHastings(Torus(2), torus_energy, steps=5, proposal_scale=2.0),
        HMC(Torus(2), torus_energy, steps=2, leapfrog_steps=4, step_size=0.5),
    ):
        flow = Flow(base, layer.double())
        x, log_w = flow.sample_and_log_weight(torus_energy, (1000,))
        assert bool(Torus(2).contains(x).all())
        assert torch.allclose(log_w, torch.full_like(log_w, log_z), atol=1e-10, rtol=0)


def test_sphere_mh_keeps_von_mises_fisher_invariant():
    k = SPHERE_KAPPA
    log_z = math.log(4 * math.pi * math.sinh(k) / k)
    kappa = torch.tensor(k, dtype=F64)
    base = exact_double(
        VonMisesFisher(Sphere(2), learnable=False),
        loc=SPHERE_MU,
        raw_concentration=kappa + torch.log(-torch.expm1(-kappa)),
    )
    layer = MetropolisHastings(Sphere(2), sphere_energy, steps=20, proposal_scale=0.7)
    flow = Flow(base, layer.double())
    x, log_w = flow.sample_and_log_weight(sphere_energy, (1000,))
    assert (x.norm(dim=-1) - 1).abs().max() < 1e-6
    assert torch.allclose(log_w, torch.full_like(log_w, log_z), atol=1e-10, rtol=0)


@pytest.mark.parametrize("scale", [0.5, 2.5])  # 2.5: many proposals wrap past the antipode
def test_sphere_mh_converges_to_von_mises_fisher(scale):
    """From uniform points, the chain's mean resultant length reaches coth(k) - 1/k."""
    k = SPHERE_KAPPA
    layer = MetropolisHastings(Sphere(2), sphere_energy, steps=10, proposal_scale=scale).double()
    x = _run_chain(layer, Sphere(2).random_uniform((6000,), dtype=F64), 5)
    assert (x.norm(dim=-1) - 1).abs().max() < 1e-6
    c = (x * SPHERE_MU).sum(-1)
    expected = 1 / math.tanh(k) - 1 / k
    assert abs(c.mean().item() - expected) < 5 * c.std().item() / math.sqrt(c.numel())


def test_torus_mh_converges_to_von_mises():
    layer = MetropolisHastings(Torus(2), torus_energy, steps=10, proposal_scale=1.5).double()
    x = _run_chain(layer, Torus(2).random_uniform((6000,), dtype=F64), 4)
    c = torch.cos(x - TORUS_LOC)
    expected = torch.special.i1(TORUS_KAPPA) / torch.special.i0(TORUS_KAPPA)
    se = c.std(0) / math.sqrt(c.shape[0])
    assert bool(((c.mean(0) - expected).abs() < 5 * se).all())


# ------------------------------------------------------------------ (6) path gradient
def _kl_gradient_analytic(q: DiagNormal):
    """d KL(q || N(MU, SIGMA^2)) / d(loc, log_scale) for diagonal Gaussians."""
    m, s = q.loc.detach(), q.log_scale.detach().exp()
    return (m - MU) / SIGMA**2, -1.0 + s**2 / SIGMA**2


def _gradients(q, objective, batches, n):
    grads = []
    for _ in range(batches):
        q.zero_grad()
        objective(q, gauss_energy, n).backward()
        grads.append(torch.cat([p.grad.flatten() for p in q.parameters()]))
    return torch.stack(grads)


def test_path_gradient_is_unbiased_like_the_reverse_kl_gradient():
    q = DiagNormal(2, loc=torch.tensor([0.1, 0.4]), scale=torch.tensor([1.4, 0.5])).double()
    exact = torch.cat(_kl_gradient_analytic(q))
    for objective in (reverse_kl_path_gradient, reverse_kl):
        g = _gradients(q, objective, 20, 500)
        mean, se = g.mean(0), g.std(0) / math.sqrt(g.shape[0])
        assert bool(((mean - exact).abs() < 4 * se + 1e-9).all()), objective.__name__


def test_path_gradient_matches_reverse_kl_in_expectation_for_a_flow():
    flow = RealNVP(2, layers=2, hidden=(8,)).double()
    perturb_parameters(flow, 0.3)
    directions = torch.randn(3, sum(p.numel() for p in flow.parameters()), dtype=F64)
    diffs = []
    for _ in range(20):
        pair = []
        for objective in (reverse_kl_path_gradient, reverse_kl):
            flow.zero_grad()
            objective(flow, gauss_energy, 300).backward()
            pair.append(torch.cat([p.grad.flatten() for p in flow.parameters()]))
        diffs.append(directions @ (pair[0] - pair[1]))
    d = torch.stack(diffs)
    t = d.mean(0) / (d.std(0) / math.sqrt(d.shape[0]))
    assert bool((t.abs() < 4.5).all()), t


def test_path_gradient_vanishes_per_sample_at_the_optimum():
    flow = RealNVP(2, layers=2, hidden=(8,)).double()
    perturb_parameters(flow, 0.3)
    frozen = copy.deepcopy(flow).requires_grad_(False)

    def target(x):  # q = p exactly: u = -log q
        return -frozen.log_prob(x)

    for _ in range(3):  # single samples: the per-sample gradient is zero
        flow.zero_grad()
        reverse_kl_path_gradient(flow, target, 1).backward()
        stl = torch.cat([p.grad.flatten() for p in flow.parameters()])
        assert stl.abs().max() < 1e-10
    flow.zero_grad()
    reverse_kl(flow, target, 1).backward()  # the ordinary estimator is noisy there
    ordinary = torch.cat([p.grad.flatten() for p in flow.parameters()])
    assert ordinary.abs().max() > 1e-3


# ------------------------------------------------------------------ (7) alpha divergence
def _gaussian_alpha_log_integral(alpha, mq, sq, mp, sp) -> torch.Tensor:
    """log int N(x; mp, sp^2)^alpha N(x; mq, sq^2)^(1 - alpha) dx, summed over dimensions."""
    a, b = alpha / sp**2, (1 - alpha) / sq**2
    lam = a + b
    m = (a * mp + b * mq) / lam
    log_norm = -0.5 * alpha * torch.log(2 * math.pi * sp**2) - 0.5 * (1 - alpha) * torch.log(
        2 * math.pi * sq**2
    )
    quad = a * mp**2 + b * mq**2 - lam * m**2
    return (log_norm + 0.5 * torch.log(2 * math.pi / lam) - 0.5 * quad).sum()


@pytest.mark.parametrize("alpha", [2.0, 0.5])
def test_alpha_divergence_equals_the_gaussian_closed_form(alpha):
    loc, scale = torch.tensor([0.0, 0.2], dtype=F64), torch.tensor([1.1, 0.7], dtype=F64)
    q = DiagNormal(2, loc=loc.float(), scale=scale.float()).double()
    n = 100_000
    value = alpha_divergence(q, gauss_energy, n, alpha=alpha)
    exact = (alpha * GAUSS_LOG_Z + _gaussian_alpha_log_integral(alpha, loc, scale, MU, SIGMA)) / (
        alpha - 1
    )
    # Delta-method standard error of log(mean(w^alpha)) / (alpha - 1).
    _, log_w = log_importance_weights(q, gauss_energy, n)
    wa = torch.exp(alpha * (log_w - log_w.max()))
    se = (wa.std() / (math.sqrt(n) * wa.mean())).item() / abs(alpha - 1)
    assert abs(value.item() - exact.item()) < 4 * se + 1e-3


def test_alpha_divergence_gradient_matches_the_closed_form():
    q = DiagNormal(2, loc=torch.tensor([0.0, 0.2]), scale=torch.tensor([1.1, 0.7])).double()
    loc = q.loc.detach().clone().requires_grad_(True)
    log_scale = q.log_scale.detach().clone().requires_grad_(True)
    exact = _gaussian_alpha_log_integral(2.0, loc, log_scale.exp(), MU, SIGMA)
    exact_grad = torch.cat(torch.autograd.grad(exact, (loc, log_scale)))
    grads = []
    for _ in range(10):
        q.zero_grad()
        alpha_divergence(q, gauss_energy, 20_000).backward()
        grads.append(torch.cat([q.loc.grad, q.log_scale.grad]))
    g = torch.stack(grads)
    se = g.std(0) / math.sqrt(g.shape[0])
    assert bool(((g.mean(0) - exact_grad).abs() < 4 * se + 0.01).all())


def test_alpha_divergence_is_minimal_and_exact_at_q_equals_p():
    value = alpha_divergence(gaussian_base(), gauss_energy, 64)
    assert abs(value.item() - 2 * GAUSS_LOG_Z) < 1e-10
    with pytest.raises(InvalidInput, match="alpha"):
        alpha_divergence(gaussian_base(), gauss_energy, 8, alpha=1.0)
    with pytest.raises(InvalidInput, match="alpha"):
        alpha_divergence(gaussian_base(), gauss_energy, 8, alpha=-2.0)


def test_mixed_kl_is_the_weighted_sum_of_both_objectives():
    q = DiagNormal(2, loc=torch.tensor([0.3, 0.0])).double()
    x = torch.randn(50, 2, dtype=F64)
    g = torch.Generator().manual_seed(5)
    mixed = mixed_kl(q, gauss_energy, 200, x, weight=0.3, generator=g)
    g = torch.Generator().manual_seed(5)
    expected = 0.3 * forward_kl(q, x) + 0.7 * reverse_kl(q, gauss_energy, 200, generator=g)
    assert torch.allclose(mixed, expected, atol=1e-12)
    assert torch.equal(mixed_kl(q, gauss_energy, 10, x, weight=1.0), forward_kl(q, x))
    assert torch.isfinite(mixed_kl(q, gauss_energy, 10, None, weight=0.0))
    with pytest.raises(InvalidInput, match="weight"):
        mixed_kl(q, gauss_energy, 10, x, weight=1.5)


def test_euclidean_space_argument_forms():
    assert MetropolisHastings(3, gauss_energy).domain == Euclidean(3)
    assert OverdampedLangevin(Euclidean(2), gauss_energy).domain == Euclidean(2)


class ModuleEnergy(torch.nn.Module):
    """An energy with a buffer (like physics.Energy): ``.energy(x) = |x - centre|^2 / 2``."""

    def __init__(self):
        super().__init__()
        self.register_buffer("centre", torch.tensor([0.25, -0.5]))

    def energy(self, x):
        return 0.5 * ((x - self.centre) ** 2).sum(-1)


def test_module_energies_follow_the_layer():
    energy = ModuleEnergy()
    layer = HMC(2, energy, leapfrog_steps=2).double()
    assert layer.target is energy and energy.centre.dtype == F64  # a submodule: .to() moves it
    assert "target.centre" in layer.state_dict()
    x = torch.randn(7, 2, dtype=F64)
    y, delta = layer(x)
    assert torch.allclose(delta, energy.energy(y) - energy.energy(x), atol=1e-10)


def test_mh_rejects_proposals_with_infinite_energy():
    def boxed(x):  # +inf outside the box [-1, 1]^2
        inside = (x.abs() <= 1).all(-1)
        return torch.where(inside, 0.5 * (x**2).sum(-1), torch.full_like(x[..., 0], math.inf))

    layer = MetropolisHastings(2, boxed, steps=20, proposal_scale=1.0).double()
    x = 0.5 * torch.rand(200, 2, dtype=F64)
    y, delta = layer(x)
    assert bool((y.abs() <= 1).all()) and bool(torch.isfinite(delta).all())
    assert (y != x).any(-1).float().mean() > 0.5


def test_snf_with_context_and_spline_couplings():
    flow = SNF(
        2,
        double_well,
        flow_layers=2,
        blocks=2,
        hidden=(8,),
        coupling="spline",
        context_dim=3,
        stochastic="hmc",
        steps=1,
        leapfrog_steps=2,
    )
    ctx = torch.randn(4, 3)
    x, log_w = flow.sample_and_log_weight(double_well, (5,), context=ctx)
    assert x.shape == (5, 4, 2) and log_w.shape == (5, 4)
    loss = reverse_kl(flow, double_well, 5, ctx)
    loss.backward()
    assert all(p.grad is not None for p in flow.transform[0].parameters())
