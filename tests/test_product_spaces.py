"""Flows on products of lines, intervals and circles: one layer family, right map per factor."""

from __future__ import annotations

import math

import pytest
import torch

from manifoldflows.distributions import ProductDistribution, StandardNormal, Uniform
from manifoldflows.errors import InvalidInput
from manifoldflows.presets import NSF, build_flow, default_base
from manifoldflows.spaces import Euclidean, Interval, Product, Sphere, Torus
from manifoldflows.testing import perturb_parameters
from manifoldflows.transforms import Coupling, Elementwise, MaskedAutoregressive
from manifoldflows.transforms.maps import (
    CircularSplineMap,
    IntervalSplineMap,
    SplineMap,
)

F64 = torch.float64
MOLECULE_LIKE = Product(Euclidean(3), Interval(0.0, math.pi, 2), Torus(4))


def _perturbed(flow, scale=0.3, seed=0):
    flow = flow.to(F64)
    perturb_parameters(flow, scale, generator=torch.Generator().manual_seed(seed))
    return flow


def _grid_integral(flow, n=600, context=None):
    """Midpoint rule over [0, pi] x [-pi, pi) of a flow on Product(Interval(0, pi), Torus(1))."""
    a = (torch.arange(n, dtype=F64) + 0.5) * (math.pi / n)
    t = -math.pi + (torch.arange(n, dtype=F64) + 0.5) * (2 * math.pi / n)
    x = torch.stack(torch.meshgrid(a, t, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        q = flow.log_prob(x, context).exp()
    return float(q.sum() * (math.pi / n) * (2 * math.pi / n))


def test_each_factor_gets_its_own_map_and_base():
    flow = NSF(MOLECULE_LIKE, layers=4, hidden=(16,), bins=5)
    assert flow.space == MOLECULE_LIKE
    assert isinstance(flow.base, ProductDistribution)
    kinds = [type(f) for f in flow.base.factors]
    assert kinds == [StandardNormal, Uniform, Uniform]
    maps = {type(m) for layer in flow.transform for m in layer.groups.maps}
    assert maps == {SplineMap, IntervalSplineMap, CircularSplineMap}
    # every coordinate is transformed by some layer (masks cut across factors)
    moved = torch.zeros(MOLECULE_LIKE.ambient_dim, dtype=torch.bool)
    for layer in flow.transform:
        moved[layer.transformed] = True
    assert bool(moved.all())


@pytest.mark.parametrize("autoregressive", [False, True], ids=["coupling", "autoregressive"])
def test_product_flow_samples_stay_on_the_space_and_densities_agree(autoregressive):
    flow = _perturbed(
        NSF(MOLECULE_LIKE, layers=3, hidden=(16,), bins=4, autoregressive=autoregressive)
    )
    with torch.no_grad():
        x, log_q = flow.sample_and_log_prob((256,), generator=torch.Generator().manual_seed(1))
        assert bool(MOLECULE_LIKE.contains(x).all())
        torch.testing.assert_close(flow.log_prob(x), log_q, atol=1e-6, rtol=1e-9)
    angles = MOLECULE_LIKE.split(x)[1]
    assert float(angles.min()) >= 0.0 and float(angles.max()) <= math.pi


@pytest.mark.parametrize("autoregressive", [False, True], ids=["coupling", "autoregressive"])
def test_interval_times_circle_density_integrates_to_one(autoregressive):
    space = Product(Interval(0.0, math.pi, 1), Torus(1))
    flow = _perturbed(
        NSF(space, layers=3, hidden=(16,), bins=6, autoregressive=autoregressive), 0.5
    )
    assert abs(_grid_integral(flow) - 1.0) < 1e-3
    # the perturbation made the density far from uniform, so the check has power
    with torch.no_grad():
        x = space.random_uniform((2000,), dtype=F64, generator=torch.Generator().manual_seed(2))
        spread = flow.log_prob(x).std()
    assert float(spread) > 0.1


def test_conditional_product_density_integrates_to_one_for_each_context():
    space = Product(Interval(0.0, math.pi, 1), Torus(1))
    flow = _perturbed(NSF(space, layers=2, hidden=(16,), bins=5, context_dim=2), 0.5)
    for c in (torch.zeros(2, dtype=F64), torch.tensor([1.5, -2.0], dtype=F64)):
        assert abs(_grid_integral(flow, context=c) - 1.0) < 1e-3


def test_product_flow_with_a_line_integrates_to_one_by_importance_sampling():
    flow = _perturbed(NSF(MOLECULE_LIKE, layers=4, hidden=(16,), bins=4), 0.1)
    base = default_base(MOLECULE_LIKE).to(F64)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        x, log_b = base.sample_and_log_prob((200_000,), generator=g)
        ratio = (flow.log_prob(x) - log_b).exp()
    mean, se = float(ratio.mean()), float(ratio.std() / math.sqrt(ratio.numel()))
    assert se < 0.02  # precise enough to see a wrong normalisation
    assert abs(mean - 1.0) < 4 * se
    assert float(ratio.std()) > 0.05  # q differs from the base


def test_product_autoregressive_layer_is_triangular_in_its_order():
    layer = MaskedAutoregressive(
        MOLECULE_LIKE, "spline", bins=4, hidden=(32,), order=[9, 1, 8, 2, 7, 3, 6, 4, 5]
    )
    layer = _perturbed(layer, 0.5)
    x = MOLECULE_LIKE.random((1,), dtype=F64, generator=torch.Generator().manual_seed(4))[0]
    jac = torch.autograd.functional.jacobian(lambda v: layer(v)[0], x)
    order = layer.made.order
    later = order[None, :] > order[:, None]  # output i may not depend on later inputs j
    assert bool((jac[later] == 0).all())
    assert bool((jac.diagonal() != 0).all())


def test_map_per_kind_and_elementwise_layers():
    layer = Coupling(MOLECULE_LIKE, {"real": "affine", "interval": "spline", "angle": "moebius"})
    names = sorted(type(m).__name__ for m in layer.groups.maps)
    assert names in (
        ["AffineMap", "IntervalSplineMap"],
        ["IntervalSplineMap", "MoebiusMap"],
        ["AffineMap", "IntervalSplineMap", "MoebiusMap"],
        ["AffineMap"],
        ["MoebiusMap"],
    )
    elementwise = Elementwise(MOLECULE_LIKE, "spline", bins=3)
    assert len(elementwise.groups.maps) == 3


def test_flow_on_a_single_interval_uses_elementwise_layers():
    flow = build_flow(Interval(-1.0, 2.0, 1), "spline", layers=2, bins=4)
    assert all(isinstance(layer, Elementwise) for layer in flow.transform)


def test_bad_product_layers_are_refused_with_clear_errors():
    with pytest.raises(ValueError, match="Coupling: coordinates .* embedded manifold"):
        Coupling(Product(Sphere(2), Torus(1)), "spline", mask=[True, False, False, True])
    with pytest.raises(ValueError, match="options \\['components'\\] are not taken"):
        Coupling(MOLECULE_LIKE, "spline", components=3)
    with pytest.raises(ValueError, match="no element-wise map 'affine' for angle coordinates"):
        Coupling(Torus(2), "affine")
    with pytest.raises(ValueError, match="IntervalSplineMap: expected a finite interval"):
        NSF(Product(Euclidean(1), Interval(0.0, math.inf, 1)))
    with pytest.raises(ValueError, match="actnorm=True needs R\\^d"):
        NSF(MOLECULE_LIKE, actnorm=True)
    with pytest.raises(InvalidInput, match="Coupling.forward: expected points of Interval"):
        Coupling(MOLECULE_LIKE)(torch.full((1, 9), 4.0))  # 4 is outside [0, pi]


def test_build_flow_takes_a_base_of_the_users_choice():
    from manifoldflows.distributions import DiagNormal

    base = DiagNormal(3, loc=1.0, scale=2.0)
    flow = build_flow(3, "affine", layers=2, hidden=(8,), base=base)
    assert flow.base is base
    with pytest.raises(ValueError, match="Flow: base distribution"):
        build_flow(Torus(3), "spline", layers=1, base=base)


def test_map_errors_name_the_layer():
    with pytest.raises(ValueError, match="Coupling: IntervalSplineMap: expected a finite interval"):
        Coupling(Product(Euclidean(1), Interval(0.0, math.inf, 1)), "spline")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_product_distribution_passes_the_checker(dtype):
    from manifoldflows.distributions import DiagNormal, VonMises
    from manifoldflows.testing import check_distribution

    plain = ProductDistribution(
        [StandardNormal(2), Uniform(Interval(0.0, math.pi, 1)), VonMises(Torus(2))]
    )
    check_distribution(plain, dtype=dtype)
    conditional = ProductDistribution([DiagNormal(2, context_dim=3), Uniform(Torus(1))])
    check_distribution(conditional, dtype=dtype, context=torch.randn(4, 3))
    with pytest.raises(ValueError, match="different context sizes"):
        ProductDistribution([DiagNormal(1, context_dim=2), DiagNormal(1, context_dim=3)])


def test_product_distribution_density_is_the_sum_of_its_factors():
    from manifoldflows.distributions import VonMises

    factors = [StandardNormal(2), VonMises(Torus(1))]
    product = ProductDistribution(factors)
    x = product.sample((6,), generator=torch.Generator().manual_seed(5))
    expected = factors[0].log_prob(x[..., :2]) + factors[1].log_prob(x[..., 2:])
    torch.testing.assert_close(product.log_prob(x), expected)
