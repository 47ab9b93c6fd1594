r"""Unbiased estimates from a flow: importance weights, ESS, ``log Z``, reweighted observables,
free-energy differences and profiles, flow-proposal Metropolis-Hastings and annealed importance
sampling.

A trained flow ``q`` is only approximately the Boltzmann density ``p(x) = exp(-u(x)) / Z``.
Every estimate here is made exact (asymptotically) by the importance weights

.. math::

    w(x) = \frac{e^{-u(x)}}{q(x)}, \qquad \mathbb{E}_{x\sim q}[w] = Z, \qquad
    \mathbb{E}_p[f] = \frac{\mathbb{E}_q[w f]}{\mathbb{E}_q[w]},

always handled as log weights ``log w = -u(x) - log q(x)``, so weights spanning hundreds of
orders of magnitude are fine. Standard errors come from the delta method (first-order Taylor
expansion of the ratio or logarithm of sample means; Owen 2013, chapter 9); they are reliable
when the effective sample size is not tiny, and every function documents its formula.

=========================================  ==================================================
:func:`importance_weights`                  samples and log weights (batched; stochastic flows)
:func:`effective_sample_size`               Kish ESS, relative (in ``(0, 1]``) or absolute
:func:`log_partition`                       ``log Z`` with standard error
:func:`reweighted_mean`                     ``E_p[f]`` by self-normalised importance sampling
:func:`free_energy_difference`              ``F_B - F_A`` between two regions, in ``kT``
:func:`free_energy_profile`                 reweighted ``F(s)`` along a 1-D collective variable
:func:`independence_metropolis`             MCMC with the flow as independent proposal
:func:`annealed_importance_sampling`        AIS from the flow to the target (Neal 2001)
=========================================  ==================================================

For free-energy differences between two rare-vs-common states with a good flow,
:func:`physics.stratified.stratified_free_energy_difference` beats the exact-sampling error of
:func:`free_energy_difference` at the same number of energy evaluations.

A *flow* is anything with ``sample_and_log_prob(shape, context, generator)`` and ``log_prob``
(every :class:`~manifoldflows.core.Flow` and base distribution), or a flow with stochastic layers
(``flow.stochastic`` true), whose importance weights come from ``sample_and_log_weight``. A
*target* is a callable ``x -> u(x)`` (reduced energy) or an object with ``.energy(x)`` such as
:class:`physics.energy.Energy`; when both the flow and the target have a ``space``, they must
agree.

References:
    F. Noe, S. Olsson, J. Koehler, H. Wu, "Boltzmann generators: sampling equilibrium states of
    many-body systems with deep learning", Science 365 (2019), arXiv:1812.01729.
    A. B. Owen, "Monte Carlo theory, methods and examples", 2013, chapter 9 (importance
    sampling).
    R. M. Neal, "Annealed importance sampling", Statistics and Computing 11 (2001) 125-139,
    arXiv:physics/9803008.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import tqdm
from torch import Tensor

from manifoldflows import losses
from manifoldflows.core import energy_fn
from manifoldflows.distributions import QuasiRandomSampler
from manifoldflows.errors import InvalidInput, NonFiniteOutput, SpaceMismatch, StochasticFlowError

__all__ = [
    "Estimate",
    "Samples",
    "ChainResult",
    "importance_weights",
    "effective_sample_size",
    "log_partition",
    "reweighted_mean",
    "free_energy_difference",
    "free_energy_profile",
    "independence_metropolis",
    "annealed_importance_sampling",
]

_NONFINITE_POLICIES = ("raise", "zero")
_TRANSITIONS = ("mh", "langevin")


# ---------------------------------------------------------------------------- result types
def _format(value: float, stderr: float) -> str:
    """``value ± stderr`` with two significant digits of the error."""
    if math.isfinite(stderr) and stderr > 0.0 and math.isfinite(value):
        decimals = max(0, min(12, 1 - math.floor(math.log10(stderr))))
        return f"{value:.{decimals}f} ± {stderr:.{decimals}f}"
    return f"{value:.6g} ± {stderr:.2g}"


@dataclass(frozen=True, eq=False)
class Estimate:
    r"""A Monte-Carlo estimate and its standard error.

    Attributes:
        value: the estimate (a 0-d tensor, or one entry per component of a vector observable).
        stderr: its standard error (same shape, ``>= 0``).

    Example:
        >>> est = Estimate(torch.tensor(10.29348), torch.tensor(0.0123))
        >>> print(est)
        10.293 ± 0.012
        >>> [round(v.item(), 4) for v in est.interval(2.0)]
        [10.2689, 10.3181]
    """

    value: Tensor
    stderr: Tensor

    def interval(self, z: float = 1.96) -> tuple[Tensor, Tensor]:
        """The interval ``value ± z * stderr`` (``z = 1.96``: 95 % under normality)."""
        return self.value - z * self.stderr, self.value + z * self.stderr

    def __float__(self) -> float:
        return float(self.value)

    def __str__(self) -> str:
        values = self.value.detach().reshape(-1).tolist()
        errors = self.stderr.detach().reshape(-1).tolist()
        parts = [_format(v, s) for v, s in zip(values, errors)]
        return parts[0] if self.value.dim() == 0 else "[" + ", ".join(parts) + "]"


@dataclass(eq=False)
class Samples:
    r"""Samples with their log importance weights for a target.

    Attributes:
        x: samples, shape ``(n, *cbatch, *event_shape)``.
        log_w: log importance weights ``-u(x) - log q(x)`` (stochastic flows: the path-weighted
            version), shape ``(n, *cbatch)``; ``-inf`` is a zero weight.
        n_nonfinite: how many weights were NaN or ``+inf`` and set to zero weight (only with
            ``nonfinite="zero"``; with the default policy such samples raise).
        acceptance: for annealed importance sampling, the Metropolis acceptance rate at each
            annealing level, shape ``(n_steps,)``; ``None`` otherwise.

    Example:
        >>> s = Samples(torch.zeros(4, 2), torch.zeros(4))
        >>> len(s), s.ess().item()
        (4, 1.0)
    """

    x: Tensor
    log_w: Tensor
    n_nonfinite: int = 0
    acceptance: Tensor | None = None

    def __len__(self) -> int:
        return int(self.log_w.shape[0])

    def ess(self, relative: bool = True) -> Tensor:
        """Kish effective sample size of the weights (see :func:`effective_sample_size`)."""
        return effective_sample_size(self.log_w, relative=relative)

    def log_partition(self) -> Estimate:
        """``log Z`` with standard error (see :func:`log_partition`)."""
        return log_partition(self.log_w)


@dataclass(eq=False)
class ChainResult:
    r"""Output of :func:`independence_metropolis`.

    Attributes:
        samples: chain states, shape ``(n_steps, n_chains, *event_shape)``; ``samples[t]`` is
            the state after step ``t``.
        log_w: log importance weight of each state, shape ``(n_steps, n_chains)``.
        accepted: whether step ``t`` of each chain accepted its proposal,
            ``(n_steps, n_chains)``.

    Example:
        >>> res = ChainResult(torch.zeros(3, 2, 1), torch.zeros(3, 2), torch.ones(3, 2) > 0)
        >>> res.acceptance_rate, res.flatten(burn_in=1).shape
        (1.0, torch.Size([4, 1]))
    """

    samples: Tensor
    log_w: Tensor
    accepted: Tensor

    @property
    def acceptance_rate(self) -> float:
        """Fraction of accepted proposals over all steps and chains."""
        return int(self.accepted.sum()) / self.accepted.numel()

    def flatten(self, burn_in: int = 0) -> Tensor:
        """States after the first ``burn_in`` steps, chains merged: ``(m, *event_shape)``."""
        burn_in = _nonnegative_int(burn_in, "ChainResult.flatten", "burn_in")
        if burn_in >= self.samples.shape[0]:
            raise InvalidInput(
                f"ChainResult.flatten: expected burn_in below the {self.samples.shape[0]} "
                f"steps, got {burn_in}"
            )
        kept = self.samples[burn_in:]
        return kept.reshape(-1, *kept.shape[2:])


# ---------------------------------------------------------------------------- validation
def _positive_int(value, who: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(f"{who}: expected a positive integer {what}, got {value!r}")
    return int(value)


def _nonnegative_int(value, who: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"{who}: expected a non-negative integer {what}, got {value!r}")
    return int(value)


def _positive_float(value, who: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"{who}: expected a positive number {what}, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value > 0.0):
        raise InvalidInput(f"{who}: expected a positive finite {what}, got {value}")
    return value


def _check_policy(nonfinite: str, who: str) -> None:
    if nonfinite not in _NONFINITE_POLICIES:
        raise InvalidInput(
            f"{who}: expected nonfinite to be one of {_NONFINITE_POLICIES}, got {nonfinite!r}"
        )


def _check_log_w(log_w, who: str, min_size: int = 1) -> Tensor:
    """1-D floating log weights without NaN or ``+inf`` and not all ``-inf`` (detached)."""
    if not isinstance(log_w, Tensor):
        raise InvalidInput(f"{who}: expected a tensor of log weights, got {type(log_w).__name__}")
    if not torch.is_floating_point(log_w):
        raise InvalidInput(f"{who}: expected floating-point log weights, got dtype {log_w.dtype}")
    if log_w.dim() != 1 or log_w.numel() < min_size:
        raise InvalidInput(
            f"{who}: expected a 1-D tensor of at least {min_size} log weight(s), got shape "
            f"{tuple(log_w.shape)} (for samples of a conditional flow, select one context "
            "column: log_w[:, j])"
        )
    n = log_w.numel()
    nan = int(torch.isnan(log_w).sum())
    if nan:
        raise InvalidInput(
            f"{who}: expected log weights without NaN, got {nan} NaN value(s) of {n}; they come "
            "from NaN energies or densities (importance_weights(..., nonfinite='zero') gives "
            "such samples zero weight)"
        )
    pos_inf = int((log_w == math.inf).sum())
    if pos_inf:
        raise InvalidInput(f"{who}: expected log weights below +inf, got {pos_inf} of {n} +inf")
    if bool((log_w == -math.inf).all()):
        raise InvalidInput(f"{who}: all {n} weights are zero (log weight -inf)")
    return log_w.detach()


def _check_values(values, n: int, log_w: Tensor, who: str, what: str) -> Tensor:
    """Per-sample values ``(n, ...)`` with finite entries wherever the weight is positive."""
    if not isinstance(values, Tensor):
        raise InvalidInput(f"{who}: expected a tensor of {what}, got {type(values).__name__}")
    if torch.is_complex(values):
        raise InvalidInput(f"{who}: expected real {what}, got dtype {values.dtype}")
    if values.dim() < 1 or values.shape[0] != n:
        raise InvalidInput(
            f"{who}: expected {what} with one row per log weight, shape ({n}, ...), got "
            f"{tuple(values.shape)}"
        )
    values = values.detach().to(dtype=log_w.dtype, device=log_w.device)
    positive = (log_w > -math.inf).reshape(n, *([1] * (values.dim() - 1)))
    bad = ~torch.isfinite(values) & positive
    if bool(bad.any()):
        rows = int(bad.reshape(n, -1).any(-1).sum())
        raise InvalidInput(
            f"{who}: expected finite {what}, got NaN/inf at {rows} of {n} samples with "
            "positive weight"
        )
    return torch.where(positive, values, torch.zeros_like(values))


def _check_space(flow, target, who: str) -> None:
    if not (hasattr(flow, "sample_and_log_prob") or hasattr(flow, "sample_and_log_weight")):
        raise InvalidInput(
            f"{who}: expected a flow or distribution with sample_and_log_prob, got "
            f"{type(flow).__name__}"
        )
    flow_space, target_space = getattr(flow, "space", None), getattr(target, "space", None)
    if flow_space is not None and target_space is not None and flow_space != target_space:
        raise SpaceMismatch(
            f"{who}: the flow {type(flow).__name__} samples points on {flow_space!r} but the "
            f"target {type(target).__name__} lives on {target_space!r}"
        )


def _handle_nonfinite(log_w: Tensor, nonfinite: str, who: str) -> tuple[Tensor, int]:
    bad = torch.isnan(log_w) | (log_w == math.inf)
    count = int(bad.sum())
    if count and nonfinite == "raise":
        raise NonFiniteOutput(
            f"{who}: {count} of {log_w.numel()} log weights are NaN or +inf (NaN or -inf "
            "energies, or NaN flow densities); regularise the energy, or pass "
            "nonfinite='zero' to give those samples zero weight"
        )
    if count:
        log_w = torch.where(bad, torch.full_like(log_w, -math.inf), log_w)
    return log_w, count


# ---------------------------------------------------------------------------- importance weights
def importance_weights(
    flow,
    target,
    n: int,
    *,
    batch_size: int = 8192,
    context: Tensor | None = None,
    generator: torch.Generator | None = None,
    nonfinite: str = "raise",
    progress: bool = False,
    qmc: bool = False,
) -> Samples:
    r"""Draw ``n`` samples from the flow with their log importance weights for the target.

    .. math::

        x_i \sim q, \qquad \log w_i = -u(x_i) - \log q(x_i), \qquad
        \frac{1}{n}\sum_i w_i \xrightarrow{\;n\to\infty\;} Z .

    For a flow with stochastic layers ``log q`` is replaced by ``log p_base(z)`` minus the
    summed path weights (Wu et al. 2020), which keeps the weights unbiased for ``Z`` on the path
    space. Samples are drawn ``batch_size`` at a time without gradients (each batch through
    :func:`manifoldflows.losses.log_importance_weights`), so memory stays bounded for large
    ``n``. An energy of ``+inf`` is a legitimate zero weight; NaN weights (NaN energies or
    densities) and ``+inf`` weights (``-inf`` energies) are counted and raise, or are set to
    zero weight with ``nonfinite="zero"``.

    Arguments:
        flow: the proposal: a flow or distribution with ``sample_and_log_prob`` (or a
            stochastic flow with ``sample_and_log_weight``).
        target: callable ``x -> u(x)`` or object with ``.energy(x)``.
        n: number of samples (per context row).
        batch_size: samples per batch.
        context: optional conditioning ``(*cbatch, context_dim)``.
        generator: optional random generator (on the flow's device).
        nonfinite: ``"raise"`` (default) or ``"zero"``, the policy for NaN/``+inf`` weights.
        progress: show a ``tqdm`` progress bar on stderr.
        qmc: draw randomised quasi-Monte Carlo samples
            (:class:`~manifoldflows.distributions.QuasiRandomSampler`, scrambled Sobol points
            of the Gaussian base pushed through the flow; the scramble seed comes from
            ``generator``): still unbiased for ``Z``, usually less variable in low dimension.
            The delta-method errors of :class:`Samples` then do not measure the error;
            repeat with independent generators instead. Not with ``context``.

    Returns:
        :class:`Samples` with ``x`` of shape ``(n, *cbatch, *event_shape)`` and ``log_w`` of
        shape ``(n, *cbatch)``, detached.

    Raises:
        SpaceMismatch: when the flow's and the target's spaces differ.
        NonFiniteOutput: for NaN/``+inf`` weights under ``nonfinite="raise"``.

    References:
        Noe, Olsson, Koehler & Wu, "Boltzmann generators", Science 2019, arXiv:1812.01729.
        Wu, Koehler & Noe, "Stochastic normalizing flows", NeurIPS 2020, arXiv:2002.06707.

    Example:
        >>> from manifoldflows.distributions import DiagNormal
        >>> u = lambda x: 0.5 * (x**2).sum(-1)  # N(0, I), log Z = log(2 pi)
        >>> g = torch.Generator().manual_seed(0)
        >>> s = importance_weights(DiagNormal(2, scale=1.5), u, 1000, batch_size=300, generator=g)
        >>> s.x.shape, s.log_w.shape
        (torch.Size([1000, 2]), torch.Size([1000]))
    """
    who = "importance_weights"
    n = _positive_int(n, who, "number of samples n")
    batch_size = _positive_int(batch_size, who, "batch_size")
    _check_policy(nonfinite, who)
    _check_space(flow, target, who)
    draw = _qmc_draw(flow, target, context, generator, who) if qmc else None
    xs, lws = [], []
    done = 0
    with tqdm.tqdm(total=n, disable=not progress, desc=who, unit="samples") as bar:
        while done < n:
            b = min(batch_size, n - done)
            if draw is None:
                x, lw = losses.log_importance_weights(flow, target, b, context, generator=generator)
            else:
                x, lw = draw(b)
            xs.append(x)
            lws.append(lw)
            done += b
            bar.update(b)
    log_w, count = _handle_nonfinite(torch.cat(lws), nonfinite, who)
    return Samples(torch.cat(xs), log_w, count)


def _energy_like(energy, x: Tensor, like: Tensor, who: str) -> Tensor:
    """``energy(x)``, checked to have the batch shape of ``like`` (e.g. ``log q(x)``)."""
    u = energy(x)
    if u.shape != like.shape:
        raise InvalidInput(
            f"{who}: expected the target energy to have the batch shape {tuple(like.shape)}, "
            f"got {tuple(u.shape)}"
        )
    return u


def _qmc_draw(flow, target, context, generator, who: str):
    """``b -> (x, log_w)`` from one scrambled Sobol sequence of the flow (no gradient)."""
    if context is not None:
        raise InvalidInput(f"{who}: qmc=True does not support a context; draw per context row")
    sampler = QuasiRandomSampler(flow, generator=generator)
    energy = energy_fn(target)

    def draw(b: int) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            x, log_q = sampler.sample_and_log_prob(b)
            u = _energy_like(energy, x, log_q, who)
        return x.detach(), (-u - log_q).detach()

    return draw


# ---------------------------------------------------------------------------- estimators
def effective_sample_size(log_w: Tensor, *, relative: bool = True) -> Tensor:
    r"""Kish effective sample size of importance weights.

    .. math::

        \mathrm{ESS} = \frac{\left(\sum_i w_i\right)^2}{\sum_i w_i^2} \in [1, n],
        \qquad \mathrm{ESS}_{\rm rel} = \mathrm{ESS} / n \in (0, 1],

    computed in log space by :func:`manifoldflows.losses.ess`. It is ``n`` for equal weights
    and 1 when one weight dominates; roughly, an importance-sampling average is as precise as
    an average over ``ESS`` independent exact samples.

    Arguments:
        log_w: ``(n,)`` log importance weights (``-inf`` allowed; NaN and ``+inf`` raise).
        relative: return ``ESS / n`` (default) or the absolute ``ESS``.

    Returns:
        A scalar tensor (dtype and device of ``log_w``).

    References:
        Kish, "Survey sampling", Wiley 1965; Martino, Elvira & Louzada, "Effective sample size
        for importance sampling based on discrepancy measures", Signal Processing 2017,
        arXiv:1602.03572.

    Example:
        >>> lw = torch.tensor([0.0, 0.0, -math.inf, -math.inf])
        >>> effective_sample_size(lw).item(), effective_sample_size(lw, relative=False).item()
        (0.5, 2.0)
    """
    lw = _check_log_w(log_w, "effective_sample_size")
    fraction = losses.ess(lw)
    return fraction if relative else fraction * lw.numel()


def log_partition(log_w: Tensor) -> Estimate:
    r"""Importance-sampling estimate of ``log Z`` with its delta-method standard error.

    .. math::

        \widehat{\log Z} = \log\frac{1}{n}\sum_i w_i, \qquad
        \mathrm{se} = \frac{\mathrm{sd}(w)}{\sqrt{n}\,\bar w}
        \quad(\text{delta method: } \mathrm{Var}\log\bar w \approx
        \mathrm{Var}\,\bar w / \bar w^2),

    delegated to :func:`manifoldflows.losses.log_partition`. ``Z`` is estimated without bias,
    so ``log Z`` is biased low by about ``se^2 / 2``; the error bar is trustworthy only when
    the effective sample size is not tiny (and the weights have finite variance: the proposal
    must have heavier tails than the target).

    Arguments:
        log_w: ``(n,)`` log weights ``-u(x) - log q(x)`` with ``x ~ q``, ``n >= 2``.

    Returns:
        An :class:`Estimate` of ``log Z``.

    References:
        Owen, "Monte Carlo theory, methods and examples", 2013, chapter 9.

    Example:
        >>> from manifoldflows.distributions import DiagNormal
        >>> u = lambda x: 0.5 * (x**2).sum(-1)
        >>> g = torch.Generator().manual_seed(1)
        >>> s = importance_weights(DiagNormal(2, scale=1.3), u, 4000, generator=g)
        >>> est = log_partition(s.log_w)
        >>> bool(abs(est.value - math.log(2 * math.pi)) < 4 * est.stderr)
        True
    """
    lw = _check_log_w(log_w, "log_partition", min_size=2)
    value, stderr = losses.log_partition(lw)
    return Estimate(value, stderr)


def reweighted_mean(observable_values: Tensor, log_w: Tensor) -> Estimate:
    r"""Self-normalised importance-sampling estimate of ``E_p[f]`` with standard error.

    With normalised weights ``w~_i = w_i / sum_j w_j``:

    .. math::

        \hat\mu = \sum_i \tilde w_i f_i, \qquad
        \mathrm{se}^2 = \sum_i \tilde w_i^2 (f_i - \hat\mu)^2,

    the delta-method variance of the ratio ``sum w f / sum w`` (Owen 2013, section 9.2). Only the
    ratio of weights matters, so unnormalised energies are fine. The estimate is consistent
    (bias ``O(1/n)``).

    Arguments:
        observable_values: ``f(x_i)``, shape ``(n,)`` or ``(n, *obs_shape)`` for a vector of
            observables (each component estimated separately); booleans count as 0/1. NaN/inf
            values at samples with positive weight raise.
        log_w: ``(n,)`` log importance weights of the same samples.

    Returns:
        An :class:`Estimate` with ``value`` and ``stderr`` of shape ``obs_shape``.

    References:
        Owen, "Monte Carlo theory, methods and examples", 2013, section 9.2.

    Example:
        >>> f = torch.tensor([1.0, 2.0, 3.0])
        >>> est = reweighted_mean(f, torch.log(torch.tensor([1.0, 1.0, 2.0])))
        >>> round(est.value.item(), 4), round(est.stderr.item(), 4)
        (2.25, 0.4921)
    """
    who = "reweighted_mean"
    lw = _check_log_w(log_w, who, min_size=2)
    n = lw.numel()
    f = _check_values(observable_values, n, lw, who, "observable values")
    wn = torch.softmax(lw, 0).reshape(n, *([1] * (f.dim() - 1)))
    mean = (wn * f).sum(0)
    var = (wn.square() * (f - mean).square()).sum(0)
    return Estimate(mean, var.sqrt())


def _region_mask(region, x, n: int, device, who: str, name: str) -> Tensor:
    if callable(region) and not isinstance(region, Tensor):
        if not isinstance(x, Tensor) or x.dim() < 1 or x.shape[0] != n:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise InvalidInput(
                f"{who}: {name} is a callable, so expected samples x with one row per log "
                f"weight, shape ({n}, ...), got {got}"
            )
        region = region(x)
    if not isinstance(region, Tensor) or region.dtype != torch.bool:
        got = f"dtype {region.dtype}" if isinstance(region, Tensor) else type(region).__name__
        raise InvalidInput(
            f"{who}: expected {name} as a boolean mask of shape ({n},) or a callable x -> such "
            f"a mask, got {got}"
        )
    if region.shape != (n,):
        raise InvalidInput(
            f"{who}: expected {name} of shape ({n},) (a boolean mask of shape ({n},), one "
            f"entry per sample), got {tuple(region.shape)}"
        )
    return region.to(device)


def free_energy_difference(
    x: Tensor | None,
    log_w: Tensor,
    region_a: Tensor | Callable[[Tensor], Tensor],
    region_b: Tensor | Callable[[Tensor], Tensor],
) -> Estimate:
    r"""Free-energy difference ``F_B - F_A`` (in ``kT``) between two regions, with error bar.

    .. math::

        \Delta F = F_B - F_A = -\log\frac{P(B)}{P(A)}
        = \log \sum_{i \in A} w_i - \log \sum_{i \in B} w_i ,

    positive when ``A`` is the more probable region. This is a ratio of two self-normalised
    importance-sampling estimates with the same weights (the normalisation cancels). With
    ``S_A = mean_i w_i 1_A(x_i)`` and ``S_B`` likewise, the delta method applied to
    ``log S_A - log S_B`` gives

    .. math::

        \mathrm{se}^2 = \frac{1}{n}\,\mathrm{Var}_i\!\left(
            \frac{w_i 1_B(x_i)}{S_B} - \frac{w_i 1_A(x_i)}{S_A}\right),

    which includes the covariance of the two sums (the regions may overlap). Computed in log
    space. For :class:`physics.toy.DoubleWell`, whose ``delta_F = F_left - F_right``, take
    ``A`` = right well and ``B`` = left well.

    Even with a perfect proposal this error is at least that of exact sampling,
    ``1 / sqrt(n P(A) P(B))`` for complementary regions;
    :func:`physics.stratified.stratified_free_energy_difference` gets below it with a flow,
    at the same number of energy evaluations.

    Arguments:
        x: the samples ``(n, *event_shape)``; only needed when a region is a callable (else may
            be ``None``).
        log_w: ``(n,)`` log importance weights.
        region_a, region_b: boolean masks of shape ``(n,)``, or callables ``x -> mask``.

    Returns:
        An :class:`Estimate` of ``F_B - F_A`` in units of ``kT``.

    Raises:
        InvalidInput: for bad shapes, non-boolean masks, or a region without any sample of
            positive weight (the message gives the sample counts).

    References:
        Noe, Olsson, Koehler & Wu, "Boltzmann generators", Science 2019, arXiv:1812.01729.
        Owen, "Monte Carlo theory, methods and examples", 2013, section 9.2.

    Example:
        >>> x = torch.tensor([[-1.0], [-1.0], [1.0], [1.0]])
        >>> lw = torch.log(torch.tensor([1.0, 1.0, 1.0, 3.0]))
        >>> est = free_energy_difference(x, lw, lambda x: x[:, 0] > 0, lambda x: x[:, 0] < 0)
        >>> round(est.value.item(), 4), round(math.log(2.0), 4)  # P(right) / P(left) = 4 / 2
        (0.6931, 0.6931)
    """
    who = "free_energy_difference"
    lw = _check_log_w(log_w, who, min_size=2)
    n = lw.numel()
    in_a = _region_mask(region_a, x, n, lw.device, who, "region_a")
    in_b = _region_mask(region_b, x, n, lw.device, who, "region_b")
    neg_inf = torch.full_like(lw, -math.inf)
    log_sums = []
    for name, mask in (("region_a", in_a), ("region_b", in_b)):
        log_sum = torch.logsumexp(torch.where(mask, lw, neg_inf), 0)
        if not bool(torch.isfinite(log_sum)):
            raise InvalidInput(
                f"{who}: {name} holds {int(mask.sum())} of {n} samples and none with positive "
                "weight, so its probability cannot be estimated; draw more samples or check "
                "the region"
            )
        log_sums.append(log_sum)
    log_sum_a, log_sum_b = log_sums
    # Per-sample influence terms n * (w_i 1_B / sum_B - w_i 1_A / sum_A); their mean is zero.
    share_a = torch.where(in_a, torch.exp(lw - log_sum_a), torch.zeros_like(lw))
    share_b = torch.where(in_b, torch.exp(lw - log_sum_b), torch.zeros_like(lw))
    influence = n * (share_b - share_a)
    stderr = influence.std(unbiased=True) / math.sqrt(n)
    return Estimate(log_sum_a - log_sum_b, stderr)


def free_energy_profile(
    cv_values: Tensor,
    log_w: Tensor,
    bins: int | Tensor = 50,
    *,
    limits: tuple[float, float] | None = None,
    zero_min: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Reweighted free-energy profile ``F(s) = -log p(s)`` of a 1-D collective variable.

    With normalised weights ``w~_i`` and bins ``k`` of width ``h_k``:

    .. math::

        \hat P_k = \sum_{i:\, s_i \in k} \tilde w_i, \qquad
        F_k = -\log\frac{\hat P_k}{h_k}, \qquad
        \mathrm{se}(F_k) = \frac{1}{\hat P_k}
            \sqrt{\textstyle\sum_i \tilde w_i^2 \left(1_k(s_i) - \hat P_k\right)^2}

    (the self-normalised estimate of the bin probability and its delta-method error, see
    :func:`reweighted_mean`; ``se(log P) = se(P) / P``). ``P_k`` is the probability of the bin
    under the full distribution: samples outside the bins still count in the normalisation.
    Empty bins get ``F = +inf`` and ``stderr = +inf``. With ``zero_min`` the profile is shifted
    so that its minimum is 0; the errors are those of the unshifted ``F_k`` (relative to the
    total normalisation, not to the minimum bin).

    Arguments:
        cv_values: ``(n,)`` values ``s(x_i)`` of the collective variable.
        log_w: ``(n,)`` log importance weights.
        bins: number of equal-width bins over ``limits`` (default: the range of ``s`` over
            samples of positive weight), or a 1-D tensor of increasing bin edges.
        limits: ``(low, high)`` for an integer ``bins``.
        zero_min: shift ``F`` so that its minimum over non-empty bins is 0.

    Returns:
        ``(centres, F, stderr)``, each of shape ``(bins,)``, in units of ``kT``.

    References:
        Noe, Olsson, Koehler & Wu, "Boltzmann generators", Science 2019, arXiv:1812.01729.

    Example:
        >>> s = torch.tensor([0.1, 0.2, 0.6, 0.7, 0.8, 0.9])
        >>> centres, F, se = free_energy_profile(s, torch.zeros(6), 2, limits=(0.0, 1.0))
        >>> centres.tolist(), round(F[0].item(), 4), F[1].item()  # log(4/2) above the minimum
        ([0.25, 0.75], 0.6931, 0.0)
    """
    who = "free_energy_profile"
    lw = _check_log_w(log_w, who, min_size=2)
    n = lw.numel()
    s = _check_values(cv_values, n, lw, who, "collective-variable values")
    if s.dim() != 1:
        raise InvalidInput(f"{who}: expected cv_values of shape ({n},), got {tuple(s.shape)}")
    positive = lw > -math.inf
    if isinstance(bins, Tensor):
        edges = bins.detach().to(dtype=lw.dtype, device=lw.device)
        if limits is not None:
            raise InvalidInput(f"{who}: limits apply to an integer bins, got bin edges as well")
        if (
            edges.dim() != 1
            or edges.numel() < 2
            or not bool(torch.isfinite(edges).all())
            or not bool((edges[1:] > edges[:-1]).all())
        ):
            raise InvalidInput(
                f"{who}: expected bins as an integer or a 1-D tensor of at least 2 finite, "
                f"strictly increasing edges, got {edges.tolist()}"
            )
    else:
        n_bins = _positive_int(bins, who, "number of bins")
        if limits is None:
            low, high = float(s[positive].min()), float(s[positive].max())
        else:
            if len(limits) != 2:
                raise InvalidInput(f"{who}: expected limits (low, high), got {limits!r}")
            low, high = float(limits[0]), float(limits[1])
        if not (math.isfinite(low) and math.isfinite(high) and high > low):
            raise InvalidInput(
                f"{who}: expected a finite range low < high for the bins, got ({low}, {high}); "
                "pass limits= when all values coincide"
            )
        edges = torch.linspace(low, high, n_bins + 1, dtype=lw.dtype, device=lw.device)
    n_bins = edges.numel() - 1
    index = torch.bucketize(s, edges, right=True) - 1
    index = torch.where(s == edges[-1], torch.full_like(index, n_bins - 1), index)
    inside = (index >= 0) & (index < n_bins) & positive
    wn = torch.softmax(lw, 0)
    prob = torch.zeros(n_bins, dtype=lw.dtype, device=lw.device)
    prob.index_add_(0, index[inside], wn[inside])
    square = torch.zeros_like(prob).index_add_(0, index[inside], wn[inside].square())
    var = (1.0 - prob).square() * square + prob.square() * (wn.square().sum() - square)
    widths = edges[1:] - edges[:-1]
    filled = prob > 0
    inf = torch.full_like(prob, math.inf)
    safe = torch.where(filled, prob, torch.ones_like(prob))
    free = torch.where(filled, -torch.log(safe / widths), inf)
    stderr = torch.where(filled, var.clamp(min=0.0).sqrt() / safe, inf)
    if zero_min and bool(filled.any()):
        free = free - free[filled].min()
    return 0.5 * (edges[1:] + edges[:-1]), free, stderr


# ---------------------------------------------------------------------------- MCMC with the flow
def independence_metropolis(
    flow,
    target,
    n_steps: int,
    *,
    n_chains: int = 64,
    initial: Tensor | None = None,
    batch_size: int = 8192,
    generator: torch.Generator | None = None,
    nonfinite: str = "raise",
    progress: bool = False,
) -> ChainResult:
    r"""Independence Metropolis-Hastings with the flow as proposal (vectorised over chains).

    Each step proposes ``x' ~ q`` independently of the current state ``x`` and accepts with

    .. math::

        \alpha(x \to x') = \min\left(1, \frac{p(x')\, q(x)}{p(x)\, q(x')}\right)
        = \min\left(1, \frac{w(x')}{w(x)}\right), \qquad w = e^{-u} / q,

    so the chain leaves ``p`` invariant and, when ``w`` is bounded, converges to ``p``
    geometrically fast from any start (Tierney 1994): the samples are exact asymptotically,
    unlike raw flow samples. When ``q = p`` every proposal is accepted. For a stochastic flow
    the weights of :meth:`~manifoldflows.core.Flow.sample_and_log_weight` are used (the chain
    then runs on the extended path space, whose ``x``-marginal is ``p``); this needs
    ``initial=None``. Proposals are drawn up front with :func:`importance_weights`; the state
    of each chain is the last accepted proposal.

    Arguments:
        flow: the proposal distribution (a flow or any distribution with
            ``sample_and_log_prob``).
        target: callable ``x -> u(x)`` or object with ``.energy(x)``.
        n_steps: Metropolis steps per chain.
        n_chains: independent chains run in parallel.
        initial: optional start states ``(n_chains, *event_shape)``; default: one draw from
            the flow per chain (then no burn-in is needed when ``q`` is close to ``p``).
        batch_size: proposals drawn per batch.
        generator: optional random generator (on the flow's device).
        nonfinite: policy for NaN/``+inf`` proposal weights (see :func:`importance_weights`).
        progress: progress bar while drawing proposals.

    Returns:
        A :class:`ChainResult` (``samples`` of shape ``(n_steps, n_chains, *event_shape)``,
        ``log_w``, ``accepted`` and ``acceptance_rate``).

    References:
        L. Tierney, "Markov chains for exploring posterior distributions", Ann. Statist. 22
        (1994) 1701-1728. Noe, Olsson, Koehler & Wu, "Boltzmann generators", Science 2019,
        arXiv:1812.01729. M. Gabrie, G. M. Rotskoff, E. Vanden-Eijnden, "Adaptive Monte Carlo
        augmented with normalizing flows", PNAS 2022, arXiv:2105.12603.

    Example:
        >>> from manifoldflows.distributions import StandardNormal
        >>> u = lambda x: 0.5 * (x**2).sum(-1)  # the proposal is exact: all accepted
        >>> g = torch.Generator().manual_seed(0)
        >>> res = independence_metropolis(StandardNormal(2), u, 10, n_chains=4, generator=g)
        >>> res.samples.shape, res.acceptance_rate
        (torch.Size([10, 4, 2]), 1.0)
    """
    who = "independence_metropolis"
    n_steps = _positive_int(n_steps, who, "number of steps n_steps")
    n_chains = _positive_int(n_chains, who, "number of chains n_chains")
    _check_policy(nonfinite, who)
    extra = 1 if initial is None else 0
    if initial is not None and getattr(flow, "stochastic", False):
        raise StochasticFlowError(
            f"{who}: the flow has stochastic layers, so the weight of a given initial state is "
            "unknown; leave initial=None to start from flow samples"
        )
    proposals = importance_weights(
        flow,
        target,
        (n_steps + extra) * n_chains,
        batch_size=batch_size,
        generator=generator,
        nonfinite=nonfinite,
        progress=progress,
    )
    event_shape = proposals.x.shape[1:]
    xs = proposals.x.reshape(n_steps + extra, n_chains, *event_shape)
    lws = proposals.log_w.reshape(n_steps + extra, n_chains)
    if initial is None:
        x, lw = xs[0], lws[0]
        xs, lws = xs[1:], lws[1:]
    else:
        x, lw = _initial_state(flow, target, initial, n_chains, event_shape, xs, who)
    log_u = torch.log(
        torch.rand((n_steps, n_chains), generator=generator, dtype=lws.dtype, device=lws.device)
    )
    samples = torch.empty_like(xs)
    log_ws = torch.empty_like(lws)
    accepted = torch.empty(n_steps, n_chains, dtype=torch.bool, device=lws.device)
    expand = (n_chains,) + (1,) * len(event_shape)
    for t in range(n_steps):
        accept = log_u[t] < lws[t] - lw  # NaN ratios (both weights zero) are rejected
        x = torch.where(accept.reshape(expand), xs[t], x)
        lw = torch.where(accept, lws[t], lw)
        samples[t], log_ws[t], accepted[t] = x, lw, accept
    return ChainResult(samples, log_ws, accepted)


def _initial_state(flow, target, initial, n_chains, event_shape, like, who):
    if not isinstance(initial, Tensor) or initial.shape != (n_chains, *event_shape):
        got = tuple(initial.shape) if isinstance(initial, Tensor) else type(initial).__name__
        raise InvalidInput(
            f"{who}: expected initial states of shape {(n_chains, *tuple(event_shape))}, got {got}"
        )
    x = initial.detach().to(dtype=like.dtype, device=like.device)
    with torch.no_grad():
        lw = -energy_fn(target)(x) - flow.log_prob(x)
    bad = int((torch.isnan(lw) | (lw == math.inf)).sum())
    if bad:
        raise NonFiniteOutput(
            f"{who}: {bad} of {n_chains} initial states have a NaN or +inf log weight; start "
            "from states with finite energy and flow density"
        )
    return x, lw


# ---------------------------------------------------------------------------- AIS
def _betas(n_steps: int, betas, who: str) -> list[float]:
    if betas is None:
        return [k / n_steps for k in range(n_steps + 1)]
    values = [float(b) for b in (betas.tolist() if isinstance(betas, Tensor) else betas)]
    if (
        len(values) != n_steps + 1
        or values[0] != 0.0
        or values[-1] != 1.0
        or any(b1 <= b0 for b0, b1 in zip(values, values[1:]))
    ):
        raise InvalidInput(
            f"{who}: expected betas as {n_steps + 1} strictly increasing values from 0 to 1 "
            f"(n_steps + 1), got {values}"
        )
    return values


def annealed_importance_sampling(
    flow,
    target,
    n: int,
    n_steps: int,
    *,
    transition: str = "mh",
    step_size: float = 0.1,
    mcmc_steps: int = 1,
    betas: Sequence[float] | Tensor | None = None,
    batch_size: int = 8192,
    generator: torch.Generator | None = None,
    nonfinite: str = "raise",
    progress: bool = False,
    qmc: bool = False,
) -> Samples:
    r"""Annealed importance sampling from the flow density to the target (Neal 2001).

    The geometric path ``pi_k(x) ∝ q(x)^(1 - beta_k) exp(-u(x))^beta_k`` with
    ``0 = beta_0 < beta_1 < ... < beta_K = 1`` (``K = n_steps``, linear by default) connects the
    flow ``q`` to the target. Starting from ``x_0 ~ q``, for ``k = 1..K`` the log weight gains
    the incremental ratio at the current point and then the point moves by ``mcmc_steps``
    Metropolis-Hastings transitions that leave ``pi_k`` invariant:

    .. math::

        \log w \mathrel{+}= \log\frac{\pi_k(x)}{\pi_{k-1}(x)}
            = (\beta_k - \beta_{k-1})\,\big(-u(x) - \log q(x)\big),
        \qquad x \leftarrow T_k(x).

    The final ``w`` is an unbiased estimate of ``Z`` (``E[w] = Z``) and ``(x, w)`` is a
    properly weighted sample of ``p``, for any number of levels; more levels bring the weights
    closer to uniform (``K = 1`` without moves is plain importance sampling). Transitions are
    exact MH at each intermediate density:

    * ``"mh"``: Gaussian random walk ``x' = x + step_size * eps``;
    * ``"langevin"``: Metropolis-adjusted Langevin (MALA),
      ``x' = x + tau grad log pi_k(x) + sqrt(2 tau) eps`` with ``tau = step_size``, gradients
      of ``log q`` and ``u`` by autograd.

    Each transition costs one flow density (an inverse pass) and one energy evaluation per
    particle (with gradients for MALA), so the flow must have ``log_prob``: stochastic flows
    are refused. No gradient flows to the flow's parameters.

    Arguments:
        flow: the initial distribution, with ``sample_and_log_prob`` and ``log_prob``.
        target: callable ``x -> u(x)`` or object with ``.energy(x)``.
        n: number of particles.
        n_steps: number of annealing levels ``K``.
        transition: ``"mh"`` or ``"langevin"``.
        step_size: random-walk standard deviation (``"mh"``) or Langevin time step
            ``tau`` (``"langevin"``).
        mcmc_steps: transitions per level.
        betas: optional custom schedule, ``K + 1`` strictly increasing values from 0 to 1.
        batch_size: particles annealed together (bounds memory).
        generator: optional random generator (on the flow's device).
        nonfinite: policy for NaN/``+inf`` initial weights (see :func:`importance_weights`);
            proposals with NaN energy are simply rejected.
        progress: show a ``tqdm`` progress bar over particles.
        qmc: start the chains from randomised quasi-Monte Carlo samples of the flow (see
            :func:`importance_weights`): the chains' starting points cover the flow evenly,
            which removes most of the variance that comes from where they start (how many
            start in each mode, or in a region the target barely populates); the estimate of
            ``Z`` stays unbiased. Use independent generators to get error bars.

    Returns:
        :class:`Samples` with ``x`` ``(n, *event_shape)``, the AIS log weights ``log_w``
        ``(n,)`` (feed them to :func:`log_partition`, :func:`reweighted_mean`, ...) and
        ``acceptance`` ``(n_steps,)``, the acceptance rate at each level (tune ``step_size`` so
        that it is neither near 0 nor near 1).

    References:
        R. M. Neal, "Annealed importance sampling", Statistics and Computing 11 (2001)
        125-139, arXiv:physics/9803008. Midgley et al., "Flow annealed importance sampling
        bootstrap", ICLR 2023, arXiv:2208.01893. G. O. Roberts, R. L. Tweedie, "Exponential
        convergence of Langevin distributions and their discrete approximations", Bernoulli 2
        (1996) 341-363 (MALA).

    Example:
        >>> from manifoldflows.distributions import DiagNormal
        >>> u = lambda x: 0.5 * ((x - 1.0) ** 2).sum(-1)
        >>> g = torch.Generator().manual_seed(0)
        >>> s = annealed_importance_sampling(DiagNormal(2, scale=2.0), u, 200, 10,
        ...                                  step_size=0.5, generator=g)
        >>> s.x.shape, s.log_w.shape, s.acceptance.shape
        (torch.Size([200, 2]), torch.Size([200]), torch.Size([10]))
    """
    who = "annealed_importance_sampling"
    n = _positive_int(n, who, "number of particles n")
    n_steps = _positive_int(n_steps, who, "number of annealing levels n_steps")
    mcmc_steps = _positive_int(mcmc_steps, who, "number of transitions per level mcmc_steps")
    batch_size = _positive_int(batch_size, who, "batch_size")
    step_size = _positive_float(step_size, who, "step_size")
    _check_policy(nonfinite, who)
    if transition not in _TRANSITIONS:
        raise InvalidInput(f"{who}: expected transition in {_TRANSITIONS}, got {transition!r}")
    _check_space(flow, target, who)
    if getattr(flow, "stochastic", False):
        raise StochasticFlowError(
            f"{who}: the flow has stochastic layers and no tractable density q(x), which the "
            "intermediate densities q^(1-beta) p^beta need; use importance_weights or "
            "independence_metropolis instead"
        )
    if not hasattr(flow, "log_prob"):
        raise InvalidInput(f"{who}: expected a flow with log_prob, got {type(flow).__name__}")
    schedule = _betas(n_steps, betas, who)
    energy = energy_fn(target)
    if qmc:
        sampler = QuasiRandomSampler(flow, generator=generator)
        start = sampler.sample_and_log_prob
    else:

        def start(b: int) -> tuple[Tensor, Tensor]:
            return flow.sample_and_log_prob((b,), None, generator)

    xs, lws = [], []
    accept_sum = [0.0] * n_steps
    count = 0
    done = 0
    with tqdm.tqdm(total=n, disable=not progress, desc=who, unit="particles") as bar:
        while done < n:
            b = min(batch_size, n - done)
            x, lw, acc, bad = _ais_batch(
                flow,
                start,
                energy,
                b,
                schedule,
                transition,
                step_size,
                mcmc_steps,
                generator,
                nonfinite,
                who,
            )
            xs.append(x)
            lws.append(lw)
            count += bad
            accept_sum = [a + b * r for a, r in zip(accept_sum, acc)]
            done += b
            bar.update(b)
    log_w = torch.cat(lws)
    acceptance = torch.tensor([a / n for a in accept_sum], dtype=log_w.dtype)
    return Samples(torch.cat(xs), log_w, count, acceptance.to(log_w.device))


def _ais_batch(
    flow, start, energy, b, schedule, transition, step, mcmc_steps, generator, nonfinite, who
):
    """Anneal one batch of ``b`` particles; returns ``(x, log_w, acceptance per level, bad)``."""
    langevin = transition == "langevin"
    with torch.no_grad():
        x, log_q = start(b)
        u = _energy_like(energy, x, log_q, who)
    x, log_q, u = x.detach(), log_q.detach(), u.detach()
    ell, bad = _handle_nonfinite(-u - log_q, nonfinite, who)
    if bad:  # zero-weight particles: keep them consistent with ell = -inf
        u = torch.where(torch.isfinite(ell), u, torch.full_like(u, math.inf))
    grad_q = grad_u = None
    if langevin:
        _, _, grad_q, grad_u = _density_and_grads(flow, energy, x)
    expand = (b,) + (1,) * (x.dim() - 1)
    log_w = torch.zeros_like(ell)
    rates = []
    for k in range(1, len(schedule)):
        beta = schedule[k]
        log_w = log_w + (beta - schedule[k - 1]) * (-u - log_q)
        accepted = 0.0
        for _ in range(mcmc_steps):
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            log_u = torch.log(torch.rand((b,), generator=generator, dtype=x.dtype, device=x.device))
            log_pi = (1.0 - beta) * log_q - beta * u
            if langevin:
                drift = (1.0 - beta) * grad_q - beta * grad_u
                x_new = x + step * drift + math.sqrt(2.0 * step) * noise
                log_q_new, u_new, grad_q_new, grad_u_new = _density_and_grads(flow, energy, x_new)
                drift_new = (1.0 - beta) * grad_q_new - beta * grad_u_new
                fwd = _sum_event(noise.square(), b) / 2.0
                back = _sum_event((x - x_new - step * drift_new).square(), b) / (4.0 * step)
                log_alpha = (1.0 - beta) * log_q_new - beta * u_new - log_pi - back + fwd
            else:
                x_new = x + step * noise
                with torch.no_grad():
                    log_q_new, u_new = flow.log_prob(x_new).detach(), energy(x_new).detach()
                log_alpha = (1.0 - beta) * log_q_new - beta * u_new - log_pi
            accept = log_u < log_alpha  # NaN (e.g. NaN energy at the proposal): rejected
            x = torch.where(accept.reshape(expand), x_new, x)
            log_q = torch.where(accept, log_q_new, log_q)
            u = torch.where(accept, u_new, u)
            if langevin:
                grad_q = torch.where(accept.reshape(expand), grad_q_new, grad_q)
                grad_u = torch.where(accept.reshape(expand), grad_u_new, grad_u)
            accepted += int(accept.sum()) / b
        rates.append(accepted / mcmc_steps)
    if bad:
        log_w = torch.where(torch.isfinite(ell), log_w, ell)
    return x, log_w, rates, bad


def _sum_event(t: Tensor, b: int) -> Tensor:
    return t.reshape(b, -1).sum(-1)


def _density_and_grads(flow, energy, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``log q(x)``, ``u(x)`` and their gradients in ``x`` (no gradient to the parameters)."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        log_q = flow.log_prob(xg)
        (grad_q,) = torch.autograd.grad(log_q.sum(), xg)
        xu = x.detach().requires_grad_(True)
        u = energy(xu)
        (grad_u,) = torch.autograd.grad(u.sum(), xu)
    return log_q.detach(), u.detach(), grad_q, grad_u
