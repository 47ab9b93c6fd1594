r"""Kernels of the residual "one hidden unit" flows: planar, radial and Sylvester maps.

All three are ``f(z) = z + (low-rank or radial update)`` with an explicit Jacobian
determinant. Each kernel returns ``(output, logabsdet)`` with ``logabsdet`` of the batch shape.

**Planar** (Rezende & Mohamed 2015)::

    f(z) = z + u tanh(w^T z + b),      log|det J| = log(1 + tanh'(w^T z + b) w^T u).

It is invertible iff ``w^T u >= -1``; :func:`planar_u_hat` projects a free ``u`` onto the
open set ``w^T u > -1 + margin``. The inverse has no closed form but is one-dimensional: with
``alpha = w^T z`` one has ``w^T f(z) = alpha + (w^T u) tanh(alpha + b)``, strictly increasing in
``alpha``, so :func:`solve_tanh_equation` finds ``alpha`` and ``z = y - u tanh(alpha + b)``.

**Radial** (Rezende & Mohamed 2015)::

    f(z) = z + beta (z - z0) / (alpha + r),      r = |z - z0|,  alpha > 0,  beta > -alpha,

    log|det J| = (d - 1) log(1 + beta / (alpha + r)) + log(1 + alpha beta / (alpha + r)^2).

The radius maps as ``s = r (alpha + beta + r) / (alpha + r)``; the inverse solves the quadratic
``r^2 + (alpha + beta - s) r - alpha s = 0`` in closed form (its positive root).

**Sylvester** (van den Berg et al. 2018)::

    f(z) = z + Q R tanh(R~ Q^T z + b),      log|det J| = sum_i log(1 + R_ii R~_ii tanh'(a_i)),

with ``Q`` a ``d x M`` matrix with orthonormal columns, ``R``, ``R~`` upper triangular
``M x M`` and ``a = R~ Q^T z + b`` (Sylvester's determinant identity turns the ``d x d``
determinant into that of the triangular ``I + diag(tanh'(a)) R~ R``). Invertible when every
``R_ii R~_ii > -1``. The inverse reduces to ``v = Q^T z`` solving the triangular system
``v + R tanh(R~ v + b) = Q^T y``, solved by back substitution: each coordinate, from the last,
is a scalar equation of the planar type.

Numerical inverses are solved without gradient tracking and then *polished* by one Newton step
taken with gradient tracking and a detached Jacobian: at the root that step changes the value by
a rounding error only, but gives exactly the implicit-function-theorem derivatives with respect
to the input and to the parameters, so ``Flow.log_prob`` can be trained through them.

References:
    D. J. Rezende, S. Mohamed, "Variational Inference with Normalizing Flows", ICML 2015,
    arXiv:1505.05770 (planar and radial flows, appendix A for the invertibility conditions).
    R. van den Berg, L. Hasenclever, J. M. Tomczak, M. Welling, "Sylvester Normalizing Flows for
    Variational Inference", UAI 2018, arXiv:1803.05649.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "above_minus_one",
    "solve_tanh_equation",
    "planar_u_hat",
    "planar",
    "planar_inverse",
    "radial",
    "radial_inverse",
    "sylvester",
    "sylvester_inverse",
]

#: Iteration cap of the safeguarded Newton solver (bisection alone needs ~ 60 + log2(width)).
MAX_ITER = 100


def _sech2(t: Tensor) -> Tensor:
    """``1 - t^2`` for ``t = tanh(a)``, i.e. ``tanh'(a)``, in the accurate factored form."""
    return (1 - t) * (1 + t)


def above_minus_one(x: Tensor, margin: float = 1e-3) -> Tensor:
    """Smooth map ``R -> (-1 + margin, inf)`` that is the identity on ``[0, inf)``.

    ``m(x) = s elu(x / s)`` with ``s = 1 - margin``: ``m(x) = x`` for ``x >= 0`` and
    ``s (exp(x / s) - 1)`` below, so it is ``C^1`` with ``m(0) = 0``, ``m'(0) = 1``. It plays
    the role of ``-1 + softplus(x)`` in Rezende & Mohamed (2015, appendix A), but leaves
    parameters that already satisfy the constraint untouched and keeps a strict margin.

    Arguments:
        x: any tensor.
        margin: ``m(x) > -1 + margin``; in ``(0, 1)``.

    Returns:
        ``m(x)``, same shape as ``x``.

    Example:
        >>> above_minus_one(torch.tensor([-1e9, 0.0, 2.0], dtype=torch.float64)).tolist()
        [-0.999, 0.0, 2.0]
    """
    scale = 1.0 - margin
    return scale * F.elu(x / scale)


def solve_tanh_equation(c: Tensor, m: Tensor, b: Tensor, *, max_iter: int = MAX_ITER) -> Tensor:
    """Solve ``x + m tanh(x + b) = c`` for ``x`` elementwise (``m > -1``), without gradient.

    In ``s = x + b`` the equation reads ``g(s) = s + m tanh(s) - a = 0`` with ``a = c + b``;
    ``g`` is strictly increasing (``g' = 1 + m tanh'(s) > 0``) and odd in ``(s, a)``, so it is
    solved for ``|a|`` and the sign restored. For ``a >= 0`` the root lies in
    ``[max(0, min(a, a - m)), max(a, a - m)]``, where ``g`` is concave if ``m >= 0`` and convex
    if ``m < 0``. Newton's method started at ``s_0 = max(0, a - m)`` (to the left of the root
    in the concave case, to its right in the convex case, as ``g(s_0)`` has the right sign)
    therefore converges *monotonically*, without overshoot or cycles, from any data. As a
    safeguard against rounding, the bracket is kept and shrunk with the sign of ``g`` at every
    iterate, and a step that would leave it is replaced by bisection. The iteration stops when
    for every element the step is below a few units in the last place of ``s`` or the residual
    is below its own rounding error (or after ``max_iter`` steps); it is vectorised over all
    elements.

    Arguments:
        c, m, b: broadcastable tensors; ``m > -1``.
        max_iter: iteration cap.

    Returns:
        The root ``x`` (broadcast shape, detached), accurate to machine precision.

    Example:
        >>> c, m, b = torch.tensor([0.3, -2.0]), torch.tensor([-0.9, 5.0]), torch.tensor(0.1)
        >>> x = solve_tanh_equation(c, m, b)
        >>> torch.allclose(x + m * torch.tanh(x + b), c)
        True
    """
    with torch.no_grad():
        c, m, b = torch.broadcast_tensors(c.detach(), m.detach(), b.detach())
        shifted = c + b
        sign = torch.where(shifted < 0, -1.0, 1.0).to(c.dtype)
        a = shifted.abs()
        lo = (a - m).clamp_max(a).clamp_min(0)
        hi = (a - m).clamp_min(a)
        s = (a - m).clamp_min(0)
        tol = 4 * torch.finfo(c.dtype).eps
        for _ in range(max_iter):
            t = torch.tanh(s)
            mt = m * t
            g = s + mt - a
            # converged: g is at the level of its own rounding error
            done = g.abs() <= tol * (s + mt.abs() + a)
            lo = torch.where(g <= 0, s, lo)
            hi = torch.where(g >= 0, s, hi)
            new = s - g / (1 + m * _sech2(t))
            bisect = ~((new >= lo) & (new <= hi))  # also catches NaN
            new = torch.where(bisect, 0.5 * (lo + hi), new)
            done = done | ((new - s).abs() <= tol * (1 + s))
            s = new
            if bool(done.all()):
                break
        return sign * s - b


def _polish_scalar(x: Tensor, c: Tensor, m: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """One Newton step on ``x + m tanh(x + b) = c`` with a detached derivative (see module)."""
    t = torch.tanh(x + b)
    slope = 1 + m * _sech2(t)
    x = x - (x + m * t - c) / slope.detach()
    return x, torch.tanh(x + b)


def planar_u_hat(u: Tensor, w: Tensor, margin: float = 1e-3) -> tuple[Tensor, Tensor]:
    """Constrain ``u`` so that the planar map with ``w`` is invertible: ``w^T u_hat > -1``.

    ``u_hat = u + (m(w^T u) - w^T u) w / |w|^2`` (Rezende & Mohamed 2015, appendix A) with
    ``m`` = :func:`above_minus_one`, so ``w^T u_hat = m(w^T u) > -1 + margin`` and
    ``u_hat = u`` whenever ``w^T u >= 0``. Computed as the part of ``u`` orthogonal to ``w``
    (projected twice, which removes the cancellation when ``u`` is nearly anti-parallel to a
    large ``w``) plus ``m w / |w|^2``; ``w = 0`` gives ``u_hat = u``.

    Arguments:
        u, w: ``(..., d)``, broadcastable.
        margin: see :func:`above_minus_one`.

    Returns:
        ``(u_hat, m)``: ``u_hat`` of shape ``(..., d)`` and ``m = w^T u_hat`` of shape ``(...)``
        (its guaranteed value, used for the logdet and the inverse).

    Example:
        >>> w = torch.tensor([2.0, 0.0])
        >>> u_hat, m = planar_u_hat(torch.tensor([-5.0, 1.0]), w)
        >>> bool(m > -1), torch.allclose((w * u_hat).sum(), m)
        (True, True)
    """
    tiny = torch.finfo(w.dtype).tiny
    sq = (w * w).sum(-1, keepdim=True).clamp_min(tiny)
    wu = (w * u).sum(-1, keepdim=True)
    perp = u - (wu / sq) * w
    perp = perp - ((w * perp).sum(-1, keepdim=True) / sq) * w
    m = above_minus_one(wu, margin)
    return perp + (m / sq) * w, m.squeeze(-1)


def planar(z: Tensor, u_hat: Tensor, w: Tensor, b: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
    """Planar map ``y = z + u_hat tanh(w^T z + b)`` and ``log(1 + tanh'(w^T z + b) m)``.

    Arguments:
        z: ``(..., d)``.
        u_hat, w: ``(..., d)`` (broadcastable to ``z``), with ``w^T u_hat = m > -1``.
        b: bias, shape broadcastable to ``(...)``.
        m: ``w^T u_hat`` as returned by :func:`planar_u_hat`, shape ``(...)``.

    Returns:
        ``(y, logdet)`` with shapes ``(..., d)`` and ``(...)``.

    Example:
        >>> w = torch.tensor([0.3, -1.0])
        >>> u_hat, m = planar_u_hat(torch.tensor([1.0, 0.5]), w)
        >>> y, ld = planar(torch.zeros(2), u_hat, w, torch.tensor(0.0), m)
        >>> y.tolist(), torch.allclose(ld, torch.log1p(m))  # tanh(0) = 0, tanh'(0) = 1
        ([0.0, 0.0], True)
    """
    t = torch.tanh((w * z).sum(-1) + b)
    y = z + u_hat * t.unsqueeze(-1)
    return y, torch.log1p(m * _sech2(t))


def planar_inverse(
    y: Tensor, u_hat: Tensor, w: Tensor, b: Tensor, m: Tensor, *, max_iter: int = MAX_ITER
) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`planar` by a scalar root search along ``w``.

    ``z = y - u_hat tanh(alpha + b)`` where ``alpha = w^T z`` solves
    ``alpha + m tanh(alpha + b) = w^T y`` (:func:`solve_tanh_equation`, then a
    gradient-carrying Newton polish step).

    Returns:
        ``(z, logdet)`` with ``logdet = -log(1 + tanh'(alpha + b) m)``.

    Example:
        >>> u, w, b = torch.tensor([-3.0, 1.0]), torch.tensor([1.0, 2.0]), torch.tensor(0.5)
        >>> u_hat, m = planar_u_hat(u, w)
        >>> z = torch.randn(4, 2)
        >>> y, ld = planar(z, u_hat, w, b, m)
        >>> z2, ld2 = planar_inverse(y, u_hat, w, b, m)
        >>> torch.allclose(z2, z, atol=1e-5), torch.allclose(ld + ld2, torch.zeros(4), atol=1e-5)
        (True, True)
    """
    c = (w * y).sum(-1)
    alpha = solve_tanh_equation(c, m, b, max_iter=max_iter)
    alpha, t = _polish_scalar(alpha, c, m, b)
    z = y - u_hat * t.unsqueeze(-1)
    return z, -torch.log1p(m * _sech2(t))


def radial(z: Tensor, z0: Tensor, alpha: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
    """Radial map ``y = z + beta (z - z0) / (alpha + |z - z0|)`` and its log-determinant.

    Arguments:
        z: ``(..., d)``.
        z0: centre, ``(..., d)`` broadcastable to ``z``.
        alpha: ``(...)``, ``> 0``.
        beta: ``(...)``, ``> -alpha``.

    Returns:
        ``(y, logdet)``, ``logdet = (d-1) log(1 + beta h) + log(1 + alpha beta h^2)`` with
        ``h = 1 / (alpha + r)``.

    Example:
        >>> y, ld = radial(torch.tensor([3.0, 4.0]), torch.zeros(2), torch.tensor(1.0),
        ...                torch.tensor(6.0))
        >>> y.tolist()  # radius 5 -> 5 * (1 + 6 / 6) = 10
        [6.0, 8.0]
    """
    diff = z - z0
    r = torch.linalg.vector_norm(diff, dim=-1)
    h = 1 / (alpha + r)
    bh = beta * h
    y = z + bh.unsqueeze(-1) * diff
    d = z.shape[-1]
    return y, (d - 1) * torch.log1p(bh) + torch.log1p(alpha * beta * h * h)


def radial_inverse(y: Tensor, z0: Tensor, alpha: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
    """Exact inverse of :func:`radial` via the positive root of a quadratic.

    With ``s = |y - z0|`` the latent radius ``r`` solves ``r^2 + p r - alpha s = 0``,
    ``p = alpha + beta - s``. Its non-negative root is taken in the cancellation-free form
    ``(sqrt(p^2 + 4 alpha s) - p) / 2`` for ``p <= 0`` and ``2 alpha s / (sqrt(...) + p)`` for
    ``p > 0``; then ``z = z0 + (y - z0) / (1 + beta / (alpha + r))``.

    Returns:
        ``(z, logdet)`` with the logdet of the inverse (minus that of :func:`radial` at ``z``).

    Example:
        >>> z, ld = radial_inverse(torch.tensor([6.0, 8.0]), torch.zeros(2), torch.tensor(1.0),
        ...                        torch.tensor(6.0))
        >>> z.tolist()
        [3.0, 4.0]
    """
    diff = y - z0
    s = torch.linalg.vector_norm(diff, dim=-1)
    p = alpha + beta - s
    root = torch.sqrt(p * p + 4 * alpha * s)
    r_neg = 0.5 * (root - p)
    r_pos = 2 * alpha * s / (root + p.clamp_min(0)).clamp_min(torch.finfo(s.dtype).tiny)
    r = torch.where(p > 0, r_pos, r_neg)
    h = 1 / (alpha + r)
    bh = beta * h
    z = z0 + diff / (1 + bh).unsqueeze(-1)
    d = y.shape[-1]
    return z, -((d - 1) * torch.log1p(bh) + torch.log1p(alpha * beta * h * h))


def _mv(a: Tensor, x: Tensor) -> Tensor:
    """Matrix-vector product ``a @ x`` over the last dimension, broadcasting batch dimensions."""
    if a.dim() == 2:
        return x @ a.mT  # one matrix for the whole batch: a single GEMM
    return (a * x.unsqueeze(-2)).sum(-1)


def _vm(x: Tensor, a: Tensor) -> Tensor:
    """Vector-matrix product ``x^T a`` (e.g. ``Q^T z``), broadcasting batch dimensions."""
    if a.dim() == 2:
        return x @ a
    return (x.unsqueeze(-1) * a).sum(-2)


def _diag_product(r: Tensor, r_tilde: Tensor) -> Tensor:
    return torch.diagonal(r, dim1=-2, dim2=-1) * torch.diagonal(r_tilde, dim1=-2, dim2=-1)


def sylvester(
    z: Tensor, r: Tensor, r_tilde: Tensor, b: Tensor, q: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Sylvester map ``y = z + Q R tanh(R~ Q^T z + b)`` and its log-determinant.

    ``log|det J| = sum_i log(1 + R_ii R~_ii tanh'(a_i))`` with ``a = R~ Q^T z + b``.

    Arguments:
        z: ``(..., d)``.
        r, r_tilde: upper triangular ``(..., M, M)`` with ``R_ii R~_ii > -1``.
        b: ``(..., M)``.
        q: ``(..., d, M)`` with orthonormal columns, or ``None`` for the identity (``M = d``).

    Returns:
        ``(y, logdet)`` with shapes ``(..., d)`` and ``(...)``.

    Example:
        >>> r = torch.tensor([[0.5, 1.0], [0.0, -0.5]])
        >>> y, ld = sylvester(torch.zeros(2), r, torch.eye(2), torch.zeros(2))
        >>> y.tolist(), round(ld.item(), 6)  # log(1.5) + log(0.5)
        ([0.0, 0.0], -0.287682)
    """
    v = z if q is None else _vm(z, q)
    t = torch.tanh(_mv(r_tilde, v) + b)
    step = _mv(r, t)
    y = z + (step if q is None else _mv(q, step))
    return y, torch.log1p(_diag_product(r, r_tilde) * _sech2(t)).sum(-1)


def sylvester_inverse(
    y: Tensor,
    r: Tensor,
    r_tilde: Tensor,
    b: Tensor,
    q: Tensor | None = None,
    *,
    max_iter: int = MAX_ITER,
) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`sylvester` by back substitution in the reduced coordinates ``v = Q^T z``.

    ``v`` solves ``v + R tanh(R~ v + b) = c`` with ``c = Q^T y`` (the part of ``y`` orthogonal
    to the columns of ``Q`` is left unchanged by the map). Both matrices being upper triangular,
    equation ``i`` involves only ``v_i, ..., v_M``; going from ``i = M`` down to ``1``, with
    ``beta_i = b_i + sum_{k>i} R~_ik v_k`` and ``rhs_i = c_i - sum_{j>i} R_ij tanh(a_j)`` known,
    ``t = R~_ii v_i`` solves the planar-type equation
    ``t + R_ii R~_ii tanh(t + beta_i) = R~_ii rhs_i`` (:func:`solve_tanh_equation`; the diagonal
    of ``R~`` must be non-zero). A final Newton step on the whole triangular system (detached
    Jacobian ``I + R diag(tanh') R~``, one triangular solve) restores gradient tracking.
    Then ``z = y - Q R tanh(R~ v + b)``.

    Returns:
        ``(z, logdet)`` with the logdet of the inverse.

    Example:
        >>> r = torch.triu(torch.randn(3, 3))
        >>> r_tilde = torch.triu(torch.randn(3, 3)) + 3 * torch.eye(3)
        >>> _ = r.diagonal().copy_(torch.tensor([0.5, -0.2, 2.0]) / r_tilde.diagonal())
        >>> b, z = torch.randn(3), torch.randn(5, 3)
        >>> y, ld = sylvester(z, r, r_tilde, b)
        >>> z2, ld2 = sylvester_inverse(y, r, r_tilde, b)
        >>> torch.allclose(z2, z, atol=1e-5), torch.allclose(ld + ld2, torch.zeros(5), atol=1e-5)
        (True, True)
    """
    c = y if q is None else _vm(y, q)
    size = r.shape[-1]
    with torch.no_grad():
        rd, rtd, bd, cd = r.detach(), r_tilde.detach(), b.detach(), c.detach()
        batch = torch.broadcast_shapes(cd.shape[:-1], rd.shape[:-2], rtd.shape[:-2], bd.shape[:-1])
        v = cd.new_zeros(*batch, size)
        th = cd.new_zeros(*batch, size)  # tanh(a_j) for the coordinates solved so far
        for i in reversed(range(size)):
            # v and th are still zero at i and below, so full-row sums pick only k, j > i.
            beta = bd[..., i] + (rtd[..., i, :] * v).sum(-1)
            rhs = cd[..., i] - (rd[..., i, :] * th).sum(-1)
            rt_ii = rtd[..., i, i]
            t = solve_tanh_equation(rt_ii * rhs, rd[..., i, i] * rt_ii, beta, max_iter=max_iter)
            v[..., i] = t / rt_ii
            th[..., i] = torch.tanh(t + beta)
    # Newton polish with gradient tracking (implicit differentiation, see the module docstring).
    t = torch.tanh(_mv(r_tilde, v) + b)
    residual = v + _mv(r, t) - c
    with torch.no_grad():
        jac = (
            torch.eye(size, dtype=v.dtype, device=v.device)
            + (rd * _sech2(t.detach()).unsqueeze(-2)) @ rtd
        )
        jac = jac.expand(*residual.shape[:-1], size, size)
    v = v - torch.linalg.solve_triangular(jac, residual.unsqueeze(-1), upper=True).squeeze(-1)
    t = torch.tanh(_mv(r_tilde, v) + b)
    step = _mv(r, t)
    z = y - (step if q is None else _mv(q, step))
    return z, -torch.log1p(_diag_product(r, r_tilde) * _sech2(t)).sum(-1)
