r"""One estimator vocabulary: importance weights, ESS, ``log Z``, reweighted means and free
energies, every estimate with its standard error, per context row for conditional models.

A model ``q`` (a flow or distribution) is only approximately the target
``p(x) = exp(-u(x)) / Z``. Every estimate here is made exact (asymptotically) by the importance
weights

.. math::

    w(x) = \frac{e^{-u(x)}}{q(x)}, \qquad \mathbb{E}_{x\sim q}[w] = Z, \qquad
    \mathbb{E}_p[f] = \frac{\mathbb{E}_q[w f]}{\mathbb{E}_q[w]},

always handled as log weights ``log w = -u(x) - log q(x)`` (weights spanning hundreds of
orders of magnitude are fine). Standard errors come from the delta method (first-order Taylor
expansion of a ratio or logarithm of sample means; Owen 2013, chapters 8-9): reliable when the
effective sample size is not tiny.

**Shapes.** Log weights have shape ``(n, *cbatch)``: ``n`` samples along the first axis and,
for a conditional model sampled with a context of shape ``(*cbatch, k)``, one column per
context row. Every estimator reduces over the first axis only, so a conditional model gets one
estimate per context row (``log_partition(log_w).value`` has shape ``cbatch``).

=====================================  =========================================================
:func:`log_importance_weights`          one batch of samples and log weights (the primitive)
:func:`importance_weights`              batched, with policies for NaN/inf and quasi-MC: Samples
:func:`effective_sample_size`           Kish ESS, relative (in ``(0, 1]``) or absolute
:func:`log_partition`                   ``log Z`` with standard error
:func:`reweighted_mean`                 ``E_p[f]`` (observables) by self-normalised IS
:func:`free_energy_difference`          ``F_B - F_A`` between two regions, in ``kT``
=====================================  =========================================================

Annealed importance sampling, which returns the same :class:`Samples`, is
:func:`manifoldflows.stochastic.annealed_importance_sampling`. Targets follow
:mod:`manifoldflows.targets`.

References:
    A. B. Owen, "Monte Carlo theory, methods and examples", 2013, chapters 8-9.
    F. Noe, S. Olsson, J. Koehler, H. Wu, "Boltzmann generators: sampling equilibrium states of
    many-body systems with deep learning", Science 365 (2019), arXiv:1812.01729.
    L. Kish, "Survey sampling", Wiley 1965.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import tqdm
from torch import Tensor

from ._checks import positive_int
from .distributions import QuasiRandomSampler
from .errors import InvalidInput, NonFiniteOutput
from .targets import check_target_space, target_energy

if TYPE_CHECKING:  # pragma: no cover
    from .distributions.base import Distribution
    from .targets import Target

__all__ = [
    "Estimate",
    "Samples",
    "log_importance_weights",
    "importance_weights",
    "effective_sample_size",
    "ess",
    "log_partition",
    "reweighted_mean",
    "free_energy_difference",
]

NONFINITE_POLICIES = ("raise", "zero")


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

    Unpacks as ``value, stderr = estimate``.

    Attributes:
        value: the estimate: a 0-d tensor, one entry per context row (``cbatch``), and/or per
            component of a vector observable.
        stderr: its standard error (same shape, ``>= 0``).

    Example:
        >>> est = Estimate(torch.tensor(10.29348), torch.tensor(0.0123))
        >>> print(est)
        10.293 ± 0.012
        >>> [round(v.item(), 4) for v in est.interval(2.0)]
        [10.2689, 10.3181]
        >>> value, stderr = est
    """

    value: Tensor
    stderr: Tensor

    def interval(self, z: float = 1.96) -> tuple[Tensor, Tensor]:
        """The interval ``value ± z * stderr`` (``z = 1.96``: 95 % under normality)."""
        return self.value - z * self.stderr, self.value + z * self.stderr

    def __iter__(self) -> Iterator[Tensor]:
        return iter((self.value, self.stderr))

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
        log_w: log importance weights ``-u(x) - log q(x)`` (stochastic flows and AIS: the
            path-weighted version), shape ``(n, *cbatch)``; ``-inf`` is a zero weight.
        n_nonfinite: how many weights were NaN or ``+inf`` and set to zero weight (only with
            ``nonfinite="zero"``; with the default policy such samples raise).
        acceptance: for annealed importance sampling, the Metropolis acceptance rate at each
            annealing level, shape ``(n_steps,)``; ``None`` otherwise.

    Example:
        >>> s = Samples(torch.zeros(4, 2), torch.zeros(4))
        >>> len(s), s.ess().item(), str(s.log_partition())
        (4, 1.0, '0 ± 0')
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

    def reweighted_mean(self, observable: Callable[[Tensor], Tensor] | Tensor) -> Estimate:
        """``E_p[f]`` of an observable (a callable of ``x`` or its values), with error bar."""
        values = observable(self.x) if callable(observable) else observable
        return reweighted_mean(values, self.log_w)


# ---------------------------------------------------------------------------- validation
def check_log_weights(log_w: Tensor, who: str, min_size: int = 1) -> Tensor:
    """Floating log weights ``(n, *cbatch)`` with ``n >= min_size``, no NaN or ``+inf``, and
    not all ``-inf`` in any context row; returned detached."""
    if not isinstance(log_w, Tensor):
        raise InvalidInput(f"{who}: expected a tensor of log weights, got {type(log_w).__name__}")
    if not torch.is_floating_point(log_w):
        raise InvalidInput(f"{who}: expected floating-point log weights, got dtype {log_w.dtype}")
    if log_w.dim() < 1 or log_w.shape[0] < min_size:
        raise InvalidInput(
            f"{who}: expected a 1-D tensor of at least {min_size} log weight(s), got shape "
            f"{tuple(log_w.shape)} (log weights have shape (n, *cbatch): n >= {min_size} "
            "samples along the first axis, one column per context row)"
        )
    total = log_w.numel()
    nan = int(torch.isnan(log_w).sum())
    if nan:
        raise InvalidInput(
            f"{who}: expected log weights without NaN, got {nan} NaN value(s) of {total}; they "
            "come from NaN energies or densities (importance_weights(..., nonfinite='zero') "
            "gives such samples zero weight)"
        )
    pos_inf = int((log_w == math.inf).sum())
    if pos_inf:
        raise InvalidInput(f"{who}: expected log weights below +inf, got {pos_inf} of {total} +inf")
    dead = (log_w == -math.inf).all(0)
    if bool(dead.any()):
        n = log_w.shape[0]
        where = "" if log_w.dim() == 1 else f" in {int(dead.sum())} context row(s)"
        raise InvalidInput(f"{who}: all {n} weights are zero (log weight -inf){where}")
    return log_w.detach()


def _obs_shape_text(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ", ...)"


def check_values(values: Tensor, log_w: Tensor, who: str, what: str) -> Tensor:
    """Per-sample values ``(*log_w.shape, *obs_shape)``, finite wherever the weight is positive
    (values at zero-weight samples are replaced by 0)."""
    if not isinstance(values, Tensor):
        raise InvalidInput(f"{who}: expected a tensor of {what}, got {type(values).__name__}")
    if torch.is_complex(values):
        raise InvalidInput(f"{who}: expected real {what}, got dtype {values.dtype}")
    lead = log_w.dim()
    if values.dim() < lead or values.shape[:lead] != log_w.shape:
        raise InvalidInput(
            f"{who}: expected {what} with one row per log weight, shape "
            f"{_obs_shape_text(log_w.shape)}, got {tuple(values.shape)}"
        )
    values = values.detach().to(dtype=log_w.dtype, device=log_w.device)
    positive = (log_w > -math.inf).reshape(*log_w.shape, *([1] * (values.dim() - lead)))
    bad = ~torch.isfinite(values) & positive
    if bool(bad.any()):
        n = log_w.shape[0]
        rows = int(bad.reshape(n, -1).any(-1).sum())
        raise InvalidInput(
            f"{who}: expected finite {what}, got NaN/inf at {rows} of {n} samples with "
            "positive weight"
        )
    return torch.where(positive, values, torch.zeros_like(values))


def check_policy(nonfinite: str, who: str) -> None:
    """Refuse a policy for non-finite weights other than ``"raise"`` and ``"zero"``."""
    if nonfinite not in NONFINITE_POLICIES:
        raise InvalidInput(
            f"{who}: expected nonfinite to be one of {NONFINITE_POLICIES}, got {nonfinite!r}"
        )


def check_model(model: object, target: Target, who: str) -> None:
    """A model that can be sampled with densities or weights, on the target's space."""
    if not (hasattr(model, "sample_and_log_prob") or hasattr(model, "sample_and_log_weight")):
        raise InvalidInput(
            f"{who}: expected a flow or distribution with sample_and_log_prob, got "
            f"{type(model).__name__}"
        )
    check_target_space(model, target, who)


def handle_nonfinite(log_w: Tensor, nonfinite: str, who: str) -> tuple[Tensor, int]:
    """Apply the policy to NaN/``+inf`` log weights; returns ``(log_w, how many)``."""
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


def region_mask(
    region: Tensor | Callable[[Tensor], Tensor],
    x: Tensor | None,
    log_w: Tensor,
    who: str,
    name: str,
) -> Tensor:
    """A boolean mask of ``log_w``'s shape, given as such or as a callable ``x -> mask``."""
    shape = tuple(log_w.shape)
    if callable(region) and not isinstance(region, Tensor):
        if not isinstance(x, Tensor) or x.shape[: len(shape)] != shape:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise InvalidInput(
                f"{who}: {name} is a callable, so expected samples x with one row per log "
                f"weight, shape {_obs_shape_text(shape)}, got {got}"
            )
        region = region(x)
    if not isinstance(region, Tensor) or region.dtype != torch.bool:
        got = f"dtype {region.dtype}" if isinstance(region, Tensor) else type(region).__name__
        raise InvalidInput(
            f"{who}: expected {name} as a boolean mask of shape {shape} or a callable x -> "
            f"such a mask, got {got}"
        )
    if tuple(region.shape) != shape:
        raise InvalidInput(
            f"{who}: expected {name} of shape {shape} (a boolean mask of shape {shape}, one "
            f"entry per sample), got {tuple(region.shape)}"
        )
    return region.to(log_w.device)


# ---------------------------------------------------------------------------- weights
def _zero_energy(x: Tensor) -> Tensor:
    return torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)


def sample_with_log_q(
    model: Distribution, n: int, context: Tensor | None, generator: torch.Generator | None, who: str
) -> tuple[Tensor, Tensor]:
    """``n`` reparameterised samples (per context row) and ``log q`` (path-weighted surrogate
    ``log p_base(z) - sum of path weights`` for stochastic flows)."""
    n = positive_int(n, "number of samples n", who)
    if getattr(model, "stochastic", False) and hasattr(model, "sample_and_log_weight"):
        # With a zero energy the log weight is -log q_eff = -(log p_base(z) - path weights).
        x, neg_log_q = model.sample_and_log_weight(_zero_energy, (n,), context, generator)
        return x, -neg_log_q
    return model.sample_and_log_prob((n,), context, generator)


def log_importance_weights(
    model: Distribution,
    target: Target,
    n: int,
    context: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Samples from the model and their log importance weights for the target (no gradient).

    .. math::

        x_i \sim q(\cdot \mid c), \qquad \log w_i = -u(x_i \mid c) - \log q(x_i \mid c),
        \qquad \mathbb{E}_q[w] = Z(c)

    For a model with stochastic layers ``log q`` is replaced by ``log p_base(z)`` minus the
    summed path weights (Wu et al. 2020). Non-finite energies are kept as they are (``+inf``
    energy: ``log w = -inf``, a zero weight; NaN stays NaN) so that the estimators flag them;
    :func:`importance_weights` applies a policy instead.

    Arguments:
        model: a distribution or flow with ``sample_and_log_prob`` (or, for stochastic flows,
            ``sample_and_log_weight``).
        target: see :mod:`manifoldflows.targets` (receives ``context`` if it takes one).
        n: number of samples (per context row).
        context: optional conditioning ``(*cbatch, context_dim)``.
        generator: optional random generator (on the model's device).

    Returns:
        ``(x, log_w)``: samples ``(n, *cbatch, *event_shape)`` and log weights ``(n, *cbatch)``,
        both detached.

    References:
        Noe, Olsson, Koehler & Wu, "Boltzmann generators", Science 2019, arXiv:1812.01729.
        Wu, Koehler & Noe, "Stochastic normalizing flows", NeurIPS 2020, arXiv:2002.06707.

    Example:
        >>> from manifoldflows.distributions import StandardNormal
        >>> u = lambda x: 0.5 * (x**2).sum(-1)
        >>> x, log_w = log_importance_weights(StandardNormal(2), u, 5)
        >>> x.shape, log_w.shape, bool(torch.allclose(log_w, log_w[0]))  # q = p: constant
        (torch.Size([5, 2]), torch.Size([5]), True)
    """
    who = "log_importance_weights"
    with torch.no_grad():
        check_target_space(model, target, who)
        x, log_q = sample_with_log_q(model, n, context, generator, who)
        u = target_energy(target, x, log_q.shape, context, who)
        return x.detach(), (-u - log_q).detach()


def importance_weights(
    model: Distribution,
    target: Target,
    n: int,
    *,
    context: Tensor | None = None,
    batch_size: int = 8192,
    generator: torch.Generator | None = None,
    nonfinite: str = "raise",
    progress: bool = False,
    qmc: bool = False,
) -> Samples:
    r"""Draw ``n`` samples (per context row) with their log importance weights for the target.

    .. math::

        x_i \sim q, \qquad \log w_i = -u(x_i) - \log q(x_i), \qquad
        \frac{1}{n}\sum_i w_i \xrightarrow{\;n\to\infty\;} Z .

    Samples are drawn ``batch_size`` at a time without gradients (each batch through
    :func:`log_importance_weights`), so memory stays bounded for large ``n``. An energy of
    ``+inf`` is a legitimate zero weight; NaN weights (NaN energies or densities) and ``+inf``
    weights (``-inf`` energies) are counted and raise, or are set to zero weight with
    ``nonfinite="zero"``.

    Arguments:
        model: the proposal: a flow or distribution with ``sample_and_log_prob`` (or a
            stochastic flow with ``sample_and_log_weight``).
        target: see :mod:`manifoldflows.targets`.
        n: number of samples (per context row).
        context: optional conditioning ``(*cbatch, context_dim)``: the estimators then give
            one estimate per context row.
        batch_size: samples per batch.
        generator: optional random generator (on the model's device).
        nonfinite: ``"raise"`` (default) or ``"zero"``, the policy for NaN/``+inf`` weights.
        progress: show a ``tqdm`` progress bar on stderr.
        qmc: draw randomised quasi-Monte Carlo samples
            (:class:`~manifoldflows.distributions.QuasiRandomSampler`, scrambled Sobol points
            of the base pushed through the flow; the scramble seed comes from ``generator``):
            still unbiased for ``Z``, usually less variable in low dimension. The delta-method
            errors then do not measure the error; repeat with independent generators instead.
            Not with ``context``.

    Returns:
        :class:`Samples` with ``x`` of shape ``(n, *cbatch, *event_shape)`` and ``log_w`` of
        shape ``(n, *cbatch)``, detached.

    Raises:
        SpaceMismatch: when the model's and the target's spaces differ.
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
    n = positive_int(n, "number of samples n", who)
    batch_size = positive_int(batch_size, "batch_size", who)
    check_policy(nonfinite, who)
    check_model(model, target, who)
    draw = _qmc_draw(model, target, context, generator, who) if qmc else None
    xs, lws = [], []
    done = 0
    with tqdm.tqdm(total=n, disable=not progress, desc=who, unit="samples") as bar:
        while done < n:
            b = min(batch_size, n - done)
            if draw is None:
                x, lw = log_importance_weights(model, target, b, context, generator=generator)
            else:
                x, lw = draw(b)
            xs.append(x)
            lws.append(lw)
            done += b
            bar.update(b)
    log_w, count = handle_nonfinite(torch.cat(lws), nonfinite, who)
    return Samples(torch.cat(xs), log_w, count)


def _qmc_draw(
    model: Distribution,
    target: Target,
    context: Tensor | None,
    generator: torch.Generator | None,
    who: str,
) -> Callable[[int], tuple[Tensor, Tensor]]:
    """``b -> (x, log_w)`` from one scrambled Sobol sequence of the model (no gradient)."""
    if context is not None:
        raise InvalidInput(f"{who}: qmc=True does not support a context; draw per context row")
    sampler = QuasiRandomSampler(model, generator=generator)

    def draw(b: int) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            x, log_q = sampler.sample_and_log_prob(b)
            u = target_energy(target, x, log_q.shape, None, who)
        return x.detach(), (-u - log_q).detach()

    return draw


# ---------------------------------------------------------------------------- estimators
def effective_sample_size(log_w: Tensor, *, relative: bool = True) -> Tensor:
    r"""Kish effective sample size of importance weights (per context row).

    .. math::

        \mathrm{ESS} = \frac{\left(\sum_i w_i\right)^2}{\sum_i w_i^2} \in [1, n],
        \qquad \mathrm{ESS}_{\rm rel} = \mathrm{ESS} / n \in (0, 1],

    computed in log space as ``exp(2 LSE(log w) - LSE(2 log w))``, so weights spanning
    hundreds of orders of magnitude are fine. It is ``n`` for equal weights and 1 when one
    weight dominates; roughly, an importance-sampling average is as precise as an average over
    ``ESS`` independent exact samples. A diagnostic of the sample, not an estimate: no error
    bar.

    Arguments:
        log_w: ``(n, *cbatch)`` log importance weights (``-inf`` allowed; NaN and ``+inf``
            raise).
        relative: return ``ESS / n`` (default) or the absolute ``ESS``.

    Returns:
        A tensor of shape ``cbatch`` (dtype and device of ``log_w``).

    References:
        Kish, "Survey sampling", Wiley 1965; Martino, Elvira & Louzada, "Effective sample size
        for importance sampling based on discrepancy measures", Signal Processing 2017,
        arXiv:1602.03572.

    Example:
        >>> lw = torch.tensor([0.0, 0.0, -math.inf, -math.inf])
        >>> effective_sample_size(lw).item(), effective_sample_size(lw, relative=False).item()
        (0.5, 2.0)
    """
    return _kish(log_w, relative, "effective_sample_size")


def ess(log_w: Tensor, *, relative: bool = True) -> Tensor:
    """Short name of :func:`effective_sample_size` (relative by default), as in the losses.

    Example:
        >>> round(ess(torch.tensor([0.0, -1e4, -1e4, -1e4])).item(), 6)
        0.25
    """
    return _kish(log_w, relative, "ess")


def _kish(log_w: Tensor, relative: bool, who: str) -> Tensor:
    lw = check_log_weights(log_w, who)
    n = lw.shape[0]
    log_ess = 2.0 * torch.logsumexp(lw, 0) - torch.logsumexp(2.0 * lw, 0) - math.log(n)
    fraction = torch.exp(log_ess).clamp(max=1.0)
    return fraction if relative else fraction * n


def log_partition(log_w: Tensor) -> Estimate:
    r"""Importance-sampling estimate of ``log Z`` with its delta-method standard error.

    .. math::

        \widehat{\log Z} = \log\frac{1}{n}\sum_i w_i
        = \mathrm{LSE}(\log w) - \log n, \qquad
        \mathrm{se} = \frac{\mathrm{sd}(w)}{\sqrt{n}\,\bar w}
        \quad(\text{delta method: } \mathrm{Var}\log\bar w \approx
        \mathrm{Var}\,\bar w / \bar w^2),

    with the sample standard deviation (``n - 1`` in the denominator), per context row. ``Z``
    is estimated without bias, so ``log Z`` is biased low by about ``se^2 / 2``; the error bar
    is trustworthy only when the effective sample size is not tiny (and the weights have finite
    variance: the proposal must have heavier tails than the target).

    Arguments:
        log_w: ``(n, *cbatch)`` log weights ``-u(x) - log q(x)`` with ``x ~ q``, ``n >= 2``.

    Returns:
        An :class:`Estimate` of ``log Z`` of shape ``cbatch`` (unpacks as
        ``value, stderr``).

    References:
        Owen, "Monte Carlo theory, methods and examples", 2013, chapter 9.

    Example:
        >>> value, stderr = log_partition(torch.full((100,), 1.5))
        >>> value.item(), stderr.item()
        (1.5, 0.0)
        >>> log_partition(torch.tensor([[0.0, 1.0], [0.0, 1.0]])).value.tolist()  # two rows
        [0.0, 1.0]
    """
    lw = check_log_weights(log_w, "log_partition", min_size=2)
    n = lw.shape[0]
    value = torch.logsumexp(lw, 0) - math.log(n)
    w = torch.exp(lw - lw.max(0).values)  # rescaled to [0, 1]; the ratio sd/mean is unchanged
    stderr = w.std(0, unbiased=True) / (math.sqrt(n) * w.mean(0))
    return Estimate(value, stderr)


def reweighted_mean(observable_values: Tensor, log_w: Tensor) -> Estimate:
    r"""Self-normalised importance-sampling estimate of ``E_p[f]`` with standard error.

    With normalised weights ``w~_i = w_i / sum_j w_j`` (per context row):

    .. math::

        \hat\mu = \sum_i \tilde w_i f_i, \qquad
        \mathrm{se}^2 = \sum_i \tilde w_i^2 (f_i - \hat\mu)^2,

    the delta-method variance of the ratio ``sum w f / sum w`` (Owen 2013, section 9.2). Only the
    ratio of weights matters, so unnormalised energies are fine. The estimate is consistent
    (bias ``O(1/n)``).

    Arguments:
        observable_values: ``f(x_i)``, shape ``(n, *cbatch)`` or ``(n, *cbatch, *obs_shape)``
            for a vector of observables (each component estimated separately); booleans count
            as 0/1. NaN/inf values at samples with positive weight raise.
        log_w: ``(n, *cbatch)`` log importance weights of the same samples.

    Returns:
        An :class:`Estimate` with ``value`` and ``stderr`` of shape ``(*cbatch, *obs_shape)``.

    References:
        Owen, "Monte Carlo theory, methods and examples", 2013, section 9.2.

    Example:
        >>> f = torch.tensor([1.0, 2.0, 3.0])
        >>> est = reweighted_mean(f, torch.log(torch.tensor([1.0, 1.0, 2.0])))
        >>> round(est.value.item(), 4), round(est.stderr.item(), 4)
        (2.25, 0.4921)
    """
    who = "reweighted_mean"
    lw = check_log_weights(log_w, who, min_size=2)
    f = check_values(observable_values, lw, who, "observable values")
    wn = torch.softmax(lw, 0).reshape(*lw.shape, *([1] * (f.dim() - lw.dim())))
    mean = (wn * f).sum(0)
    var = (wn.square() * (f - mean).square()).sum(0)
    return Estimate(mean, var.sqrt())


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

    positive when ``A`` is the more probable region: a ratio of two self-normalised
    importance-sampling estimates with the same weights (the normalisation cancels). With
    ``S_A = mean_i w_i 1_A(x_i)`` and ``S_B`` likewise, the delta method applied to
    ``log S_A - log S_B`` gives

    .. math::

        \mathrm{se}^2 = \frac{1}{n}\,\mathrm{Var}_i\!\left(
            \frac{w_i 1_B(x_i)}{S_B} - \frac{w_i 1_A(x_i)}{S_A}\right),

    which includes the covariance of the two sums (the regions may overlap). Computed in log
    space, per context row. Even with a perfect proposal this error is at least that of exact
    sampling, ``1 / sqrt(n P(A) P(B))`` for complementary regions;
    ``physics.stratified.stratified_free_energy_difference`` gets below it with a flow.

    Arguments:
        x: the samples ``(n, *cbatch, *event_shape)``; only needed when a region is a callable
            (else may be ``None``).
        log_w: ``(n, *cbatch)`` log importance weights.
        region_a, region_b: boolean masks of ``log_w``'s shape, or callables ``x -> mask``.

    Returns:
        An :class:`Estimate` of ``F_B - F_A`` in units of ``kT``, shape ``cbatch``.

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
    lw = check_log_weights(log_w, who, min_size=2)
    n = lw.shape[0]
    in_a = region_mask(region_a, x, lw, who, "region_a")
    in_b = region_mask(region_b, x, lw, who, "region_b")
    neg_inf = torch.full_like(lw, -math.inf)
    log_sums = []
    for name, mask in (("region_a", in_a), ("region_b", in_b)):
        log_sum = torch.logsumexp(torch.where(mask, lw, neg_inf), 0)
        empty = ~torch.isfinite(log_sum)
        if bool(empty.any()):
            row = int(empty.reshape(-1).nonzero()[0])
            count = int(mask.reshape(n, -1)[:, row].sum())
            where = "" if lw.dim() == 1 else f" in context row {row}"
            raise InvalidInput(
                f"{who}: {name} holds {count} of {n} samples{where} and none with positive "
                "weight, so its probability cannot be estimated; draw more samples or check "
                "the region"
            )
        log_sums.append(log_sum)
    log_sum_a, log_sum_b = log_sums
    # Per-sample influence terms n * (w_i 1_B / sum_B - w_i 1_A / sum_A); their mean is zero.
    share_a = torch.where(in_a, torch.exp(lw - log_sum_a), torch.zeros_like(lw))
    share_b = torch.where(in_b, torch.exp(lw - log_sum_b), torch.zeros_like(lw))
    influence = n * (share_b - share_a)
    stderr = influence.std(0, unbiased=True) / math.sqrt(n)
    return Estimate(log_sum_a - log_sum_b, stderr)
