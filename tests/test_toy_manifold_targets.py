"""The Rezende et al. (2020) torus and sphere targets: exact log Z against quadrature."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from manifoldflows.losses import reverse_kl
from physics.toy_manifold import (
    LOG_Z_SPHERE_MIXTURE,
    LOG_Z_TORUS_CORRELATED,
    LOG_Z_TORUS_MULTIMODAL,
    LOG_Z_TORUS_UNIMODAL,
    SphereMixture,
    TorusCorrelated,
    TorusMultimodal,
    TorusUnimodal,
    log_bessel_i0,
    rezende2020_targets,
    sphere_point,
)

TORUS_TARGETS = [
    TorusUnimodal(),
    TorusMultimodal(),
    TorusCorrelated(),
    TorusUnimodal(loc=(-1.0, 2.5), concentration=3.0),
    TorusMultimodal(locs=((0.0, 0.0), (2.0, -2.0)), concentration=2.0),
    TorusCorrelated(loc=-0.3, concentration=4.0),
]


def torus_log_z_by_quadrature(target, n: int = 512) -> float:
    """Periodic trapezoid rule on an ``n x n`` grid (spectrally accurate for smooth periodic
    integrands), with a log-sum-exp so that large energies cannot overflow."""
    t = -math.pi + 2 * math.pi * torch.arange(n, dtype=torch.float64) / n
    g1, g2 = torch.meshgrid(t, t, indexing="ij")
    x = torch.stack([g1.reshape(-1), g2.reshape(-1)], dim=-1)
    cell = (2 * math.pi / n) ** 2
    return float(torch.logsumexp(-target.energy(x), 0)) + math.log(cell)


def sphere_log_z_by_quadrature(target, n_theta: int = 400, n_phi: int = 400) -> float:
    """Spherical coordinates: Gauss-Legendre in the polar angle theta on [0, pi] with the
    sin(theta) Jacobian, periodic trapezoid rule in the azimuth phi."""
    nodes, weights = np.polynomial.legendre.leggauss(n_theta)
    theta = torch.from_numpy(0.5 * math.pi * (nodes + 1.0))
    w_theta = torch.from_numpy(0.5 * math.pi * weights) * torch.sin(theta)
    phi = 2 * math.pi * torch.arange(n_phi, dtype=torch.float64) / n_phi
    th, ph = torch.meshgrid(theta, phi, indexing="ij")
    x = torch.stack([th.sin() * ph.cos(), th.sin() * ph.sin(), th.cos()], dim=-1)
    log_w = torch.log(w_theta)[:, None] + math.log(2 * math.pi / n_phi)
    return float(torch.logsumexp((-target.energy(x) + log_w).reshape(-1), 0))


@pytest.mark.parametrize("target", TORUS_TARGETS, ids=repr)
def test_torus_log_z_matches_quadrature(target):
    assert abs(torus_log_z_by_quadrature(target) - target.log_Z) < 1e-6


@pytest.mark.parametrize(
    "target",
    [SphereMixture(), SphereMixture(third_azimuth=5.0), SphereMixture(((0.3, 1.0),), 40.0)],
    ids=["paper", "figures", "single-kappa40"],
)
def test_sphere_log_z_matches_quadrature(target):
    assert abs(sphere_log_z_by_quadrature(target) - target.log_Z) < 1e-6


def test_published_values():
    # The values quoted in the benchmark notes (7 decimals).
    assert LOG_Z_TORUS_UNIMODAL == pytest.approx(4.147583, abs=1e-6)
    assert LOG_Z_TORUS_MULTIMODAL == pytest.approx(4.147583, abs=1e-6)
    assert LOG_Z_TORUS_CORRELATED == pytest.approx(3.911668, abs=1e-6)
    assert LOG_Z_SPHERE_MIXTURE == pytest.approx(10.921586, abs=1e-6)
    assert set(rezende2020_targets()) == {
        "torus_unimodal",
        "torus_multimodal",
        "torus_correlated",
        "sphere_mixture",
    }


@pytest.mark.parametrize("kappa", [0.0, 0.5, 1.0, 10.0, 29.0, 31.0, 200.0])
def test_log_bessel_i0(kappa):
    ref = math.log(torch.special.i0e(torch.tensor(kappa, dtype=torch.float64)).item()) + kappa
    assert log_bessel_i0(kappa) == pytest.approx(ref, abs=1e-12)


def test_sphere_centres_are_the_papers():
    target = SphereMixture()
    mu = torch.tensor(target.centres, dtype=torch.float64)
    assert torch.allclose(mu.norm(dim=-1), torch.ones(4, dtype=torch.float64))
    # The density peaks near each centre: its energy there is lower than at the antipode.
    assert bool((target.energy(mu) < target.energy(-mu)).all())
    assert sphere_point(0.5, 0.6 + math.pi / 2) == pytest.approx(target.centres[2])
    assert SphereMixture(third_azimuth=5.0).centres[2] == pytest.approx(
        sphere_point(5.0, 0.6 + math.pi / 2)
    )


def test_energy_shapes_dtypes_and_periodicity(dtype):
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(3, 4, 2, generator=g, dtype=torch.float64) * 2 - 1) * math.pi
    for target in TORUS_TARGETS[:3]:
        u = target.energy(x.to(dtype))
        assert u.shape == (3, 4) and u.dtype == dtype
        shifted = target.energy((x + 2 * math.pi).to(dtype))
        assert torch.allclose(u, shifted, atol=1e-5)
        assert torch.allclose(target.normalized_log_prob(x), -target.energy(x) - target.log_Z)
        assert torch.equal(target.log_prob(x), -target.energy(x))  # unnormalised, as Energy
    s = torch.nn.functional.normalize(torch.randn(5, 3, generator=g, dtype=torch.float64), dim=-1)
    assert SphereMixture().energy(s.to(dtype)).shape == (5,)


def test_usable_as_reverse_kl_target():
    from manifoldflows.distributions import Uniform

    target = TorusCorrelated()
    base = Uniform(target.space)
    # E_uniform[log q + u] = -log(4 pi^2) - E[cos] = -log(4 pi^2) for the uniform distribution.
    g = torch.Generator().manual_seed(0)
    loss = reverse_kl(base, target, 20000, generator=g)
    assert abs(loss.item() + math.log(4 * math.pi**2)) < 0.03


@pytest.mark.parametrize(
    "make",
    [
        lambda: TorusUnimodal(loc=(1.0,)),
        lambda: TorusUnimodal(concentration=0.0),
        lambda: TorusMultimodal(locs=()),
        lambda: TorusCorrelated(loc=math.nan),
        lambda: SphereMixture(concentration=-1.0),
        lambda: SphereMixture(centres=((1.0, 2.0, 3.0),)),
    ],
)
def test_bad_arguments(make):
    with pytest.raises(ValueError, match="expected"):
        make()


def test_wrong_point_shape():
    with pytest.raises(ValueError, match="SphereMixture: expected points of Sphere"):
        SphereMixture().energy(torch.zeros(4, 2))
