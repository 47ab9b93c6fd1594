"""Energies of the physics package: forces, exact references, invariances, regularisers."""

from __future__ import annotations

import math

import pytest
import torch

from manifoldflows.core import energy_fn
from manifoldflows.distributions import DiagNormal, StandardNormal
from manifoldflows.errors import InvalidInput, NonFiniteOutput
from manifoldflows.losses import reverse_kl
from manifoldflows.spaces import Euclidean
from physics import (
    DW4,
    LJ13,
    Clip,
    DoubleWell,
    Energy,
    FABGaussianMixture,
    LennardJones,
    LinLogCut,
    ManyWell,
    MuellerBrown,
    PairDoubleWell,
    remove_com,
)
from physics.regularize import linlog_cut
from physics.toy import MUELLER_BROWN_MINIMA, MUELLER_BROWN_SADDLES

F64 = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _lj_configs(n: int, g: torch.Generator, n_particles: int = 13) -> torch.Tensor:
    """Non-overlapping 3-D clusters: a jittered cubic lattice of spacing 1.1."""
    grid = torch.stack(torch.meshgrid(*[torch.arange(3.0, dtype=F64)] * 3, indexing="ij"), -1)
    sites = 1.1 * grid.reshape(-1, 3)[:n_particles]
    x = sites + 0.05 * torch.randn(n, n_particles, 3, dtype=F64, generator=g)
    return x.reshape(n, -1)


def _points(name: str, energy: Energy, g: torch.Generator) -> torch.Tensor:
    if name == "gmm":
        k = torch.randint(0, energy.n_modes, (4,), generator=g)
        return energy.means[k] + torch.randn(4, 2, dtype=F64, generator=g)
    if name == "mueller_brown":
        low = torch.tensor([-1.5, -0.5], dtype=F64)
        return low + torch.tensor([2.5, 2.5], dtype=F64) * torch.rand(4, 2, dtype=F64, generator=g)
    if name.startswith("lj13"):
        return _lj_configs(3, g)
    if name.startswith("dw4"):
        return 2.0 * torch.randn(3, 8, dtype=F64, generator=g)
    return 1.5 * torch.randn(4, energy.dim, dtype=F64, generator=g)


ENERGIES = {
    "double_well": lambda: DoubleWell(),
    "double_well_kT2": lambda: DoubleWell(1.0, -6.0, 1.0, kT=2.0),
    "many_well": lambda: ManyWell(4),
    "gmm": lambda: FABGaussianMixture(),
    "mueller_brown": lambda: MuellerBrown(kT=10.0),
    "dw4": lambda: DW4(),
    "dw4_com_spring": lambda: DW4(com_spring=0.5),
    "lj13": lambda: LJ13(),
    "lj13_linlog": lambda: LinLogCut(LJ13(), high=-10.0, max=1e6),
}


@pytest.mark.parametrize("name", sorted(ENERGIES))
def test_force_is_minus_finite_difference_gradient(name):
    energy = ENERGIES[name]()
    x = _points(name, energy, _gen(1))
    force = energy.force(x)
    assert force.shape == x.shape and force.dtype == F64
    h = 1e-5
    eye = h * torch.eye(x.shape[-1], dtype=F64)
    up = energy.energy(x.unsqueeze(-2) + eye)  # (B, D)
    down = energy.energy(x.unsqueeze(-2) - eye)
    fd = -(up - down) / (2 * h)
    scale = max(1.0, float(force.abs().max()))
    assert torch.allclose(force, fd, rtol=1e-6, atol=1e-6 * scale), (force - fd).abs().max()
    if name == "lj13_linlog":  # the log regime must actually be exercised
        assert bool((energy.wrapped.energy(x) > energy.high).any())


def test_energy_and_force_differentiable_when_x_is_in_a_graph():
    dw = DoubleWell()
    x = torch.randn(5, 2, dtype=F64, generator=_gen(2), requires_grad=True)
    u, f = dw.energy_and_force(x)
    (dfdx,) = torch.autograd.grad(f.sum(), x)
    expected = torch.stack([-(2 * dw.b + 12 * dw.c * x[:, 0] ** 2), -torch.ones(5, dtype=F64)], -1)
    assert torch.allclose(dfdx, expected.detach())
    assert torch.allclose(u, dw.energy(x))
    # detached inputs give detached outputs
    u2, f2 = dw.energy_and_force(x.detach())
    assert not u2.requires_grad and not f2.requires_grad


def _grid_double_well(dw: DoubleWell) -> dict[str, float]:
    """Crude 2-D midpoint sums of exp(-u) with the split on a cell edge."""
    h1, h2 = 0.01, 0.1
    lo1, n1 = -3.5, 700  # x1 in [-3.5, 3.5]: edges include 0
    x1 = lo1 + h1 * (torch.arange(n1, dtype=F64) + 0.5)
    x2 = -9.0 + h2 * (torch.arange(180, dtype=F64) + 0.5)
    grid = torch.stack(torch.meshgrid(x1, x2, indexing="ij"), -1)
    u = dw.energy(grid)  # (n1, n2)
    shift = float(u.min())
    p = torch.exp(-(u - shift)) * (h1 * h2)
    z = float(p.sum())
    right = x1 > dw.split
    z_right = float(p[right].sum())
    mean_u = float((p * u).sum()) / z
    log_z = math.log(z) - shift
    return {
        "log_Z": log_z,
        "delta_F": math.log(z_right) - math.log(z - z_right),
        "entropy": log_z + mean_u,
    }


@pytest.mark.parametrize(
    "abc, kT, log_z, delta_f",
    [((-0.5, -6.0, 1.0), 1.0, 10.293480, 1.690631), ((1.0, -6.0, 1.0), 1.0, None, -3.379901)],
)
def test_double_well_references(abc, kT, log_z, delta_f):
    dw = DoubleWell(*abc, kT=kT)
    if log_z is not None:
        assert abs(dw.log_Z - log_z) < 1e-5
    assert abs(dw.delta_F - delta_f) < 1e-5
    grid = _grid_double_well(dw)
    for key in ("log_Z", "delta_F", "entropy"):
        assert abs(getattr(dw, key) - grid[key]) < 1e-5, (key, getattr(dw, key), grid[key])
    assert abs(dw.prob_right - 1 / (1 + math.exp(-dw.delta_F))) < 1e-12


def test_double_well_temperature_and_barrier():
    cold, hot = DoubleWell(), DoubleWell(kT=2.0)
    x = torch.randn(6, 2, dtype=F64, generator=_gen(3))
    assert torch.allclose(hot.energy(x), cold.energy(x) / 2)
    grid = _grid_double_well(hot)
    assert abs(hot.log_Z - grid["log_Z"]) < 1e-5 and abs(hot.delta_F - grid["delta_F"]) < 1e-5
    # the barrier top is a stationary point and a local maximum of the quartic
    top = torch.tensor([[cold.barrier_top, 0.0]], dtype=F64)
    assert float(cold.force(top).abs().max()) < 1e-9
    side = torch.tensor([[cold.barrier_top - 0.1, 0.0], [cold.barrier_top + 0.1, 0.0]], dtype=F64)
    assert bool((cold.energy(side) < cold.energy(top)).all())
    barrier = DoubleWell(split="barrier")
    assert barrier.split == cold.barrier_top and abs(barrier.delta_F - cold.delta_F) < 1e-4
    assert barrier.delta_F != cold.delta_F
    with pytest.raises(ValueError, match="two wells"):
        DoubleWell(0.0, 1.0, 1.0, split="barrier")


def test_double_well_exact_sampler_matches_quadrature():
    dw = DoubleWell(1.0, -6.0, 1.0)
    n = 20000
    x = dw.sample(n, generator=_gen(4), dtype=F64)
    assert x.shape == (n, 2)
    p = dw.prob_right
    frac = float((x[:, 0] > 0).double().mean())
    assert abs(frac - p) < 5 * math.sqrt(p * (1 - p) / n)
    u = dw.energy(x)
    mean_u = dw.entropy - dw.log_Z  # H = log Z + E[u]
    assert abs(float(u.mean()) - mean_u) < 5 * float(u.std()) / math.sqrt(n)
    assert abs(float(x[:, 1].var()) - 1.0) < 0.05


def test_many_well_references_and_sampler():
    mw = ManyWell()
    pair = DoubleWell()
    assert mw.dim == 32 and mw.space == Euclidean(32)
    assert abs(mw.log_Z - 16 * pair.log_Z) < 1e-9
    assert abs(mw.log_Z - 164.6957) < 1e-4 and abs(mw.entropy - 27.4972) < 1e-4
    x = torch.randn(5, 32, dtype=F64, generator=_gen(5))
    assert torch.allclose(mw.energy(x), pair.energy(x.reshape(5, 16, 2)).sum(-1))
    s = mw.sample(500, generator=_gen(6), dtype=F64)
    assert s.shape == (500, 32)
    frac = float((s[:, 0::2] > 0).double().mean())  # 8000 independent pairs
    assert abs(frac - pair.prob_right) < 5 * math.sqrt(0.25 / 8000)


def test_gmm40_is_normalised_and_reproducible():
    gmm = FABGaussianMixture()
    assert gmm.log_Z == 0.0 and gmm.means.shape == (40, 2)
    assert bool((gmm.means.abs() <= 40).all()) and float(gmm.means.abs().max()) > 30
    assert torch.equal(gmm.means, FABGaussianMixture().means)
    assert not torch.equal(gmm.means, FABGaussianMixture(seed=1).means)
    # Riemann sum of exp(-u) over [-50, 50]^2 (all mass lies inside; for a Gaussian of scale
    # 1.31 the midpoint rule with h = 0.4 is exact to ~exp(-2 pi^2 sigma^2 / h^2) ~ 1e-92)
    h = 0.4
    t = -50.0 + h * (torch.arange(250, dtype=F64) + 0.5)
    grid = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1)
    total = float(torch.exp(-gmm.energy(grid)).sum()) * h * h
    assert abs(total - 1.0) < 1e-6
    # exact samples: distance to the nearest mean is Rayleigh with E[r^2] = 2 sigma^2
    x = gmm.sample(4000, generator=_gen(7), dtype=F64)
    r2 = ((x.unsqueeze(-2) - gmm.means) ** 2).sum(-1).min(-1).values
    assert abs(float(r2.mean()) / (2 * gmm.scale**2) - 1) < 0.1


def test_mueller_brown_minima_and_saddles():
    from scipy.optimize import minimize, root

    mb = MuellerBrown()

    def fun(v):
        x = torch.tensor(v, dtype=F64).unsqueeze(0)
        u, f = mb.energy_and_force(x)
        return float(u), (-f[0]).numpy()

    values = []
    for guess in MUELLER_BROWN_MINIMA:
        res = minimize(fun, [guess[0] + 0.05, guess[1] - 0.05], jac=True, method="BFGS", tol=1e-12)
        assert math.dist(res.x, guess) < 2e-3, (res.x, guess)
        values.append(res.fun)
    assert [round(v, 2) for v in values] == [-146.70, -108.17, -80.77]
    for guess in MUELLER_BROWN_SADDLES:
        sol = root(lambda v: fun(v)[1], [guess[0] + 0.02, guess[1] + 0.02], tol=1e-12)
        assert sol.success and math.dist(sol.x, guess) < 2e-3
    assert torch.allclose(
        MuellerBrown(kT=10.0).energy(torch.zeros(1, 2)), mb.energy(torch.zeros(1, 2)) / 10
    )


def _random_orthogonal(d: int, g: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(d, d, dtype=F64, generator=g))
    return q * torch.sign(torch.diagonal(r))


@pytest.mark.parametrize("factory", [DW4, LJ13], ids=["dw4", "lj13"])
def test_particle_energy_invariances(factory):
    e = factory()
    g = _gen(8)
    n, d = e.n_particles, e.spatial_dim
    x = _lj_configs(4, g) if n == 13 else 2.0 * torch.randn(4, n * d, dtype=F64, generator=g)
    u = e.energy(x)
    pos = x.reshape(4, n, d)
    rot = _random_orthogonal(d, g)  # rotations and reflections
    shift = 3.0 * torch.randn(1, 1, d, dtype=F64, generator=g)
    perm = torch.randperm(n, generator=g)
    for y in (pos @ rot.T, pos + shift, pos[:, perm]):
        assert torch.allclose(e.energy(y.reshape(4, -1)), u, rtol=1e-10, atol=1e-10)
    assert torch.allclose(e.energy(remove_com(x, n, d)), u, rtol=1e-10, atol=1e-10)
    assert torch.allclose(e.positions(remove_com(x, n, d)).sum(-2), torch.zeros(4, d, dtype=F64))
    # a COM spring breaks translation invariance by exactly k |c|^2 / 2
    k = 0.7
    sprung = factory(com_spring=k)
    com = pos.mean(-2)
    assert torch.allclose(sprung.energy(x), u + 0.5 * k * (com**2).sum(-1))


def test_particle_potentials_pairwise_values():
    # LJ pair minimum -epsilon at r_min; DW pair at d = d0 + r
    lj = LennardJones(2, 3, epsilon=2.0, r_min=1.5, oscillator_scale=0.0)
    r = torch.linspace(1.2, 2.5, 200, dtype=F64)
    x = torch.zeros(200, 6, dtype=F64)
    x[:, 3] = r
    u = lj.energy(x)
    assert abs(float(u.min()) + 2.0) < 1e-3 and abs(float(r[u.argmin()]) - 1.5) < 0.01
    dw4 = DW4()
    assert dw4.pair_distances(torch.zeros(1, 8, dtype=F64)).shape == (1, 6)
    x = torch.zeros(1, 8, dtype=F64)
    x[0, 2] = 6.0  # particles 0 and 1 at distance 6, the other pairs at 0 or 6
    dist = dw4.pair_distances(x)
    rr = dist - 4.0
    assert torch.allclose(dw4.energy(x), (-4 * rr**2 + 0.9 * rr**4).sum(-1))
    assert LJ13().free_dim == 36 and DW4().free_dim == 6


def test_com_spring_log_volume():
    # two 1-D particles with a harmonic bond: Z on the zero-COM line is sqrt(pi)
    k = 2.0
    e = PairDoubleWell(2, 1, a=0.0, b=0.5, c=0.0, d0=0.0, com_spring=k)
    h = 0.02
    t = -12.0 + h * (torch.arange(1200, dtype=F64) + 0.5)
    grid = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1)
    log_z_full = math.log(float(torch.exp(-e.energy(grid)).sum()) * h * h)
    assert abs(log_z_full - 0.5 * math.log(math.pi) - e.com_log_volume) < 1e-8


def test_linlog_cut_and_clip_are_continuous_and_monotone():
    u = torch.linspace(-50.0, 300.0, 35001, dtype=F64)
    for f in (lambda v: linlog_cut(v, 10.0, 12.0), lambda v: v.clamp(-5.0, 100.0)):
        y = f(u)
        step = float(u[1] - u[0])
        assert bool((y.diff() >= 0).all()) and float(y.diff().max()) <= step * (1 + 1e-9)
    y = linlog_cut(u, 10.0, 12.0)
    assert float(y.max()) == 12.0 and torch.equal(y[u <= 10.0], u[u <= 10.0])
    # slope 1 on both sides of high, finite gradients everywhere
    v = torch.tensor([10.0 - 1e-7, 10.0 + 1e-7, -1e3, 1e30], dtype=F64, requires_grad=True)
    (g,) = torch.autograd.grad(linlog_cut(v, 10.0, 50.0).sum(), v)  # 1e30 is capped
    assert torch.isfinite(g).all() and torch.allclose(g[:3], torch.ones(3, dtype=F64))
    assert float(g[3]) == 0.0


@pytest.mark.parametrize("kind", ["linlog", "clip"])
def test_nonfinite_energies_are_counted_replaced_and_do_not_poison_gradients(kind):
    lj = LJ13()
    x = _lj_configs(6, _gen(9))
    x[1, 3:6] = x[1, 0:3]  # particle 1 on top of particle 0: u = +inf, grad NaN
    x[4, 6:9] = x[4, 0:3]
    x.requires_grad_(True)
    assert int((~torch.isfinite(lj.energy(x))).sum()) == 2
    reg = LinLogCut(lj, high=1e4, max=1e5) if kind == "linlog" else Clip(lj, high=1e5)
    u = reg.energy(x)
    assert reg.last_nonfinite == 2 and reg.last_batch == 6
    assert torch.equal(u[[1, 4]], torch.full((2,), 1e5, dtype=F64))
    (grad,) = torch.autograd.grad(u.sum(), x)
    assert torch.isfinite(grad).all()
    assert float(grad[[1, 4]].abs().max()) == 0.0
    good = [0, 2, 3, 5]
    assert torch.allclose(grad[good], -lj.force(x.detach()[good]))
    reg.energy(x.detach()[good])
    assert reg.last_nonfinite == 0 and reg.total_nonfinite == 2 and reg.total_evaluated == 10
    reg.reset_counts()
    assert reg.total_nonfinite == 0


def test_reverse_kl_accepts_energy_objects():
    dw = DoubleWell()
    assert energy_fn(dw) == dw.energy
    loss = reverse_kl(StandardNormal(2), dw, 64, generator=_gen(10))
    x, log_q = StandardNormal(2).sample_and_log_prob((64,), generator=_gen(10))
    assert torch.allclose(loss, (log_q + dw.energy(x)).mean())

    class HalfBroken(Energy):
        def _potential(self, x):
            return torch.where(x[..., 0] > 0, torch.nan, 0.5 * (x * x).sum(-1))

    broken = HalfBroken(Euclidean(2))
    q = DiagNormal(2)
    with pytest.raises(NonFiniteOutput, match="NaN/inf"):
        reverse_kl(q, broken, 32, generator=_gen(11))
    guarded = LinLogCut(broken, high=50.0, max=100.0)
    loss = reverse_kl(q, guarded, 32, generator=_gen(11))
    loss.backward()
    assert 0 < guarded.last_nonfinite < 32
    assert all(torch.isfinite(p.grad).all() for p in q.parameters())


def test_energy_base_validation_and_units():
    assert abs(DoubleWell(temperature=300.0, units="kJ/mol").kT - 2.494339) < 1e-6
    with pytest.raises(ValueError, match="either kT or temperature"):
        DoubleWell(kT=1.0, temperature=300.0, units="kJ/mol")
    with pytest.raises(ValueError, match="units"):
        DoubleWell(temperature=300.0)
    with pytest.raises(ValueError, match="c > 0"):
        DoubleWell(c=-1.0)
    with pytest.raises(ValueError, match="DW4.*com_spring"):
        DW4(com_spring=-1.0)
    with pytest.raises(ValueError, match="LinLogCut.*high < max"):
        LinLogCut(DoubleWell(), high=10.0, max=5.0)
    with pytest.raises(InvalidInput, match=r"DoubleWell.*\(\*batch, 2\)"):
        DoubleWell().energy(torch.zeros(3, 5))
    e = DoubleWell()
    assert e.energy(torch.zeros(2, 3, 2)).shape == (2, 3)
    assert torch.equal(e.log_prob(torch.ones(4, 2)), -e.energy(torch.ones(4, 2)))
    assert torch.equal(e(torch.ones(4, 2)), e.energy(torch.ones(4, 2)))
