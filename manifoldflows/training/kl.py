r"""Forward, reverse and mixed KL training that survives bad samples: :class:`KLObjective`.

The objectives of :mod:`~manifoldflows.training.objectives` stop a run at the first sample with
a NaN/inf energy (the right default for a well-posed target). Energy-based training of flows
on molecules meets such samples as a matter of course (clashing atoms, configurations outside
the target's support such as the wrong enantiomer, given ``u = +inf``), so
:class:`KLObjective` *drops* them from the reverse-KL average instead and counts them, and it
reports the effective sample size of every batch, for :class:`~manifoldflows.training.Monitor`.
One class covers maximum likelihood, reverse KL, their weighted mix and temperature annealing,
so that the methods differ only in their arguments.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import positive_float, positive_int
from .._validation import validation
from ..errors import InvalidInput, NonFiniteOutput
from ..estimators import effective_sample_size, sample_with_log_q
from ..losses import forward_kl
from ..targets import Target, check_target_space, energy_fn, target_energy
from .batches import Minibatches, to_model
from .objectives import _initialize_actnorm

__all__ = ["KLObjective", "robust_reverse_kl"]


def robust_reverse_kl(
    model: nn.Module,
    target: Target,
    n: int,
    *,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    who: str = "robust_reverse_kl",
) -> tuple[Tensor, Tensor, int]:
    r"""Reverse KL against ``exp(-u / T)`` over the samples with finite energy and density.

    .. math::

        \mathcal{L} = \frac{1}{|K|}\sum_{i \in K}\Big[\log q(x_i) + \frac{u(x_i)}{T}\Big],
        \qquad x_i \sim q, \quad K = \{i : u(x_i), \log q(x_i) \text{ finite}\},

    with the pathwise gradient of :func:`~manifoldflows.losses.reverse_kl`. Samples outside
    ``K`` (``u = +inf``: outside the target's support; NaN: a failed evaluation) are dropped,
    i.e. the loss is that of the target restricted to where it is finite, and their gradients
    (which may be NaN for an infinite energy) are zeroed at the sample. The model is sampled
    with the package's input/output checks off (:func:`manifoldflows.validation`), since every
    sample is checked here.

    Arguments:
        model: a distribution or flow with ``sample_and_log_prob``.
        target: callable ``x -> u(x)`` or object with ``.energy(x)``.
        n: number of samples.
        temperature: ``T`` (the loss uses ``u / T``).
        generator: random generator for the samples.
        who: name used in error messages.

    Returns:
        ``(loss, log_w, dropped)``: the scalar loss; the detached log importance weights
        ``-u - log q`` of the samples w.r.t. the untempered target (``-inf`` for dropped
        ones), shape ``(n,)``; the number of dropped samples.

    Raises:
        NonFiniteOutput: when no sample has a finite energy and density.

    Example:
        >>> import torch
        >>> from manifoldflows.distributions import StandardNormal
        >>> u = lambda x: torch.where(x[:, 0] > 0, 0.5 * (x**2).sum(-1), torch.inf)  # half-plane
        >>> loss, log_w, dropped = robust_reverse_kl(StandardNormal(2), u, 1000)
        >>> 400 < dropped < 600, bool(torch.isfinite(loss))
        (True, True)
    """
    with validation(False):
        x, log_q = sample_with_log_q(model, n, None, generator, who)
        u = target_energy(target, x, log_q.shape, None, who)
    keep = torch.isfinite(u) & torch.isfinite(log_q)
    dropped = int(keep.numel() - keep.sum())
    if dropped == keep.numel():
        raise NonFiniteOutput(
            f"{who}: every one of the {keep.numel()} samples has a NaN/inf energy or density; "
            "regularise the energy (e.g. lin-log cut) or start from a better flow"
        )
    terms = log_q + u / temperature
    if dropped:
        loss = terms[keep].mean()
        if x.requires_grad:  # a NaN/inf force of a dropped sample must not reach the flow
            rows = keep.reshape(*keep.shape, *([1] * (x.dim() - keep.dim())))
            x.register_hook(lambda g: torch.where(rows, g, torch.zeros_like(g)))
    else:
        loss = terms.mean()
    log_w = torch.where(keep, -u - log_q, torch.full_like(u, -math.inf)).detach()
    return loss, log_w, dropped


class KLObjective:
    r"""``lambda`` forward KL on data plus ``1 - lambda`` reverse KL at temperature ``T(step)``.

    .. math::

        \mathcal{L}_k = \lambda\Big(-\frac1m\sum_{j\in B_k}\log q(x_j)\Big)
            + (1-\lambda)\,\frac{1}{|K|}\sum_{i\in K}\Big[\log q(y_i) + \frac{u(y_i)}{T(k)}\Big],
        \qquad y_i \sim q,

    as an :class:`~manifoldflows.training.Objective` for :func:`~manifoldflows.training.fit`:

    * ``lambda = 1`` (data, no target needed): maximum likelihood on minibatches ``B_k`` of the
      data (:class:`~manifoldflows.training.Minibatches`; ActNorm layers are initialised on the
      first batch);
    * ``lambda = 0`` (target, no data): reverse KL, robust to bad samples
      (:func:`robust_reverse_kl`: samples with NaN/inf energy or density are dropped and
      counted);
    * ``0 < lambda < 1``: both (the mixed training of Boltzmann generators, Noe et al. 2019);
    * ``temperature`` a schedule (e.g. :func:`~manifoldflows.training.geometric_annealing`):
      the reverse term targets ``exp(-u / T(k))``, hot first (flatter barriers) and then the
      real target.

    After every call, :attr:`diagnostics` holds ``"ess"``, the relative Kish ESS of the
    batch's importance weights ``-u - log q`` w.r.t. the *untempered* target (dropped samples
    count as zero weights), ``"temperature"`` and ``"dropped"``. With ``lambda = 1`` the
    samples are not needed for training; given a target and ``monitor_every``, the ESS is
    measured every ``monitor_every`` steps on ``monitor_samples`` fresh samples without
    gradient, and those evaluations are reported as ``"monitor_evaluations"`` (see
    :class:`~manifoldflows.training.Monitor`).

    Arguments:
        target: callable ``x -> u(x)`` or object with ``.energy(x)`` (needed unless
            ``forward_weight = 1``).
        data: training points ``(N, *event_shape)`` (needed if ``forward_weight > 0``).
        forward_weight: ``lambda`` in ``[0, 1]`` (default: 1 with data only, 0 with a target
            only; required with both).
        batch_size: model samples per step (reverse term).
        data_batch_size: data rows per step (default ``batch_size``).
        temperature: ``T``, a number or a schedule ``step -> T``.
        monitor_every: with ``lambda = 1`` and a target, measure the ESS every this many steps
            (``None``: never).
        monitor_samples: samples per ESS measurement (default ``batch_size``).
        generator: random generator for the samples and the data order.

    References:
        F. Noe, S. Olsson, J. Koehler, H. Wu, "Boltzmann generators: sampling equilibrium
        states of many-body systems with deep learning", Science 365 (2019), arXiv:1812.01729.
        L. Kish, "Survey sampling", Wiley (1965) (effective sample size).

    Example:
        >>> import torch
        >>> from manifoldflows.distributions import DiagNormal
        >>> from manifoldflows.training import fit, geometric_annealing
        >>> u = lambda x: 0.5 * ((x - 2.0) ** 2).sum(-1)
        >>> data = 2.0 + torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
        >>> objective = KLObjective(u, data, forward_weight=0.5, batch_size=128,
        ...                         temperature=geometric_annealing(4.0, 1.0, 50))
        >>> _ = fit(q := DiagNormal(2), objective=objective, steps=300, lr=0.05, progress=False)
        >>> objective.diagnostics["temperature"], objective.diagnostics["ess"] > 0.9
        (1.0, True)
    """

    def __init__(
        self,
        target: Target | None = None,
        data: Tensor | None = None,
        *,
        forward_weight: float | None = None,
        batch_size: int = 256,
        data_batch_size: int | None = None,
        temperature: float | Callable[[int], float] = 1.0,
        monitor_every: int | None = None,
        monitor_samples: int | None = None,
        generator: torch.Generator | None = None,
    ):
        who = type(self).__name__
        if forward_weight is None:
            if target is not None and data is not None:
                raise InvalidInput(
                    f"{who}: with both a target and data, give forward_weight (the weight of "
                    "the maximum-likelihood term in [0, 1])"
                )
            forward_weight = 1.0 if target is None else 0.0
        if isinstance(forward_weight, bool) or not isinstance(forward_weight, (int, float)):
            raise InvalidInput(f"{who}: expected a real forward_weight, got {forward_weight!r}")
        self.forward_weight = float(forward_weight)
        if not 0.0 <= self.forward_weight <= 1.0:
            raise InvalidInput(f"{who}: expected forward_weight in [0, 1], got {forward_weight}")
        if self.forward_weight > 0.0 and data is None:
            raise InvalidInput(f"{who}: forward_weight={forward_weight} needs data")
        if self.forward_weight < 1.0 and target is None:
            raise InvalidInput(f"{who}: forward_weight={forward_weight} needs a target")
        if target is not None:
            energy_fn(target)  # refuse a non-target now
        self.target = target
        self.batch_size = positive_int(batch_size, "batch_size", who)
        data_batch_size = self.batch_size if data_batch_size is None else data_batch_size
        self.batches = None
        if data is not None and self.forward_weight > 0.0:
            self.batches = Minibatches(
                data,
                None,
                positive_int(data_batch_size, "data_batch_size", who),
                generator=generator,
            )
        if not callable(temperature):
            temperature = positive_float(temperature, "temperature", who)
        self.temperature = temperature
        if monitor_every is not None:
            monitor_every = positive_int(monitor_every, "monitor_every", who)
        self.monitor_every = monitor_every
        self.monitor_samples = positive_int(
            self.batch_size if monitor_samples is None else monitor_samples, "monitor_samples", who
        )
        self.generator = generator
        self.diagnostics: dict[str, float] = {}
        self._checked = False

    def temperature_at(self, step: int) -> float:
        """The temperature of the reverse term at ``step``."""
        if not callable(self.temperature):
            return self.temperature
        return positive_float(
            self.temperature(step), f"temperature at step {step}", type(self).__name__
        )

    def __call__(self, model: nn.Module, step: int) -> Tensor:
        who = type(self).__name__
        if self.target is not None and not self._checked:
            check_target_space(model, self.target, who)
            self._checked = True
        temperature = self.temperature_at(step)
        self.diagnostics = {"temperature": temperature}
        total = None
        if self.forward_weight > 0.0:
            batch = to_model(next(self.batches)[0], model)
            if step == 0:
                _initialize_actnorm(model, batch, None)
            total = self.forward_weight * forward_kl(model, batch)
        if self.forward_weight < 1.0:
            loss, log_w, dropped = robust_reverse_kl(
                model,
                self.target,
                self.batch_size,
                temperature=temperature,
                generator=self.generator,
                who=who,
            )
            self._report(log_w, dropped)
            reverse = (1.0 - self.forward_weight) * loss
            total = reverse if total is None else total + reverse
        elif self.target is not None and self.monitor_every and step % self.monitor_every == 0:
            with torch.no_grad():
                _, log_w, dropped = robust_reverse_kl(
                    model, self.target, self.monitor_samples, generator=self.generator, who=who
                )
            self._report(log_w, dropped)
            self.diagnostics["monitor_evaluations"] = float(self.monitor_samples)
        return total

    def _report(self, log_w: Tensor, dropped: int) -> None:
        ess = float(effective_sample_size(log_w)) if bool(torch.isfinite(log_w).any()) else 0.0
        self.diagnostics.update(ess=ess, dropped=float(dropped))

    def state_dict(self) -> dict[str, Any]:
        """The data order (see :meth:`Minibatches.state_dict`)."""
        return {"batches": None if self.batches is None else self.batches.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict`."""
        if self.batches is not None and state.get("batches") is not None:
            self.batches.load_state_dict(state["batches"])
