"""Training objectives and importance-sampling diagnostics, as free functions.

* :func:`forward_kl` — maximum likelihood on data (``KL(p || q)`` up to the data entropy).
* :func:`reverse_kl` — energy-based training against an unnormalised target
  ``p(x) = exp(-u(x)) / Z`` (``KL(q || p)`` up to ``log Z``).
* :func:`log_importance_weights`, :func:`ess`, :func:`log_partition` — how well a model covers
  a target, and the importance-sampling estimate of ``log Z``.

A *target* is a callable ``x -> u(x)`` returning the reduced energy with the batch shape of
``x``, or an object with an ``.energy(x)`` method (see :func:`manifoldflows.core.energy_fn`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .core import energy_fn
from .errors import InvalidInput, NonFiniteOutput

__all__ = ["forward_kl", "reverse_kl", "log_importance_weights", "ess", "log_partition"]


def forward_kl(model, x: Tensor, context: Tensor | None = None) -> Tensor:
    r"""Mean negative log-likelihood of data under the model (the forward-KL objective).

    .. math::

        \mathcal{L}(\theta) = -\frac{1}{N} \sum_{i=1}^{N} \log q_\theta(x_i \mid c_i)
        = \mathrm{KL}(p \,\|\, q_\theta) + H(p) \quad\text{(in expectation)}

    Arguments:
        model: a distribution or flow with ``log_prob(x, context)``.
        x: data, shape ``(*batch, *event_shape)`` with at least one point.
        context: optional conditioning, shape ``(*batch, context_dim)`` (or broadcastable).

    Returns:
        A scalar tensor (nats per sample), differentiable with respect to the model parameters.

    References:
        Papamakarios et al., "Normalizing flows for probabilistic modeling and inference",
        JMLR 2021, arXiv:1912.02762 (section 2.3.1).

    Example:
        >>> import torch
        >>> from manifoldflows.distributions import StandardNormal
        >>> x = torch.zeros(4, 2)
        >>> round(forward_kl(StandardNormal(2), x).item(), 4)  # log(2 pi)
        1.8379
    """
    if not isinstance(x, Tensor):
        raise InvalidInput(f"forward_kl: expected a tensor of data points, got {type(x).__name__}")
    log_q = model.log_prob(x, context)
    if log_q.numel() == 0:
        raise InvalidInput(
            f"forward_kl: expected at least one data point, got a tensor of shape {tuple(x.shape)}"
        )
    return -log_q.mean()


def _zero_energy(x: Tensor) -> Tensor:
    return torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)


def _sample_with_log_q(
    model, n: int, context: Tensor | None, generator: torch.Generator | None, who: str
) -> tuple[Tensor, Tensor]:
    """Reparameterised samples and ``log q`` (a path-weighted surrogate for stochastic flows)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidInput(f"{who}: expected a positive integer number of samples n, got {n!r}")
    if getattr(model, "stochastic", False) and hasattr(model, "sample_and_log_weight"):
        # With a zero energy the log weight is -log q_eff = -(log p_base(z) - sum of path weights).
        x, neg_log_q = model.sample_and_log_weight(_zero_energy, (n,), context, generator)
        return x, -neg_log_q
    return model.sample_and_log_prob((n,), context, generator)


def _energies(target, x: Tensor, log_q: Tensor, who: str) -> Tensor:
    u = energy_fn(target)(x)
    if not isinstance(u, Tensor):
        raise InvalidInput(
            f"{who}: expected the target energy to return a tensor, got {type(u).__name__}"
        )
    if u.shape != log_q.shape:
        raise InvalidInput(
            f"{who}: expected the target energy to have the samples' batch shape "
            f"{tuple(log_q.shape)}, got {tuple(u.shape)} (for samples of shape {tuple(x.shape)})"
        )
    return u


def reverse_kl(
    model,
    target,
    n: int,
    context: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Monte-Carlo reverse-KL objective against an unnormalised target ``exp(-u(x)) / Z``.

    .. math::

        \mathcal{L}(\theta) = \mathbb{E}_{x \sim q_\theta}\left[\log q_\theta(x) + u(x)\right]
        = \mathrm{KL}(q_\theta \,\|\, p) - \log Z
        \approx \frac{1}{n} \sum_{i=1}^{n} \left[\log q_\theta(x_i) + u(x_i)\right]

    Samples are drawn with ``model.sample_and_log_prob`` (reparameterised), so the gradient is
    the pathwise estimator. The loss is an upper bound on ``-log Z`` in expectation. For a flow
    with stochastic layers, ``log q`` is replaced by ``log p_base(z)`` minus the path weights
    (the stochastic-normalizing-flow objective of Wu et al.).

    Arguments:
        model: a distribution or flow with ``sample_and_log_prob(shape, context, generator)``.
        target: callable ``x -> u(x)`` (reduced energy, batch shape) or object with
            ``.energy(x)``.
        n: number of Monte-Carlo samples (per context row).
        context: optional conditioning ``(*cbatch, context_dim)``; samples then have shape
            ``(n, *cbatch, *event_shape)``.
        generator: optional random generator (on the model's device).

    Returns:
        A scalar tensor, differentiable with respect to the model parameters.

    Raises:
        NonFiniteOutput: if the target energy is NaN/inf at some samples (the message says how
            many); regularise the energy or improve the initialisation.

    References:
        Noe, Olsson, Koehler & Wu, "Boltzmann generators", Science 2019, arXiv:1812.01729.
        Wu, Koehler & Noe, "Stochastic normalizing flows", NeurIPS 2020, arXiv:2002.06707.

    Example:
        >>> import torch
        >>> from manifoldflows.distributions import StandardNormal
        >>> u = lambda x: 0.5 * (x**2).sum(-1)  # N(0, I) up to log Z = log(2 pi)
        >>> g = torch.Generator().manual_seed(0)
        >>> round(reverse_kl(StandardNormal(2), u, 100, generator=g).item(), 4)  # KL=0: -log Z
        -1.8379
    """
    x, log_q = _sample_with_log_q(model, n, context, generator, "reverse_kl")
    u = _energies(target, x, log_q, "reverse_kl")
    bad = ~torch.isfinite(u)
    if bool(bad.any()):
        count = int(bad.sum())
        raise NonFiniteOutput(
            f"reverse_kl: expected finite target energies, got NaN/inf at {count} of "
            f"{u.numel()} samples; regularise the energy (clip or lin-log it) or start from a "
            "flow whose samples stay in the target's domain"
        )
    return (log_q + u).mean()


def log_importance_weights(
    model,
    target,
    n: int,
    context: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Samples from the model and their log importance weights for the target (no gradient).

    .. math::

        x_i \sim q, \qquad \log w_i = -u(x_i) - \log q(x_i),
        \qquad \mathbb{E}_q[w] = Z

    Non-finite energies give ``log w = -inf`` (zero weight) for ``+inf`` and NaN stays NaN, so
    that :func:`ess` and :func:`log_partition` can flag it.

    Arguments:
        model: a distribution or flow with ``sample_and_log_prob`` (or, for stochastic flows,
            ``sample_and_log_weight``).
        target: callable ``x -> u(x)`` or object with ``.energy(x)``.
        n: number of samples (per context row).
        context: optional conditioning ``(*cbatch, context_dim)``.
        generator: optional random generator (on the model's device).

    Returns:
        ``(x, log_w)``: samples ``(n, *cbatch, *event_shape)`` and log weights ``(n, *cbatch)``,
        both detached.

    References:
        Noe, Olsson, Koehler & Wu, "Boltzmann generators", Science 2019, arXiv:1812.01729.

    Example:
        >>> import torch
        >>> from manifoldflows.distributions import StandardNormal
        >>> u = lambda x: 0.5 * (x**2).sum(-1)
        >>> x, log_w = log_importance_weights(StandardNormal(2), u, 5)
        >>> x.shape, log_w.shape, bool(torch.allclose(log_w, log_w[0]))  # q = p: constant
        (torch.Size([5, 2]), torch.Size([5]), True)
    """
    with torch.no_grad():
        x, log_q = _sample_with_log_q(model, n, context, generator, "log_importance_weights")
        u = _energies(target, x, log_q, "log_importance_weights")
        return x.detach(), (-u - log_q).detach()


def _check_log_weights(log_weights: Tensor, who: str, min_size: int = 1) -> Tensor:
    if not isinstance(log_weights, Tensor):
        raise InvalidInput(
            f"{who}: expected a tensor of log weights, got {type(log_weights).__name__}"
        )
    if log_weights.dim() != 1 or log_weights.numel() < min_size:
        raise InvalidInput(
            f"{who}: expected a 1-D tensor of at least {min_size} log weight(s), got shape "
            f"{tuple(log_weights.shape)}"
        )
    if not torch.is_floating_point(log_weights):
        raise InvalidInput(
            f"{who}: expected floating-point log weights, got dtype {log_weights.dtype}"
        )
    nan = torch.isnan(log_weights)
    if bool(nan.any()):
        raise InvalidInput(
            f"{who}: expected log weights without NaN, got {int(nan.sum())} NaN value(s) of "
            f"{log_weights.numel()}"
        )
    if bool((log_weights == math.inf).any()):
        raise InvalidInput(f"{who}: expected log weights below +inf, got +inf value(s)")
    if bool((log_weights == -math.inf).all()):
        raise InvalidInput(f"{who}: all {log_weights.numel()} weights are zero (log weight -inf)")
    return log_weights.detach()


def ess(log_weights: Tensor) -> Tensor:
    r"""Kish effective sample size as a fraction of the number of samples, in ``(0, 1]``.

    .. math::

        \mathrm{ESS} = \frac{\left(\sum_i w_i\right)^2}{n \sum_i w_i^2}
        = \exp\left(2\,\mathrm{LSE}(\log w) - \mathrm{LSE}(2 \log w) - \log n\right)

    computed in log space, so weights spanning hundreds of orders of magnitude are fine. It is 1
    when all weights are equal and ``1/n`` when one weight dominates.

    Arguments:
        log_weights: ``(n,)`` unnormalised log importance weights (``-inf`` allowed for zero
            weight; NaN and ``+inf`` are errors).

    Returns:
        A scalar tensor in ``(0, 1]`` (same dtype and device as the input).

    References:
        Kish, "Survey sampling", Wiley 1965; Martino, Elvira & Louzada, "Effective sample size
        for importance sampling based on discrepancy measures", Signal Processing 2017,
        arXiv:1602.03572.

    Example:
        >>> import torch
        >>> ess(torch.zeros(10)).item()
        1.0
        >>> round(ess(torch.tensor([0.0, -1e4, -1e4, -1e4])).item(), 6)
        0.25
    """
    lw = _check_log_weights(log_weights, "ess")
    n = lw.numel()
    log_ess = 2.0 * torch.logsumexp(lw, 0) - torch.logsumexp(2.0 * lw, 0) - math.log(n)
    return torch.exp(log_ess).clamp(max=1.0)


def log_partition(log_weights: Tensor) -> tuple[Tensor, Tensor]:
    r"""Importance-sampling estimate of ``log Z`` and its standard error (delta method).

    .. math::

        \widehat{\log Z} = \log \frac{1}{n}\sum_i w_i
        = \mathrm{LSE}(\log w) - \log n, \qquad
        \mathrm{se} \approx \frac{\mathrm{sd}(w)}{\sqrt{n}\;\bar w}

    where ``sd`` is the sample standard deviation (``n - 1`` in the denominator). The estimate
    of ``Z`` is unbiased, so ``log Z`` is biased low by about ``se^2 / 2``; the standard error
    is only trustworthy when the effective sample size (:func:`ess`) is not tiny.

    Arguments:
        log_weights: ``(n,)`` log importance weights ``-u(x) - log q(x)`` with ``x ~ q``,
            ``n >= 2``.

    Returns:
        ``(estimate, stderr)``: two scalar tensors (dtype and device of the input).

    References:
        Owen, "Monte Carlo theory, methods and examples", 2013, chapter 9 (importance sampling).

    Example:
        >>> import torch
        >>> est, se = log_partition(torch.full((100,), 1.5))
        >>> est.item(), se.item()
        (1.5, 0.0)
    """
    lw = _check_log_weights(log_weights, "log_partition", min_size=2)
    n = lw.numel()
    estimate = torch.logsumexp(lw, 0) - math.log(n)
    w = torch.exp(lw - lw.max())  # rescaled weights in [0, 1]; the ratio sd/mean is unchanged
    stderr = w.std(unbiased=True) / (math.sqrt(n) * w.mean())
    return estimate, stderr
