"""Spaces: equality, membership, charts, tangent bases, products."""

from __future__ import annotations

import math

import geoopt
import pytest
import torch

from manifoldflows.errors import InvalidInput
from manifoldflows.spaces import Euclidean, Interval, Product, Sphere


def test_equality_describes_same_set_and_coordinates():
    assert Euclidean(3) == Euclidean(3) != Euclidean(2)
    assert Interval(-math.inf, math.inf, 2) == Euclidean(2)
    assert Interval(0, 1, 2) != Interval(0, 2, 2) != Euclidean(2)
    assert Product(Euclidean(1), Interval(0, 1, 1)) != Product(Interval(0, 1, 1), Euclidean(1))
    assert len({Euclidean(2), Interval(-math.inf, math.inf, 2)}) == 1


@pytest.mark.parametrize(
    "low, high", [(0.0, 1.0), (-2.0, 3.0), (0.0, math.inf), (-math.inf, 1.0), (-math.inf, math.inf)]
)
def test_interval_chart_round_trip_and_logdet(low, high, dtype):
    space = Interval(low, high, 3)
    z = torch.randn(20, 3, dtype=dtype)
    x, ld = space.from_real(z)
    space.check_point(x)
    z2, ld2 = space.to_real(x)
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(z2, z, atol=tol, rtol=tol)
    torch.testing.assert_close(ld + ld2, torch.zeros(20, dtype=dtype), atol=tol, rtol=tol)
    jac = torch.autograd.functional.jacobian(lambda v: space.from_real(v)[0], z[0])
    torch.testing.assert_close(ld[0], torch.linalg.slogdet(jac)[1], atol=tol, rtol=tol)


def test_interval_volume_and_uniform():
    space = Interval(-1.0, 3.0, 2)
    assert space.is_compact and math.isclose(space.log_volume(), 2 * math.log(4.0))
    u = space.random_uniform((1000,), generator=torch.Generator().manual_seed(0))
    space.check_point(u)
    assert u.min() >= -1 and u.max() <= 3 and abs(u.mean().item() - 1.0) < 0.1
    assert not Interval(0, math.inf).is_compact
    with pytest.raises(NotImplementedError, match="not compact"):
        Interval(0, math.inf).log_volume()


def test_bad_space_arguments():
    with pytest.raises(ValueError, match="low < high"):
        Interval(1.0, 1.0)
    with pytest.raises(ValueError, match="positive integer"):
        Euclidean(0)
    with pytest.raises(ValueError, match="spaces of vectors"):
        Product(Euclidean(2), "R")


def test_check_point_messages():
    with pytest.raises(InvalidInput, match=r"me: expected points of Euclidean\(2\).*\(3, 3\)"):
        Euclidean(2).check_point(torch.zeros(3, 3), "me")
    with pytest.raises(InvalidInput, match="outside"):
        Interval(0, 1, 1).check_point(torch.tensor([[1.5]]))
    # within tolerance at the boundary is accepted
    Interval(0, 1, 1).check_point(torch.tensor([[1.0], [0.0]]))


def test_product_split_merge_basis_and_volume():
    space = Product(Euclidean(2), Interval(0, 2, 1), Interval(-1, 1, 2))
    assert space.event_shape == (5,) and space.dim == 5 and not space.is_compact
    x = space.random((4, 3), generator=torch.Generator().manual_seed(0))
    space.check_point(x)
    parts = space.split(x)
    assert [p.shape[-1] for p in parts] == [2, 1, 2]
    assert torch.equal(space.merge(parts), x)
    basis = space.tangent_basis(x)
    assert basis.shape == (4, 3, 5, 5)
    torch.testing.assert_close(basis[0, 0], torch.eye(5))
    compact = Product(Interval(0, 2, 1), Interval(-1, 1, 2))
    assert math.isclose(compact.log_volume(), math.log(2) + 2 * math.log(2))
    torch.testing.assert_close(
        compact.uniform_log_prob(torch.zeros(3, 3) + 0.5), torch.full((3,), -3 * math.log(2))
    )
    with pytest.raises(InvalidInput, match="component 1"):
        space.check_point(torch.tensor([0.0, 0.0, 5.0, 0.0, 0.0]))


def test_euclidean_manifold_arithmetic():
    space = Euclidean(3)
    x, u = torch.randn(5, 3), torch.randn(5, 3)
    y = space.expmap(x, u)
    torch.testing.assert_close(space.logmap(x, y), u)
    torch.testing.assert_close(space.dist(x, y), u.norm(dim=-1))
    assert torch.equal(space.expmap_log_volume(x, u), torch.zeros(5))
    torch.testing.assert_close(space.inner(x, u, u), (u * u).sum(-1))


def test_sphere_manifold_parameter_stays_on_the_sphere_under_riemannian_adam():
    space = Sphere(3)
    # geoopt's own random points carry another Sphere instance ("Manifolds do not match" if
    # wrapped naively); manifold_parameter copies the data, so they are accepted
    start = geoopt.Sphere().random(4, 4)
    points = space.manifold_parameter(start)
    assert isinstance(points, geoopt.ManifoldParameter) and points.shape == (4, 4)
    target = space.random_uniform((4,), generator=torch.Generator().manual_seed(0))
    optimiser = geoopt.optim.RiemannianAdam([points], lr=0.1)
    for _ in range(100):
        optimiser.zero_grad()
        loss = space.dist(points, target).square().sum()
        loss.backward()
        optimiser.step()
    norms = torch.linalg.vector_norm(points.detach(), dim=-1)
    assert (norms - 1).abs().max().item() < 1e-6
    assert space.dist(points.detach(), target).max().item() < 0.05
    with pytest.raises(InvalidInput, match="manifold_parameter"):
        space.manifold_parameter(torch.ones(3))
