"""Sphere layers and the SphereFlow preset: normalisation, geometry, volume terms, bad input.

The generic checker (tests/cases/sphere.py) already verifies every layer's logdet against the
autograd Jacobian in tangent bases, round trips and gradients; the tests here cover what it
does not: densities integrating to one, samples on the manifold, the cylindrical volume
element, the stereographic volume term near the pole, extreme parameters and error handling.
"""

from __future__ import annotations

import math

import geoopt
import numpy as np
import pytest
import torch

from manifoldflows import Chain, Flow, Inverse
from manifoldflows.distributions import StandardNormal
from manifoldflows.errors import InvalidInput, SpaceMismatch
from manifoldflows.functional import sphere as K
from manifoldflows.functional.splines import knot_derivatives
from manifoldflows.presets import SphereFlow
from manifoldflows.spaces import Euclidean, Sphere
from manifoldflows.testing import check_distribution, perturb_parameters
from manifoldflows.transforms import (
    ActNorm,
    AngleToCircle,
    ExpMapRadial,
    MoebiusSphere,
    RecursiveSphereFlow,
    SphereRotation,
    Stereographic,
)

KINDS = ("recursive", "moebius", "expmap")

#: Number of uniform samples of the Monte Carlo normalisation test.
MC_SAMPLES = 16384

#: Parameter noise of the normalisation test, per kind: large enough for clearly non-uniform
#: densities, small enough that q/u has a moderate variance (a Moebius density's peak grows
#: like ((1 + |w|) / (1 - |w|))^n, so it gets less noise).
MC_NOISE = {"recursive": 0.1, "moebius": 0.05, "expmap": 0.1}


def _flow(n: int, kind: str, dtype=torch.float64, noise: float | None = None, context_dim=None):
    flow = SphereFlow(
        n,
        kind=kind,
        layers=2 if kind == "expmap" else 3,
        bins=6,
        components=3,
        hidden=(16, 16),
        context_dim=context_dim,
    ).to(dtype)
    perturb_parameters(
        flow, MC_NOISE[kind] if noise is None else noise, torch.Generator().manual_seed(1)
    )
    return flow


# --------------------------------------------------------------------------- normalisation
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [2, 3, 5])
def test_sphere_flow_integrates_to_one(n, kind):
    """E_uniform[q(x) / u(x)] = integral of q = 1 within 4 standard errors (16384 samples)."""
    flow = _flow(n, kind)
    space = Sphere(n)
    x = space.random_uniform(
        (MC_SAMPLES,), dtype=torch.float64, generator=torch.Generator().manual_seed(2)
    )
    with torch.no_grad():
        ratio = torch.exp(flow.log_prob(x) - space.uniform_log_prob(x))
    mean, se = ratio.mean().item(), ratio.std().item() / math.sqrt(MC_SAMPLES)
    assert ratio.std().item() > 0.1, "the density is too close to uniform for a meaningful test"
    assert se < 0.03, f"standard error {se:.3g} too large for a meaningful test"
    assert abs(mean - 1.0) < 4 * se, f"integral {mean:.4f} +- {se:.4f} differs from 1"


def test_conditional_sphere_flow_integrates_to_one():
    """Each context gives a normalised density (recursive kind on S^3, two contexts)."""
    flow = _flow(3, "recursive", context_dim=2)
    space = Sphere(3)
    x = space.random_uniform(
        (MC_SAMPLES,), dtype=torch.float64, generator=torch.Generator().manual_seed(3)
    )
    means = []
    for c in (torch.tensor([0.5, -1.0]), torch.tensor([-2.0, 1.0])):
        ctx = c.to(torch.float64).expand(MC_SAMPLES, 2)
        with torch.no_grad():
            ratio = torch.exp(flow.log_prob(x, ctx) - space.uniform_log_prob(x))
        se = ratio.std().item() / math.sqrt(MC_SAMPLES)
        assert abs(ratio.mean().item() - 1.0) < 4 * se
        means.append(ratio)
    assert not torch.allclose(means[0], means[1]), "the density ignores the context"


def test_monte_carlo_test_detects_a_wrong_volume_term():
    """The normalisation test has power: dropping the cylindrical volume term breaks it."""
    layer = RecursiveSphereFlow(5, bins=6, hidden=(16, 16)).double()
    perturb_parameters(layer, 0.1, torch.Generator().manual_seed(1))
    space = Sphere(5)
    x = space.random_uniform(
        (MC_SAMPLES,), dtype=torch.float64, generator=torch.Generator().manual_seed(2)
    )
    with torch.no_grad():
        z, logdet = layer.inverse(x)
        a, b, _ = K.height_coordinates(x)
        a0, b0, _ = K.height_coordinates(z)
        # the volume part of the logdet: sum_k (k-2)/2 log((1 - h_k^2)/(1 - h'_k^2)) for x = data
        levels = torch.arange(5, 1, -1, dtype=torch.float64)
        volume = (0.5 * (levels - 2) * (torch.log(a0 * b0) - torch.log(a * b))).sum(-1)
        good = torch.exp(logdet)
        bad = torch.exp(logdet - volume)
    se_good = good.std().item() / math.sqrt(MC_SAMPLES)
    se_bad = bad.std().item() / math.sqrt(MC_SAMPLES)
    assert abs(good.mean().item() - 1.0) < 4 * se_good
    assert abs(bad.mean().item() - 1.0) > 4 * se_bad


# --------------------------------------------------------------------------- samples
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [1, 2, 5])
def test_samples_stay_on_the_sphere(n, kind, dtype):
    flow = _flow(n, kind, dtype=dtype, noise=0.3)
    x, log_q = flow.sample_and_log_prob((2000,), generator=torch.Generator().manual_seed(0))
    assert x.dtype == dtype and x.shape == (2000, n + 1)
    assert torch.isfinite(log_q).all()
    assert (torch.linalg.vector_norm(x, dim=-1) - 1).abs().max().item() < 1e-6
    Sphere(n).check_point(x)


@pytest.mark.parametrize("kind", KINDS)
def test_sphere_flow_is_a_consistent_distribution(kind):
    check_distribution(_flow(2, kind, noise=0.3))


def test_sphere_flow_rejects_bad_options():
    with pytest.raises(ValueError, match="SphereFlow"):
        SphereFlow(2, kind="spline")
    with pytest.raises(ValueError, match="SphereFlow"):
        SphereFlow(2, layers=0)
    with pytest.raises(ValueError, match="Sphere"):
        SphereFlow(0)


# --------------------------------------------------------------------------- volume elements
@pytest.mark.parametrize("n", [2, 3, 4, 7])
def test_cylindrical_volume_element_matches_the_jacobian(n):
    """dS^n = (1 - h^2)^((n-2)/2) dh dS^(n-1): Gram determinant of x(h, x') by autograd."""
    gen = torch.Generator().manual_seed(n)
    sub = Sphere(n - 1)
    for _ in range(5):
        xp = sub.random_uniform((), dtype=torch.float64, generator=gen)
        h0 = torch.rand((), dtype=torch.float64, generator=gen) * 1.9 - 0.95
        basis = sub.tangent_basis(xp)  # (n, n-1)

        def embed(params: torch.Tensor, xp=xp, basis=basis) -> torch.Tensor:
            h, u = params[0], params[1:]
            point = sub.expmap(xp, basis @ u)
            return torch.cat([torch.sqrt(1 - h * h) * point, h[None]])

        p0 = torch.cat([h0[None], torch.zeros(n - 1, dtype=torch.float64)])
        jac = torch.autograd.functional.jacobian(embed, p0)  # (n+1, n)
        gram = 0.5 * torch.logdet(jac.T @ jac)
        expected = K.cylindrical_log_volume(h0, n)
        assert torch.allclose(gram, expected, atol=1e-10)


@pytest.mark.parametrize("n", [2, 3, 5, 8])
def test_cylindrical_volume_element_integrates_to_the_sphere_area(n):
    """|S^n| = |S^(n-1)| * integral_{-1}^{1} (1 - h^2)^((n-2)/2) dh (Gauss-Legendre)."""
    nodes, weights = (torch.from_numpy(v) for v in np.polynomial.legendre.leggauss(64))
    integral = (weights * K.cylindrical_log_volume(nodes, n).exp()).sum().item()
    log_area = math.log(integral) + Sphere(n - 1).log_volume()
    # (n-2)/2 is a half-integer for odd n: the endpoint singularity of the derivative limits
    # Gauss-Legendre to about 1e-4 there.
    assert abs(log_area - Sphere(n).log_volume()) < (1e-10 if n % 2 == 0 else 1e-4)


def test_height_coordinates_round_trip_and_pole_precision():
    gen = torch.Generator().manual_seed(0)
    x = Sphere(4).random_uniform((100,), dtype=torch.float64, generator=gen)
    a, b, theta = K.height_coordinates(x)
    assert torch.allclose(a + b, torch.full_like(a, 2.0), atol=1e-14)
    assert torch.allclose(K.from_height_coordinates(a, b, theta), x, atol=1e-14)
    # Next to the north pole 1 - h = r^2 / (1 + h) keeps every digit (1 - h in float32 would
    # round to 0).
    eps = 1e-5
    near = torch.tensor([eps, 0.0, math.sqrt(1 - eps**2)], dtype=torch.float32)
    a, b, _ = K.height_coordinates(near)
    assert b.item() > 0
    assert abs(b.item() / (eps**2 / 2) - 1) < 1e-5


def test_interval_spline_keeps_precision_and_is_finite_at_the_poles():
    gen = torch.Generator().manual_seed(0)
    w, h, d = (torch.randn(6, generator=gen) for _ in range(3))
    d = torch.cat([d, torch.randn(1, generator=gen)])
    # distances to the upper end of 1e-30: far below float32 resolution of h itself
    b = torch.tensor([1e-30, 1e-12, 0.0])
    a = 2.0 - b
    a2, b2, ld, lr = K.interval_spline(a, b, w, h, d)
    assert torch.isfinite(ld).all() and torch.isfinite(lr).all()
    # near the end the spline is linear with slope d_K: b' = d_K b
    slope = knot_derivatives(d)[-1]
    assert torch.allclose(b2[:2] / b[:2], slope.expand(2), rtol=1e-4)
    assert b2[2].item() == 0.0  # the pole stays a pole
    a3, b3, ld3, lr3 = K.interval_spline(a2, b2, w, h, d, inverse=True)
    assert torch.allclose(b3[:2] / b[:2], torch.ones(2), rtol=1e-4)
    assert torch.allclose(ld + ld3, torch.zeros(3), atol=1e-5)
    assert torch.allclose(lr + lr3, torch.zeros(3), atol=1e-5)


def test_stereographic_logdet_matches_autograd(dtype):
    """Forward and inverse logdets against autograd Jacobians in tangent bases."""
    n = 3
    chart = Stereographic(n)
    space = Sphere(n)
    gen = torch.Generator().manual_seed(0)
    xs = space.random_uniform((6,), dtype=torch.float64, generator=gen)
    for x in xs:
        y, ld = chart(x.to(dtype))
        jac = torch.autograd.functional.jacobian(lambda v: K.stereographic(v)[0], x)  # (n, n+1)
        ref = torch.linalg.slogdet(jac @ space.tangent_basis(x))[1]
        assert torch.allclose(ld.double(), ref, atol=1e-4 if dtype == torch.float32 else 1e-10)
        y64 = y.double()
        jac_inv = torch.autograd.functional.jacobian(lambda v: K.stereographic_inverse(v)[0], y64)
        x_back = K.stereographic_inverse(y64)[0]
        ref_inv = torch.linalg.slogdet(space.tangent_basis(x_back).T @ jac_inv)[1]
        _, ld_inv = chart.inverse(y)
        assert torch.allclose(
            ld_inv.double(), ref_inv, atol=1e-4 if dtype == torch.float32 else 1e-9
        )
        # and the closed form n log((1 + |y|^2) / 2)
        closed = n * torch.log((1 + (y64 * y64).sum()) / 2)
        assert torch.allclose(ld.double(), closed, atol=1e-4 if dtype == torch.float32 else 1e-10)


def test_stereographic_is_accurate_near_the_pole():
    """1 - h is computed as r^2 / (1 + h): relative accuracy at 1e-6 from the pole in float32."""
    eps = 1e-6
    x = torch.tensor([[eps, 0.0, math.sqrt(1 - eps**2)]], dtype=torch.float32)
    y, ld = Stereographic(2)(x)
    expected = 2 / eps  # x_1 / (1 - h) with 1 - h = eps^2 / 2
    assert abs(y[0, 0].item() / expected - 1) < 1e-5
    assert abs(ld.item() - 2 * math.log(2 / eps**2)) < 1e-4


def test_stereographic_chart_makes_a_normalised_sphere_density():
    """A Gaussian pushed through the inverse chart integrates to 1 on S^2 (uniform MC)."""
    flow = Flow(StandardNormal(2), Inverse(Stereographic(2))).double()
    space = Sphere(2)
    x = space.random_uniform(
        (MC_SAMPLES,), dtype=torch.float64, generator=torch.Generator().manual_seed(5)
    )
    ratio = torch.exp(flow.log_prob(x) - space.uniform_log_prob(x))
    se = ratio.std().item() / math.sqrt(MC_SAMPLES)
    assert se < 0.03 and abs(ratio.mean().item() - 1) < 4 * se


def test_angle_to_circle_round_trip_and_wrapping():
    chart = AngleToCircle()
    theta = torch.tensor([[-math.pi], [-1.0], [0.0], [3.0]], dtype=torch.float64)
    x, ld = chart(theta)
    assert torch.allclose(x, torch.cat([torch.cos(theta), torch.sin(theta)], -1))
    assert (ld == 0).all()
    back, ld2 = chart.inverse(torch.tensor([[-1.0, 0.0], [-1.0, -0.0]], dtype=torch.float64))
    assert ((back >= -math.pi) & (back < math.pi)).all()
    assert (ld2 == 0).all()


# --------------------------------------------------------------------------- Moebius / expmap math
def test_moebius_logdet_is_the_conformal_factor():
    gen = torch.Generator().manual_seed(0)
    n = 4
    x = Sphere(n).random_uniform((50,), dtype=torch.float64, generator=gen)
    w = 0.7 * torch.nn.functional.normalize(
        torch.randn(n + 1, generator=gen, dtype=torch.float64), dim=0
    )
    y, ld = K.moebius_sphere(x, w)
    assert torch.allclose(ld, n * torch.log((1 - (w * w).sum()) / ((x - w) ** 2).sum(-1)))
    # the uniform distribution is pushed towards -w/|w| (the spherical Cauchy mode)
    assert (y @ w).mean() < (x @ w).mean()


def test_expmap_radial_jacobian_is_positive_for_extreme_admissible_parameters():
    """sum(alpha) -> 1 and sharp components: det J stays > 0 (the invertibility condition)."""
    gen = torch.Generator().manual_seed(0)
    for n in (1, 2, 4):
        mu = torch.nn.functional.normalize(
            torch.randn(4, n + 1, generator=gen, dtype=torch.float64), dim=-1
        )
        alpha = torch.tensor([0.4, 0.3, 0.2, 0.0999], dtype=torch.float64)
        beta = torch.tensor([1e3, 30.0, 1.0, 1e-3], dtype=torch.float64)
        x = Sphere(n).random_uniform((4000,), dtype=torch.float64, generator=gen)
        y, jac = K._expmap_radial_jacobian(x, mu, alpha, beta)
        full = jac @ K.tangent_projector(x) + y[..., :, None] * x[..., None, :]
        sign, _ = torch.linalg.slogdet(full)
        assert (sign > 0).all()
        x2, _ = K.expmap_radial_inverse(y, mu, alpha, beta)
        assert Sphere(n).dist(x, x2).max() < 1e-8


def test_expmap_inverse_has_implicit_function_gradients():
    layer = ExpMapRadial(2, components=2, generator=torch.Generator().manual_seed(0)).double()
    perturb_parameters(layer, 0.5, torch.Generator().manual_seed(1))
    x = Sphere(2).random_uniform(
        (4,), dtype=torch.float64, generator=torch.Generator().manual_seed(2)
    )
    y = layer(x)[0].detach()

    def inv(v):
        return layer.inverse(torch.nn.functional.normalize(v, dim=-1))[0]

    jac_inv = torch.autograd.functional.jacobian(lambda v: inv(v).sum(0), y)  # (3, 4, 3)
    jac_fwd = torch.autograd.functional.jacobian(lambda v: layer(v)[0].sum(0), x)
    for i in range(4):
        basis_x = Sphere(2).tangent_basis(x[i])
        basis_y = Sphere(2).tangent_basis(y[i])
        forward = basis_y.T @ jac_fwd[:, i, :] @ basis_x
        backward = basis_x.T @ jac_inv[:, i, :] @ basis_y
        assert torch.allclose(forward @ backward, torch.eye(2, dtype=torch.float64), atol=1e-8)


# --------------------------------------------------------------------------- robustness
def _set_all(layer: torch.nn.Module, value: float) -> None:
    with torch.no_grad():
        for p in layer.parameters():
            signs = torch.where(torch.arange(p.numel()) % 2 == 0, 1.0, -1.0).reshape(p.shape)
            p.copy_(value * signs.to(p.dtype))


LAYERS = {
    "rotation": lambda: SphereRotation(3),
    "moebius": lambda: MoebiusSphere(3),
    "moebius-circle": lambda: MoebiusSphere(1, components=3),
    "expmap": lambda: ExpMapRadial(3, components=3),
    "recursive": lambda: RecursiveSphereFlow(3, bins=4, hidden=(8,)),
    "recursive-moebius": lambda: RecursiveSphereFlow(2, bins=4, circle="moebius", hidden=(8,)),
}


@pytest.mark.parametrize("value", [30.0, 1e3, 1e6])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_extreme_parameters_give_finite_results(name, value, dtype):
    layer = LAYERS[name]().to(dtype)
    _set_all(layer, value)
    x = Sphere(layer.n).random_uniform(
        (500,), dtype=dtype, generator=torch.Generator().manual_seed(0)
    )
    y, ld = layer(x)  # raises NonFiniteOutput on NaN/inf
    Sphere(layer.n).check_point(y)
    x2, ld2 = layer.inverse(y)
    Sphere(layer.n).check_point(x2)
    assert torch.isfinite(ld).all() and torch.isfinite(ld2).all()


@pytest.mark.parametrize("name", sorted(LAYERS) + ["stereographic"])
def test_off_sphere_inputs_are_refused(name):
    layer = Stereographic(3) if name == "stereographic" else LAYERS[name]()
    n = layer.domain.dim
    x = torch.nn.functional.normalize(torch.randn(4, n + 1), dim=-1)
    x[1] *= 1.01
    with pytest.raises(InvalidInput, match=rf"{type(layer).__name__}\.forward.*off the sphere"):
        layer(x)
    if name != "stereographic":
        with pytest.raises(InvalidInput, match=rf"{type(layer).__name__}\.inverse"):
            layer.inverse(x)


def test_sphere_layers_cannot_follow_euclidean_layers():
    with pytest.raises(SpaceMismatch, match="MoebiusSphere"):
        Chain(ActNorm(3), MoebiusSphere(2))
    with pytest.raises(SpaceMismatch, match="RecursiveSphereFlow"):
        Chain(RecursiveSphereFlow(2, hidden=(8,)), ActNorm(3))
    with pytest.raises(SpaceMismatch):
        Chain(MoebiusSphere(2), RecursiveSphereFlow(3, hidden=(8,)))  # S^2 vs S^3
    # through the chart it is fine
    chain = Chain(ActNorm(2), Inverse(Stereographic(2)), MoebiusSphere(2))
    assert chain.domain == Euclidean(2) and chain.codomain == Sphere(2)


def test_constructor_errors_name_the_class():
    with pytest.raises(ValueError, match="MoebiusSphere.*only defined on the circle"):
        MoebiusSphere(2, components=3)
    with pytest.raises(ValueError, match="MoebiusSphere.*max_radius"):
        MoebiusSphere(2, max_radius=1.0)
    with pytest.raises(ValueError, match="RecursiveSphereFlow.*circle"):
        RecursiveSphereFlow(2, circle="fourier")
    with pytest.raises(ValueError, match="RecursiveSphereFlow.*bins"):
        RecursiveSphereFlow(2, bins=0)
    with pytest.raises(ValueError, match="ExpMapRadial.*components"):
        ExpMapRadial(2, components=0)
    with pytest.raises(ValueError, match="SphereRotation.*dimension"):
        SphereRotation(0)
    with pytest.raises(ValueError, match="Stereographic"):
        Stereographic(True)


# --------------------------------------------------------------------------- one geometry, geoopt
def test_layers_and_space_share_one_geometry():
    """The space's arithmetic is the functional module's: same values, bit for bit."""
    space = Sphere(3)
    gen = torch.Generator().manual_seed(0)
    x = space.random_uniform((20,), dtype=torch.float64, generator=gen)
    y = space.random_uniform((20,), dtype=torch.float64, generator=gen)
    u = space.proju(x, torch.randn(20, 4, dtype=torch.float64, generator=gen))
    assert torch.equal(space.expmap(x, u), K.expmap(x, u))
    assert torch.equal(space.logmap(x, y), K.logmap(x, y))
    assert torch.equal(space.dist(x, y), K.dist(x, y))
    assert torch.equal(space.tangent_basis(x), K.tangent_basis(x))
    assert torch.equal(space.expmap_log_volume(x, u), K.expmap_log_volume(u, 3))
    assert torch.equal(space.proju(x, u + x), K.proju(x, u + x))


def test_own_distance_where_geoopt_float32_is_too_coarse():
    """Why expmap/logmap/dist are ours: geoopt's float32 clamp and NaN gradient at u = 0."""
    x = Sphere(2).random_uniform((5,), generator=torch.Generator().manual_seed(0))
    assert geoopt.Sphere().dist(x, x).min().item() > 0.01  # arccos(1 - 1e-4) = 0.014
    assert Sphere(2).dist(x, x).abs().max().item() == 0.0
    near = K.projx(x + 1e-3 * Sphere(2).proju(x, torch.randn(5, 3)))
    exact = K.dist(x.double(), near.double()).float()
    torch.testing.assert_close(Sphere(2).dist(x, near), exact, rtol=1e-4, atol=0)
    u = torch.zeros(5, 3, requires_grad=True)
    Sphere(2).expmap(x, u).sum().backward()
    assert torch.isfinite(u.grad).all()


def test_centres_are_manifold_parameters():
    layers = [ExpMapRadial(2, components=3), MoebiusSphere(4), ExpMapRadial(2, context_dim=2)]
    for layer in layers:
        points = [p for p in layer.parameters() if isinstance(p, geoopt.ManifoldParameter)]
        assert len(points) == 1
        assert isinstance(points[0].manifold, geoopt.Sphere)
        norms = torch.linalg.vector_norm(points[0].detach(), dim=-1)
        torch.testing.assert_close(norms, torch.ones_like(norms))
    # a rotation stays the exponential of a skew matrix (any value is a rotation)
    rotation = SphereRotation(2)
    assert not any(isinstance(p, geoopt.ManifoldParameter) for p in rotation.parameters())
    # the circle Moebius layer holds the parameters of its circle map, not points of S^1
    assert not any(isinstance(p, geoopt.ManifoldParameter) for p in MoebiusSphere(1).parameters())


def _train(model, data, context=None, steps=40, lr=0.05):
    """Maximum likelihood with RiemannianAdam; returns the losses."""
    space = model.domain
    optimiser = geoopt.optim.RiemannianAdam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        optimiser.zero_grad()
        z, logdet = model.inverse(data, context)
        loss = -(space.uniform_log_prob(z) + logdet).mean()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return losses


def _cluster(mean, count, gen, concentration=6.0):
    mean = torch.nn.functional.normalize(torch.as_tensor(mean, dtype=torch.float32), dim=-1)
    return K.projx(concentration * mean + torch.randn(count, mean.shape[-1], generator=gen))


def _manifold_points(model):
    return [p for p in model.parameters() if isinstance(p, geoopt.ManifoldParameter)]


def test_riemannian_adam_keeps_centres_on_the_sphere_and_reduces_the_loss():
    gen = torch.Generator().manual_seed(0)
    model = Chain(
        SphereRotation(2),
        MoebiusSphere(2),
        ExpMapRadial(2, components=3, generator=torch.Generator().manual_seed(1)),
    )
    data = _cluster([1.0, -1.0, 0.5], 128, gen)
    start = [p.detach().clone() for p in _manifold_points(model)]
    losses = _train(model, data)
    assert losses[-1] < losses[0] - 1.0, f"the loss did not go down: {losses[0]} -> {losses[-1]}"
    for p, p0 in zip(_manifold_points(model), start):
        assert not torch.allclose(p.detach(), p0), "a centre did not move"
        norms = torch.linalg.vector_norm(p.detach(), dim=-1)
        assert (norms - 1).abs().max().item() < 1e-6


def test_riemannian_adam_trains_conditional_centres():
    """With a context, centres are exp_c(P_c offset(context)) of the learned centres c."""
    gen = torch.Generator().manual_seed(0)
    moebius = MoebiusSphere(2, context_dim=1, hidden=(16,))
    expmap = ExpMapRadial(
        2, components=2, context_dim=1, hidden=(16,), generator=torch.Generator().manual_seed(1)
    )
    # at initialisation the offsets vanish: the conditional layer is the unconditional one
    c0 = torch.tensor([[0.7]])
    torch.testing.assert_close(
        expmap.constrained_parameters(c0)["mu"][0], K.projx(expmap.centres.detach())
    )
    model = Chain(moebius, expmap)
    data = torch.cat([_cluster([0.0, 0.0, 1.0], 128, gen), _cluster([1.0, 0.0, 0.0], 128, gen)])
    context = torch.cat([torch.ones(128, 1), -torch.ones(128, 1)])
    losses = _train(model, data, context)
    assert losses[-1] < losses[0] - 1.0, f"the loss did not go down: {losses[0]} -> {losses[-1]}"
    for p in _manifold_points(model):
        norms = torch.linalg.vector_norm(p.detach(), dim=-1)
        assert (norms - 1).abs().max().item() < 1e-6
    with torch.no_grad():
        mu = expmap.constrained_parameters(torch.tensor([[1.0], [-1.0]]))["mu"]
        w, _ = moebius.centre(torch.tensor([[1.0], [-1.0]]))
    torch.testing.assert_close(torch.linalg.vector_norm(mu, dim=-1), torch.ones(2, 2))
    assert not torch.allclose(mu[0], mu[1]), "the centres ignore the context"
    # the learned Moebius modes -w/|w| follow the two clusters
    modes = -torch.nn.functional.normalize(w, dim=-1)
    assert modes[0, 2] > 0.5 and modes[1, 0] > 0.5
