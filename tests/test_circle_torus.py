"""Circle and torus layers: seams, bijectivity, normalisation, extremes and bad input."""

from __future__ import annotations

import math

import pytest
import torch

from manifoldflows.core import Chain, Flow
from manifoldflows.distributions import StandardNormal, Uniform
from manifoldflows.errors import InvalidInput, SpaceMismatch
from manifoldflows.functional.circle import (
    circular_rational_quadratic_spline,
    disk_point,
    moebius_circle,
    noncompact_projection,
    wrap,
)
from manifoldflows.nn.periodic import PeriodicMADE, periodic_embedding
from manifoldflows.presets import TorusMoebius, TorusNSF
from manifoldflows.spaces import Circle, Torus
from manifoldflows.testing import perturb_parameters
from manifoldflows.transforms import (
    AffineCoupling,
    CircularShift,
    CircularSpline,
    Coupling,
    MaskedAutoregressive,
    MoebiusCircle,
    NonCompactProjection,
)
from manifoldflows.transforms.maps import CircularSplineMap, MoebiusMap, NonCompactMap, make_map

PI = math.pi
F64 = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _perturbed(layer, scale: float, dtype=F64, device="cpu", seed: int = 1):
    layer = layer.to(dtype=dtype)
    perturb_parameters(layer, scale, _gen(seed))
    return layer.to(device)


def _midpoints(m: int, dtype=F64) -> torch.Tensor:
    return -PI + (torch.arange(m, dtype=dtype) + 0.5) * (2 * PI / m)


# ------------------------------------------------------------------------------ kernels


def test_single_moebius_is_the_blaschke_factor_rotated_to_fix_the_seam():
    g = _gen()
    x = torch.rand(200, generator=g, dtype=F64) * 2 * PI - PI
    for _ in range(5):
        w = disk_point(torch.randn(2, generator=g, dtype=F64) * 2)
        y, ld = moebius_circle(x, w[None])
        wc = torch.complex(w[0], w[1])

        def blaschke(t, wc=wc):
            z = torch.polar(torch.ones_like(t), t)
            return (z - wc) / (1 - wc.conj() * z)

        seam = torch.tensor([-PI], dtype=F64)
        expected = wrap(torch.angle(blaschke(x)) - torch.angle(blaschke(seam)) - PI)
        assert torch.allclose(wrap(y - expected), torch.zeros_like(y), atol=1e-12)
        h = 1e-6
        slope = wrap(torch.angle(blaschke(x + h)) - torch.angle(blaschke(x - h))) / (2 * h)
        assert torch.allclose(ld.exp(), slope, rtol=1e-7)


def test_noncompact_projection_matches_the_tan_chart():
    x = torch.linspace(-3.0, 3.0, 101, dtype=F64)
    log_a, b = torch.tensor(-0.7, dtype=F64), torch.tensor(1.3, dtype=F64)
    y, _ = noncompact_projection(x, log_a, b)
    assert torch.allclose(y, 2 * torch.atan(log_a.exp() * torch.tan(x / 2) + b), atol=1e-12)


def _kernels(g):
    """(name, forward-and-inverse function of (x, inverse)) with random parameters."""
    k = 4
    w = disk_point(torch.randn(k, 2, generator=g, dtype=F64) * 1.5)
    logits = torch.randn(k, generator=g, dtype=F64)
    widths, heights, derivs = (torch.randn(6, generator=g, dtype=F64) for _ in range(3))
    log_a, b = torch.tensor(0.8, dtype=F64), torch.tensor(-2.0, dtype=F64)
    return {
        "moebius-1": lambda x, inv: moebius_circle(x, w[:1], inverse=inv),
        "moebius-mixture": lambda x, inv: moebius_circle(x, w, logits, inverse=inv),
        "spline": lambda x, inv: circular_rational_quadratic_spline(
            x, widths, heights, derivs, inverse=inv
        ),
        "noncompact": lambda x, inv: noncompact_projection(x, log_a, b, inverse=inv),
    }


@pytest.mark.parametrize("name", ["moebius-1", "moebius-mixture", "spline", "noncompact"])
@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_kernel_log_derivative_matches_autograd(name, inverse):
    fn = _kernels(_gen(3))[name]
    x = torch.cat(
        [
            torch.tensor([-PI, -PI + 1e-3, 0.0, PI - 1e-3], dtype=F64),
            torch.rand(20, generator=_gen(4), dtype=F64) * 2 * PI - PI,
        ]
    ).requires_grad_(True)
    y, ld = fn(x, inverse)
    (slope,) = torch.autograd.grad(y.sum(), x)
    assert torch.allclose(slope.log(), ld, atol=1e-9)
    back, ld_back = fn(y.detach(), not inverse)
    assert torch.allclose(wrap(back - x.detach()), torch.zeros_like(back), atol=1e-10)
    assert torch.allclose(ld + ld_back, torch.zeros_like(ld), atol=1e-9)


def test_moebius_mixture_fixes_the_seam():
    g = _gen(5)
    w = disk_point(torch.randn(5, 2, generator=g, dtype=F64) * 3)
    y, _ = moebius_circle(torch.tensor(-PI, dtype=F64), w, torch.randn(5, generator=g))
    assert abs(y.item() + PI) < 1e-12


@pytest.mark.parametrize("shift", [False, True])
def test_circular_spline_is_continuous_across_the_seam(shift, dtype):
    """Values, derivative and density match on both sides of -pi == pi."""
    m = CircularSplineMap(7, shift=shift)
    params = torch.randn(m.params_per_dim, generator=_gen(6), dtype=dtype) * 2
    delta = 1e-9 if dtype == F64 else 1e-4
    x = torch.tensor([-PI, -PI + delta, PI - delta], dtype=dtype)
    y, ld = m.forward(x, m.unpack(params))
    # y(-pi) and y(pi - delta) are within delta * slope of each other on the circle
    gap = wrap(y[0] - y[2]).abs()
    assert gap <= 2 * delta * ld[0].exp() * 1.01
    if not shift:
        assert abs(y[0].item() + PI) <= 1e-6 and abs(y[2].item() - PI) <= 2 * delta * 1e3
    tol = 1e-6 if dtype == F64 else 5e-3
    assert torch.allclose(ld[0], ld[2], atol=tol)
    # derivative at the seam from autograd equals the knot derivative shared by both ends
    xs = torch.tensor([-PI, PI], dtype=dtype, requires_grad=True)
    ys, lds = circular_rational_quadratic_spline(xs, params[:7], params[7:14], params[14:21])
    (slope,) = torch.autograd.grad(ys.sum(), xs)
    assert torch.allclose(slope[0], slope[1], rtol=1e-4)
    assert torch.allclose(lds[0], lds[1], atol=1e-6)
    # the density of a flow is continuous where the data-side seam is
    layer = _perturbed(CircularSpline(1, bins=7, shift=shift), 0.8, dtype=dtype)
    flow = Flow(Uniform(Circle()), layer).to(dtype)
    with torch.no_grad():
        lp = flow.log_prob(torch.tensor([[-PI], [PI - delta]], dtype=dtype))
    assert torch.allclose(lp[0], lp[1], atol=tol)


# ------------------------------------------------------------------------------ layers

CIRCLE_LAYERS = {
    "moebius": lambda: MoebiusCircle(1),
    "moebius-mixture": lambda: MoebiusCircle(1, components=4),
    "moebius-mixture-fixed-seam": lambda: MoebiusCircle(1, components=3, shift=False),
    "spline": lambda: CircularSpline(1, bins=7),
    "spline-fixed-seam": lambda: CircularSpline(1, bins=5, shift=False),
    "shift": lambda: CircularShift(1),
    "noncompact": lambda: NonCompactProjection(1),
    "spline-context": lambda: CircularSpline(1, bins=5, context_dim=2, hidden=(8,)),
    "moebius-context": lambda: MoebiusCircle(1, components=2, context_dim=2, hidden=(8,)),
}


def _context(layer, shape, dtype, device="cpu"):
    if layer.context_dim is None:
        return None
    c = torch.randn(*shape, layer.context_dim, generator=_gen(7), dtype=dtype)
    return c.to(device)


@pytest.mark.parametrize("name", sorted(CIRCLE_LAYERS))
def test_circle_layer_is_a_bijection_of_the_circle(name, dtype, device):
    """The lifted output angle increases monotonically by exactly 2 pi over one turn."""
    layer = _perturbed(CIRCLE_LAYERS[name](), 1.0, dtype=dtype, device=device)
    m = 4000
    x = (-PI + torch.arange(m, dtype=dtype) * (2 * PI / m)).to(device)[:, None]
    ctx = _context(layer, (), dtype, device)
    with torch.no_grad():
        y, ld = layer(x, ctx)
    y = y[:, 0]
    steps = wrap(torch.roll(y, -1) - y)  # closes the loop: last point back to the first
    assert bool((steps > 0).all()), "output angle is not strictly increasing"
    total = steps.double().sum().item()
    assert abs(total - 2 * PI) < (1e-9 if dtype == F64 else 1e-3)


@pytest.mark.parametrize("kind", ["coupling", "autoregressive"])
def test_torus_layers_map_each_transformed_angle_bijectively(kind):
    """With the other angle fixed, the transformed angle turns once around the circle."""
    if kind == "coupling":
        layer = Coupling(Torus(2), "moebius", components=3, hidden=(16,))
    else:
        layer = MaskedAutoregressive(Torus(2), "spline", bins=5, hidden=(16,))
    layer = _perturbed(layer, 0.5)
    m = 2000
    x = torch.stack([torch.full((m,), 1.234, dtype=F64), _midpoints(m)], dim=-1)
    with torch.no_grad():
        y, _ = layer(x)
    # the first angle is kept (coupling) or mapped independently of the second (autoregressive)
    assert bool((y[:, 0] == y[0, 0]).all())
    steps = wrap(torch.roll(y[:, 1], -1) - y[:, 1])
    assert bool((steps > 0).all()) and abs(steps.sum().item() - 2 * PI) < 1e-9


def _log_integral(flow, n, m, context=None) -> float:
    grid = _midpoints(m)
    x = grid[:, None] if n == 1 else torch.cartesian_prod(grid, grid)
    with torch.no_grad():
        lp = flow.log_prob(x, context)
    return (torch.logsumexp(lp, 0) + n * math.log(2 * PI / m)).item()


@pytest.mark.parametrize(
    "name, build, m, tol",
    [
        ("nsf", lambda: TorusNSF(1, layers=3, bins=6), 4000, 1e-4),  # C^1 splines: O(h^2)
        ("moebius", lambda: TorusMoebius(1, layers=2, components=3), 400, 1e-9),
        ("noncompact-shift", None, 400, 1e-9),
    ],
)
def test_densities_integrate_to_one_on_the_circle(name, build, m, tol):
    """Midpoint rule on a grid of m points: spectrally accurate for analytic densities."""
    if build is None:
        flow = Flow(
            Uniform(Torus(1)),
            Chain(NonCompactProjection(1), CircularShift(1), MoebiusCircle(1, components=2)),
        )
    else:
        flow = build()
    flow = _perturbed(flow, 0.5)
    with torch.no_grad():
        lp = flow.log_prob(_midpoints(100)[:, None])
    assert lp.exp().max() > 1.5 / (2 * PI), "test flow is too close to uniform"
    assert abs(_log_integral(flow, 1, m)) < tol


def test_conditional_circle_density_integrates_to_one_for_every_context():
    flow = _perturbed(TorusNSF(1, context_dim=2, layers=2, bins=5, hidden=(16,)), 0.15)
    logs = []
    for c in torch.randn(3, 2, generator=_gen(8), dtype=F64):
        logs.append(_log_integral(flow, 1, 4000, c))
        assert abs(logs[-1]) < 1e-4
    grid = _midpoints(50)[:, None]
    with torch.no_grad():
        a = flow.log_prob(grid, torch.zeros(2, dtype=F64))
        b = flow.log_prob(grid, torch.ones(2, dtype=F64))
    assert not torch.allclose(a, b), "density does not depend on the context"


@pytest.mark.parametrize(
    "name, build, perturb, m, tol",
    [
        # smooth (tanh) conditioners + analytic Moebius maps (|w| <= 0.8 keeps them away from
        # their poles): the midpoint rule is spectrally accurate. Splines are C^1 only (and
        # ReLU conditioners C^0), so their error is O(h^2).
        (
            "moebius-coupling",
            lambda: TorusMoebius(
                2, layers=2, components=2, hidden=(16,), activation="tanh", max_radius=0.8
            ),
            0.2,
            96,
            1e-7,
        ),
        (
            "moebius-autoregressive",
            lambda: TorusMoebius(
                2,
                layers=2,
                components=2,
                hidden=(16,),
                activation="tanh",
                autoregressive=True,
                max_radius=0.8,
            ),
            0.2,
            96,
            1e-7,
        ),
        ("nsf-coupling", lambda: TorusNSF(2, layers=4, bins=6, hidden=(16,)), 0.15, 128, 2e-4),
        (
            "nsf-autoregressive",
            lambda: TorusNSF(2, layers=3, bins=6, hidden=(16,), autoregressive=True),
            0.15,
            128,
            2e-4,
        ),
    ],
)
def test_densities_integrate_to_one_on_the_torus(name, build, perturb, m, tol):
    flow = _perturbed(build(), perturb)
    with torch.no_grad():
        lp = flow.log_prob(Torus(2).random((200,), dtype=F64, generator=_gen(9)))
    assert lp.exp().max() > 1.5 / (2 * PI) ** 2, "test flow is too close to uniform"
    assert abs(_log_integral(flow, 2, m)) < tol


@pytest.mark.parametrize("autoregressive", [False, True])
def test_torus_flow_density_is_continuous_across_both_seams(autoregressive):
    flow = _perturbed(
        TorusNSF(2, layers=3, bins=5, hidden=(16,), autoregressive=autoregressive), 0.3
    )
    a = torch.rand(20, generator=_gen(10), dtype=F64) * 2 * PI - PI
    near = PI - 1e-9
    pairs = [
        (
            torch.stack([a, torch.full_like(a, -PI)], -1),
            torch.stack([a, torch.full_like(a, near)], -1),
        ),
        (
            torch.stack([torch.full_like(a, -PI), a], -1),
            torch.stack([torch.full_like(a, near), a], -1),
        ),
    ]
    with torch.no_grad():
        for left, right in pairs:
            assert torch.allclose(flow.log_prob(left), flow.log_prob(right), atol=1e-6)


def test_zero_parameters_give_the_identity():
    x = Torus(3).random((50,), dtype=torch.float32, generator=_gen(11))
    for layer in (
        MoebiusCircle(3),
        CircularSpline(3, bins=6),
        CircularShift(3),
        NonCompactProjection(3),
        Coupling(Torus(3), "spline", hidden=(8,)),
        MaskedAutoregressive(Torus(3), "moebius", hidden=(8,)),
    ):
        y, ld = layer(x)
        assert torch.allclose(y, x, atol=1e-5) and torch.allclose(ld, torch.zeros(50), atol=1e-5)
    # mixtures start at distinct, symmetric centres: near (not exactly) the identity
    y, ld = MoebiusCircle(3, components=4)(x)
    assert 0 < Torus(3).dist(x, y).max() < 0.5


@pytest.mark.parametrize(
    "build",
    [
        lambda: MoebiusCircle(2, components=3),
        lambda: MoebiusCircle(2),
        lambda: CircularSpline(2, bins=6),
        lambda: CircularShift(2),
        lambda: NonCompactProjection(2),
    ],
    ids=["moebius-mixture", "moebius", "spline", "shift", "noncompact"],
)
@pytest.mark.parametrize("scale", [1e4, 1e30])
def test_extreme_parameters_give_finite_outputs(build, scale, dtype):
    layer = build().to(dtype)
    with torch.no_grad():
        for p in layer.parameters():
            signs = torch.randint(0, 2, p.shape, generator=_gen(12)).to(dtype) * 2 - 1
            p.copy_(scale * signs)
    x = torch.cat(
        [torch.tensor([-PI, 0.0, PI], dtype=dtype), torch.linspace(-3.1, 3.1, 61, dtype=dtype)]
    )
    x = torch.stack([x, x.flip(0)], dim=-1)
    y, ld = layer(x)  # the layer's own checks raise on NaN/inf
    Torus(2).check_point(y)
    assert bool(torch.isfinite(ld).all())
    x2, ld2 = layer.inverse(y)
    Torus(2).check_point(x2)
    assert bool(torch.isfinite(ld2).all())


def test_circle_layer_after_a_euclidean_layer_is_refused():
    with pytest.raises(SpaceMismatch, match="AffineCoupling.*CircularSpline"):
        Chain(AffineCoupling(2), CircularSpline(2))
    with pytest.raises(SpaceMismatch, match="Coupling"):
        Chain(Coupling(Torus(2)), AffineCoupling(2))
    with pytest.raises(SpaceMismatch, match="Torus\\(2\\).*Torus\\(3\\)"):
        Chain(CircularShift(2), MoebiusCircle(3))
    with pytest.raises(SpaceMismatch):
        Flow(StandardNormal(2), CircularSpline(2))
    Chain(CircularShift(2), Coupling(Torus(2)), MoebiusCircle(2))  # same torus: fine


@pytest.mark.parametrize(
    "build",
    [
        lambda: MoebiusCircle(2, components=2),
        lambda: CircularSpline(2),
        lambda: CircularShift(2),
        lambda: NonCompactProjection(2),
        lambda: Coupling(Torus(2)),
        lambda: MaskedAutoregressive(Torus(2)),
    ],
    ids=["moebius", "spline", "shift", "noncompact", "coupling", "autoregressive"],
)
def test_angles_outside_the_circle_are_refused_naming_the_layer(build):
    layer = build()
    bad = torch.tensor([[0.0, 3.5]])
    for method in ("forward", "inverse"):
        with pytest.raises(InvalidInput, match=f"{layer.name}.{method}"):
            getattr(layer, method)(bad)
    # pi itself (the limit of a wrapped angle) is accepted and mapped into [-pi, pi)
    y, _ = layer(torch.tensor([[PI, -PI]]))
    assert bool(((y >= -PI) & (y < PI)).all())


def test_periodic_made_is_autoregressive_in_the_angles():
    made = PeriodicMADE(4, 3, hidden=(32, 32), order=[2, 4, 1, 3], zero_last=False)
    x = torch.rand(4, dtype=F64) * 2 * PI - PI
    made = made.to(F64)
    jac = torch.autograd.functional.jacobian(lambda v: made(v).sum(-1), x)  # (4 outputs, 4 in)
    order = made.order
    allowed = order[None, :] < order[:, None]  # output i may depend on input j
    assert bool((jac[~allowed] == 0).all())
    assert bool((jac[allowed] != 0).all())
    emb = periodic_embedding(x)
    assert torch.allclose(emb[0::2], x.cos()) and torch.allclose(emb[1::2], x.sin())


@pytest.mark.parametrize("mode", ["maf", "iaf"])
def test_conditional_torus_autoregressive_conditions_every_angle(mode):
    """The first angle in the order has no earlier angles, but it must still see the context."""
    layer = _perturbed(
        MaskedAutoregressive(
            Torus(3), "spline", bins=4, hidden=(16,), context_dim=2, order=[2, 3, 1], mode=mode
        ),
        0.5,
    )
    x = Torus(3).random((8,), dtype=F64, generator=_gen(16))
    with torch.no_grad():
        y0, _ = layer(x, torch.zeros(2, dtype=F64))
        y1, _ = layer(x, torch.ones(2, dtype=F64))
    assert bool((Torus(1).dist(y0[..., :, None], y1[..., :, None]) > 1e-6).all())


@pytest.mark.parametrize("mode", ["maf", "iaf"])
def test_torus_autoregressive_jacobian_is_triangular_in_its_order(mode):
    layer = _perturbed(
        MaskedAutoregressive(Torus(3), "spline", bins=4, hidden=(16,), order=[3, 1, 2], mode=mode),
        0.5,
    )
    x = Torus(3).random((), dtype=F64, generator=_gen(13))
    jac = torch.autograd.functional.jacobian(lambda v: layer._forward(v, None)[0], x)
    order = layer.made.order
    later = order[None, :] > order[:, None]
    assert bool((jac[later] == 0).all())


def test_torus_coupling_keeps_the_conditioning_angles():
    layer = _perturbed(Coupling(Torus(4), "spline", mask=[True, False, False, True]), 0.5)
    x = Torus(4).random((10,), dtype=F64, generator=_gen(14))
    y, _ = layer(x)
    assert torch.equal(y[:, 1:3], x[:, 1:3])
    assert not torch.allclose(y[:, [0, 3]], x[:, [0, 3]])


def test_presets_sample_and_evaluate_consistently():
    flow = _perturbed(
        TorusNSF(3, context_dim=2, layers=3, bins=4, hidden=(16,), autoregressive=True, mode="iaf"),
        0.3,
    )
    ctx = torch.randn(2, dtype=F64)
    x, log_q = flow.sample_and_log_prob((16,), ctx, generator=_gen(15))
    Torus(3).check_point(x)
    assert torch.allclose(flow.log_prob(x, ctx), log_q, atol=1e-8)
    flow = TorusMoebius(4, layers=4, components=2, hidden=(16,))
    transformed = torch.stack(
        [
            layer.transformed.new_zeros(4).index_fill(0, layer.transformed, 1)
            for layer in flow.transform
        ]
    )
    # every pair of angles is split by some layer (one conditions the other)
    for i in range(4):
        for j in range(i + 1, 4):
            assert bool((transformed[:, i] != transformed[:, j]).any())


def test_bad_constructor_arguments_are_refused():
    with pytest.raises(ValueError, match="Coupling"):
        Coupling(Torus(1))
    with pytest.raises(ValueError, match="MaskedAutoregressive"):
        MaskedAutoregressive(Torus(2), mode="bad")
    with pytest.raises(ValueError, match="mask"):
        Coupling(Torus(3), mask=[True, True, True])
    with pytest.raises(ValueError, match="no element-wise map .nope. for angle"):
        make_map("nope", Torus(1).coordinates[0])
    with pytest.raises(ValueError, match="MoebiusMap"):
        MoebiusMap(0)
    with pytest.raises(ValueError, match="MoebiusMap"):
        MoebiusMap(2, max_radius=1.0)
    with pytest.raises(ValueError, match="CircularSplineMap"):
        CircularSplineMap(4, min_bin_width=0.5)
    with pytest.raises(ValueError, match="NonCompactMap"):
        NonCompactMap(scale_bound=0.0)
    with pytest.raises(ValueError, match="NonCompactProjection"):
        NonCompactProjection(0)
    with pytest.raises(ValueError, match="TorusNSF"):
        TorusNSF(0)
    with pytest.raises(ValueError, match="TorusMoebius"):
        TorusMoebius(2, layers=0)
