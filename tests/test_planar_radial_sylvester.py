"""Specific tests of the planar, radial and Sylvester flows and their presets.

The generic properties (inverse, logdet vs autograd, gradients, context, save/load) are covered
by the checker cases in ``tests/cases/planar_radial_sylvester.py``. These tests pin down the
invertibility constraints under adversarial raw parameters, the accuracy and the gradients of
the numerical inverses, and that the presets are normalised densities that can be trained.
"""

from __future__ import annotations

import math

import pytest
import torch

from manifoldflows.datasets import two_moons
from manifoldflows.functional import planar as kernels
from manifoldflows.presets import Planar, Sylvester
from manifoldflows.testing import perturb_parameters
from manifoldflows.training import fit
from manifoldflows.transforms import PlanarFlow, RadialFlow, SylvesterFlow

F64 = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    # These tests run many tiny ops; on a shared machine intra-op threads only add contention.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _jacobian_sign_and_logdet(layer, z: torch.Tensor, context=None):
    """``(sign, log|det|)`` of autograd's Jacobian of ``layer.forward`` at each row of ``z``."""
    signs, logdets = [], []
    for i in range(z.shape[0]):
        ctx = None if context is None else context[i : i + 1]
        jac = torch.autograd.functional.jacobian(
            lambda v, ctx=ctx: layer(v.unsqueeze(0), ctx)[0].squeeze(0), z[i]
        )
        sign, logabs = torch.linalg.slogdet(jac)
        signs.append(sign)
        logdets.append(logabs)
    return torch.stack(signs), torch.stack(logdets)


def _assert_sound(layer, z: torch.Tensor, context=None, atol: float = 1e-8, ld_atol=1e-8):
    """Orientation-preserving, finite logdet equal to autograd's, accurate inverse.

    ``atol`` bounds the round-trip error relative to ``1 + max|y|``; ``ld_atol`` the sum of the
    forward and inverse logdets (both loosened only where the map is ill-conditioned).
    """
    y, logdet = layer(z, context)
    assert torch.isfinite(y).all() and torch.isfinite(logdet).all()
    sign, ref = _jacobian_sign_and_logdet(layer, z, context)
    assert (sign > 0).all(), "the Jacobian determinant must stay positive"
    torch.testing.assert_close(logdet, ref, atol=1e-8, rtol=1e-8)
    z2, logdet_inv = layer.inverse(y, context)
    scale = 1 + y.abs().amax(-1, keepdim=True)
    assert ((z2 - z).abs() / scale).max() < atol
    torch.testing.assert_close(logdet + logdet_inv, torch.zeros_like(logdet), atol=ld_atol, rtol=0)


# ----------------------------------------------------------------------------- planar
@pytest.mark.parametrize("w_norm", [1e-3, 1.0, 1e3])
@pytest.mark.parametrize("u_factor", [-1.0, -1e3])
def test_planar_constraint_with_antiparallel_u(w_norm, u_factor):
    layer = PlanarFlow(3).to(F64)
    direction = torch.tensor([0.6, -0.8, 0.0], dtype=F64)
    with torch.no_grad():
        layer.w.copy_(w_norm * direction)
        layer.u.copy_(u_factor * w_norm * direction * 5)  # w^T u far below -1
        layer.b.fill_(0.3)
    p = layer.constrained_parameters()
    actual = (p["w"] * p["u_hat"]).sum()
    assert actual > -1 + 0.5 * 1e-3, "w^T u_hat must respect the strict margin"
    torch.testing.assert_close(actual, p["wu"], atol=1e-9, rtol=1e-9)
    # points around the hyperplane w^T z + b = 0, where the derivative is smallest
    gen = _gen(1)
    z = torch.randn(12, 3, dtype=F64, generator=gen)
    z = z - ((z @ p["w"] + p["b"]) / (p["w"] @ p["w"])).unsqueeze(-1) * p["w"]
    z = z + 1e-2 * torch.randn(12, 3, dtype=F64, generator=gen) / w_norm
    _assert_sound(layer, z)


def test_planar_constraint_random_huge_parameters():
    gen = _gen(2)
    for _ in range(20):
        layer = PlanarFlow(4).to(F64)
        with torch.no_grad():
            for p in layer.parameters():
                p.copy_(torch.randn(p.shape, dtype=F64, generator=gen) * 10 ** (3 * torch.rand(())))
        assert layer.constrained_parameters()["wu"] > -1
        _assert_sound(layer, 3 * torch.randn(4, 4, dtype=F64, generator=gen), atol=1e-9)


def test_planar_leaves_admissible_u_untouched():
    layer = PlanarFlow(3, generator=_gen())
    with torch.no_grad():
        layer.u.copy_(torch.tensor([0.5, 0.2, -0.1]))
        layer.w.copy_(torch.tensor([1.0, 1.0, 1.0]))  # w^T u = 0.6 >= 0
    torch.testing.assert_close(layer.constrained_parameters()["u_hat"], layer.u.detach())


def test_planar_with_zero_w_is_a_shift_with_unit_jacobian():
    layer = PlanarFlow(2).to(F64)
    with torch.no_grad():
        layer.w.zero_()
        layer.u.copy_(torch.tensor([1.0, -2.0]))
        layer.b.fill_(0.5)
    z = torch.randn(5, 2, dtype=F64, generator=_gen())
    y, logdet = layer(z)
    torch.testing.assert_close(y, z + math.tanh(0.5) * torch.tensor([1.0, -2.0], dtype=F64))
    torch.testing.assert_close(logdet, torch.zeros(5, dtype=F64))
    torch.testing.assert_close(layer.inverse(y)[0], z)


# ----------------------------------------------------------------------------- radial
@pytest.mark.parametrize("alpha_raw", [-30.0, 0.0, 30.0])
@pytest.mark.parametrize("beta_raw", [-1e6, -3.0, 0.0, 5.0, 1e4])
def test_radial_constraint(alpha_raw, beta_raw):
    layer = RadialFlow(3, generator=_gen()).to(F64)
    with torch.no_grad():
        layer.alpha_raw.fill_(alpha_raw)
        layer.beta_raw.fill_(beta_raw)
    p = layer.constrained_parameters()
    assert p["alpha"] > 0 and p["beta"] > -p["alpha"]
    z0 = p["z0"].detach()
    gen = _gen(3)
    directions = torch.randn(9, 3, dtype=F64, generator=gen)
    radii = torch.tensor([1e-8, 1e-4, 1e-2, 0.1, 0.5, 1.0, 3.0, 30.0, 1e3], dtype=F64)
    z = z0 + directions / directions.norm(dim=-1, keepdim=True) * radii.unsqueeze(-1)
    # Near the centre of a maximally contracting layer (1 + beta h ~ 1e-3, alpha ~ 1e-4) the
    # rounding of y - z0 alone moves the inverse logdet by ~1e-6: that is conditioning.
    _assert_sound(layer, z, ld_atol=1e-5)
    # the centre itself is a fixed point with a finite logdet
    y, logdet = layer(z0.unsqueeze(0))
    torch.testing.assert_close(y[0], z0)
    assert torch.isfinite(logdet).all()
    torch.testing.assert_close(layer.inverse(y)[0][0], z0)


def test_radial_inverse_is_closed_form_exact():
    layer = RadialFlow(5, generator=_gen()).to(F64)
    perturb_parameters(layer, 2.0, _gen(4))
    z = 4 * torch.randn(200, 5, dtype=F64, generator=_gen(5))
    y, _ = layer(z)
    assert (layer.inverse(y)[0] - z).abs().max() < 1e-13


# ----------------------------------------------------------------------------- Sylvester
SYLVESTER = [
    {"kind": "orthogonal"},
    {"kind": "orthogonal", "num_ortho_vectors": 2},
    {"kind": "householder", "num_householder": 3},
    {"kind": "triangular"},
    {"kind": "triangular", "reverse": True},
]


@pytest.mark.parametrize("options", SYLVESTER, ids=lambda o: "-".join(map(str, o.values())))
def test_sylvester_constraint_with_adversarial_diagonals(options):
    layer = SylvesterFlow(4, generator=_gen(), **options).to(F64)
    m = layer.num_ortho_vectors
    gen = _gen(6)
    with torch.no_grad():
        layer.r_diag.copy_(torch.tensor([-1e6, -40.0, 0.0, 1e3][:m], dtype=F64))
        layer.r_tilde_diag.copy_(torch.tensor([1e6, -1e6, 3.0, -3.0][:m], dtype=F64))
        layer.bias.copy_(torch.randn(m, dtype=F64, generator=gen))
        if m > 1:
            layer.r_off.copy_(30 * torch.randn(layer.r_off.shape, dtype=F64, generator=gen))
            layer.r_tilde_off.copy_(3 * torch.randn(layer.r_off.shape, dtype=F64, generator=gen))
    p = layer.constrained_parameters()
    products = p["r"].diagonal() * p["r_tilde"].diagonal()
    assert (products > -1 + 0.5 * 1e-3).all()
    assert torch.equal(p["r"], p["r"].triu()) and torch.equal(p["r_tilde"], p["r_tilde"].triu())
    if p["q"] is not None:
        eye = torch.eye(m, dtype=F64)
        torch.testing.assert_close(p["q"].mT @ p["q"], eye, atol=1e-12, rtol=0)
    z = 2 * torch.randn(10, 4, dtype=F64, generator=gen)
    _assert_sound(layer, z, atol=1e-9)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
@pytest.mark.parametrize(
    "make",
    [
        lambda: PlanarFlow(3, generator=_gen()),
        lambda: SylvesterFlow(5, kind="orthogonal", num_ortho_vectors=3, generator=_gen()),
        lambda: SylvesterFlow(4, kind="householder", generator=_gen()),
        lambda: SylvesterFlow(4, kind="triangular", reverse=True),
    ],
    ids=["planar", "sylvester-orthogonal", "sylvester-householder", "sylvester-triangular"],
)
def test_numerical_inverse_accuracy(make, dtype, tol):
    layer = make().to(dtype)
    perturb_parameters(layer, 1.5, _gen(7))
    z = 3 * torch.randn(500, layer.features, dtype=dtype, generator=_gen(8))
    with torch.no_grad():
        y, _ = layer(z)
        z2, _ = layer.inverse(y)
    err = ((z2 - z).abs() / (1 + y.abs().amax(-1, keepdim=True))).max()
    assert err < tol, f"relative round-trip error {err:.3g}"


def test_scalar_solver_converges_for_extreme_equations():
    gen = _gen(9)
    n = 1000
    m = torch.cat(
        [
            -1 + 10 ** (-3 * torch.rand(n, dtype=F64, generator=gen)),  # near-critical
            10 ** (6 * torch.rand(n, dtype=F64, generator=gen)),  # very steep
            4 * torch.randn(n, dtype=F64, generator=gen).clamp_min(-0.99),
        ]
    )
    b = 5 * torch.randn(3 * n, dtype=F64, generator=gen)
    x = 5 * torch.randn(3 * n, dtype=F64, generator=gen)
    c = x + m * torch.tanh(x + b)
    solved = kernels.solve_tanh_equation(c, m, b, max_iter=kernels.MAX_ITER)
    # within the cap, the solver reaches the root it would reach with no cap
    torch.testing.assert_close(solved, kernels.solve_tanh_equation(c, m, b, max_iter=10_000))
    residual = (solved + m * torch.tanh(solved + b) - c).abs()
    scale = c.abs() + m.abs() + b.abs() + 1
    assert (residual / scale).max() < 1e-14


def test_inverse_gradients_match_finite_differences():
    gen = _gen(10)
    y = torch.randn(4, 3, dtype=F64, generator=gen, requires_grad=True)
    u = torch.tensor([-2.0, 0.5, 1.0], dtype=F64, requires_grad=True)
    w = torch.tensor([1.5, -0.3, 0.2], dtype=F64, requires_grad=True)
    b = torch.tensor(0.4, dtype=F64, requires_grad=True)

    def planar_inverse(y, u, w, b):
        u_hat, wu = kernels.planar_u_hat(u, w)
        return kernels.planar_inverse(y, u_hat, w, b, wu)

    assert torch.autograd.gradcheck(planar_inverse, (y, u, w, b))

    a = torch.randn(3, 3, dtype=F64, generator=gen)
    r = (a.triu(1) + torch.diag(torch.tensor([-0.4, 0.8, 2.0], dtype=F64))).requires_grad_()
    r_tilde = (a.mT.triu() + 1.5 * torch.eye(3, dtype=F64)).requires_grad_()
    bias = torch.randn(3, dtype=F64, generator=gen, requires_grad=True)
    q = torch.linalg.qr(torch.randn(5, 3, dtype=F64, generator=gen))[0].requires_grad_()
    y5 = torch.randn(4, 5, dtype=F64, generator=gen, requires_grad=True)

    def sylvester_inverse(y, r, r_tilde, bias, q):
        # keep the matrices triangular under gradcheck's perturbations
        return kernels.sylvester_inverse(y, r.triu(), r_tilde.triu(), bias, q)

    assert torch.autograd.gradcheck(sylvester_inverse, (y5, r, r_tilde, bias, q))


# ----------------------------------------------------------------------------- context
@pytest.mark.parametrize(
    "make",
    [
        lambda: PlanarFlow(3, context_dim=2, hidden=(8,)),
        lambda: RadialFlow(3, context_dim=2, hidden=(8,)),
        lambda: SylvesterFlow(3, kind="householder", context_dim=2, hidden=(8,)),
    ],
    ids=["planar", "radial", "sylvester"],
)
def test_conditional_layer_starts_as_identity_and_learns_context(make):
    layer = make()
    z = torch.randn(6, 3, generator=_gen(11))
    context = torch.randn(6, 2, generator=_gen(12))
    y, logdet = layer(z, context)
    torch.testing.assert_close(y, z)
    torch.testing.assert_close(logdet, torch.zeros(6))
    perturb_parameters(layer, 0.5, _gen(13))
    y1, _ = layer(z, context)
    y2, _ = layer(z, context + 1)
    assert not torch.allclose(y1, y2)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "build, fragment",
    [
        (lambda: PlanarFlow(0), "positive integer"),
        (lambda: RadialFlow(2, context_dim=0), "context_dim"),
        (lambda: PlanarFlow(2, hidden=8), "hidden"),
        (lambda: SylvesterFlow(3, kind="cayley"), "kind"),
        (lambda: SylvesterFlow(3, num_ortho_vectors=4), "num_ortho_vectors"),
        (lambda: SylvesterFlow(3, kind="triangular", num_ortho_vectors=2), "triangular"),
        (lambda: SylvesterFlow(3, reverse=True), "reverse"),
        (lambda: SylvesterFlow(3, num_householder=2), "num_householder"),
        (lambda: SylvesterFlow(1, kind="householder"), "dim >= 2"),
        (lambda: SylvesterFlow(3, kind="householder", num_householder=0), "num_householder"),
    ],
)
def test_bad_constructor_arguments(build, fragment):
    with pytest.raises(ValueError, match=fragment) as info:
        build()
    assert str(info.value).split(":")[0] in {"PlanarFlow", "RadialFlow", "SylvesterFlow"}


# ----------------------------------------------------------------------------- presets
@pytest.mark.parametrize(
    "make",
    [
        lambda: Planar(2, layers=6),
        lambda: Sylvester(2, layers=3, kind="orthogonal"),
        lambda: Sylvester(2, layers=3, kind="triangular"),
    ],
    ids=["planar", "sylvester-orthogonal", "sylvester-triangular"],
)
def test_preset_density_integrates_to_one(make):
    flow = make().to(F64)
    perturb_parameters(flow, 0.7, _gen(14))
    sigma, n = 2.5, 20_000
    x = sigma * torch.randn(n, 2, dtype=F64, generator=_gen(15))
    log_proposal = -0.5 * (x / sigma).pow(2).sum(-1) - 2 * math.log(sigma) - math.log(2 * math.pi)
    with torch.no_grad():
        log_q = flow.log_prob(x)
    # the flow is far from its standard normal base ...
    log_base = -0.5 * x.pow(2).sum(-1) - math.log(2 * math.pi)
    assert (log_q - log_base).abs().mean() > 0.1
    # ... and still integrates to one
    weights = torch.exp(log_q - log_proposal)
    mean, stderr = weights.mean(), weights.std() / math.sqrt(n)
    assert stderr < 0.05
    assert abs(mean - 1) < 4 * stderr, f"integral {mean:.4f} +- {stderr:.4f}"


@pytest.mark.parametrize(
    "make",
    [lambda: Planar(2, layers=6), lambda: Sylvester(2, layers=3)],
    ids=["planar", "sylvester"],
)
def test_preset_fit_lowers_nll(make):
    torch.manual_seed(0)
    data = two_moons(2000, generator=_gen(16))
    held_out = two_moons(2000, generator=_gen(17))
    flow = make()
    with torch.no_grad():
        before = -flow.log_prob(held_out).mean()
    history = fit(flow, data, steps=200, batch_size=128, lr=1e-2, progress=False)
    with torch.no_grad():
        after = -flow.log_prob(held_out).mean()
    assert len(history.train_loss) == 200
    assert after < before - 0.5, f"held-out NLL {before:.3f} -> {after:.3f}"
