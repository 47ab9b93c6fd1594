"""Circle, torus and sphere spaces; von Mises, von Mises-Fisher, wrapped normal, mixtures.

Statistical checks use fixed seeds and a tolerance of 4 standard errors (or a Kolmogorov-Smirnov
bound at the 0.1% level), so a correct implementation fails them with probability < 1e-3 each.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special as sp
import torch

from manifoldflows.distributions import (
    Mixture,
    Uniform,
    VonMises,
    VonMisesFisher,
    WrappedNormal,
)
from manifoldflows.distributions.directional import sample_von_mises_angle
from manifoldflows.errors import InvalidInput
from manifoldflows.functional.bessel import bessel_iv_ratio, log_bessel_iv, log_bessel_ive
from manifoldflows.functional.circle import wrap
from manifoldflows.spaces import Circle, Euclidean, Sphere, Torus
from manifoldflows.testing import check_distribution, perturb_parameters

F64 = torch.float64
KS_001 = 1.95  # Kolmogorov-Smirnov critical value (times 1/sqrt(N)) at the 0.1% level


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def unit(v) -> torch.Tensor:
    v = torch.as_tensor(v, dtype=torch.get_default_dtype())
    return v / v.norm()


def ks_statistic(samples: np.ndarray, cdf) -> float:
    s = np.sort(samples)
    n = len(s)
    c = cdf(s)
    return float(max(np.max(np.arange(1, n + 1) / n - c), np.max(c - np.arange(n) / n)))


# --------------------------------------------------------------------------------------------
# wrap
# --------------------------------------------------------------------------------------------
def test_wrap_range_periodicity_and_gradient(dtype):
    x = torch.linspace(-50.0, 50.0, 10001, dtype=dtype)
    y = wrap(x)
    assert bool((y >= -math.pi).all()) and bool((y < math.pi).all())
    # wrap(x) - x is a multiple of 2 pi
    k = (y - x) / (2 * math.pi)
    assert torch.allclose(k, k.round(), atol=1e-4 if dtype == torch.float32 else 1e-12)
    inside = torch.linspace(-3.0, 3.0, 7, dtype=dtype)
    assert torch.equal(wrap(inside), inside)
    assert float(wrap(torch.tensor(math.pi, dtype=dtype))) == pytest.approx(-math.pi)
    assert float(wrap(torch.tensor(-1e-30, dtype=dtype))) <= 0.0  # not folded to +pi
    x = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(wrap(x).sum(), x)
    assert torch.equal(g, torch.ones_like(g))


# --------------------------------------------------------------------------------------------
# spaces: identity and construction
# --------------------------------------------------------------------------------------------
def test_space_equality_and_construction():
    assert Circle() == Torus(1) and hash(Circle()) == hash(Torus(1))
    assert Torus(2) != Torus(3)
    assert Sphere(2) != Euclidean(3) and Euclidean(3) != Sphere(2)
    assert Sphere(1) != Circle()  # same set, different coordinates
    assert Sphere(2) == Sphere(2) and Sphere(2) != Sphere(3)
    assert Torus(3).event_shape == (3,) and Torus(3).dim == 3
    assert Sphere(4).event_shape == (5,) and Sphere(4).dim == 4
    assert Circle().event_shape == (1,)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="Torus"):
            Torus(bad)
        with pytest.raises(ValueError, match="Sphere"):
            Sphere(bad)


def test_log_volumes():
    assert math.exp(Sphere(1).log_volume()) == pytest.approx(2 * math.pi, rel=1e-14)
    assert math.exp(Sphere(2).log_volume()) == pytest.approx(4 * math.pi, rel=1e-14)
    assert math.exp(Sphere(3).log_volume()) == pytest.approx(2 * math.pi**2, rel=1e-14)
    assert math.exp(Sphere(4).log_volume()) == pytest.approx(8 * math.pi**2 / 3, rel=1e-14)
    # |S^n| = 2 pi / (n - 1) |S^(n-2)| for every n
    for n in range(3, 40):
        lhs = Sphere(n).log_volume()
        rhs = math.log(2 * math.pi / (n - 1)) + Sphere(n - 2).log_volume()
        assert lhs == pytest.approx(rhs, abs=1e-12)
    assert Torus(3).log_volume() == pytest.approx(3 * math.log(2 * math.pi))
    assert Circle().log_volume() == pytest.approx(math.log(2 * math.pi))


@pytest.mark.parametrize("space", [Circle(), Torus(3), Sphere(1), Sphere(2), Sphere(5)], ids=repr)
def test_uniform_sampling_and_log_prob(space, dtype):
    x = space.random_uniform((4000,), dtype=dtype, generator=gen(1))
    assert x.dtype == dtype and x.shape == (4000, *space.event_shape)
    space.check_point(x)
    lp = space.uniform_log_prob(x)
    assert lp.shape == (4000,)
    assert torch.allclose(lp, torch.full_like(lp, -space.log_volume()))
    if isinstance(space, Sphere):
        assert float((x.norm(dim=-1) - 1).abs().max()) <= 1e-6
        # E[x] = 0 and E[x x^T] = I / (n + 1); each entry's standard error is below 1/sqrt(N)
        se = 1 / math.sqrt(len(x))
        assert float(x.mean(0).abs().max()) < 4 * se
        second = (x[:, :, None] * x[:, None, :]).mean(0)
        eye = torch.eye(space.n + 1, dtype=dtype) / (space.n + 1)
        assert float((second - eye).abs().max()) < 4 * se
    else:
        assert bool((x >= -math.pi).all()) and bool((x < math.pi).all())
        # uniform angles: E[cos] = E[sin] = 0, var = 1/2
        se = math.sqrt(0.5 / len(x))
        assert float(x.cos().mean(0).abs().max()) < 4 * se
        assert float(x.sin().mean(0).abs().max()) < 4 * se
    y = space.random((3,), dtype=dtype)
    space.check_point(y)


# --------------------------------------------------------------------------------------------
# spaces: membership
# --------------------------------------------------------------------------------------------
def test_torus_check_point(dtype):
    space = Torus(2)
    space.check_point(torch.tensor([[math.pi, -math.pi], [0.0, 3.0]], dtype=dtype))
    for bad in ([4.0, 0.0], [0.0, -3.2], [float("nan"), 0.0], [float("inf"), 0.0]):
        with pytest.raises(InvalidInput, match=r"Torus\(2\)"):
            space.check_point(torch.tensor(bad, dtype=dtype))
    with pytest.raises(InvalidInput, match="Circle"):
        Circle().check_point(torch.tensor([7.0], dtype=dtype))
    with pytest.raises(InvalidInput, match="trailing shape"):
        space.check_point(torch.zeros(3, dtype=dtype))
    fixed = space.projx(torch.tensor([4.0, -7.0], dtype=dtype))
    space.check_point(fixed)
    assert torch.allclose(fixed, torch.tensor([4.0 - 2 * math.pi, -7.0 + 2 * math.pi], dtype=dtype))


def test_sphere_check_point(dtype):
    space = Sphere(2)
    x = space.random_uniform((10,), dtype=dtype, generator=gen())
    space.check_point(x)
    tol = space.tolerance(dtype)
    assert 1e-10 <= tol <= 2e-5
    space.check_point(x * (1 + 0.5 * tol))
    with pytest.raises(InvalidInput, match=r"Sphere\(2\)"):
        space.check_point(x * (1 + 3 * tol))
    with pytest.raises(InvalidInput, match=r"Sphere\(2\)"):
        space.check_point(torch.tensor([1.0, 1.0, 0.0], dtype=dtype))
    with pytest.raises(InvalidInput):
        space.check_point(torch.tensor([float("nan"), 0.0, 1.0], dtype=dtype))
    space.check_point(space.projx(torch.tensor([1.0, 1.0, 0.0], dtype=dtype)))


# --------------------------------------------------------------------------------------------
# spaces: geometry
# --------------------------------------------------------------------------------------------
def tangent_vectors(space, x, max_norm, generator):
    """Random tangent vectors at ``x`` with norms uniform in ``(0, max_norm)``."""
    u = space.proju(x, torch.randn(x.shape, dtype=x.dtype, generator=generator))
    norm = torch.rand(x.shape[:-1], dtype=x.dtype, generator=generator) * max_norm
    return u / u.norm(dim=-1, keepdim=True) * norm[..., None]


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_sphere_expmap_logmap_dist(n, dtype):
    space, g = Sphere(n), gen(n)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    x = space.random_uniform((500,), dtype=dtype, generator=g)
    u = tangent_vectors(space, x, 0.99 * math.pi, g)
    y = space.expmap(x, u)
    space.check_point(y)
    assert torch.allclose(space.logmap(x, y), u, atol=tol * 10)
    assert torch.allclose(space.dist(x, y), u.norm(dim=-1), atol=tol)
    assert torch.allclose((space.logmap(x, y) * x).sum(-1), torch.zeros(500, dtype=dtype), atol=tol)
    # the other direction: exp_x(log_x(z)) = z for arbitrary z
    z = space.random_uniform((500,), dtype=dtype, generator=g)
    assert torch.allclose(space.expmap(x, space.logmap(x, z)), z, atol=tol * 10)
    # distance: zero on the diagonal (exactly, unlike arccos), symmetric, triangle inequality
    assert float(space.dist(x, x).abs().max()) == 0.0
    assert torch.allclose(space.dist(x, z), space.dist(z, x), atol=tol)
    w = space.random_uniform((500,), dtype=dtype, generator=g)
    assert bool((space.dist(x, w) <= space.dist(x, z) + space.dist(z, w) + tol).all())
    assert float(space.dist(x, z).max()) <= math.pi + tol
    # small distances stay accurate (relative)
    v = tangent_vectors(space, x, 1e-3, g)
    # (float32 stores y = exp_x(v) to ~6e-8, i.e. ~1e-4 relative to |v| ~ 1e-3; an arccos-based
    # distance would be off by orders of magnitude there)
    rtol, atol = (1e-3, 1e-6) if dtype == torch.float32 else (1e-8, 0.0)
    assert torch.allclose(space.dist(x, space.expmap(x, v)), v.norm(dim=-1), rtol=rtol, atol=atol)
    # expmap at u = 0 is the identity with identity derivative
    zero = torch.zeros_like(x).requires_grad_()
    out = space.expmap(x, zero)
    assert torch.equal(out, x)
    (grad,) = torch.autograd.grad(out.sum(), zero)
    assert torch.allclose(grad, torch.ones_like(grad))


def test_torus_expmap_logmap_dist(dtype):
    space, g = Torus(3), gen()
    x = space.random_uniform((500,), dtype=dtype, generator=g)
    u = (torch.rand(500, 3, dtype=dtype, generator=g) * 2 - 1) * 0.99 * math.pi
    y = space.expmap(x, u)
    space.check_point(y)
    assert bool((y < math.pi).all())
    assert torch.allclose(space.logmap(x, y), u, atol=1e-5 if dtype == torch.float32 else 1e-12)
    z = space.random_uniform((500,), dtype=dtype, generator=g)
    w = space.random_uniform((500,), dtype=dtype, generator=g)
    assert torch.allclose(space.dist(x, z), space.dist(z, x))
    assert bool((space.dist(x, w) <= space.dist(x, z) + space.dist(z, w) + 1e-5).all())
    assert float(space.dist(x, z).max()) <= math.sqrt(3) * math.pi + 1e-5
    assert float(space.expmap_log_volume(x, u).abs().max()) == 0.0
    basis = space.tangent_basis(x)
    assert torch.equal(basis, torch.eye(3, dtype=dtype).expand(500, 3, 3))


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_sphere_tangent_basis(n, dtype):
    space = Sphere(n)
    x = space.random_uniform((200,), dtype=dtype, generator=gen())
    north = torch.zeros(n + 1, dtype=dtype)
    north[-1] = 1.0
    x = torch.cat([x, north[None], -north[None]])
    b = space.tangent_basis(x)
    assert b.shape == (202, n + 1, n)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    eye = torch.eye(n, dtype=dtype).expand(202, n, n)
    assert torch.allclose(b.transpose(-1, -2) @ b, eye, atol=tol)
    assert float((x[:, None, :] @ b).abs().max()) < tol
    # at the north pole the basis is the first n standard vectors
    assert torch.allclose(b[200], torch.eye(n + 1, n, dtype=dtype), atol=tol)


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_sphere_expmap_log_volume_matches_autograd(n):
    space, g = Sphere(n), gen(n)
    for radius in (1e-3, 1.0, 2.5, 4.0):  # beyond pi the map folds back (|sin r / r|)
        x = space.random_uniform((), dtype=F64, generator=g)
        u = tangent_vectors(space, x, 1.0, g)
        u = u / u.norm() * radius
        b_in = space.tangent_basis(x)
        c0 = b_in.transpose(-1, -2) @ u

        def f(c, x=x, b_in=b_in):
            return space.expmap(x, b_in @ c)

        jac = torch.autograd.functional.jacobian(f, c0)  # (n + 1, n)
        y = f(c0)
        jt = space.tangent_basis(y).transpose(-1, -2) @ jac
        ref = torch.linalg.slogdet(jt)[1]
        assert float(space.expmap_log_volume(x, u)) == pytest.approx(float(ref), abs=1e-9)
    zero = torch.zeros(4, n + 1, dtype=F64)
    assert float(space.expmap_log_volume(zero, zero).abs().max()) == 0.0


# --------------------------------------------------------------------------------------------
# Bessel functions
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [2, 3, 4, 6, 11])
def test_log_bessel_against_scipy(p):
    kappa = np.logspace(-6, 4, 801)
    x = torch.tensor(kappa, dtype=F64)
    for v in (p / 2 - 1, p / 2):
        ref = np.log(sp.ive(v, kappa))
        got = log_bessel_ive(v, x).numpy()
        assert np.allclose(got, ref, rtol=1e-11, atol=1e-11), np.abs(got - ref).max()
        assert np.allclose(log_bessel_iv(v, x).numpy(), ref + kappa, rtol=1e-11, atol=1e-11)
        got32 = log_bessel_ive(v, x.float()).double().numpy()
        assert np.allclose(got32, ref, rtol=2e-5, atol=2e-5)
    v = p / 2 - 1
    ratio = sp.ive(v + 1, kappa) / sp.ive(v, kappa)
    assert np.allclose(bessel_iv_ratio(v, x).numpy(), ratio, rtol=1e-11, atol=1e-15)
    # gradient: d/dx log I_v(x) = I_(v+1)/I_v + v/x, finite everywhere
    xg = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(log_bessel_iv(v, xg).sum(), xg)
    assert bool(torch.isfinite(grad).all())
    assert np.allclose(grad.numpy(), ratio + v / kappa, rtol=1e-9, atol=1e-12)


def test_bessel_closed_forms_and_bad_order():
    x = torch.logspace(-3, 3, 200, dtype=F64)
    # I_(1/2)(x) = sqrt(2 / (pi x)) sinh x, written as log: x + log((1 - e^(-2x)) / 2) + ...
    ref = 0.5 * torch.log(2 / (math.pi * x)) + torch.log(-torch.expm1(-2 * x) / 2)
    assert torch.allclose(log_bessel_ive(0.5, x), ref, rtol=1e-12, atol=1e-13)
    # A_3(x) = coth x - 1/x
    a3 = 1 / torch.tanh(x) - 1 / x
    assert torch.allclose(bessel_iv_ratio(0.5, x), a3, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="order"):
        log_bessel_ive(-0.5, x)


# --------------------------------------------------------------------------------------------
# distributions: generic checker
# --------------------------------------------------------------------------------------------
def _mixture_s3():
    return Mixture(
        [
            VonMisesFisher(3, unit([1.0, 0, 0, 0]), 4.0),
            WrappedNormal(Sphere(3), unit([0, 1.0, 0, 1]), 0.5),
            Uniform(Sphere(3)),
        ],
        weights=torch.tensor([0.5, 0.3, 0.2]),
    )


DISTRIBUTIONS = {
    "vonmises-circle": lambda: VonMises(1, loc=2.0, concentration=3.0),
    "vonmises-torus": lambda: VonMises(3, torch.tensor([0.0, 3.0, -2.0]), [0.1, 5.0, 500.0]),
    "vmf-s1": lambda: VonMisesFisher(1, unit([1.0, 1.0]), 2.0),
    "vmf-s2": lambda: VonMisesFisher(2, unit([0.0, 0.0, -1.0]), 5.0),
    "vmf-s5-large": lambda: VonMisesFisher(5, unit([1.0, 2, 3, 4, 5, 6]), 1e4),
    "vmf-s10-small": lambda: VonMisesFisher(10, None, 1e-3),
    "wrapped-s2": lambda: WrappedNormal(Sphere(2), unit([1.0, 0, 0]), 0.7),
    "wrapped-s3-wide": lambda: WrappedNormal(Sphere(3), unit([1.0, 1, 0, 0]), 2.0),
    "wrapped-torus": lambda: WrappedNormal(Torus(2), torch.tensor([3.0, 0.0]), [0.3, 2.5]),
    "wrapped-euclidean": lambda: WrappedNormal(Euclidean(2), torch.tensor([1.0, 2.0]), 0.5),
    "mixture-s3": _mixture_s3,
    "mixture-circle": lambda: Mixture([VonMises(1, 0.0, 2.0), WrappedNormal(Circle(), [2.0], 1.0)]),
    "uniform-torus": lambda: Uniform(Torus(2)),
    "uniform-sphere": lambda: Uniform(Sphere(4)),
}


@pytest.mark.parametrize("name", list(DISTRIBUTIONS))
def test_check_distribution(name, dtype, device):
    d = check_distribution(DISTRIBUTIONS[name](), dtype=dtype, device=device)
    x = d.sample((300,), generator=torch.Generator(device=device).manual_seed(3))
    assert x.dtype == dtype
    if isinstance(d.space, Sphere):
        assert float((x.norm(dim=-1) - 1).abs().max()) <= 1e-6
    else:
        assert bool((x >= -math.pi).all())
    lp = d.log_prob(x)
    assert bool(torch.isfinite(lp).all())


@pytest.mark.parametrize(
    "make",
    [
        lambda: VonMises(2, context_dim=3),
        lambda: VonMisesFisher(3, context_dim=3),
        lambda: Mixture([VonMises(2, context_dim=3), Uniform(Torus(2))]),
    ],
    ids=["vonmises", "vmf", "mixture"],
)
def test_conditional_distributions(make, dtype):
    d = make()
    perturb_parameters(d, 0.5, generator=gen())
    assert d.context_dim == 3
    check_distribution(d, dtype=dtype, context=torch.randn(4, 3, generator=gen(1)))
    d = d.to(dtype)
    x = d.sample((), torch.randn(6, 3, dtype=dtype, generator=gen(2)), generator=gen())
    c1, c2 = torch.randn(2, 6, 3, dtype=dtype, generator=gen(3))
    assert not torch.allclose(d.log_prob(x, c1), d.log_prob(x, c2))
    with pytest.raises(InvalidInput, match="context"):
        d.log_prob(x)


def test_sampling_is_reproducible_with_a_generator():
    for make in DISTRIBUTIONS.values():
        d = make()
        a = d.sample((7,), generator=gen(5))
        b = d.sample((7,), generator=gen(5))
        assert torch.equal(a, b)


# --------------------------------------------------------------------------------------------
# distributions: densities against references
# --------------------------------------------------------------------------------------------
def test_von_mises_matches_torch_distributions():
    x = Torus(2).random_uniform((50,), dtype=F64, generator=gen())
    loc = torch.tensor([0.5, -2.0], dtype=F64)
    kappa = torch.tensor([0.3, 40.0], dtype=F64)
    q = VonMises(2, loc, kappa).double()
    ref = torch.distributions.VonMises(loc, kappa).log_prob(x).sum(-1)
    assert torch.allclose(q.log_prob(x), ref, atol=1e-10)
    # large concentrations stay finite (I_0(1e4) overflows float64 without scaling)
    big = VonMises(1, 0.0, 1e4).double()
    lp = big.log_prob(torch.tensor([[0.0], [0.01]], dtype=F64)).detach()
    expected0 = -0.5 * math.log(2 * math.pi / 1e4) - math.log(
        sp.ive(0, 1e4) * math.sqrt(2e4 * math.pi)
    )
    assert float(lp[0]) == pytest.approx(expected0, abs=1e-9)
    assert float(lp[0] - lp[1]) == pytest.approx(1e4 * (1 - math.cos(0.01)), rel=1e-9)


def test_vmf_closed_forms():
    # S^2: p(x) = kappa / (4 pi sinh kappa) exp(kappa <mu, x>)
    mu = unit([1.0, -2.0, 0.5]).double()
    x = Sphere(2).random_uniform((100,), dtype=F64, generator=gen())
    for kappa in (1e-5, 0.7, 30.0, 600.0):
        q = VonMisesFisher(2, mu, kappa).double()
        mu_q, kappa_q = (t.detach() for t in q.parameters_for(None))  # after float32 storage
        k = float(kappa_q)
        assert k == pytest.approx(kappa, rel=1e-6)
        log_c = math.log(k) - math.log(4 * math.pi) - k - math.log(-math.expm1(-2 * k) / 2)
        ref = log_c + k * (x @ mu_q)
        assert torch.allclose(q.log_prob(x), ref, rtol=1e-10, atol=1e-9)
    # S^1 with unit vectors (cos t, sin t) is the von Mises distribution on angles
    t = Circle().random_uniform((100,), dtype=F64, generator=gen())
    pts = torch.cat([t.cos(), t.sin()], -1)
    q1 = VonMisesFisher(1, torch.tensor([math.cos(1.0), math.sin(1.0)]), 3.0).double()
    ref1 = VonMises(1, 1.0, 3.0).double().log_prob(t)
    assert torch.allclose(q1.log_prob(pts), ref1, atol=1e-11)


def test_vmf_gradients_are_finite_for_all_concentrations(dtype):
    x = Sphere(4).random_uniform((20,), dtype=dtype, generator=gen())
    for kappa in (1e-5, 1.0, 50.0, 1e4):
        q = VonMisesFisher(4, concentration=kappa).to(dtype)
        q.log_prob(x).sum().backward()
        assert bool(torch.isfinite(q.raw_concentration.grad).all())
        assert bool(torch.isfinite(q.loc.grad).all())
    q = VonMisesFisher(4, concentration=3.0).to(dtype)
    q.rsample((10,), generator=gen()).sum().backward()
    assert q.loc.grad is not None and bool(q.loc.grad.abs().sum() > 0)


def test_wrapped_normal_euclidean_is_a_normal_and_truncation_is_harmless():
    x = torch.randn(30, 2, dtype=F64, generator=gen())
    q = WrappedNormal(Euclidean(2), torch.tensor([1.0, -1.0]), torch.tensor([0.5, 2.0])).double()
    ref = torch.distributions.Normal(q.loc, q.scale).log_prob(x).sum(-1)
    assert torch.allclose(q.log_prob(x), ref, atol=1e-12)
    # the default truncation (mass dropped <= tol) agrees with a generous fixed number of windings
    for space, loc, scale in (
        (Sphere(3), unit([1.0, 0, 0, 0]), 1.7),
        (Sphere(1), unit([0.0, 1.0]), 3.0),
        (Torus(2), torch.zeros(2), torch.tensor([0.4, 3.0])),
    ):
        pts = space.random_uniform((50,), dtype=F64, generator=gen())
        a = WrappedNormal(space, loc, scale).double().log_prob(pts)
        b = WrappedNormal(space, loc, scale, windings=25).double().log_prob(pts)
        assert torch.allclose(a, b, rtol=0, atol=1e-10)
        c = WrappedNormal(space, loc, scale, windings=0).double().log_prob(pts)
        assert not torch.allclose(a, c, atol=1e-6)  # the wrapping terms matter at this scale


# --------------------------------------------------------------------------------------------
# densities integrate to one
# --------------------------------------------------------------------------------------------
def circle_grid(m: int) -> tuple[torch.Tensor, float]:
    t = -math.pi + (torch.arange(m, dtype=F64) + 0.5) * (2 * math.pi / m)
    return t, 2 * math.pi / m


@pytest.mark.parametrize(
    "make",
    [
        lambda: VonMises(1, 2.5, 0.2),
        lambda: VonMises(1, -3.0, 60.0),
        lambda: WrappedNormal(Circle(), [3.0], 0.2),
        lambda: WrappedNormal(Circle(), [0.0], 4.0),
        lambda: Mixture([VonMises(1, 0.0, 5.0), WrappedNormal(Circle(), [2.0], 1.0)], [0.2, 0.8]),
        lambda: Uniform(Circle()),
    ],
    ids=["vm-flat", "vm-peaked", "wn-narrow", "wn-wide", "mixture", "uniform"],
)
def test_circle_densities_integrate_to_one(make):
    # the midpoint rule is spectrally accurate for smooth periodic integrands
    t, h = circle_grid(4000)
    total = make().double().log_prob(t[:, None]).detach().exp().sum() * h
    assert float(total) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize(
    "make",
    [
        lambda: VonMisesFisher(1, unit([1.0, 1.0]), 7.0),
        lambda: WrappedNormal(Sphere(1), unit([0.0, -1.0]), 2.5),
    ],
    ids=["vmf", "wrapped"],
)
def test_s1_embedded_densities_integrate_to_one(make):
    t, h = circle_grid(4000)
    pts = torch.stack([t.cos(), t.sin()], -1)
    total = make().double().log_prob(pts).detach().exp().sum() * h
    assert float(total) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize(
    "make",
    [
        lambda: VonMises(2, torch.tensor([1.0, -2.0]), torch.tensor([0.5, 20.0])),
        lambda: WrappedNormal(Torus(2), torch.tensor([3.0, 0.0]), torch.tensor([0.3, 2.0])),
        lambda: Mixture([VonMises(2, 0.0, 3.0), Uniform(Torus(2))], [0.6, 0.4]),
    ],
    ids=["vonmises", "wrapped", "mixture"],
)
def test_torus_densities_integrate_to_one(make):
    t, h = circle_grid(400)
    grid = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    total = make().double().log_prob(grid).detach().exp().sum() * h * h
    assert float(total) == pytest.approx(1.0, abs=1e-8)


SPHERE_MC = {
    "vmf": lambda n: VonMisesFisher(n, unit(torch.arange(1.0, n + 2)), 3.0),
    "wrapped": lambda n: WrappedNormal(Sphere(n), unit(torch.ones(n + 1)), 0.8),
    "mixture": lambda n: Mixture(
        [
            VonMisesFisher(n, unit(torch.arange(1.0, n + 2)), 2.0),
            WrappedNormal(Sphere(n), unit(-torch.ones(n + 1)), 0.6),
        ],
        [0.3, 0.7],
    ),
}


@pytest.mark.parametrize("n", [2, 3, 5])
@pytest.mark.parametrize("name", list(SPHERE_MC))
def test_sphere_densities_integrate_to_one_monte_carlo(name, n):
    """``int p = |S^n| E_uniform[p]``, within 4 standard errors of the estimate."""
    space = Sphere(n)
    x = space.random_uniform((200_000,), dtype=F64, generator=gen(n))
    ratio = (SPHERE_MC[name](n).double().log_prob(x).detach() + space.log_volume()).exp()
    est, se = float(ratio.mean()), float(ratio.std() / math.sqrt(len(ratio)))
    assert se < 0.05  # the check has power: a 20% normalisation error would be caught
    assert abs(est - 1.0) < 4 * se, (est, se)


def radial_density(q, space: Sphere, mu: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Density of ``theta = d(mu, x)``: ``|S^(n-1)| p(x(theta)) sin^(n-1) theta``."""
    tangent = space.tangent_basis(mu)[..., 0]  # a unit tangent vector at mu
    pts = torch.cos(theta)[:, None] * mu + torch.sin(theta)[:, None] * tangent
    log_area = Sphere(space.n - 1).log_volume() if space.n > 1 else math.log(2.0)
    with torch.no_grad():
        log_p = q.log_prob(pts)
    return (log_p + log_area + (space.n - 1) * torch.log(torch.sin(theta))).exp()


@pytest.mark.parametrize("n", [2, 3, 5])
@pytest.mark.parametrize("scale", [0.3, 1.2, 3.0])
def test_wrapped_normal_on_sphere_is_normalised_and_matches_its_samples(n, scale):
    """Radial quadrature (exact normalisation even where wrapping matters) + a KS test."""
    space = Sphere(n)
    q = WrappedNormal(space, unit(torch.linspace(-1.0, 1.0, n + 1) + 0.3), scale).double()
    mu = space.projx(q.loc.detach())
    nodes, weights = np.polynomial.legendre.leggauss(400)
    theta = torch.tensor((nodes + 1) * math.pi / 2, dtype=F64)
    dens = radial_density(q, space, mu, theta)
    total = float((dens * torch.tensor(weights * math.pi / 2)).sum())
    assert total == pytest.approx(1.0, abs=1e-5)  # integrable singularities at 0 and pi
    # samples: the distance to mu follows the radial density
    grid = torch.linspace(0.0, math.pi, 20001, dtype=F64)[1:-1]
    cdf_vals = torch.cumulative_trapezoid(radial_density(q, space, mu, grid), grid)
    cdf_vals = torch.cat([torch.zeros(1, dtype=F64), cdf_vals]) / cdf_vals[-1]
    samples = space.dist(mu, q.sample((20_000,), generator=gen(n))).numpy()
    ks = ks_statistic(samples, lambda s: np.interp(s, grid.numpy(), cdf_vals.numpy()))
    assert ks < KS_001 / math.sqrt(len(samples)), ks


# --------------------------------------------------------------------------------------------
# samplers: moments and distributions
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [2, 3, 4, 6, 11])
@pytest.mark.parametrize("kappa", [0.5, 10.0, 1000.0])
def test_vmf_mean_resultant_length(p, kappa, dtype):
    mu = unit(torch.linspace(-1.0, 2.0, p))
    q = VonMisesFisher(p - 1, mu, kappa).to(dtype)
    x = q.sample((20_000,), generator=gen(p))
    assert float((x.norm(dim=-1) - 1).abs().max()) <= 1e-6
    w = (x.double() @ mu.double()).numpy()
    a_p = float(sp.ive(p / 2, kappa) / sp.ive(p / 2 - 1, kappa))
    assert float(q.mean_resultant_length().detach()) == pytest.approx(a_p, rel=1e-4)
    se = w.std() / math.sqrt(len(w))
    assert abs(w.mean() - a_p) < 4 * se + 1e-6, (w.mean(), a_p, se)
    # the mean vector points along mu: the orthogonal component averages out
    mean = x.double().mean(0)
    perp = mean - (mean @ mu.double()) * mu.double()
    assert float(perp.norm()) < 4 * math.sqrt((1 - w.mean() ** 2 + 1e-12) / len(w)) * math.sqrt(p)


@pytest.mark.parametrize("kappa", [0.2, 4.0, 50.0])
def test_vmf_s2_cosine_distribution(kappa):
    """On S^2, ``w = <mu, x>`` has density proportional to ``exp(kappa w)`` on [-1, 1]."""
    mu = unit([0.3, -0.4, 0.2]).double()
    x = VonMisesFisher(2, mu, kappa).double().sample((20_000,), generator=gen())
    w = (x @ mu).numpy()

    def cdf(s):
        return np.exp(kappa * (s - 1)) * np.expm1(-kappa * (s + 1)) / np.expm1(-2 * kappa)

    assert ks_statistic(w, cdf) < KS_001 / math.sqrt(len(w))


@pytest.mark.parametrize("kappa", [1e-6, 0.5, 3.0, 80.0, 1e4])
def test_von_mises_sampler(kappa, dtype):
    loc = 2.5
    q = VonMises(1, loc, kappa).to(dtype)
    x = q.sample((20_000,), generator=gen())
    assert bool((x >= -math.pi).all()) and bool((x < math.pi).all())
    d = (x[:, 0] - loc).double()
    a1 = float(sp.ive(1, kappa) / sp.ive(0, kappa))
    c, s = d.cos(), d.sin()
    assert abs(float(c.mean()) - a1) < 4 * float(c.std()) / math.sqrt(len(c)) + 1e-6
    assert abs(float(s.mean())) < 4 * float(s.std()) / math.sqrt(len(s)) + 1e-7
    if kappa > 1.0:  # the circular mean is loc
        mean_angle = math.atan2(float(s.mean()), float(c.mean()))
        assert abs(mean_angle) < 4 * float(s.std()) / math.sqrt(len(s)) / a1 + 1e-6


def test_von_mises_angle_ks():
    kappa = 2.0
    theta = sample_von_mises_angle(torch.full((20_000,), kappa, dtype=F64), gen()).numpy()
    t, h = circle_grid(20_000)
    dens = VonMises(1, 0.0, kappa).double().log_prob(t[:, None]).detach().exp().numpy()
    cdf_grid = np.cumsum(dens) * h
    ks = ks_statistic(theta, lambda s: np.interp(s, t.numpy() + h / 2, cdf_grid))
    assert ks < KS_001 / math.sqrt(len(theta))


def test_mixture_weights_and_log_prob(dtype):
    north, south = unit([0.0, 0.0, 1.0]), unit([0.0, 0.0, -1.0])
    a, b = VonMisesFisher(2, north, 20.0), VonMisesFisher(2, south, 20.0)
    mix = Mixture([a, b], weights=[1.0, 3.0]).to(dtype)
    assert torch.allclose(mix.weights, torch.tensor([0.25, 0.75], dtype=dtype))
    x = mix.sample((20_000,), generator=gen())
    frac = float((x[:, 2] > 0).to(F64).mean())
    assert abs(frac - 0.25) < 4 * math.sqrt(0.25 * 0.75 / len(x))
    ref = torch.logaddexp(
        math.log(0.25) + a.to(dtype).log_prob(x[:50]), math.log(0.75) + b.to(dtype).log_prob(x[:50])
    )
    assert torch.allclose(mix.log_prob(x[:50]), ref, atol=1e-5 if dtype == torch.float32 else 1e-12)
    assert isinstance(mix.logits, torch.nn.Parameter)
    fixed = Mixture([a, b], learnable=False)
    assert not isinstance(fixed.logits, torch.nn.Parameter)


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------
def test_bad_arguments():
    with pytest.raises(ValueError, match="VonMises"):
        VonMises(Sphere(2))
    with pytest.raises(ValueError, match="positive"):
        VonMises(1, concentration=-1.0)
    with pytest.raises(ValueError, match="VonMises"):
        VonMises(2, loc=torch.zeros(3))
    with pytest.raises(ValueError, match="VonMisesFisher"):
        VonMisesFisher(Torus(2))
    with pytest.raises(ValueError, match="non-zero loc"):
        VonMisesFisher(2, torch.zeros(3))
    with pytest.raises(ValueError, match="positive"):
        VonMisesFisher(2, concentration=0.0)
    with pytest.raises(ValueError, match="scalar scale"):
        WrappedNormal(Sphere(2), unit([1.0, 0, 0]), torch.ones(2))
    with pytest.raises(ValueError, match="loc of shape"):
        WrappedNormal(Sphere(2), torch.ones(2), 1.0)
    with pytest.raises(ValueError, match="positive"):
        WrappedNormal(Torus(2), torch.zeros(2), -1.0)
    with pytest.raises(ValueError, match="tol"):
        WrappedNormal(Torus(2), torch.zeros(2), 1.0, tol=0.0)
    with pytest.raises(ValueError, match="Sphere"):
        Mixture([VonMisesFisher(2), VonMises(2)])
    with pytest.raises(ValueError, match="weights"):
        Mixture([VonMises(1), VonMises(1)], weights=[1.0, -1.0])
    with pytest.raises(ValueError, match="non-empty"):
        Mixture([])


def test_bad_points_are_refused():
    with pytest.raises(InvalidInput, match=r"Sphere\(2\)"):
        VonMisesFisher(2).log_prob(torch.tensor([1.0, 1.0, 0.0]))
    with pytest.raises(InvalidInput, match=r"Sphere\(3\)"):
        WrappedNormal(Sphere(3), unit([1.0, 0, 0, 0]), 1.0).log_prob(torch.ones(4))
    with pytest.raises(InvalidInput, match=r"Torus\(2\)"):
        VonMises(2).log_prob(torch.tensor([0.0, 4.0]))
    with pytest.raises(InvalidInput, match="Circle"):
        Uniform(Circle()).log_prob(torch.tensor([-3.5]))


def test_split_modules_keep_the_old_import_paths():
    """Bessel numerics moved to functional.bessel and Mixture to distributions.mixture."""
    from manifoldflows.distributions import directional, mixture

    assert directional.log_bessel_ive is log_bessel_ive
    assert directional.log_bessel_iv is log_bessel_iv
    assert directional.bessel_iv_ratio is bessel_iv_ratio
    assert directional.Mixture is mixture.Mixture is Mixture
    assert Mixture.__module__ == "manifoldflows.distributions.mixture"
    assert log_bessel_ive.__module__ == "manifoldflows.functional.bessel"
