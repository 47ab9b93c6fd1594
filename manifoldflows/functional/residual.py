"""Log-determinants of residual maps ``x -> x + g(x)`` with ``Lip(g) < 1``.

When the Lipschitz constant of ``g`` is below one, every eigenvalue of the Jacobian ``J`` of
``g`` has modulus below one, ``I + J`` is invertible with a positive determinant, and the matrix
logarithm has a convergent power series (Behrmann et al. 2019, arXiv:1811.00995)::

    log det(I + J) = tr log(I + J) = sum_{k >= 1} (-1)^(k+1) / k * tr(J^k).

The kernels here evaluate this quantity

* exactly from a materialised Jacobian (:func:`exact_logdet`),
* by the truncated series with exact traces (:func:`power_series_logdet`, a reference),
* by the unbiased *Russian-roulette* estimator of Residual Flows (Chen et al. 2019,
  arXiv:1906.02735) with Hutchinson trace estimates, which needs only vector-Jacobian
  products (:func:`russian_roulette_logdet`), optionally with the memory-saving Neumann-series
  gradient.

All kernels act on the last dimension (``d``) and broadcast over leading batch dimensions.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "exact_logdet",
    "power_series_logdet",
    "hutchinson_noise",
    "sample_extra_terms",
    "russian_roulette_logdet",
]

#: ``vjp(w, create_graph) -> w^T J``: a vector-Jacobian product of the residual branch ``g``,
#: shape ``(..., d) -> (..., d)``; ``create_graph`` asks for a differentiable result.
VJP = Callable[[Tensor, bool], Tensor]


def exact_logdet(jacobian: Tensor) -> Tensor:
    """``log|det(I + J)|`` from the Jacobian ``J`` of the residual branch.

    Arguments:
        jacobian: ``J``, shape ``(..., d, d)``.

    Returns:
        The log-determinant, shape ``(...)`` (differentiable).

    Example:
        >>> J = torch.tensor([[0.5, 0.0], [0.2, -0.5]])
        >>> round(exact_logdet(J).item(), 6) == round(math.log(1.5 * 0.5), 6)
        True
    """
    eye = torch.eye(jacobian.shape[-1], dtype=jacobian.dtype, device=jacobian.device)
    return torch.linalg.slogdet(eye + jacobian)[1]


def power_series_logdet(jacobian: Tensor, n_terms: int) -> Tensor:
    """The power series of ``log det(I + J)`` truncated after ``n_terms`` terms (exact traces).

    .. math::

        \\sum_{k=1}^{n} \\frac{(-1)^{k+1}}{k} \\operatorname{tr}(J^k),
        \\qquad |\\text{error}| \\le \\frac{d\\, \\|J\\|^{n+1}}{(n+1)(1 - \\|J\\|)}.

    A deterministic reference for the stochastic estimators (it is biased for finite ``n``).

    Arguments:
        jacobian: ``J``, shape ``(..., d, d)``, with spectral norm below one.
        n_terms: number of terms ``n >= 1``.

    Returns:
        The truncated series, shape ``(...)``.

    References:
        Behrmann et al. 2019, Invertible Residual Networks, arXiv:1811.00995 (eq. 6).

    Example:
        >>> J = 0.3 * torch.eye(2, dtype=torch.float64)
        >>> abs(power_series_logdet(J, 40).item() - 2 * math.log(1.3)) < 1e-12
        True
    """
    if isinstance(n_terms, bool) or not isinstance(n_terms, int) or n_terms < 1:
        raise ValueError(f"power_series_logdet: expected n_terms >= 1, got {n_terms!r}")
    power = jacobian
    total = torch.diagonal(power, dim1=-2, dim2=-1).sum(-1)
    for k in range(2, n_terms + 1):
        power = power @ jacobian
        total = total + (-1) ** (k + 1) / k * torch.diagonal(power, dim1=-2, dim2=-1).sum(-1)
    return total


def hutchinson_noise(
    like: Tensor, kind: str = "rademacher", generator: torch.Generator | None = None
) -> Tensor:
    """Probe vectors ``v`` with ``E[v v^T] = I`` for Hutchinson's trace estimator.

    Arguments:
        like: tensor whose shape, dtype and device the noise takes.
        kind: ``"rademacher"`` (entries +-1, lower variance) or ``"gaussian"``.
        generator: optional generator (on ``like``'s device); else the global generator.

    Returns:
        Noise of ``like``'s shape.

    References:
        Hutchinson 1990, A stochastic estimator of the trace of the influence matrix,
        Communications in Statistics - Simulation and Computation 19(2).

    Example:
        >>> v = hutchinson_noise(torch.zeros(3, 2))
        >>> bool((v.abs() == 1).all())
        True
    """
    if kind == "rademacher":
        if generator is None:
            bits = torch.randint_like(like, 0, 2)
        else:
            bits = torch.randint(
                0, 2, like.shape, generator=generator, dtype=like.dtype, device=like.device
            )
        return 2.0 * bits - 1.0
    if kind == "gaussian":
        if generator is None:
            return torch.randn_like(like)
        return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)
    raise ValueError(f"hutchinson_noise: kind must be 'rademacher' or 'gaussian', got {kind!r}")


def sample_extra_terms(
    stop_prob: float, like: Tensor, generator: torch.Generator | None = None
) -> int:
    """Draw ``K`` from the geometric law ``P(K >= j) = (1 - stop_prob)^j``, ``j = 0, 1, ...``.

    The number of series terms beyond the always-computed ones in
    :func:`russian_roulette_logdet` (on average ``(1 - p) / p``).

    Arguments:
        stop_prob: ``p`` in ``(0, 1]``; ``p = 1`` always gives ``K = 0``.
        like: a tensor giving the dtype and device of the uniform draw.
        generator: optional generator (on ``like``'s device).

    Returns:
        ``K`` as a Python ``int`` (one host synchronisation).

    Example:
        >>> sample_extra_terms(1.0, torch.zeros(()))
        0
    """
    if not 0.0 < stop_prob <= 1.0:
        raise ValueError(f"sample_extra_terms: expected stop_prob in (0, 1], got {stop_prob!r}")
    if stop_prob == 1.0:
        return 0
    if generator is None:
        u = torch.rand_like(like.new_empty(()), dtype=torch.float64)
    else:
        u = torch.rand((), generator=generator, dtype=torch.float64, device=like.device)
    # K = floor(log(U) / log(1 - p)) with U uniform on (0, 1]: P(K >= j) = P(U <= q^j) = q^j.
    return int(math.floor(math.log(1.0 - u.item()) / math.log1p(-stop_prob)))


def russian_roulette_logdet(
    vjp: VJP,
    noise: Tensor,
    *,
    n_exact_terms: int = 2,
    stop_prob: float = 0.5,
    neumann_grad: bool = True,
    n_extra_terms: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Unbiased stochastic estimate of ``log det(I + J)`` from vector-Jacobian products.

    With ``N = n_exact_terms + K``, ``K`` geometric (:func:`sample_extra_terms`) and a probe
    ``v`` with ``E[v v^T] = I``, the Russian-roulette estimator of Chen et al. (2019)

    .. math::

        \\widehat{\\log\\det}(I + J) = \\sum_{k=1}^{N}
            \\frac{(-1)^{k+1}}{k}\\, \\frac{v^\\top J^k v}{P(N \\ge k)}

    is unbiased whenever the series converges absolutely (``Lip(g) < 1``): reweighting term
    ``k`` by ``1 / P(N >= k)`` undoes the random truncation. ``P(N >= k) = 1`` for
    ``k <= n_exact_terms`` and ``(1 - p)^(k - n_exact_terms)`` beyond. One ``N`` is drawn per
    call (shared by the batch, as in the paper); each batch element has its own ``v``.

    **Gradients.** With ``neumann_grad=True`` the series is evaluated without building a graph
    and the returned value carries the unbiased Neumann-series gradient estimator

    .. math::

        \\nabla \\log\\det(I + J) = \\sum_{k \\ge 0} (-1)^k \\operatorname{tr}(J^k \\nabla J)
        \\approx \\Big(\\sum_{k=0}^{N-1} \\frac{(-1)^k}{P(N \\ge k+1)} v^\\top J^k\\Big)
            (\\nabla J)\\, v,

    implemented as the surrogate ``s = w^T J v`` (one differentiable vector-Jacobian product
    with ``w`` detached): the result is ``estimate + s - s.detach()``, so memory does not grow
    with ``N``. With ``neumann_grad=False`` every product is differentiated through
    (``create_graph=True``).

    Arguments:
        vjp: ``(w, create_graph) -> w^T J``, shape ``(..., d) -> (..., d)``.
        noise: the probe ``v``, shape ``(..., d)`` (see :func:`hutchinson_noise`).
        n_exact_terms: number of leading terms always evaluated (``>= 1``).
        stop_prob: geometric stopping probability ``p`` in ``(0, 1]`` (``p = 1``: the plain
            truncated, biased, series with ``n_exact_terms`` terms).
        neumann_grad: use the memory-efficient Neumann-series gradient.
        n_extra_terms: force ``K`` (testing); drawn when ``None``.
        generator: optional generator for ``K``.

    Returns:
        The estimate, shape ``(...)``.

    References:
        Chen, Behrmann, Duvenaud & Jacobsen 2019, Residual Flows for Invertible Generative
        Modeling, arXiv:1906.02735 (eqs. 6 and 8).

    Example:
        >>> J = torch.tensor([[0.2, 0.1], [0.0, -0.3]], dtype=torch.float64)
        >>> def vjp(w, create_graph):
        ...     return w @ J  # w^T J for row vectors w
        >>> probes = torch.zeros(100, 2, dtype=torch.float64)
        >>> draws = [russian_roulette_logdet(vjp, hutchinson_noise(probes)) for _ in range(300)]
        >>> abs(torch.stack(draws).mean().item() - exact_logdet(J).item()) < 0.01
        True
    """
    if isinstance(n_exact_terms, bool) or not isinstance(n_exact_terms, int) or n_exact_terms < 1:
        raise ValueError(
            f"russian_roulette_logdet: expected n_exact_terms >= 1, got {n_exact_terms!r}"
        )
    if not 0.0 < stop_prob <= 1.0:
        raise ValueError(
            f"russian_roulette_logdet: expected stop_prob in (0, 1], got {stop_prob!r}"
        )
    if n_extra_terms is None:
        n_extra_terms = sample_extra_terms(stop_prob, noise, generator)
    elif isinstance(n_extra_terms, bool) or not isinstance(n_extra_terms, int) or n_extra_terms < 0:
        raise ValueError(
            f"russian_roulette_logdet: expected n_extra_terms >= 0 or None, got {n_extra_terms!r}"
        )
    elif n_extra_terms > 0 and stop_prob == 1.0:
        raise ValueError("russian_roulette_logdet: stop_prob = 1 admits no extra terms")
    n_terms = n_exact_terms + n_extra_terms
    log_q = math.log1p(-stop_prob) if stop_prob < 1.0 else -math.inf

    def inverse_tail_prob(k: int) -> float:  # 1 / P(N >= k)
        return 1.0 if k <= n_exact_terms else math.exp(-(k - n_exact_terms) * log_q)

    if neumann_grad:
        with torch.no_grad():
            w = noise
            estimate = torch.zeros(noise.shape[:-1], dtype=noise.dtype, device=noise.device)
            grad_vector = noise.clone()  # k = 0 term of the Neumann series
            for k in range(1, n_terms + 1):
                w = vjp(w, False)  # v^T J^k
                weight = inverse_tail_prob(k)
                estimate = estimate + (-1) ** (k + 1) / k * weight * (w * noise).sum(-1)
                if k < n_terms:
                    grad_vector = grad_vector + (-1) ** k * inverse_tail_prob(k + 1) * w
        surrogate = (vjp(grad_vector, True) * noise).sum(-1)
        return estimate + (surrogate - surrogate.detach())
    w = noise
    estimate = torch.zeros(noise.shape[:-1], dtype=noise.dtype, device=noise.device)
    for k in range(1, n_terms + 1):
        w = vjp(w, True)
        estimate = estimate + (-1) ** (k + 1) / k * inverse_tail_prob(k) * (w * noise).sum(-1)
    return estimate
