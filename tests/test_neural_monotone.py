"""Flow++ logistic-mixture maps, deep sigmoidal flows (NAF) and the shared root finder."""

from __future__ import annotations

import math

import pytest
import torch

from manifoldflows.datasets import two_moons
from manifoldflows.functional.monotonic import (
    deep_sigmoidal_flow,
    logistic_mixture_transform,
    logit_mixture_cdf,
    monotone_inverse,
    safeguarded_newton,
)
from manifoldflows.presets import NAF, FlowPP
from manifoldflows.spaces import Coordinate
from manifoldflows.testing import perturb_parameters
from manifoldflows.transforms import LogisticMixtureCoupling, NeuralAutoregressive
from manifoldflows.transforms.maps import (
    DeepSigmoidalMap,
    LogisticMixtureMap,
    make_map,
)

MAPS = {
    "mixture": lambda analytic: LogisticMixtureMap(5, analytic=analytic),
    "dsf": lambda analytic: DeepSigmoidalMap(4, depth=2, analytic=analytic),
}
BIG = {torch.float32: 1e4, torch.float64: 1e6}


@pytest.fixture(autouse=True)
def _one_thread():
    # The tensors here are tiny: one intra-op thread avoids thread-pool overhead, which
    # dominates (several-fold) on a loaded machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _map(name: str, analytic: str = "inverse"):
    return MAPS[name](analytic)


def _params(m, shape, dtype, device, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    raw = scale * torch.randn(*shape, m.params_per_dim, generator=g, dtype=torch.float64)
    return raw.to(dtype=dtype, device=device)


def _grid(dtype, device, n=401):
    """Sorted inputs: a dense core, moderate tails and the extreme values of the dtype's test."""
    big = BIG[dtype]
    core = torch.linspace(-8.0, 8.0, n - 6, dtype=torch.float64)
    tails = torch.tensor([-big, -big / 10, -100.0, 100.0, big / 10, big], dtype=torch.float64)
    return torch.sort(torch.cat([core, tails])).values.to(dtype=dtype, device=device)


def _deriv(fn, x):
    """Elementwise ``d fn(x) / dx`` by autograd (``fn`` elementwise), and ``fn``'s outputs."""
    x = x.detach().requires_grad_(True)
    y, ld = fn(x)
    (d,) = torch.autograd.grad(y.sum(), x)
    return y.detach(), ld.detach(), d


# --- the root finder ---------------------------------------------------------------------------

GENERIC = {
    # f, log f', true roots, bracket
    "cubic": (lambda v: (v**3 + v, torch.log(3 * v**2 + 1)), (-1e3, 1e3)),
    "sinh": (lambda v: (torch.sinh(v), torch.log(torch.cosh(v))), (-40.0, 40.0)),
    # f' = 1 + 0.99 cos(v) >= 0.01: plain Newton overshoots wildly here
    "wiggly": (lambda v: (v + 0.99 * torch.sin(v), torch.log1p(0.99 * torch.cos(v))), (-1e4, 1e4)),
}


@pytest.mark.parametrize("name", sorted(GENERIC))
def test_root_finder_on_generic_monotone_functions(name, dtype, device):
    fn, (lo, hi) = GENERIC[name]
    g = torch.Generator().manual_seed(1)
    x_true = (torch.rand(500, generator=g, dtype=torch.float64) * 2 - 1) * 30
    x_true = x_true.to(dtype=dtype, device=device)
    y = fn(x_true)[0]
    lower, upper = torch.full_like(y, lo), torch.full_like(y, hi)
    x = safeguarded_newton(fn, y, lower, upper)
    assert not x.requires_grad
    assert ((x >= lo) & (x <= hi)).all()
    if dtype == torch.float64:
        torch.testing.assert_close(x, x_true, atol=1e-10, rtol=1e-10)
    else:
        # float32: the residual is at rounding level (the roots themselves may be
        # ill-conditioned where f is flat, as in the wiggly case)
        res = (fn(x)[0] - y).abs()
        assert (res <= 1e-5 * (1 + y.abs())).all()
    # A start outside the bracket is clamped into it and changes nothing essential.
    x2 = safeguarded_newton(fn, y, lower, upper, initial=torch.full_like(y, 1e9))
    torch.testing.assert_close(fn(x2)[0], y, atol=1e-4, rtol=1e-5)


def test_root_finder_reaches_1e_10_from_a_wide_bracket_with_bisection_only(device):
    # f' reported as 0 (log f' = -inf) disables Newton: pure bisection must still converge.
    def fn(v):
        return v, torch.full_like(v, -math.inf)

    y = torch.tensor([-3e5, -1.0, 0.0, 1e-3, 7e5], dtype=torch.float64, device=device)
    x = safeguarded_newton(fn, y, torch.full_like(y, -1e6), torch.full_like(y, 1e6))
    torch.testing.assert_close(x, y, atol=1e-10, rtol=0)


def test_monotone_inverse_gradients_match_the_implicit_function_theorem(device):
    opts = {"dtype": torch.float64, "device": device}
    theta = torch.tensor([0.5, 2.0, 1.5], **opts, requires_grad=True)
    y = torch.tensor([-4.0, 0.3, 9.0], **opts, requires_grad=True)

    def inverse(y_, theta_):
        def fn(v):
            return theta_ * v + v**3, torch.log(theta_ + 3 * v**2)

        lower, upper = torch.full_like(y_, -10.0), torch.full_like(y_, 10.0)
        return monotone_inverse(fn, y_, lower, upper)

    assert torch.autograd.gradcheck(inverse, (y, theta))
    x, ld = inverse(y, theta)
    torch.testing.assert_close(ld, -torch.log(theta + 3 * x**2))


# --- the maps: monotone, calculus, inverses ----------------------------------------------------


@pytest.mark.parametrize("name", sorted(MAPS))
def test_maps_are_strictly_increasing_and_finite_everywhere(name, dtype, device):
    for analytic in ("inverse", "forward"):
        m = _map(name, analytic)
        x = _grid(dtype, device)
        params = _params(m, x.shape[:0], dtype, device, scale=1.5)  # one map for the whole grid
        for step in (m.forward, m.inverse):
            y, ld = step(x, m.unpack(params))
            assert torch.isfinite(y).all() and torch.isfinite(ld).all()
            diffs = y.diff()
            assert (diffs > 0).all() if dtype == torch.float64 else (diffs >= 0).all()
            assert (y.diff()[x.diff() > 1e-2] > 0).all()


@pytest.mark.parametrize("name", sorted(MAPS))
@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_logabsdet_matches_autograd(name, direction, dtype, device):
    for analytic in ("inverse", "forward"):  # closed-form and root-found directions
        m = _map(name, analytic)
        x = torch.linspace(-6.0, 6.0, 241, dtype=dtype, device=device)
        params = _params(m, x.shape, dtype, device, seed=3)
        _, ld, d = _deriv(lambda v, m=m, p=params: getattr(m, direction)(v, m.unpack(p)), x)
        assert (d > 0).all()
        tol = 1e-9 if dtype == torch.float64 else 2e-3
        torch.testing.assert_close(ld, torch.log(d), atol=tol, rtol=tol)


@pytest.mark.parametrize("name", sorted(MAPS))
def test_round_trips_including_extreme_inputs(name, dtype, device):
    x = _grid(dtype, device)
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    for analytic in ("inverse", "forward"):
        m = _map(name, analytic)
        params = _params(m, x.shape, dtype, device, seed=5)
        for first, second in ((m.forward, m.inverse), (m.inverse, m.forward)):
            y, ld = first(x, m.unpack(params))
            x2, ld2 = second(y, m.unpack(params))
            torch.testing.assert_close(x2, x, atol=tol, rtol=tol)
            torch.testing.assert_close(ld + ld2, torch.zeros_like(ld), atol=10 * tol, rtol=0)


def test_kernels_with_extreme_inputs_agree_across_dtypes():
    # float32 at |x| = 1e4 stays close to the float64 values (nothing saturates)
    x = torch.tensor([-1e4, -3e3, 3e3, 1e4], dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    p = [torch.randn(4, 6, generator=g, dtype=torch.float64) for _ in range(3)]
    ref, ref_ld = logit_mixture_cdf(x, *p)
    y, ld = logit_mixture_cdf(x.float(), *[t.float() for t in p])
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=0)
    torch.testing.assert_close(ld.double(), ref_ld, rtol=0, atol=1e-2)
    q = [torch.randn(4, 2, 3, generator=g, dtype=torch.float64) for _ in range(3)]
    ref, ref_ld = deep_sigmoidal_flow(x, *q)
    y, ld = deep_sigmoidal_flow(x.float(), *[t.float() for t in q])
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=0)
    torch.testing.assert_close(ld.double(), ref_ld, rtol=0, atol=1e-2)


@pytest.mark.parametrize("name", sorted(MAPS))
def test_extreme_parameters_give_finite_values_and_gradients(name, dtype, device):
    x0 = _grid(dtype, device, n=61)
    g = torch.Generator().manual_seed(7)
    for analytic in ("inverse", "forward"):
        m = _map(name, analytic)
        signs = torch.randint(0, 2, (*x0.shape, m.params_per_dim), generator=g) * 2 - 1
        for raw in (50.0 * signs, torch.full(signs.shape, 50.0), torch.full(signs.shape, -50.0)):
            params = raw.to(dtype=dtype, device=device).requires_grad_(True)
            for step in (m.forward, m.inverse):
                x = x0.clone().requires_grad_(True)
                y, ld = step(x, m.unpack(params))
                assert torch.isfinite(y).all() and torch.isfinite(ld).all()
                gx, gp = torch.autograd.grad((y * 0.1).sum() + ld.sum(), (x, params))
                assert torch.isfinite(gx).all() and torch.isfinite(gp).all()


@pytest.mark.parametrize("name", sorted(MAPS))
def test_zero_parameters_give_a_well_conditioned_map_with_distinct_components(name, device):
    m = _map(name)
    x = torch.linspace(-20.0, 20.0, 101, dtype=torch.float64, device=device)
    params = torch.zeros(*x.shape, m.params_per_dim, dtype=torch.float64, device=device)
    y, ld = m.forward(x, m.unpack(params))
    assert (ld > math.log(0.5)).all() and (ld < math.log(2.0)).all()
    assert (y - x).abs().max() < 2.0
    # The components receive different gradients, so training can separate them.
    params.requires_grad_(True)
    (grad,) = torch.autograd.grad(m.inverse(x + 0.5, m.unpack(params))[1].sum(), params)
    k = m.components if name == "mixture" else m.hidden
    per_component = grad[..., k : 2 * k] if name == "mixture" else grad[..., :k]
    assert per_component.std(dim=-1).max() > 1e-3


def test_single_component_maps_are_the_identity_at_zero():
    x = torch.tensor([-1e5, -3.0, 0.0, 0.7, 1e5], dtype=torch.float64)
    for m in (LogisticMixtureMap(1), DeepSigmoidalMap(1, depth=3)):
        params = torch.zeros(5, m.params_per_dim, dtype=torch.float64)
        for step in (m.forward, m.inverse):
            y, ld = step(x, m.unpack(params))
            torch.testing.assert_close(y, x, atol=1e-9, rtol=1e-12)
            torch.testing.assert_close(ld, torch.zeros_like(ld), atol=1e-9, rtol=0)


def test_dsf_layer_equals_a_logistic_mixture_and_the_flowpp_formula():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(50, generator=g, dtype=torch.float64) * 4
    w, pre, b = (torch.randn(50, 1, 6, generator=g, dtype=torch.float64) for _ in range(3))
    y, ld = deep_sigmoidal_flow(x, w, pre, b)
    a = 1e-3 + torch.nn.functional.softplus(pre + math.log(math.expm1(1 - 1e-3)))
    direct = torch.logit((torch.softmax(w, -1) * torch.sigmoid(a * x[:, None, None] + b)).sum(-1))
    torch.testing.assert_close(y, direct.squeeze(-1))
    # Flow++: exp(a) * logit(F) + b against a direct float64 evaluation
    logits, loc, log_s = (torch.randn(50, 3, generator=g, dtype=torch.float64) for _ in range(3))
    log_a, shift = torch.randn(50, dtype=torch.float64), torch.randn(50, dtype=torch.float64)
    y, _ = logistic_mixture_transform(x, logits, loc, log_s, log_a, shift)
    cdf = (torch.softmax(logits, -1) * torch.sigmoid((x[:, None] - loc) / log_s.exp())).sum(-1)
    torch.testing.assert_close(y, log_a.exp() * torch.logit(cdf) + shift)


# --- layers and presets ------------------------------------------------------------------------


def test_constructors_reject_bad_arguments():
    with pytest.raises(ValueError, match="NeuralAutoregressive.*sigmoid units"):
        NeuralAutoregressive(2, sigmoid_units=0)
    with pytest.raises(ValueError, match="NeuralAutoregressive.*mode"):
        NeuralAutoregressive(2, mode="flow")
    with pytest.raises(ValueError, match="NeuralAutoregressive.*analytic"):
        NeuralAutoregressive(2, analytic="both")
    with pytest.raises(ValueError, match="LogisticMixtureCoupling.*components"):
        LogisticMixtureCoupling(2, components=1.5)
    with pytest.raises(ValueError, match="DeepSigmoidalMap.*min_slope"):
        DeepSigmoidalMap(4, min_slope=0.0)
    with pytest.raises(ValueError, match="LogisticMixtureMap.*iterations"):
        LogisticMixtureMap(3, iterations=0)
    with pytest.raises(ValueError, match="FlowPP"):
        FlowPP(1)
    assert isinstance(make_map("deep_sigmoidal", Coordinate("real"), hidden=3), DeepSigmoidalMap)
    assert make_map("logistic_mixture", Coordinate("real"), components=2).params_per_dim == 8


def test_layer_directions_follow_the_mode():
    assert NeuralAutoregressive(2, hidden=(8,)).elementwise_map.analytic == "inverse"
    assert NeuralAutoregressive(2, hidden=(8,), mode="iaf").elementwise_map.analytic == "forward"
    layer = NeuralAutoregressive(3, hidden=(16,), mode="iaf", sigmoid_units=3)
    perturb_parameters(layer, 0.3, torch.Generator().manual_seed(0))
    x = torch.randn(6, 3, dtype=torch.float32)
    y, ld = layer(x)
    x2, ld2 = layer.inverse(y)  # d sequential passes, each with a root find
    torch.testing.assert_close(x2, x, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ld + ld2, torch.zeros_like(ld), atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "build",
    [
        lambda: NeuralAutoregressive(3, sigmoid_units=4, hidden=(16,)),
        lambda: NeuralAutoregressive(
            3, sigmoid_units=3, sigmoid_layers=2, hidden=(16,), mode="iaf"
        ),
        lambda: LogisticMixtureCoupling(3, components=4, hidden=(16,), context_dim=1),
    ],
    ids=["naf-maf", "naf-iaf", "flowpp"],
)
def test_layers_stay_finite_at_extreme_inputs(build, dtype, device):
    # Far outside the data range the conditioner outputs extreme parameters; whatever the
    # conditioning of the resulting map, values, logdets and gradients must stay finite.
    layer = build().to(dtype=dtype, device=device)
    perturb_parameters(layer, 0.3, torch.Generator().manual_seed(0))
    big = BIG[dtype]
    x = torch.tensor([[big, -big, 0.5], [-big, 3.0, big], [1.0, 2.0, -big / 10]], dtype=dtype)
    x = x.to(device).requires_grad_(True)
    ctx = None if layer.context_dim is None else torch.ones(3, 1, dtype=dtype, device=device)
    for step in (layer.forward, layer.inverse):
        layer.zero_grad()
        y, ld = step(x, ctx)  # the public call also rejects non-finite outputs
        (y.sum() * 1e-3 + ld.sum()).backward()
        assert torch.isfinite(x.grad).all()
        assert all(torch.isfinite(p.grad).all() for p in layer.parameters() if p.grad is not None)
        x.grad = None


@pytest.mark.parametrize(
    "build",
    [
        lambda: NAF(2, layers=2, hidden=(16,), sigmoid_units=4),
        lambda: FlowPP(2, layers=2, hidden=(16,), components=4),
    ],
    ids=["NAF", "FlowPP"],
)
def test_preset_densities_integrate_to_one(build):
    torch.manual_seed(0)
    flow = build().double()
    perturb_parameters(flow, 0.3, torch.Generator().manual_seed(1))
    n, scale = 20000, 3.0
    g = torch.Generator().manual_seed(2)
    x = scale * torch.randn(n, 2, generator=g, dtype=torch.float64)
    log_q = -0.5 * (x / scale).pow(2).sum(-1) - 2 * math.log(scale) - math.log(2 * math.pi)
    with torch.no_grad():
        w = torch.exp(flow.log_prob(x) - log_q)
    mean, se = w.mean().item(), (w.std() / math.sqrt(n)).item()
    assert abs(mean - 1.0) < 4 * se, (mean, se)
    assert se < 0.05  # the estimate is informative
    # Sampling (numerical inverse) agrees with the closed-form density.
    with torch.no_grad():
        s, lq = flow.sample_and_log_prob((5,))
        torch.testing.assert_close(lq, flow.log_prob(s), atol=1e-8, rtol=1e-8)


def test_short_fit_on_a_toy_density_lowers_the_nll():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    train, test = two_moons(512, generator=g), two_moons(512, generator=g)
    for flow in (
        NAF(2, layers=2, hidden=(32,), sigmoid_units=6),
        FlowPP(2, layers=2, hidden=(32,), components=6),
    ):
        with torch.no_grad():
            before = -flow.log_prob(test).mean().item()
        opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
        for step in range(60):
            batch = train[(step * 128) % 512 :][:128]
            loss = -flow.log_prob(batch).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            after = -flow.log_prob(test).mean().item()
        assert after < before - 0.3, (type(flow.transform[0]).__name__, before, after)
