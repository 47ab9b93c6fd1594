r"""Sigmoid-based monotone scalar maps and the root finder that inverts them numerically.

Two families of strictly increasing bijections ``R -> R`` used as elementwise ("transformer")
maps in coupling and autoregressive flows, plus a safeguarded root finder shared by every map
whose inverse has no closed form.

**Logit of a mixture of logistic CDFs** (Flow++; Ho et al. 2019). With mixture weights
``pi = softmax(logits)``, locations ``mu_k``, scales ``s_k = exp(log_scale_k)`` and
``u_k = (x - mu_k) / s_k``::

    F(x) = sum_k pi_k sigmoid(u_k),        y = logit F(x) = log F(x) - log(1 - F(x))
    dy/dx = F'(x) / (F(x) (1 - F(x))),     F'(x) = sum_k pi_k sigmoid(u_k) sigmoid(-u_k) / s_k

Everything is evaluated in log space,

    log F     = logsumexp_k(log pi_k + log sigmoid(u_k))
    log(1-F)  = logsumexp_k(log pi_k + log sigmoid(-u_k))
    log F'    = logsumexp_k(log pi_k + log sigmoid(u_k) + log sigmoid(-u_k) - log s_k)

so nothing saturates: for ``x -> +inf`` the survival term ``log(1 - F) ~ -u`` keeps all its
digits while ``log F -> 0``, and symmetrically on the left. The map is therefore finite for every
finite input (``|x| = 1e4`` in float32, ``1e6`` and beyond in float64) and its tails are
asymptotically affine with slope ``1 / max_k s_k``, so it is a bijection of the whole real line.

**Deep sigmoidal flow** (DSF; Huang et al. 2018). One DSF layer with ``H`` sigmoid units is
``y = logit(sum_j w_j sigmoid(a_j x + b_j))`` with ``w = softmax`` and ``a_j > 0``; it is exactly
the map above with ``mu_j = -b_j / a_j`` and ``s_j = 1 / a_j``, and the kernel reuses it. Deeper
DSFs compose several such layers.

**Inversion.** ``F`` is a convex combination of the ``sigmoid(u_k)``, so
``min_k u_k <= logit F(x) <= max_k u_k``; solving ``logit F(x) = t`` therefore has its root in the
bracket ``[min_k (mu_k + s_k t), max_k (mu_k + s_k t)]``, computed from the parameters without any
search. :func:`safeguarded_newton` then runs Newton steps that are accepted only inside the
current bracket and only after an iteration that halved it, and bisection otherwise, so the
bracket at least halves every second iteration (a fixed iteration count derived from the
bracket width guarantees machine precision; in practice Newton converges quadratically and the
loop exits early once every element has converged), vectorised over the batch.
:func:`monotone_inverse` adds the gradient by the implicit function theorem (one
differentiable Newton step from the detached root), so the inverse is differentiable with
respect to its input and the map's parameters.

References:
    J. Ho, X. Chen, A. Srinivas, Y. Duan, P. Abbeel, "Flow++: Improving Flow-Based Generative
    Models with Variational Dequantization and Architecture Design", ICML 2019,
    arXiv:1902.00275.
    C.-W. Huang, D. Krueger, A. Lacoste, A. Courville, "Neural Autoregressive Flows", ICML 2018,
    arXiv:1804.00779.
    W. H. Press et al., "Numerical Recipes", 3rd ed., section 9.4 (safeguarded Newton-Raphson).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InvalidInput
from .splines import knot_derivatives

__all__ = [
    "ScalarMap",
    "guaranteed_iterations",
    "safeguarded_newton",
    "monotone_inverse",
    "logit_mixture_cdf",
    "logistic_mixture_transform",
    "deep_sigmoidal_flow",
]

#: An elementwise increasing map ``x -> (f(x), log f'(x))`` (both of the shape of ``x``).
ScalarMap = Callable[[Tensor], tuple[Tensor, Tensor]]


def guaranteed_iterations(width: float, dtype: torch.dtype) -> int:
    """Iterations after which :func:`safeguarded_newton` has shrunk a bracket below ``eps``.

    The safeguard halves the bracket at least every second iteration, so
    ``2 ceil(log2(width / eps)) + 2`` iterations bring a bracket of the given width below the
    dtype's machine epsilon (absolute), e.g. about 170 in float64 for a width of ``1e9``,
    whatever Newton does. In practice Newton converges quadratically and the root finder
    stops early.

    Arguments:
        width: the widest initial bracket.
        dtype: floating-point type of the computation.

    Returns:
        The number of iterations.

    Example:
        >>> guaranteed_iterations(1e6, torch.float64), guaranteed_iterations(1e4, torch.float32)
        (146, 76)
    """
    eps = torch.finfo(dtype).eps
    ratio = max(float(width), eps) / eps
    return 2 * max(math.ceil(math.log2(ratio)), 1) + 2


def safeguarded_newton(
    fn: ScalarMap,
    target: Tensor,
    lower: Tensor,
    upper: Tensor,
    *,
    initial: Tensor | None = None,
    iterations: int | None = None,
    check_every: int = 8,
) -> Tensor:
    r"""Solve ``f(x) = target`` elementwise for an increasing ``f`` with a known bracket.

    Safeguarded Newton-Raphson, vectorised: keep a bracket ``[lo, hi]`` with
    ``f(lo) <= target <= f(hi)``; at each iterate ``x`` update the bracket with the sign of
    ``r = f(x) - target``, then take the Newton point ``x - r / f'(x)`` if it lies strictly
    inside the bracket *and* the last iteration at least halved the bracket, and the midpoint
    otherwise. Newton steps start from the best point so far (smallest ``|r|``), so an
    interleaved bisection does not restart Newton from a poor point. A bisection always halves
    the bracket, so the width is at least halved every second iteration whatever Newton does
    (see :func:`guaranteed_iterations`), while near the root Newton's quadratic convergence
    takes over. Non-finite Newton points (``f'``
    underflowing to 0) fall back to bisection. The bracket is widened by a few ulps so that
    rounding in its computation cannot exclude the root. The point with the smallest ``|r|``
    evaluated is returned. Runs without gradient tracking; :func:`monotone_inverse` adds the
    gradient.

    Arguments:
        fn: ``x -> (f(x), log f'(x))``, elementwise and increasing.
        target: ``(...)`` values to invert.
        lower, upper: bracket ends (broadcastable to ``target``), ``f(lower) <= target <=
            f(upper)``.
        initial: optional first iterate (clamped into the bracket; default the midpoint).
        iterations: maximum iterations (default :func:`guaranteed_iterations` of the widest
            bracket, which reaches machine precision even by bisection alone).
        check_every: test for convergence every this many iterations (a check synchronises
            with the device) and stop once every element has converged: its last step is below
            ``4 eps (1 + |x|)`` or its smallest residual below ``8 eps (1 + |target|)`` (the
            rounding level of ``f``).

    Returns:
        ``(...)`` the roots, detached.

    References:
        W. H. Press et al., "Numerical Recipes", 3rd ed., section 9.4.

    Example:
        >>> f = lambda v: (v**3 + v, torch.log(3 * v**2 + 1))
        >>> y = torch.tensor([-10.0, 0.5, 2.0], dtype=torch.float64)
        >>> x = safeguarded_newton(f, y, torch.full_like(y, -10), torch.full_like(y, 10))
        >>> torch.allclose(f(x)[0], y, atol=1e-12)
        True
    """
    if (iterations is not None and iterations < 1) or check_every < 1:
        raise InvalidInput(
            "safeguarded_newton: expected positive iterations and check_every, "
            f"got {iterations} and {check_every}"
        )
    with torch.no_grad():
        # (torch.broadcast_shapes would import sympy on first use: a second of start-up)
        t, lower, upper = torch.broadcast_tensors(target.detach(), lower.detach(), upper.detach())
        shape = t.shape
        if t.numel() == 0:
            return t.clone()
        lo, hi = torch.minimum(lower, upper), torch.maximum(lower, upper)
        eps = torch.finfo(t.dtype).eps
        pad = 4.0 * eps * (1.0 + torch.maximum(lo.abs(), hi.abs()))
        lo, hi = lo - pad, hi + pad
        width = hi - lo
        if iterations is None:
            iterations = guaranteed_iterations(width.max().item(), t.dtype)
        if initial is None:
            x = lo + 0.5 * width
        else:
            x = torch.minimum(torch.maximum(initial.detach().expand(shape), lo), hi)
        best_x = x
        best_r = torch.full_like(x, float("inf"))
        best_newton = x
        for i in range(iterations):
            f, log_df = fn(x)
            r = f - t
            lo = torch.where(r <= 0, x, lo)
            hi = torch.where(r >= 0, x, hi)
            halved = (hi - lo) <= 0.5 * width
            width = hi - lo
            better = r.abs() < best_r
            best_x = torch.where(better, x, best_x)
            best_r = torch.where(better, r.abs(), best_r)
            best_newton = torch.where(better, x - r * torch.exp(-log_df), best_newton)
            ok = halved & (best_newton > lo) & (best_newton < hi)  # False for NaN
            x_new = torch.where(ok, best_newton, lo + 0.5 * width)
            step = (x_new - x).abs()
            x = x_new
            if (i + 1) % check_every == 0:
                moving = step > 4.0 * eps * (1.0 + x.abs())
                unsolved = best_r > 8.0 * eps * (1.0 + t.abs())
                if not bool((moving & unsolved).any()):
                    break
    return best_x


def monotone_inverse(
    fn: ScalarMap,
    target: Tensor,
    lower: Tensor,
    upper: Tensor,
    *,
    initial: Tensor | None = None,
    iterations: int | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Differentiable inverse ``x = f^{-1}(target)`` and ``log |dx/dy| = -log f'(x)``.

    The root ``x*`` comes from :func:`safeguarded_newton` (no gradient); then one Newton step
    ``x = x* - (f(x*) - y) / f'(x*)`` is taken *with* gradient tracking. Its value is the
    (slightly polished) root and its derivatives are those of the implicit function theorem,
    ``dx/dy = 1 / f'(x)`` and ``dx/dtheta = -(df/dtheta) / f'(x)`` for any parameter
    ``theta`` that ``fn`` closes over. Where ``f'`` is below the dtype's epsilon (a numerically
    flat map, whose inverse is not determined to better than ``ulp(y) / f'`` anyway) the divisor
    is floored at epsilon, which keeps gradients finite.

    Arguments:
        fn: ``x -> (f(x), log f'(x))``, elementwise, increasing, differentiable.
        target: ``(...)`` values ``y``.
        lower, upper: a bracket of the root (see :func:`safeguarded_newton`).
        initial: optional first iterate.
        iterations: maximum root-finder iterations.

    Returns:
        ``(x, log|dx/dy|)``, both of the broadcast shape.

    Example:
        >>> theta = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
        >>> f = lambda v: (theta * v + torch.sinh(v), torch.log(theta + torch.cosh(v)))
        >>> y = torch.tensor([3.0], dtype=torch.float64)
        >>> x, ld = monotone_inverse(f, y, y.new_tensor([-5.0]), y.new_tensor([5.0]))
        >>> torch.allclose(f(x)[0], y), torch.allclose(ld, -f(x)[1])
        (True, True)
        >>> (g,) = torch.autograd.grad(x.sum(), theta)  # implicit function theorem
        >>> torch.allclose(g, -x / (theta + torch.cosh(x)))
        True
    """
    root = safeguarded_newton(fn, target, lower, upper, initial=initial, iterations=iterations)
    f0, log_df0 = fn(root)
    slope = torch.exp(log_df0).clamp_min(torch.finfo(root.dtype).eps)
    x = root - (f0 - target) / slope
    _, log_df = fn(x)
    return x, -log_df


def _log_mixture_logit(
    x: Tensor, log_weights: Tensor, loc: Tensor, log_scale: Tensor
) -> tuple[Tensor, Tensor]:
    """``(logit F(x), log dy/dx)`` for normalised ``log_weights`` (see the module docstring)."""
    u = (x.unsqueeze(-1) - loc) * torch.exp(-log_scale)
    log_p = F.logsigmoid(u)
    log_q = F.logsigmoid(-u)
    log_cdf = torch.logsumexp(log_weights + log_p, dim=-1)
    log_sf = torch.logsumexp(log_weights + log_q, dim=-1)
    log_pdf = torch.logsumexp(log_weights + log_p + log_q - log_scale, dim=-1)
    return log_cdf - log_sf, log_pdf - log_cdf - log_sf


def _check_mixture(logits: Tensor, loc: Tensor, log_scale: Tensor, who: str) -> None:
    k = logits.shape[-1]
    if k < 1 or loc.shape[-1] != k or log_scale.shape[-1] != k:
        raise InvalidInput(
            f"{who}: expected logits, loc and log_scale of shape (..., K) with K >= 1, got "
            f"{tuple(logits.shape)}, {tuple(loc.shape)}, {tuple(log_scale.shape)}"
        )


def logit_mixture_cdf(
    x: Tensor,
    logits: Tensor,
    loc: Tensor,
    log_scale: Tensor,
    *,
    inverse: bool = False,
    iterations: int | None = None,
) -> tuple[Tensor, Tensor]:
    r"""``y = logit(sum_k pi_k sigmoid((x - mu_k) / s_k))``, an increasing bijection of ``R``.

    ``pi = softmax(logits)``, ``s = exp(log_scale)``. Value and log-derivative are computed in log
    space (formulas in the module docstring), so they stay finite and accurate for any finite
    input; the tails are asymptotically affine. The inverse solves ``logit F(x) = y`` with
    :func:`monotone_inverse` in the exact bracket ``[min_k(mu_k + s_k y), max_k(mu_k + s_k y)]``,
    starting from the ``pi``-weighted mean of those points.

    Arguments:
        x: ``(...)`` inputs (outputs ``y`` when ``inverse``).
        logits: ``(..., K)`` unnormalised log mixture weights.
        loc: ``(..., K)`` component locations ``mu``.
        log_scale: ``(..., K)`` log component scales.
        inverse: evaluate the inverse map (numerically).
        iterations: maximum root-finder iterations (inverse only; default: enough for machine
            precision, see :func:`guaranteed_iterations`).

    The leading dimensions of the parameters must broadcast against ``x.shape``.

    Returns:
        ``(y, log|dy/dx|)`` elementwise, or with ``inverse`` ``(x, log|dx/dy|)``.

    References:
        Ho et al., "Flow++", ICML 2019, arXiv:1902.00275.

    Example:
        >>> x = torch.tensor([-1e4, -1.0, 0.0, 3.0, 1e4])
        >>> p = [torch.randn(5, 4) for _ in range(3)]
        >>> y, ld = logit_mixture_cdf(x, *p)
        >>> bool(torch.isfinite(y).all() and (y.diff() > 0).all())
        True
        >>> x2, ld2 = logit_mixture_cdf(y, *p, inverse=True)
        >>> torch.allclose(x2, x, rtol=1e-4, atol=1e-4), torch.allclose(ld + ld2, 0 * ld, atol=1e-3)
        (True, True)
    """
    _check_mixture(logits, loc, log_scale, "logit_mixture_cdf")
    log_weights = torch.log_softmax(logits, dim=-1)
    if not inverse:
        return _log_mixture_logit(x, log_weights, loc, log_scale)
    with torch.no_grad():
        ends = loc + torch.exp(log_scale) * x.unsqueeze(-1)  # each component's own preimage
        lower, upper = ends.amin(dim=-1), ends.amax(dim=-1)
        initial = (torch.exp(log_weights) * ends).sum(dim=-1)  # convex combination: in bracket

    def fn(v: Tensor) -> tuple[Tensor, Tensor]:
        return _log_mixture_logit(v, log_weights, loc, log_scale)

    return monotone_inverse(fn, x, lower, upper, initial=initial, iterations=iterations)


def logistic_mixture_transform(
    x: Tensor,
    logits: Tensor,
    loc: Tensor,
    log_scale: Tensor,
    log_a: Tensor,
    shift: Tensor,
    *,
    inverse: bool = False,
    iterations: int | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Flow++'s elementwise map ``y = exp(a) logit(MixLogCDF(x; pi, mu, s)) + b``.

    ``log dy/dx = a + log d/dx logit F(x)`` (see :func:`logit_mixture_cdf`); the inverse first
    undoes the affine part, ``t = (y - b) exp(-a)``, then inverts ``logit F`` numerically.

    Arguments:
        x: ``(...)`` inputs (outputs when ``inverse``).
        logits, loc, log_scale: ``(..., K)`` mixture parameters (see :func:`logit_mixture_cdf`).
        log_a: ``(...)`` log of the output scale.
        shift: ``(...)`` output shift ``b``.
        inverse: evaluate the inverse map.
        iterations: maximum root-finder iterations (inverse only).

    Returns:
        ``(y, log|dy/dx|)`` elementwise, or with ``inverse`` ``(x, log|dx/dy|)``.

    References:
        Ho et al., "Flow++: Improving Flow-Based Generative Models with Variational
        Dequantization and Architecture Design", ICML 2019, arXiv:1902.00275.

    Example:
        >>> x = torch.linspace(-3, 3, 7, dtype=torch.float64)
        >>> p = [torch.randn(7, 3, dtype=torch.float64) for _ in range(3)]
        >>> a, b = torch.randn(7, dtype=torch.float64), torch.randn(7, dtype=torch.float64)
        >>> y, ld = logistic_mixture_transform(x, *p, a, b)
        >>> x2, ld2 = logistic_mixture_transform(y, *p, a, b, inverse=True)
        >>> torch.allclose(x2, x, atol=1e-10), torch.allclose(ld + ld2, 0 * ld, atol=1e-10)
        (True, True)
    """
    if not inverse:
        z, ld = logit_mixture_cdf(x, logits, loc, log_scale)
        return torch.exp(log_a) * z + shift, ld + log_a
    t = (x - shift) * torch.exp(-log_a)
    out, ld = logit_mixture_cdf(t, logits, loc, log_scale, inverse=True, iterations=iterations)
    return out, ld - log_a


def deep_sigmoidal_flow(
    x: Tensor,
    weight_logits: Tensor,
    pre_slopes: Tensor,
    offsets: Tensor,
    *,
    inverse: bool = False,
    min_slope: float = 1e-3,
    iterations: int | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Deep sigmoidal flow: ``L`` composed layers ``h -> logit(sum_j w_j sigmoid(a_j h + b_j))``.

    Layer ``l`` has ``w = softmax(weight_logits[..., l, :])``, slopes
    ``a = min_slope + softplus(pre_slopes[..., l, :] + c)`` (``c`` chosen so that a zero
    pre-slope gives ``a = 1``; see :func:`~manifoldflows.functional.splines.knot_derivatives`)
    and offsets ``b = offsets[..., l, :]``. Each layer equals :func:`logit_mixture_cdf` with
    ``mu = -b / a`` and ``log s = -log a`` and is evaluated that way, in log space: finite for all
    finite inputs, with affine tails of slope ``min_j a_j >= min_slope``, hence a bijection of
    ``R``. The log-derivatives of the layers add up. The inverse inverts the layers in reverse
    order, each with the bracketed root finder.

    Arguments:
        x: ``(...)`` inputs (outputs when ``inverse``).
        weight_logits, pre_slopes, offsets: ``(..., L, H)`` parameters of ``L`` layers of ``H``
            sigmoid units each.
        inverse: evaluate the inverse map.
        min_slope: lower bound of the slopes ``a``, in ``(0, 1)``.
        iterations: maximum root-finder iterations per layer (inverse only).

    Returns:
        ``(y, log|dy/dx|)`` elementwise, or with ``inverse`` ``(x, log|dx/dy|)``.

    References:
        C.-W. Huang, D. Krueger, A. Lacoste, A. Courville, "Neural Autoregressive Flows",
        ICML 2018, arXiv:1804.00779.

    Example:
        >>> x = torch.tensor([-50.0, 0.0, 2.0])
        >>> p = [torch.randn(3, 2, 5) for _ in range(3)]  # 2 layers of 5 units
        >>> y, ld = deep_sigmoidal_flow(x, *p)
        >>> x2, ld2 = deep_sigmoidal_flow(y, *p, inverse=True)
        >>> torch.allclose(x2, x, rtol=1e-4, atol=1e-4), torch.allclose(ld, -ld2, atol=1e-3)
        (True, True)
    """
    shape = weight_logits.shape
    if len(shape) < 2 or shape[-1] < 1 or pre_slopes.shape != shape or offsets.shape != shape:
        raise InvalidInput(
            "deep_sigmoidal_flow: expected weight_logits, pre_slopes and offsets of one shape "
            f"(..., L, H), got {tuple(weight_logits.shape)}, {tuple(pre_slopes.shape)}, "
            f"{tuple(offsets.shape)}"
        )
    slopes = knot_derivatives(pre_slopes, min_slope)
    log_scale = -torch.log(slopes)
    loc = -offsets / slopes
    layers = range(shape[-2])
    total = None
    for l in reversed(layers) if inverse else layers:
        x, ld = logit_mixture_cdf(
            x,
            weight_logits[..., l, :],
            loc[..., l, :],
            log_scale[..., l, :],
            inverse=inverse,
            iterations=iterations,
        )
        total = ld if total is None else total + ld
    return x, total
