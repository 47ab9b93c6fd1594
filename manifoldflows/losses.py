"""Training objectives, as free functions with one argument order.

Every objective takes ``(model, target_or_data, ...)``: the model first, then the target (for
energy-based objectives) or the data, then the sample count ``n`` where samples are drawn, then
``context=`` (the conditioning of the samples or data; positional or keyword) and keyword-only
options (``generator=``, ``alpha=``, ...).

* :func:`forward_kl` ``(model, x, context)`` — maximum likelihood on data (``KL(p || q)`` up to
  the data entropy).
* :func:`reverse_kl` ``(model, target, n, context)`` — energy-based training against an
  unnormalised target ``p(x) = exp(-u(x)) / Z`` (``KL(q || p)`` up to ``log Z``).
* :func:`alpha_divergence` ``(model, target, n, context, *, alpha)`` (Renyi / FAB's
  ``alpha = 2``), :func:`reverse_kl_path_gradient` ``(model, target, n, context)``
  (sticking-the-landing reverse KL), :func:`mixed_kl` ``(model, target, n, x, *, weight)``
  (forward + reverse).
* :func:`weighted_forward_kl` ``(model, x, log_w, context)`` (maximum likelihood on
  importance-weighted samples, e.g. from annealed importance sampling) and
  :func:`importance_weighted_forward_kl` ``(model, target, n, context)`` (the forward KL
  estimated with the model's own samples reweighted to the target).

Importance weights, ESS and ``log Z`` with error bars live in :mod:`manifoldflows.estimators`;
:func:`log_importance_weights`, :func:`ess` and :func:`log_partition` are re-exported here.
Targets follow :mod:`manifoldflows.targets` (a callable ``x -> u(x)`` or an object with
``.energy(x)``; conditional targets receive the context).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ._checks import positive_int
from .errors import InvalidInput, NonFiniteOutput, StochasticFlowError
from .estimators import ess, log_importance_weights, log_partition, sample_with_log_q
from .targets import check_target_space, target_energy

if TYPE_CHECKING:  # pragma: no cover
    from .distributions.base import Distribution
    from .targets import Target

__all__ = [
    "forward_kl",
    "reverse_kl",
    "log_importance_weights",
    "ess",
    "log_partition",
    "alpha_divergence",
    "mixed_kl",
    "reverse_kl_path_gradient",
    "weighted_forward_kl",
    "importance_weighted_forward_kl",
]


def forward_kl(model: Distribution, x: Tensor, context: Tensor | None = None) -> Tensor:
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


def _energies(
    model: Distribution,
    target: Target,
    x: Tensor,
    log_q: Tensor,
    context: Tensor | None,
    who: str,
) -> Tensor:
    check_target_space(model, target, who)
    return target_energy(target, x, log_q.shape, context, who)


def reverse_kl(
    model: Distribution,
    target: Target,
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
    x, log_q = sample_with_log_q(model, n, context, generator, "reverse_kl")
    u = _energies(model, target, x, log_q, context, "reverse_kl")
    bad = ~torch.isfinite(u)
    if bool(bad.any()):
        count = int(bad.sum())
        raise NonFiniteOutput(
            f"reverse_kl: expected finite target energies, got NaN/inf at {count} of "
            f"{u.numel()} samples; regularise the energy (clip or lin-log it) or start from a "
            "flow whose samples stay in the target's domain"
        )
    return (log_q + u).mean()


# ------------------------------------------------------------------ further objectives
def _require_finite_energies(u: Tensor, who: str) -> None:
    bad = ~torch.isfinite(u)
    if bool(bad.any()):
        raise NonFiniteOutput(
            f"{who}: expected finite target energies, got NaN/inf at {int(bad.sum())} of "
            f"{u.numel()} samples; regularise the energy (clip or lin-log it) or start from a "
            "flow whose samples stay in the target's domain"
        )


def alpha_divergence(
    model: Distribution,
    target: Target,
    n: int,
    context: Tensor | None = None,
    *,
    alpha: float = 2.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Monte-Carlo alpha-divergence objective (Renyi form) against ``exp(-u(x)) / Z``.

    With samples ``x_i ~ q_theta`` (reparameterised) and log weights
    ``log w_i = -u(x_i) - log q_theta(x_i)``, the returned value is

    .. math::

        \mathcal{L}_\alpha = \frac{1}{\alpha - 1}
            \log \frac{1}{n} \sum_{i=1}^{n} w_i^\alpha
        \;\approx\; \frac{1}{\alpha - 1} \log \mathbb{E}_q\!\left[w^\alpha\right]
        = D_\alpha(p \,\|\, q_\theta) + \frac{\alpha}{\alpha - 1} \log Z,

    computed stably as ``(logsumexp(alpha * log w) - log n) / (alpha - 1)``, where
    ``D_alpha(p || q) = log(int p^alpha q^(1 - alpha)) / (alpha - 1)`` is the Renyi divergence.
    For ``alpha = 2`` (the default, the divergence minimised by FAB) this is
    ``log E_q[(p~/q)^2] = log(1 + chi^2(p || q)) + 2 log Z``: minimising it minimises the
    variance of the normalised importance weights, i.e. maximises the (asymptotic) importance
    sampling efficiency. It is mass-covering for ``alpha > 1``. The minimum,
    ``alpha/(alpha - 1) log Z``, is reached at ``q = p``. As the log of a sample mean the
    estimate is consistent but biased: ``log mean(w^alpha)`` is low by about
    ``var(w^alpha) / (2 n E[w^alpha]^2)`` before the division by ``alpha - 1``.

    Gradient: autograd differentiates through the samples, giving

    .. math::

        \nabla_\theta \mathcal{L}_\alpha \approx \frac{\alpha}{\alpha - 1}
            \sum_i \frac{w_i^\alpha}{\sum_j w_j^\alpha}\, \frac{d \log w_i}{d\theta},

    the self-normalised (consistent) estimate of the exact gradient
    ``alpha/(alpha - 1) E_q[w^alpha d log w / d theta] / E_q[w^alpha]``, with ``d/d theta``
    the total derivative through ``x = T_theta(z)``. FAB instead estimates the ``alpha = 2``
    gradient with annealed importance sampling towards ``p^2 / q``, which is better when
    ``q`` misses modes; this function uses samples of ``q`` only. For a stochastic flow the
    weights are the path weights of :meth:`~manifoldflows.core.Flow.sample_and_log_weight`.

    Arguments:
        model: a distribution or flow with ``sample_and_log_prob`` (or, for stochastic flows,
            ``sample_and_log_weight``).
        target: callable ``x -> u(x)`` (reduced energy, batch shape) or object with
            ``.energy(x)``.
        n: number of Monte-Carlo samples (per context row), at least 1.
        context: optional conditioning ``(*cbatch, context_dim)``; the estimate is averaged
            over the context rows.
        alpha: order, positive and not 1 (``alpha -> 1`` is KL: use :func:`forward_kl`).
        generator: optional random generator (on the model's device).

    Returns:
        A scalar tensor, differentiable with respect to the model parameters.

    Raises:
        InvalidInput: for a bad ``alpha`` or ``n``.
        NonFiniteOutput: if the target energy is NaN/inf at some samples.

    References:
        L. I. Midgley, V. Stimper, G. N. C. Simm, B. Schoelkopf, J. M. Hernandez-Lobato,
        "Flow annealed importance sampling bootstrap", ICLR 2023, arXiv:2208.01893.
        Y. Li, R. E. Turner, "Renyi divergence variational inference", NeurIPS 2016,
        arXiv:1602.02311.

    Example:
        >>> from manifoldflows.distributions import StandardNormal
        >>> u = lambda x: 0.5 * (x**2).sum(-1)  # q = p, log Z = log(2 pi)
        >>> value = alpha_divergence(StandardNormal(2), u, 50)
        >>> round(value.item(), 4)  # 2 log Z
        3.6758
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise InvalidInput(f"alpha_divergence: expected a real alpha, got {alpha!r}")
    alpha = float(alpha)
    if not math.isfinite(alpha) or alpha <= 0.0 or alpha == 1.0:
        raise InvalidInput(
            f"alpha_divergence: expected a finite alpha > 0 other than 1, got {alpha}"
        )
    x, log_q = sample_with_log_q(model, n, context, generator, "alpha_divergence")
    u = _energies(model, target, x, log_q, context, "alpha_divergence")
    _require_finite_energies(u, "alpha_divergence")
    log_w = -u - log_q
    value = (torch.logsumexp(alpha * log_w, 0) - math.log(n)) / (alpha - 1.0)
    return value.mean()


def mixed_kl(
    model: Distribution,
    target: Target,
    n: int,
    x: Tensor | None,
    context: Tensor | None = None,
    *,
    weight: float,
    data_context: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Weighted mixture of forward KL on samples ``x`` and reverse KL against the target.

    .. math::

        \mathcal{L} = \lambda\, \underbrace{\left(-\tfrac{1}{m}\textstyle\sum_j
            \log q_\theta(x_j)\right)}_{\text{forward KL}}
        + (1 - \lambda)\, \underbrace{\tfrac{1}{n}\textstyle\sum_i
            \left[\log q_\theta(y_i) + u(y_i)\right]}_{\text{reverse KL}},
        \qquad y_i \sim q_\theta,

    the combined maximum-likelihood / energy training of Boltzmann generators (Noe et al.
    2019): the forward term (:func:`forward_kl`, needs ``log_prob``, so not a stochastic flow)
    keeps the modes covered by the data, the reverse term (:func:`reverse_kl`) sharpens the
    model towards the Boltzmann density. A term with zero weight is not evaluated (``x`` may
    then be ``None``).

    Arguments:
        model: a distribution or flow.
        target: callable ``x -> u(x)`` or object with ``.energy(x)``.
        n: number of samples of the reverse term (per context row).
        x: data (e.g. MD samples), ``(*batch, *event_shape)``.
        context: conditioning of the reverse term's samples ``(*cbatch, context_dim)``, as in
            :func:`reverse_kl`.
        weight: ``lambda`` in ``[0, 1]``, the weight of the forward (maximum likelihood) term.
        data_context: conditioning of the data ``x`` (forward term).
        generator: optional random generator for the reverse term.

    Returns:
        A scalar tensor, differentiable with respect to the model parameters.

    References:
        F. Noe, S. Olsson, J. Koehler, H. Wu, "Boltzmann generators: sampling equilibrium
        states of many-body systems with deep learning", Science 2019, arXiv:1812.01729.

    Example:
        >>> from manifoldflows.distributions import StandardNormal
        >>> u = lambda x: 0.5 * (x**2).sum(-1)
        >>> loss = mixed_kl(StandardNormal(2), u, 10, torch.zeros(3, 2), weight=0.25)
        >>> round(loss.item(), 4)  # 0.25 * log(2 pi) + 0.75 * (-log(2 pi))
        -0.9189
    """
    if isinstance(weight, bool) or not isinstance(weight, (int, float, Tensor)):
        raise InvalidInput(f"mixed_kl: expected a real weight in [0, 1], got {weight!r}")
    weight = float(weight)
    if not 0.0 <= weight <= 1.0:
        raise InvalidInput(f"mixed_kl: expected a weight in [0, 1], got {weight}")
    total = None
    if weight > 0.0:
        total = weight * forward_kl(model, x, data_context)
    if weight < 1.0:
        rev = (1.0 - weight) * reverse_kl(model, target, n, context, generator=generator)
        total = rev if total is None else total + rev
    return total


def reverse_kl_path_gradient(
    model: Distribution,
    target: Target,
    n: int,
    context: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Reverse KL with the path-gradient ("sticking the landing") estimator.

    The value is the same Monte-Carlo reverse KL as :func:`reverse_kl`,
    ``mean_i [log q_theta(x_i) + u(x_i)]`` with ``x_i = T_theta(z_i)``, but ``log q`` is
    evaluated with a copy of the parameters detached from the graph
    (:func:`torch.func.functional_call`), so only the dependence through the sample remains:

    .. math::

        \hat g = \frac{1}{n}\sum_i
            \left(\nabla_x \log q_{\bar\theta}(x_i) + \nabla_x u(x_i)\right)^{\!\top}
            \frac{\partial x_i}{\partial \theta}, \qquad \bar\theta = \theta .

    The dropped term, the score ``d log q_theta(x) / d theta`` at fixed ``x``, has expectation
    zero under ``q_theta``, so ``hat g`` is unbiased for the reverse-KL gradient like the
    ordinary estimator; when ``q_theta = p`` the bracket ``grad_x (log q + u) = grad_x log Z``
    vanishes and every per-sample gradient is exactly zero (zero variance at the optimum).
    The price is one density evaluation (an inverse pass of the flow) after sampling. Stochastic
    flows have no ``log q`` and are refused.

    Arguments:
        model: a distribution or flow with ``rsample`` and ``log_prob`` (called through
            ``model(x, context)``).
        target: callable ``x -> u(x)`` (reduced energy, batch shape) or object with
            ``.energy(x)``.
        n: number of Monte-Carlo samples (per context row).
        context: optional conditioning ``(*cbatch, context_dim)``.
        generator: optional random generator (on the model's device).

    Returns:
        A scalar tensor whose gradient is the path-gradient estimate.

    Raises:
        StochasticFlowError: for a flow with stochastic layers.
        NonFiniteOutput: if the target energy is NaN/inf at some samples.

    References:
        G. Roeder, Y. Wu, D. Duvenaud, "Sticking the landing: simple, lower-variance gradient
        estimators for variational inference", NeurIPS 2017, arXiv:1703.09194.
        L. Vaitl, K. A. Nicoli, S. Nakajima, P. Kessel, "Gradients should stay on path: better
        estimators of the reverse- and forward KL divergence for normalizing flows", Mach.
        Learn.: Sci. Technol. 2022, arXiv:2207.08219.

    Example:
        >>> from manifoldflows.distributions import DiagNormal
        >>> q = DiagNormal(2)  # equals the target below: the path gradient vanishes
        >>> reverse_kl_path_gradient(q, lambda x: 0.5 * (x**2).sum(-1), 8).backward()
        >>> q.loc.grad.abs().max().item() < 1e-6, q.log_scale.grad.abs().max().item() < 1e-6
        (True, True)
    """
    if getattr(model, "stochastic", False):
        raise StochasticFlowError(
            "reverse_kl_path_gradient: the model contains stochastic layers, so it has no "
            "tractable log q; use reverse_kl (path-weighted) instead"
        )
    n = positive_int(n, "number of samples n", "reverse_kl_path_gradient")
    x = model.rsample((n,), context, generator)
    detached = {name: p.detach() for name, p in model.named_parameters()}
    log_q = torch.func.functional_call(model, detached, (x,), {"context": context})
    u = _energies(model, target, x, log_q, context, "reverse_kl_path_gradient")
    _require_finite_energies(u, "reverse_kl_path_gradient")
    return (log_q + u).mean()


# ------------------------------------------------------------------ weighted maximum likelihood
def weighted_forward_kl(
    model: Distribution, x: Tensor, log_w: Tensor, context: Tensor | None = None
) -> Tensor:
    r"""Maximum likelihood on weighted samples: the self-normalised forward-KL estimate.

    .. math::

        \mathcal{L}(\theta) = -\sum_i \bar w_i \log q_\theta(x_i), \qquad
        \bar w_i = \frac{w_i}{\sum_j w_j},

    a consistent estimate of the cross-entropy ``E_p[-log q_theta] = KL(p || q_theta) + H(p)``
    when ``(x_i, w_i)`` is a properly weighted sample of ``p`` (importance sampling, annealed
    importance sampling, a replay buffer of such samples). Mass-covering, like maximum
    likelihood on exact samples. The weights are treated as constants (detached); only
    ``log q_theta(x_i)`` is differentiated. With a context batch ``(n, *cbatch)``, the weights
    are normalised over the ``n`` samples of each context row and the result averaged over rows.

    Arguments:
        model: a distribution or flow with ``log_prob(x, context)``.
        x: samples ``(n, *cbatch, *event_shape)``.
        log_w: their log weights ``(n, *cbatch)`` (``-inf``: zero weight).
        context: optional conditioning of ``x``.

    Returns:
        A scalar tensor (nats), differentiable with respect to the model parameters.

    Raises:
        InvalidInput: for log weights of the wrong shape, NaN or ``+inf`` log weights, or a
            context row whose weights are all zero.

    References:
        T. Mueller, B. McWilliams, F. Rousselle, M. Gross, J. Novak, "Neural importance
        sampling", ACM Transactions on Graphics 38 (2019), arXiv:1808.03856.
        Midgley et al., "Flow annealed importance sampling bootstrap", ICLR 2023,
        arXiv:2208.01893.

    Example:
        >>> from manifoldflows.distributions import StandardNormal
        >>> x = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
        >>> log_w = torch.log(torch.tensor([3.0, 1.0]))  # weights 3/4 and 1/4
        >>> round(weighted_forward_kl(StandardNormal(2), x, log_w).item(), 4)  # log 2pi + 1/4
        2.0879
    """
    who = "weighted_forward_kl"
    if not isinstance(x, Tensor) or not isinstance(log_w, Tensor):
        raise InvalidInput(
            f"{who}: expected tensors x and log_w, got {type(x).__name__} and "
            f"{type(log_w).__name__}"
        )
    log_q = model.log_prob(x, context)
    if log_w.shape != log_q.shape or log_q.dim() == 0 or log_q.shape[0] == 0:
        raise InvalidInput(
            f"{who}: expected log_w with the samples' batch shape {tuple(log_q.shape)} (for x "
            f"of shape {tuple(x.shape)}), got {tuple(log_w.shape)}"
        )
    log_w = log_w.detach().to(log_q.dtype)
    bad = torch.isnan(log_w) | (log_w == math.inf)
    if bool(bad.any()):
        raise InvalidInput(
            f"{who}: expected log weights without NaN or +inf, got {int(bad.sum())} of "
            f"{log_w.numel()}"
        )
    if bool((log_w == -math.inf).all(0).any()):
        raise InvalidInput(f"{who}: all weights of a context row are zero (log weight -inf)")
    normalised = torch.softmax(log_w, 0)
    # zero-weight samples may have log q = -inf; 0 * -inf must not give NaN
    terms = torch.where(normalised > 0, normalised * log_q, torch.zeros_like(log_q))
    return -terms.sum(0).mean()


def importance_weighted_forward_kl(
    model: Distribution,
    target: Target,
    n: int,
    context: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Forward KL ``KL(p || q_theta)`` (up to ``H(p)``) from the model's own reweighted samples.

    Draws ``x_i ~ q_theta`` without gradient, weighs them by ``w_i = exp(-u(x_i)) / q(x_i)``
    and returns :func:`weighted_forward_kl` of them:

    .. math::

        \nabla_\theta \mathcal{L} = -\sum_i \bar w_i \nabla_\theta \log q_\theta(x_i)
        \;\approx\; -\mathbb{E}_p[\nabla_\theta \log q_\theta],

    the gradient of maximum likelihood on exact samples, without any. Unlike reverse KL it
    is mass-covering: a mode the model under-weights gets samples with large weights, which
    pull mass towards it, so it corrects the relative masses of modes that the model already
    reaches (it cannot discover a mode no sample lands in: start from a reverse-KL or
    annealed model). Its variance grows with that of the weights; use it once the relative ESS
    is not tiny.

    Arguments:
        model: a distribution or flow with ``sample_and_log_prob`` and ``log_prob`` (not a
            stochastic flow).
        target: callable ``x -> u(x)`` or object with ``.energy(x)``.
        n: number of samples (per context row).
        context: optional conditioning ``(*cbatch, context_dim)``.
        generator: optional random generator (on the model's device).

    Returns:
        A scalar tensor, differentiable with respect to the model parameters.

    Raises:
        NonFiniteOutput: if the target energy is NaN/``-inf`` at some samples (``+inf`` is a
            zero weight).

    References:
        T. Mueller, B. McWilliams, F. Rousselle, M. Gross, J. Novak, "Neural importance
        sampling", ACM Transactions on Graphics 38 (2019), arXiv:1808.03856.

    Example:
        >>> from manifoldflows.distributions import DiagNormal
        >>> u = lambda x: 0.5 * (x**2).sum(-1)
        >>> model = DiagNormal(2, scale=2.0)
        >>> loss = importance_weighted_forward_kl(model, u, 256)
        >>> loss.backward()
        >>> model.log_scale.grad.shape
        torch.Size([2])
    """
    who = "importance_weighted_forward_kl"
    if getattr(model, "stochastic", False):
        raise StochasticFlowError(
            f"{who}: the model has stochastic layers and no tractable log_prob; use "
            "reverse_kl or alpha_divergence"
        )
    with torch.no_grad():
        x, log_q = sample_with_log_q(model, n, context, generator, who)
        u = _energies(model, target, x, log_q, context, who)
        bad = torch.isnan(u) | (u == -math.inf)
        if bool(bad.any()):
            raise NonFiniteOutput(
                f"{who}: expected target energies that are not NaN or -inf, got "
                f"{int(bad.sum())} of {u.numel()}; regularise the energy"
            )
        log_w = -u - log_q
    return weighted_forward_kl(model, x.detach(), log_w, context)
