"""One estimator vocabulary and one target protocol: AIS on tori and spheres through the
stochastic layers, estimates per context row, temperature-conditioned targets, the autograd
helper, and the stratified estimator on conditional flows."""

from __future__ import annotations

import math

import pytest
import torch

from manifoldflows import estimators, losses
from manifoldflows.distributions import DiagNormal, Uniform
from manifoldflows.errors import InvalidInput
from manifoldflows.functional.autograd import value_and_grad
from manifoldflows.presets import TorusNSF
from manifoldflows.spaces import Sphere, Torus
from manifoldflows.stochastic import HMC, OverdampedLangevin, annealed_importance_sampling
from manifoldflows.targets import energy_fn, takes_context
from physics import DoubleWell, TemperatureConditioned, sampling, stratified
from physics.toy_manifold import SphereMixture, TorusCorrelated, TorusUnimodal

DT = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def within(est, exact: float, z: float = 4.0) -> bool:
    return abs(float(est.value) - exact) < z * float(est.stderr)


# ----------------------------------------------------------------------------- one vocabulary
def test_one_implementation_behind_every_name():
    assert sampling.log_partition is estimators.log_partition is losses.log_partition
    assert sampling.importance_weights is estimators.importance_weights
    assert sampling.Estimate is estimators.Estimate and sampling.Samples is estimators.Samples
    assert sampling.annealed_importance_sampling is annealed_importance_sampling
    assert stratified.Estimate is estimators.Estimate
    assert losses.log_importance_weights is estimators.log_importance_weights


# ----------------------------------------------------------------------------- AIS on manifolds
@pytest.mark.parametrize("transition, step", [("mh", 0.6), ("langevin", 0.15), ("hmc", 0.3)])
def test_ais_on_the_torus_recovers_the_exact_log_z(transition, step):
    """The issue's failing case: TorusNSF(2) and TorusUnimodal, for every transition."""
    torch.manual_seed(0)
    flow = TorusNSF(2).to(DT)
    target = TorusUnimodal()
    s = annealed_importance_sampling(
        flow, target, 1500, 8, transition=transition, step_size=step, generator=gen(1)
    )
    assert bool(Torus(2).contains(s.x).all())
    assert bool((s.acceptance > 0.2).all()), s.acceptance
    est = s.log_partition()
    assert within(est, target.log_Z), (str(est), target.log_Z)
    # power: the error bar is small enough that a wrong value (log Z off by 0.1) would fail
    assert 4 * float(est.stderr) < 0.1
    assert not within(est, target.log_Z + 0.1)
    assert all(p.grad is None for p in flow.parameters())


@pytest.mark.parametrize(
    "transition, step",
    [("mh", 0.3), ("hmc", 0.2), ("langevin", 0.02)],
    ids=["mh", "geodesic-hmc", "geodesic-mala"],
)
def test_ais_on_the_sphere_recovers_the_exact_log_z(transition, step):
    target = SphereMixture()  # the paper's kappa = 10: plain IS from uniform struggles
    base = Uniform(Sphere(2)).to(DT)
    s = annealed_importance_sampling(
        base, target, 2000, 20, transition=transition, step_size=step, mcmc_steps=2,
        generator=gen(2),
    )  # fmt: skip
    assert bool(Sphere(2).contains(s.x).all())
    est = s.log_partition()
    assert within(est, target.log_Z), (str(est), target.log_Z)
    assert 4 * float(est.stderr) < 0.1 and not within(est, target.log_Z + 0.1)
    # AIS beats plain importance sampling from the same proposal
    plain = estimators.importance_weights(base, target, 2000, generator=gen(3))
    assert float(s.ess()) > 1.5 * float(plain.ess())


def test_ais_float32_and_reproducible_with_a_generator():
    base = Uniform(Torus(2))
    target = TorusCorrelated()
    a = annealed_importance_sampling(base, target, 300, 5, step_size=0.5, generator=gen(4))
    b = annealed_importance_sampling(base, target, 300, 5, step_size=0.5, generator=gen(4))
    assert a.log_w.dtype == torch.float32 and torch.equal(a.log_w, b.log_w)
    assert within(a.log_partition(), target.log_Z, z=5.0)


def test_unadjusted_langevin_on_the_sphere_is_refused_naming_it():
    with pytest.raises(ValueError, match="OverdampedLangevin: the unadjusted kernel .*Sphere"):
        OverdampedLangevin(Sphere(2), lambda x: x[..., 0], metropolis=False)


# ----------------------------------------------------------------------------- stochastic layers
def test_mala_on_the_torus_samples_the_von_mises_target():
    """Wrapped-Gaussian MALA kernel: the chain's circular moment matches I1/I0."""
    kappa, loc = 2.0, 1.0
    u = TorusUnimodal((loc, -2.5), concentration=kappa)
    layer = OverdampedLangevin(Torus(2), u, steps=400, step_size=0.4, metropolis=True).to(DT)
    x = Torus(2).random_uniform((4000,), dtype=DT)
    with torch.no_grad():
        y, delta = layer(x)
    moment = torch.cos(y[:, 0] - loc).mean()
    exact = torch.special.i1(torch.tensor(kappa, dtype=DT)) / torch.special.i0(
        torch.tensor(kappa, dtype=DT)
    )
    assert abs(float(moment - exact)) < 4 * 0.7 / math.sqrt(4000)  # sd(cos) < 0.7
    assert torch.allclose(delta, u.energy(y) - u.energy(x), atol=1e-8)


def test_ula_path_weights_on_the_torus_give_unbiased_log_z():
    """ULA is not invariant; its exact wrapped-kernel path weights still make IS unbiased."""
    target = TorusUnimodal(concentration=1.5)
    layer = OverdampedLangevin(Torus(2), target, steps=3, step_size=0.3).to(DT)
    x = Torus(2).random_uniform((20000,), dtype=DT)
    with torch.no_grad():
        y, delta = layer(x)
    log_w = -target.energy(y) - Uniform(Torus(2)).to(DT).log_prob(x) + delta
    est = estimators.log_partition(log_w)
    assert within(est, target.log_Z) and 4 * float(est.stderr) < 0.05


def test_hmc_run_reports_energies_and_acceptance():
    layer = HMC(2, lambda x: 0.5 * (x**2).sum(-1), steps=3, step_size=0.3).to(DT)
    x = torch.randn(50, 2, dtype=DT)
    y, u0, u1, delta, acc = layer.run(x, gen(5))
    assert torch.allclose(u0, 0.5 * (x**2).sum(-1)) and torch.allclose(u1, 0.5 * (y**2).sum(-1))
    assert torch.allclose(delta, u1 - u0) and acc.shape == (50,) and 0 < float(acc.mean()) <= 1


# ----------------------------------------------------------------------------- per context row
def test_conditional_estimates_per_context_row_with_a_temperature_conditioned_target():
    """u(x | T) = |x|^2 / (2 T): log Z(T) = log(2 pi T); the proposal N(0, s(T)^2) per row."""
    base = TemperatureConditioned(_Harmonic())
    temps = torch.tensor([[0.5], [1.0], [3.0]], dtype=DT)
    q = _ScaledByContext().to(DT)
    s = estimators.importance_weights(q, base, 4000, context=temps, generator=gen(6))
    assert s.x.shape == (4000, 3, 2) and s.log_w.shape == (4000, 3)
    est = estimators.log_partition(s.log_w)
    exact = torch.log(2 * math.pi * temps[:, 0])
    assert est.value.shape == (3,)
    assert bool(((est.value - exact).abs() < 4 * est.stderr).all()), (str(est), exact)
    # power: the rows are told apart (log Z differs by log 2 and log 3 between rows)
    assert float(est.stderr.max()) < 0.05
    # observables per row: E[|x|^2] = 2 T
    mean = estimators.reweighted_mean((s.x**2).sum(-1), s.log_w)
    assert bool(((mean.value - 2 * temps[:, 0]).abs() < 4 * mean.stderr).all())
    # free energies per row: P(x1 > 1) / P(x1 < -1) = 1 by symmetry, dF = 0
    df = estimators.free_energy_difference(s.x, s.log_w, s.x[..., 0] > 1, s.x[..., 0] < -1)
    assert df.value.shape == (3,) and bool((df.value.abs() < 4 * df.stderr).all())
    ess = estimators.effective_sample_size(s.log_w)
    assert ess.shape == (3,) and bool((ess > 0.3).all())
    # AIS per context row too, and losses pass the context to the target
    ais = annealed_importance_sampling(
        q, base, 600, 4, context=temps, step_size=0.5, generator=gen(7)
    )
    ais_est = ais.log_partition()
    assert bool(((ais_est.value - exact).abs() < 5 * ais_est.stderr).all())
    loss = losses.reverse_kl(q, base, 20000, temps, generator=gen(8))
    # reverse KL = E_q[log q + u] = -log Z(T) + KL; the proposal is exact at T = 1 only
    assert float(loss) > -float(exact.mean()) - 0.05


def test_temperature_conditioned_energy_and_forces():
    dw = DoubleWell()
    hot = TemperatureConditioned(dw)
    x = torch.randn(4, 3, 2, dtype=DT)
    t = torch.tensor([[1.0], [2.0], [0.5]], dtype=DT)
    u = hot.energy(x, t)
    assert u.shape == (4, 3) and torch.allclose(u, dw.energy(x) / t[:, 0])
    _, force = hot.energy_and_force(x, t)
    assert torch.allclose(force, dw.force(x) / t[:, :1])
    assert takes_context(hot) and not takes_context(dw) and hot.log_Z is None
    with pytest.raises(InvalidInput, match="expected a context, got None"):
        hot.energy(x)
    with pytest.raises(InvalidInput, match="positive temperature"):
        hot.energy(x, -t)
    with pytest.raises(ValueError, match="unconditional"):
        TemperatureConditioned(hot)
    # DoubleWell at kT = 2 is the conditioned target at T = 2
    assert torch.allclose(DoubleWell(kT=2.0).energy(x), hot.energy(x, torch.full((1,), 2.0)))


def test_one_meaning_of_log_prob_for_every_target():
    x = torch.rand(5, 2, dtype=DT)
    for target in (DoubleWell(), TorusUnimodal()):
        assert torch.equal(target.log_prob(x), -target.energy(x))  # unnormalised, always
        assert torch.allclose(target.normalized_log_prob(x), -target.energy(x) - target.log_Z)
        assert torch.equal(energy_fn(target)(x, None), target.energy(x))
    with pytest.raises(InvalidInput, match="exact log_Z"):
        TemperatureConditioned(DoubleWell()).normalized_log_prob(x)


# ----------------------------------------------------------------------------- helpers
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_value_and_grad_modes(dtype):
    w = torch.tensor(2.0, dtype=dtype, requires_grad=True)
    x = torch.randn(6, 3, dtype=dtype)
    value, grad = value_and_grad(lambda y: w * (y**2).sum(-1), x)
    assert torch.allclose(grad, 2 * w.detach() * x) and not grad.requires_grad
    value, grad = value_and_grad(lambda y: w * (y**2).sum(-1), x, create_graph=True)
    grad.sum().backward()  # differentiable in the parameter
    assert torch.allclose(w.grad, 2 * x.sum())
    with torch.no_grad():
        _, g = value_and_grad(lambda y: (y**3).sum(-1), x, create_graph=True)
    assert torch.allclose(g, 3 * x**2) and not g.requires_grad
    _, zero = value_and_grad(lambda y: torch.ones(y.shape[:-1], dtype=dtype), x)
    assert torch.equal(zero, torch.zeros_like(x))


def test_stratified_estimator_on_a_conditional_flow():
    well = TemperatureConditioned(DoubleWell(-0.5, -6.0, 1.0))
    q = _ScaledByContext(1.6).to(DT)
    left, right = (lambda x: x[:, 0] < 0), (lambda x: x[:, 0] > 0)
    with pytest.raises(InvalidInput, match="conditional .* one condition at a time"):
        stratified.stratified_free_energy_difference(q, well, right, left, 100)
    with pytest.raises(InvalidInput, match="several context rows"):
        stratified.stratified_free_energy_difference(
            q, well, right, left, 100, context=torch.ones(2, 1, dtype=DT)
        )
    est = stratified.stratified_free_energy_difference(
        q, well, right, left, 20000, context=torch.ones(1, dtype=DT), generator=gen(9)
    )
    assert within(est, DoubleWell(-0.5, -6.0, 1.0).delta_F)


# ----------------------------------------------------------------------------- fixtures
class _Harmonic(DoubleWell.__mro__[1]):  # physics.energy.Energy
    def __init__(self):
        from manifoldflows.spaces import Euclidean

        super().__init__(Euclidean(2))

    def _potential(self, x):
        return 0.5 * (x**2).sum(-1)


class _ScaledByContext(DiagNormal):
    """N(0, (scale sqrt(T))^2 I) with T the context: a conditional proposal, exact at scale 1."""

    def __init__(self, scale: float = 1.2):
        super().__init__(2, context_dim=1)
        self.extra = scale

    def _scale(self, context):
        return self.extra * context[..., :1].sqrt()

    def _log_prob(self, x, context):
        s = self._scale(context)
        z = x / s
        return (-0.5 * z**2 - torch.log(s) - 0.5 * math.log(2 * math.pi)).sum(-1)

    def _sample_and_log_prob(self, shape, context, generator):
        s = self._scale(context)
        eps = (
            torch.randn((*shape, 2), generator=generator, dtype=s.dtype, device=s.device)
            if generator is not None
            else torch.randn((*shape, 2), dtype=s.dtype)
        )
        x = eps * s
        return x, self._log_prob(x, context)

    def _rsample(self, shape, context, generator):
        return self._sample_and_log_prob(shape, context, generator)[0]


def test_ais_evaluates_each_point_once_and_matches_re_evaluation(monkeypatch):
    """The level energies at the current points come from kept parts (log q, u): one energy
    per proposal, and the same log weights as re-evaluating the points at every level."""
    from manifoldflows.stochastic import base

    flow = TorusNSF(2, layers=2, hidden=(16,)).double()
    perturb = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=perturb, dtype=p.dtype))
    calls = []

    def energy(x):
        calls.append(x.shape[0])
        return 2.0 * (1.0 - torch.cos(x)).sum(-1)

    n, levels, steps = 300, 5, 2

    def run():
        calls.clear()
        out = annealed_importance_sampling(
            flow, energy, n, n_steps=levels, mcmc_steps=steps, progress=False,
            generator=torch.Generator().manual_seed(7),
        )  # fmt: skip
        return out, sum(calls)

    kept, evaluations = run()
    assert evaluations == n * (1 + levels * steps)
    original = base.StochasticTransform.run

    def re_evaluate(self, x, generator=None, *, start=None, on_step=None):
        return original(self, x, generator, start=None, on_step=on_step)

    monkeypatch.setattr(base.StochasticTransform, "run", re_evaluate)
    fresh, more = run()
    assert more == n * (1 + levels * (1 + steps))
    torch.testing.assert_close(kept.log_w, fresh.log_w, rtol=0, atol=1e-10)
    torch.testing.assert_close(kept.x, fresh.x, rtol=0, atol=0)


def test_geodesic_hmc_leaves_a_von_mises_fisher_target_invariant():
    """Started from exact vMF samples, HMC on S^2 keeps them vMF: mean resultant length and
    the direction of the mean are those of the target, and every point stays on the sphere."""
    from manifoldflows.distributions import VonMisesFisher
    from manifoldflows.stochastic import HMC

    kappa = 4.0
    target = VonMisesFisher(Sphere(2), torch.tensor([0.0, 0.0, 1.0]), kappa).to(DT)
    layer = HMC(Sphere(2), lambda x: -target.log_prob(x), steps=20, leapfrog_steps=4,
                step_size=0.3).to(DT)  # fmt: skip
    x = target.sample((4000,), generator=gen(8))
    with torch.no_grad():
        y, _, _, _, accepted = layer.run(x, gen(9))
    assert bool(Sphere(2).contains(y).all())
    assert 0.3 < float(accepted.mean()) < 1.0  # it moves
    expected = 1.0 / math.tanh(kappa) - 1.0 / kappa  # E<mu, x> for the vMF on S^2
    z = y[..., 2]
    assert abs(float(z.mean()) - expected) < 4 * float(z.std()) / math.sqrt(4000)
    assert float((y[..., :2].mean(0)).abs().max()) < 4 / math.sqrt(4000)
    # the chain really moved the points
    assert float((y - x).norm(dim=-1).mean()) > 0.3
