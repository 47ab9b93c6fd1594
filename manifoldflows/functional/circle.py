"""Pure kernels on the circle: angle wrapping and (below) circle bijections.

Angles are real numbers read modulo ``2 pi``; the canonical representative lies in
``[-pi, pi)``. The kernels here never validate their inputs: the layers and spaces do.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import InvalidInput
from .monotonic import monotone_inverse
from .splines import (
    bin_knots,
    bounded_spline_knots,
    knot_derivatives,
    rational_quadratic_spline_from_knots,
)

__all__ = ["wrap"]

TWO_PI = 2.0 * math.pi


def wrap(x: Tensor) -> Tensor:
    """Map angles to their representative in ``[-pi, pi)``.

    .. math:: \\operatorname{wrap}(x) = ((x + \\pi) \\bmod 2\\pi) - \\pi

    Angles already in ``[-pi, pi)`` are returned unchanged (bit for bit); the result is always
    strictly below ``pi`` (a rounding of ``mod`` to ``2 pi`` is folded back), and the
    derivative is 1 everywhere (autograd passes gradients straight through).

    Arguments:
        x: tensor of angles, any shape.

    Returns:
        Tensor of the same shape, dtype and device with values in ``[-pi, pi)``.

    Example:
        >>> wrap(torch.tensor([0.0, 1.0, math.pi, -math.pi, 3 * math.pi / 2]))
        tensor([ 0.0000,  1.0000, -3.1416, -3.1416, -1.5708])
    """
    y = torch.remainder(x + math.pi, TWO_PI) - math.pi
    y = torch.where(y >= math.pi, y - TWO_PI, y)
    return torch.where((x >= -math.pi) & (x < math.pi), x, y)


# ----------------------------------------------------------------------------------------------
# Circle diffeomorphisms (Rezende et al. 2020, arXiv:2002.02428). Each kernel maps [-pi, pi)
# onto itself, returns ``(y, log |dy/dx|)`` elementwise (arc length on both sides) and takes
# ``inverse=True`` for the inverse map. Inputs are wrapped first, so any real angle is read
# modulo 2 pi; outputs are wrapped to [-pi, pi).

__all__ += [
    "circular_shift",
    "disk_point",
    "moebius_circle",
    "circular_rational_quadratic_spline",
    "noncompact_projection",
]


def circular_shift(x: Tensor, shift: Tensor, *, inverse: bool = False) -> tuple[Tensor, Tensor]:
    """Rotation of the circle: ``y = wrap(x + shift)`` (``wrap(x - shift)`` for the inverse).

    Arguments:
        x: ``(...)`` angles.
        shift: rotation angle, broadcastable against ``x``.
        inverse: apply the inverse rotation.

    Returns:
        ``(y, logabsdet)`` with ``logabsdet = 0`` (a rotation preserves arc length), both of the
        broadcast shape.

    Example:
        >>> y, ld = circular_shift(torch.tensor([3.0]), torch.tensor(1.0))
        >>> round(y.item(), 4), ld.item()  # 4 - 2 pi
        (-2.2832, 0.0)
    """
    y = wrap(x - shift if inverse else x + shift)
    return y, torch.zeros_like(y)


def disk_point(raw: Tensor, max_radius: float = 0.99) -> Tensor:
    """Map unconstrained vectors ``v`` in ``R^2`` into the open disk of radius ``max_radius``.

    .. math:: w = r_{max} \\, v / \\sqrt{1 + |v|^2}

    a smooth bijection of ``R^2`` onto the open disk (``v = 0`` gives ``w = 0``). It is evaluated
    after dividing ``v`` by ``max(1, max_i |v_i|)`` so that huge inputs neither overflow nor lose
    their direction; the gradient is unaffected.

    Arguments:
        raw: ``(..., 2)`` unconstrained vectors.
        max_radius: radius of the disk, in ``(0, 1)``.

    Returns:
        ``(..., 2)`` points with ``|w| < max_radius``.

    Example:
        >>> w = disk_point(torch.tensor([[0.0, 0.0], [3.0, 4.0], [1e30, 0.0]]))
        >>> [round(v, 4) for v in w.norm(dim=-1).tolist()]  # 0.99 * 5 / sqrt(26)
        [0.0, 0.9708, 0.99]
    """
    if raw.shape[-1:] != (2,):
        raise InvalidInput(f"disk_point: expected shape (..., 2), got {tuple(raw.shape)}")
    if not 0.0 < max_radius < 1.0:
        raise InvalidInput(f"disk_point: expected 0 < max_radius < 1, got {max_radius}")
    # The scale is a positive constant for autograd: w does not depend on it mathematically.
    scale = raw.detach().abs().amax(dim=-1, keepdim=True).clamp_min(1.0)
    v = raw / scale
    norm = torch.sqrt(scale.reciprocal().square() + v.square().sum(dim=-1, keepdim=True))
    return max_radius * v / norm


def _moebius_components(x: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """Displacements ``F_k(x) - x`` and ``log F_k'(x)`` of every component, ``(..., K)`` each."""
    cos, sin = torch.cos(x).unsqueeze(-1), torch.sin(x).unsqueeze(-1)
    w1, w2 = w[..., 0], w[..., 1]
    # q = 1 - w exp(-i x): Re q >= 1 - |w| > 0, so atan2 never leaves (-pi/2, pi/2).
    re = 1.0 - (w1 * cos + w2 * sin)
    im = w1 * sin - w2 * cos
    at_seam = torch.atan2(w2, 1.0 + w1)  # arg q at x = -pi
    displacement = 2.0 * (torch.atan2(im, re) - at_seam)
    log_deriv = torch.log1p(-(w1 * w1 + w2 * w2)) - torch.log(re * re + im * im)
    return displacement, log_deriv


def _moebius_component_inverses(t: Tensor, w: Tensor) -> Tensor:
    """Closed-form ``F_k^{-1}(t)`` of each component, ``(..., K)``: Blaschke factors of ``-w``."""
    w1, w2 = w[..., 0], w[..., 1]
    u = t.unsqueeze(-1) + 2.0 * torch.atan2(w2, 1.0 + w1)
    cos, sin = torch.cos(u), torch.sin(u)
    return u + 2.0 * torch.atan2(w2 * cos - w1 * sin, 1.0 + w1 * cos + w2 * sin)


def moebius_circle(
    x: Tensor,
    w: Tensor,
    logits: Tensor | None = None,
    *,
    inverse: bool = False,
    iterations: int | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Convex combination of ``K`` Moebius maps of the circle, each fixing the point ``-pi``.

    For ``w`` in the open unit disk the Moebius (Blaschke) map of the unit circle
    ``h_w(z) = (z - w) / (1 - conj(w) z)`` (Rezende et al. 2020, eq. for ``S^1``, written there
    as ``(1 - |w|^2) (z - w) / |z - w|^2 - w``, the same map on ``|z| = 1``) moves the angle
    ``x`` by ``arg h_w(e^{ix}) - x = 2 arg(1 - w e^{-ix})``, a smooth periodic function with
    values in ``(-pi, pi)`` (the real part of ``1 - w e^{-ix}`` is at least ``1 - |w| > 0``).
    Following the paper, the map is rotated so that it fixes the seam ``-pi``, which gives the
    increasing lift

    .. math::

        F_w(x) = x + 2 \arg(1 - w e^{-ix}) - 2 \arg(1 + w), \qquad
        F_w(-\pi) = -\pi, \quad F_w(x + 2\pi) = F_w(x) + 2\pi,

    with the exact derivative (the Poisson kernel)
    ``F_w'(x) = (1 - |w|^2) / |e^{ix} - w|^2 > 0``. A convex combination
    ``F = sum_k rho_k F_{w_k}`` (``rho = softmax(logits)``) of such lifts is again increasing
    with ``F(-pi) = -pi`` and ``F(pi) = pi``, i.e. a smooth diffeomorphism of the circle, and
    ``log F' = logsumexp_k(log rho_k + log F_{w_k}')``. ``y = wrap(F(x))``.

    The inverse of one component is the Blaschke map of ``-w`` (closed form, used for
    ``K = 1``). For ``K > 1`` there is no closed form: the inverse solves ``F(x) = y`` with the
    safeguarded Newton/bisection root finder
    (:func:`~manifoldflows.functional.monotonic.monotone_inverse`) in the exact bracket
    ``[min_k F_{w_k}^{-1}(y), max_k F_{w_k}^{-1}(y)]``, starting from the ``rho``-weighted mean.

    Arguments:
        x: ``(...)`` angles (outputs ``y`` when ``inverse``).
        w: ``(..., K, 2)`` centres in the open unit disk (e.g. from :func:`disk_point`).
        logits: ``(..., K)`` unnormalised log weights; may be ``None`` only when ``K = 1``.
        inverse: evaluate the inverse map.
        iterations: maximum root-finder iterations (inverse with ``K > 1`` only).

    The leading dimensions of ``w`` and ``logits`` must broadcast against ``x.shape``.

    Returns:
        ``(y, log|dy/dx|)`` elementwise, or with ``inverse`` ``(x, log|dx/dy|)``.

    References:
        D. J. Rezende, G. Papamakarios, S. Racaniere, M. S. Albergo, G. Kanwar, P. E. Shanahan,
        K. Cranmer, "Normalizing Flows on Tori and Spheres", ICML 2020, arXiv:2002.02428.

    Example:
        >>> x = torch.linspace(-3.1, 3.1, 5, dtype=torch.float64)
        >>> w = torch.tensor([[0.5, 0.3], [-0.2, 0.8]], dtype=torch.float64)
        >>> logits = torch.tensor([0.0, 1.0], dtype=torch.float64)
        >>> y, ld = moebius_circle(x, w, logits)
        >>> bool((y.diff() > 0).all())
        True
        >>> x2, ld2 = moebius_circle(y, w, logits, inverse=True)
        >>> torch.allclose(x2, x), torch.allclose(ld + ld2, torch.zeros(5, dtype=torch.float64))
        (True, True)
    """
    if w.dim() < 2 or w.shape[-1] != 2 or w.shape[-2] < 1:
        raise InvalidInput(f"moebius_circle: expected w of shape (..., K, 2), got {tuple(w.shape)}")
    k = w.shape[-2]
    if logits is None:
        if k != 1:
            raise InvalidInput(f"moebius_circle: {k} components need logits of shape (..., {k})")
        log_weights = None
    else:
        if logits.shape[-1] != k:
            raise InvalidInput(
                f"moebius_circle: expected logits of shape (..., {k}), got {tuple(logits.shape)}"
            )
        log_weights = torch.log_softmax(logits, dim=-1)

    def lift(v: Tensor) -> tuple[Tensor, Tensor]:
        displacement, log_deriv = _moebius_components(v, w)
        if log_weights is None:
            return v + displacement[..., 0], log_deriv[..., 0]
        weighted = (torch.exp(log_weights) * displacement).sum(dim=-1)
        return v + weighted, torch.logsumexp(log_weights + log_deriv, dim=-1)

    x = wrap(x)
    if not inverse:
        y, log_deriv = lift(x)
        return wrap(y), log_deriv
    if k == 1:
        out = _moebius_component_inverses(x, w)[..., 0]
        return wrap(out), -lift(out)[1]
    with torch.no_grad():
        ends = _moebius_component_inverses(x, w)
        lower, upper = ends.amin(dim=-1), ends.amax(dim=-1)
        initial = (torch.exp(log_weights) * ends).sum(dim=-1)
    out, log_deriv = monotone_inverse(lift, x, lower, upper, initial=initial, iterations=iterations)
    return wrap(out), log_deriv


def circular_rational_quadratic_spline(
    x: Tensor,
    widths: Tensor,
    heights: Tensor,
    derivatives: Tensor,
    *,
    inverse: bool = False,
    min_bin_width: float = 1e-3,
    min_bin_height: float = 1e-3,
    min_derivative: float = 1e-3,
    max_derivative: float = 1e3,
    slope_bound: float | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Circular rational-quadratic spline: a ``C^1`` diffeomorphism of the circle.

    A monotone RQ spline (Durkan et al. 2019) through ``K + 1`` knots on ``[-pi, pi]^2`` with
    periodic boundary conditions (Rezende et al. 2020): the end knots are
    ``(-pi, -pi)`` and ``(pi, pi)`` and the derivative at ``pi`` equals the one at ``-pi``, so
    only ``K`` knot derivatives are free,

    .. math::

        d_K = d_0, \qquad f(-\pi) = -\pi, \quad f(\pi) = \pi .

    The spline, its derivative and hence the density it induces are continuous across the
    seam. Knots come from :func:`~manifoldflows.functional.splines.bin_knots` (bin widths and
    heights at least ``min_bin_* 2 pi``), derivatives from
    :func:`~manifoldflows.functional.splines.knot_derivatives` (at least ``min_derivative``;
    all-zero parameters give the identity) capped at ``max_derivative`` (which keeps the
    inverse's quadratic finite in float32 for arbitrarily large parameters), and the
    evaluation is
    :func:`~manifoldflows.functional.splines.rational_quadratic_spline_from_knots`.
    ``y = wrap(f(wrap(x)))``.

    Arguments:
        x: ``(...)`` angles (outputs ``y`` when ``inverse``).
        widths: ``(..., K)`` unnormalised bin widths.
        heights: ``(..., K)`` unnormalised bin heights.
        derivatives: ``(..., K)`` unnormalised derivatives at knots ``0, ..., K - 1``.
        inverse: evaluate the inverse map.
        min_bin_width, min_bin_height: smallest bin as a fraction of ``2 pi``, ``<= 1/K``.
        min_derivative: smallest knot derivative, in ``(0, 1)``.
        max_derivative: largest knot derivative, ``> 1``.
        slope_bound: if given, ``B > 1``: raw parameters are softly bounded
            (:func:`~manifoldflows.functional.splines.bounded_spline_knots`) and the knot
            derivatives are ``exp`` of bounded values, so knot derivatives and bin slopes lie in
            ``[1/B, B]``
            (``min_derivative`` and ``max_derivative`` are then not used).

    Returns:
        ``(y, log|dy/dx|)`` elementwise, or with ``inverse`` ``(x, log|dx/dy|)``.

    References:
        D. J. Rezende et al., "Normalizing Flows on Tori and Spheres", ICML 2020,
        arXiv:2002.02428.
        C. Durkan, A. Bekasov, I. Murray, G. Papamakarios, "Neural Spline Flows",
        NeurIPS 2019, arXiv:1906.04032.

    Example:
        >>> p = [torch.randn(4, dtype=torch.float64) for _ in range(3)]
        >>> ends = torch.tensor([-math.pi, math.pi - 1e-12], dtype=torch.float64)
        >>> y, ld = circular_rational_quadratic_spline(ends, *p)
        >>> torch.allclose(ld[0], ld[1])  # same slope on both sides of the seam
        True
        >>> x2, _ = circular_rational_quadratic_spline(y, *p, inverse=True)
        >>> torch.allclose(x2, ends)
        True
    """
    k = widths.shape[-1]
    if k < 1 or heights.shape[-1] != k or derivatives.shape[-1] != k:
        raise InvalidInput(
            "circular_rational_quadratic_spline: expected widths, heights and derivatives of "
            f"shape (..., K), got {tuple(widths.shape)}, {tuple(heights.shape)}, "
            f"{tuple(derivatives.shape)}"
        )
    if slope_bound is not None:
        knot_x, knot_y, free = bounded_spline_knots(
            widths,
            heights,
            derivatives,
            low=-math.pi,
            high=math.pi,
            slope_bound=slope_bound,
            min_bin_width=min_bin_width,
            min_bin_height=min_bin_height,
        )
    else:
        if not max_derivative > 1.0:
            raise InvalidInput(
                "circular_rational_quadratic_spline: expected max_derivative > 1, got "
                f"{max_derivative}"
            )
        free = knot_derivatives(derivatives, min_derivative).clamp(max=max_derivative)
        knot_x = bin_knots(widths, -math.pi, math.pi, min_bin_width)
        knot_y = bin_knots(heights, -math.pi, math.pi, min_bin_height)
    knot_d = torch.cat([free, free[..., :1]], dim=-1)  # periodic: d_K = d_0
    y, log_deriv = rational_quadratic_spline_from_knots(
        wrap(x), knot_x, knot_y, knot_d, inverse=inverse
    )
    return wrap(y), log_deriv


def noncompact_projection(
    x: Tensor, log_scale: Tensor, shift: Tensor, *, inverse: bool = False
) -> tuple[Tensor, Tensor]:
    r"""Non-compact projection: chart the circle onto ``R``, apply an affine map, chart back.

    The chart ``u = tan(x / 2)`` maps ``(-pi, pi)`` onto ``R`` (the seam ``+-pi`` goes to
    infinity); an increasing affine map ``u' = a u + b`` (``a = exp(log_scale) > 0``) moves the
    line and ``y = 2 atan(u')`` maps back (Rezende et al. 2020, non-compact projection). Written
    with the half-angle ``phi = x / 2`` as a linear map of the half-circle point
    ``(cos phi, sin phi)``,

    .. math::

        y = 2 \operatorname{atan2}(a \sin\phi + b \cos\phi, \; \cos\phi), \qquad
        \frac{dy}{dx} = \frac{a}{\cos^2\phi + (a \sin\phi + b \cos\phi)^2},

    which never forms ``tan(pi / 2)``. The derivative tends to ``1 / a`` on both sides of the
    seam, so the map is a smooth diffeomorphism of the circle fixing ``-pi`` (it is in fact a
    Moebius map). The inverse is the same construction with ``u = (u' - b) / a``.

    Arguments:
        x: ``(...)`` angles (outputs when ``inverse``).
        log_scale: log of the slope ``a``, broadcastable against ``x``.
        shift: offset ``b``, broadcastable against ``x``.
        inverse: evaluate the inverse map.

    Returns:
        ``(y, log|dy/dx|)`` elementwise, or with ``inverse`` ``(x, log|dx/dy|)``.

    References:
        D. J. Rezende et al., "Normalizing Flows on Tori and Spheres", ICML 2020,
        arXiv:2002.02428.

    Example:
        >>> x = torch.tensor([-math.pi, -1.0, 0.0, 2.0], dtype=torch.float64)
        >>> a, b = torch.tensor(0.5, dtype=torch.float64), torch.tensor(0.3, dtype=torch.float64)
        >>> y, ld = noncompact_projection(x, a, b)
        >>> torch.allclose(y[2], 2 * torch.atan(b)), torch.allclose(y[0], x[0])
        (True, True)
        >>> x2, ld2 = noncompact_projection(y, a, b, inverse=True)
        >>> torch.allclose(x2, x), torch.allclose(ld + ld2, torch.zeros(4, dtype=torch.float64))
        (True, True)
    """
    half = 0.5 * wrap(x)
    cos, sin = torch.cos(half), torch.sin(half)
    if inverse:
        num = (sin - shift * cos) * torch.exp(-log_scale)
        log_deriv = -log_scale - torch.log(cos * cos + num * num)
    else:
        num = torch.exp(log_scale) * sin + shift * cos
        log_deriv = log_scale - torch.log(cos * cos + num * num)
    return wrap(2.0 * torch.atan2(num, cos)), log_deriv
