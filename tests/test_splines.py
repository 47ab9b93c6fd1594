"""Rational-quadratic spline kernel: exactness, calculus and numerical robustness."""

from __future__ import annotations

import pytest
import torch

from manifoldflows.errors import InvalidInput
from manifoldflows.functional.splines import (
    bin_knots,
    knot_derivatives,
    rational_quadratic_spline,
    rational_quadratic_spline_from_knots,
)

BOUND = 5.0
K = 8


def _tol(dtype: torch.dtype, f32: float, f64: float) -> float:
    return f32 if dtype == torch.float32 else f64


def _params(shape, k, dtype, device, scale=1.0, generator=None):
    """Random raw (widths, heights, derivatives) of leading shape ``shape``."""
    size = (*shape, k)
    w = scale * torch.randn(size, generator=generator, dtype=torch.float64)
    h = scale * torch.randn(size, generator=generator, dtype=torch.float64)
    d = scale * torch.randn((*shape, k - 1), generator=generator, dtype=torch.float64)
    return tuple(t.to(dtype=dtype, device=device) for t in (w, h, d))


def _knots(w, h, bound=BOUND):
    """Knot positions exactly as the kernel computes them."""
    return bin_knots(w, -bound, bound), bin_knots(h, -bound, bound)


def _spline_grad(x, params, inverse=False, bound=BOUND):
    """``(y, logabsdet, dy/dx)`` with the derivative from autograd (elementwise map)."""
    x = x.detach().requires_grad_(True)
    y, ld = rational_quadratic_spline(x, *params, inverse=inverse, bound=bound)
    (dydx,) = torch.autograd.grad(y.sum(), x)
    return y.detach(), ld.detach(), dydx


# --- exactness -------------------------------------------------------------------------------


@pytest.mark.parametrize("inverse_first", [False, True])
def test_round_trip_and_logdet_cancel(dtype, device, inverse_first):
    # Moderate parameters keep the map well conditioned (slopes ~0.05..20), so float32 can be
    # held to a tight tolerance; the extreme cases are covered further down.
    x = torch.linspace(-8.0, 8.0, 1001, dtype=dtype, device=device)  # inside and outside
    params = _params(x.shape, K, dtype, device, scale=0.5)
    y, ld = rational_quadratic_spline(x, *params, inverse=inverse_first)
    x2, ld2 = rational_quadratic_spline(y, *params, inverse=not inverse_first)
    tol = _tol(dtype, 1e-4, 1e-10)
    torch.testing.assert_close(x2, x, atol=tol, rtol=0)
    torch.testing.assert_close(ld + ld2, torch.zeros_like(ld), atol=tol, rtol=0)
    assert (ld[(x.abs() < BOUND)] != 0).any()  # the map is not trivially the identity


@pytest.mark.parametrize("inverse", [False, True])
def test_logabsdet_matches_autograd(dtype, device, inverse):
    x = torch.linspace(-6.0, 6.0, 499, dtype=dtype, device=device)
    params = _params(x.shape, K, dtype, device)
    _, ld, dydx = _spline_grad(x, params, inverse=inverse)
    assert (dydx > 0).all()
    torch.testing.assert_close(ld, torch.log(dydx), atol=_tol(dtype, 1e-4, 1e-10), rtol=0)


def test_gradcheck_parameters_both_directions(device):
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(5, generator=g, dtype=torch.float64) * 9.0 - 4.5).to(device)
    params = [p.requires_grad_(True) for p in _params((5,), 4, torch.float64, device, generator=g)]
    xr = x.clone().requires_grad_(True)
    for inverse in (False, True):
        torch.autograd.gradcheck(
            lambda x_, w, h, d, inv=inverse: rational_quadratic_spline(x_, w, h, d, inverse=inv),
            (xr, *params),
        )


def test_monotone_onto_and_knots(dtype, device):
    x = torch.linspace(-BOUND, BOUND, 2001, dtype=dtype, device=device)
    params = _params((), K, dtype, device, generator=torch.Generator().manual_seed(3))
    y, _ = rational_quadratic_spline(x, *params)  # parameters broadcast against x
    assert (y[1:] > y[:-1]).all()
    assert y[0].item() == -BOUND and y[-1].item() == BOUND
    assert (y.abs() <= BOUND).all()
    knot_x, knot_y = _knots(params[0], params[1])
    assert knot_x[0].item() == knot_y[0].item() == -BOUND
    assert knot_x[-1].item() == knot_y[-1].item() == BOUND
    yk, _ = rational_quadratic_spline(knot_x, *params)
    torch.testing.assert_close(yk, knot_y, atol=_tol(dtype, 1e-6, 1e-12), rtol=0)
    xk, _ = rational_quadratic_spline(knot_y, *params, inverse=True)
    torch.testing.assert_close(xk, knot_x, atol=_tol(dtype, 1e-5, 1e-12), rtol=0)


def test_knot_derivatives_are_interpolated(device):
    dtype = torch.float64
    w, h, d = _params((), K, dtype, device, generator=torch.Generator().manual_seed(4))
    knot_x, _ = _knots(w, h)
    expected = torch.cat([torch.ones(1, dtype=dtype, device=device), knot_derivatives(d)])
    expected = torch.cat([expected, torch.ones(1, dtype=dtype, device=device)])
    _, ld, dydx = _spline_grad(knot_x, (w, h, d))
    torch.testing.assert_close(torch.exp(ld), expected, atol=1e-10, rtol=1e-10)
    # From the left at the interior knots (C^1): one step of the previous bin.
    _, ld_left, _ = _spline_grad(knot_x[1:-1] - 1e-9, (w, h, d))
    torch.testing.assert_close(torch.exp(ld_left), expected[1:-1], atol=0, rtol=1e-5)


@pytest.mark.parametrize("inverse", [False, True])
def test_identity_tails_and_continuity_at_bound(dtype, device, inverse):
    outside = torch.tensor(
        [-1e6, -100.0, -BOUND - 1e-3, BOUND + 1e-3, 7.0, 1e6], dtype=dtype, device=device
    )
    params = _params(outside.shape, K, dtype, device)
    y, ld, dydx = _spline_grad(outside, params, inverse=inverse)
    assert torch.equal(y, outside)
    assert torch.equal(ld, torch.zeros_like(ld))
    assert torch.equal(dydx, torch.ones_like(dydx))

    edge = torch.tensor([-BOUND, BOUND], dtype=dtype, device=device)
    params = _params(edge.shape, K, dtype, device)
    y, ld, dydx = _spline_grad(edge, params, inverse=inverse)
    assert torch.equal(y, edge)  # the end knots are fixed
    torch.testing.assert_close(dydx, torch.ones_like(dydx), atol=_tol(dtype, 1e-5, 1e-12), rtol=0)
    torch.testing.assert_close(ld, torch.zeros_like(ld), atol=_tol(dtype, 1e-5, 1e-12), rtol=0)

    # Just inside: value and slope approach those of the identity tail.
    step = _tol(dtype, 1e-3, 1e-6)
    inner = edge - torch.sign(edge) * step
    y, ld, _ = _spline_grad(inner, params, inverse=inverse)
    assert (y - inner).abs().max().item() < 1e2 * step**2 + _tol(dtype, 1e-5, 1e-12)
    assert ld.abs().max().item() < 1e2 * step


@pytest.mark.parametrize("k", [1, 2, 8])
def test_zero_parameters_give_identity(dtype, device, k):
    x = torch.linspace(-7.0, 7.0, 301, dtype=dtype, device=device)
    zeros = (
        torch.zeros(k, dtype=dtype, device=device),
        torch.zeros(k, dtype=dtype, device=device),
        torch.zeros(k - 1, dtype=dtype, device=device),
    )
    assert torch.allclose(knot_derivatives(zeros[2]), torch.ones_like(zeros[2]))
    for inverse in (False, True):
        y, ld = rational_quadratic_spline(x, *zeros, inverse=inverse)
        torch.testing.assert_close(y, x, atol=_tol(dtype, 1e-5, 1e-12), rtol=0)
        torch.testing.assert_close(ld, torch.zeros_like(ld), atol=_tol(dtype, 1e-5, 1e-12), rtol=0)


def test_broadcasting_and_dtype_device(dtype, device):
    x = torch.randn(3, 1, 5, dtype=dtype, device=device) * 4
    w, h, d = _params((4, 5), 6, dtype, device)
    y, ld = rational_quadratic_spline(x, w, h, d)
    assert y.shape == ld.shape == (3, 4, 5)
    assert y.dtype == ld.dtype == dtype and y.device.type == device.type
    y1, ld1 = rational_quadratic_spline(x[1, 0, 2], w[3, 2], h[3, 2], d[3, 2])
    torch.testing.assert_close(y[1, 3, 2], y1)
    torch.testing.assert_close(ld[1, 3, 2], ld1)


def test_from_knots_general_box(dtype, device):
    """The low-level kernel on an arbitrary box ``[left, right] x [bottom, top]``."""
    w, h, d = _params((), 5, dtype, device)
    knot_x = bin_knots(w, -3.0, 1.0)
    knot_y = bin_knots(h, 2.0, 12.0)
    knot_d = knot_derivatives(torch.cat([d, torch.randn(2, dtype=dtype, device=device)]))
    x = torch.linspace(-3.0, 1.0, 101, dtype=dtype, device=device)
    y, ld = rational_quadratic_spline_from_knots(x, knot_x, knot_y, knot_d)
    assert y[0].item() == 2.0 and y[-1].item() == 12.0 and (y[1:] > y[:-1]).all()
    x2, ld2 = rational_quadratic_spline_from_knots(y, knot_x, knot_y, knot_d, inverse=True)
    tol = _tol(dtype, 1e-4, 1e-10)
    torch.testing.assert_close(x2, x, atol=tol, rtol=0)
    torch.testing.assert_close(ld + ld2, torch.zeros_like(ld), atol=tol, rtol=0)


def test_invalid_arguments():
    x = torch.zeros(3)
    w, h, d = torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(3, 3)
    with pytest.raises(InvalidInput):
        rational_quadratic_spline(x, w, h, torch.zeros(3, 4))
    with pytest.raises(InvalidInput):
        rational_quadratic_spline(x, w, torch.zeros(3, 5), d)
    with pytest.raises(InvalidInput):
        rational_quadratic_spline(x, w, h, d, min_bin_width=0.3)
    with pytest.raises(InvalidInput):
        rational_quadratic_spline(x, w, h, d, min_derivative=1.0)
    with pytest.raises(InvalidInput):
        rational_quadratic_spline(x, w, h, d, bound=0.0)


# --- robustness ------------------------------------------------------------------------------


def _extreme_params(kind: str, dtype, device):
    g = torch.Generator().manual_seed(11)
    if kind == "zeros":
        w, h, d = torch.zeros(K), torch.zeros(K), torch.zeros(K - 1)
    elif kind in ("+50", "-50", "+1e3", "-1e3"):
        v = float(kind)
        w, h, d = torch.full((K,), v), torch.full((K,), -v), torch.full((K - 1,), v)
    elif kind == "dominant":
        w, h, d = torch.zeros(K), torch.zeros(K), torch.zeros(K - 1)
        w[2], h[K - 1], d[3] = 1e3, 1e3, 1e3
    elif kind == "mixed":
        choices = torch.tensor([50.0, -50.0, 1e3, -1e3, 0.0])
        pick = lambda n: choices[torch.randint(0, 5, (n,), generator=g)]  # noqa: E731
        w, h, d = pick(K), pick(K), pick(K - 1)
    else:  # alternating extremes: tiny/huge neighbouring bins and derivatives
        alt = torch.tensor([1e3, -1e3] * K)
        w, h, d = alt[:K], -alt[:K], alt[: K - 1]
    return tuple(t.to(dtype=dtype, device=device) for t in (w, h, d))


EXTREME = ["zeros", "+50", "-50", "+1e3", "-1e3", "dominant", "mixed", "alternating"]


@pytest.mark.parametrize("kind", EXTREME)
@pytest.mark.parametrize("inverse", [False, True])
def test_finite_at_knots_edges_and_extremes(dtype, device, kind, inverse):
    w, h, d = _extreme_params(kind, dtype, device)
    knot_x, knot_y = _knots(w, h)
    special = torch.tensor(
        [0.0, BOUND, -BOUND, 1e6, -1e6, BOUND + 1e-7, BOUND - 1e-7, -BOUND + 1e-7, -BOUND - 1e-7],
        dtype=dtype,
        device=device,
    )
    # One ulp either side of the ends, at the dtype's own resolution (+-1e-7 rounds away in f32).
    b = torch.full((4,), BOUND, dtype=dtype, device=device) * torch.tensor(
        [1.0, 1.0, -1.0, -1.0], dtype=dtype, device=device
    )
    ulp = torch.nextafter(b, torch.tensor([1e9, -1e9, 1e9, -1e9], dtype=dtype, device=device))
    x = torch.cat([knot_x, knot_y, special, ulp]).requires_grad_(True)
    n = x.shape[0]
    params = [p.expand(n, -1).clone().requires_grad_(True) for p in (w, h, d)]
    y, ld = rational_quadratic_spline(x, *params, inverse=inverse)
    grads = torch.autograd.grad(y.sum() + ld.sum(), [x, *params])
    for t in (y, ld, *grads):
        assert torch.isfinite(t).all()
    # The end knots and the tails are exact whatever the parameters, and [-B, B] maps into itself.
    x = x.detach()
    outside = x.abs() > BOUND
    assert outside.sum().item() == (4 if dtype == torch.float32 else 6)  # f32: 5 + 1e-7 == 5
    assert torch.equal(y[outside], x[outside])
    assert torch.equal(ld[outside], torch.zeros_like(ld[outside]))
    assert (y[~outside].abs() <= BOUND).all()
    assert y[K].item() == BOUND and y[0].item() == -BOUND
    # Knots map onto knots (forward) and knot heights onto knot positions (inverse).
    out, dst = (y[K + 1 : 2 * K + 2], knot_x) if inverse else (y[: K + 1], knot_y)
    torch.testing.assert_close(out.detach(), dst, atol=_tol(dtype, 2e-5, 1e-11), rtol=0)


@pytest.mark.parametrize("kind", EXTREME)
def test_inverse_is_backward_stable_for_extreme_parameters(dtype, device, kind):
    """``f(f^{-1}(y)) = y`` up to the conditioning ``f'`` times the rounding of ``x``."""
    w, h, d = _extreme_params(kind, dtype, device)
    _, knot_y = _knots(w, h)
    y = torch.cat([knot_y, torch.linspace(-BOUND, BOUND, 401, dtype=dtype, device=device)])
    x, _ = rational_quadratic_spline(y, w, h, d, inverse=True)
    y2, ld = rational_quadratic_spline(x, w, h, d)
    eps = torch.finfo(dtype).eps
    tol = 16 * eps * BOUND * (1.0 + torch.exp(ld))
    assert ((y2 - y).abs() <= tol).all(), ((y2 - y).abs() / tol).max()


def test_random_round_trip_property(dtype, device):
    """2000 random points, random parameters, bin counts and bounds over 20 seeds.

    In float32 ``x -> y -> x`` cannot beat the conditioning: ``y`` carries a rounding error of
    ``eps |y|``, which the inverse turns into ``eps |y| / f'(x)`` (``f'`` gets down to ~1e-6 with
    these parameters), so the bound is ``1e-3 max(1, |x|)`` plus that term; float64 is held to an
    absolute 1e-8. The inverse log-determinant must match the forward one at the inverse's own
    output everywhere, and at the original point where the map is not nearly flat.
    """
    eps = torch.finfo(dtype).eps
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        k = int(torch.randint(1, 13, (1,), generator=g))
        bound = float(torch.rand(1, generator=g) * 6 + 0.5)
        params = _params((100,), k, dtype, device, scale=1.5, generator=g)
        x = ((torch.rand(100, generator=g, dtype=torch.float64) * 2.4 - 1.2) * bound).to(
            dtype=dtype, device=device
        )
        y, ld = rational_quadratic_spline(x, *params, bound=bound)
        x2, ld2 = rational_quadratic_spline(y, *params, inverse=True, bound=bound)
        _, ld_at_x2 = rational_quadratic_spline(x2, *params, bound=bound)
        for t in (y, ld, x2, ld2):
            assert torch.isfinite(t).all()
        err = (x2 - x).abs()
        if dtype == torch.float64:
            assert err.max().item() < 1e-8
        else:
            conditioning = 8 * eps * (1 + y.abs()) / torch.exp(ld)
            assert (err <= 1e-3 * x.abs().clamp_min(1.0) + conditioning).all()
        assert (ld2 + ld_at_x2).abs().max().item() < _tol(dtype, 1e-4, 1e-10)
        well_conditioned = torch.exp(ld) > 1e-2
        assert (ld + ld2)[well_conditioned].abs().max().item() < _tol(dtype, 1e-3, 1e-9)
