r"""Training objectives that are told the step number: ``objective(model, step) -> loss``.

An :class:`Objective` is any callable taking the model and the number of optimizer steps
already taken (``0`` for the first step) and returning a scalar loss. Knowing the step, a
schedule (temperature annealing, a warm-up of a loss weight) is a pure function of it: no
counter hidden in a closure, and a run resumed from a checkpoint continues the schedule where
it was. Objectives that hold state of their own (the minibatch order) offer ``state_dict`` /
``load_state_dict`` so that checkpoints include it.

* :class:`MinibatchLoss` / :func:`maximum_likelihood`: a loss on successive minibatches of
  data (forward KL by default, with data-dependent ActNorm initialisation on the first batch);
* :class:`ReverseKL` / :func:`annealed_reverse_kl`: reverse KL against ``u(x) / T(step)``;
* :func:`geometric_annealing`: the temperature schedule ``T(step)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from .._checks import positive_float, positive_int
from ..losses import forward_kl, reverse_kl
from ..targets import Target, energy_fn
from .batches import Minibatches, to_model

__all__ = [
    "Objective",
    "MinibatchLoss",
    "maximum_likelihood",
    "ReverseKL",
    "annealed_reverse_kl",
    "geometric_annealing",
]


@runtime_checkable
class Objective(Protocol):
    """A training objective: ``objective(model, step) -> scalar loss tensor``.

    ``step`` is the number of optimizer steps taken before this one (``0, 1, 2, ...``), so a
    resumed run passes the same numbers as an uninterrupted one.

    Example:
        >>> import torch
        >>> def pull_to_three(model, step):
        ...     return ((model.weight - 3.0) ** 2).sum()
        >>> isinstance(pull_to_three, Objective)
        True
    """

    def __call__(self, model: nn.Module, step: int) -> Tensor: ...


def _initialize_actnorm(model: nn.Module, x: Tensor, context: Tensor | None) -> int:
    """Data-dependent initialisation of the model's ActNorm layers, where the model has any."""
    from ..core import Flow
    from ..transforms import normalization

    init = getattr(normalization, "initialize_actnorm", None)
    if init is None or not isinstance(model, Flow):
        return 0
    return init(model, x, context)


class MinibatchLoss:
    """``loss_fn(model, batch, batch_context)`` on the next minibatch of ``data``, as an objective.

    Each call draws the next batch from a :class:`Minibatches` (restorable, so checkpoints
    include the batch order), moves it to the model's device and dtype, and evaluates
    ``loss_fn`` (default: :func:`~manifoldflows.losses.forward_kl`, i.e. maximum likelihood).
    Without ``data``, ``loss_fn(model, None, context)`` is called with the whole ``context``.

    With ``initialize_actnorm``, the call at step ``0`` first runs
    :func:`~manifoldflows.transforms.initialize_actnorm` on its batch, so every ActNorm layer of
    a flow starts from the statistics of the data (Glow's data-dependent initialisation); a
    resumed run (step > 0) keeps the loaded layers as they are.

    Arguments:
        loss_fn: ``(model, batch, batch_context) -> scalar`` (``None``: forward KL).
        data: training points ``(N, *event_shape)``, or ``None``.
        context: context rows matching ``data`` (or any context ``loss_fn`` takes without data).
        batch_size: rows per batch.
        generator: random generator for the batch order (see :class:`Minibatches`).
        initialize_actnorm: initialise ActNorm layers on the first batch (``None``: when
            ``loss_fn`` is the default forward KL and there is data).

    Example:
        >>> import torch
        >>> from manifoldflows.distributions import DiagNormal
        >>> x = torch.arange(6.0).reshape(3, 2)  # float32 data, float64 model
        >>> def first_column_sum(model, batch, context):
        ...     return (batch[:, 0] * model.loc[0]).sum()
        >>> objective = MinibatchLoss(first_column_sum, x, batch_size=2)
        >>> q = DiagNormal(2, loc=1.0).double()
        >>> [objective(q, k).dtype for k in range(2)]
        [torch.float64, torch.float64]
        >>> [len(next(objective.batches)[0]) for k in range(3)]  # rows per batch
        [2, 2, 2]
    """

    def __init__(
        self,
        loss_fn: Callable[[nn.Module, Tensor | None, Tensor | None], Tensor] | None = None,
        data: Tensor | None = None,
        context: Tensor | None = None,
        *,
        batch_size: int = 256,
        generator: torch.Generator | None = None,
        initialize_actnorm: bool | None = None,
    ):
        if loss_fn is None and data is None:
            raise TypeError("MinibatchLoss: the default forward-KL loss needs data")
        self.loss_fn = forward_kl if loss_fn is None else loss_fn
        self.batches = (
            None if data is None else Minibatches(data, context, batch_size, generator=generator)
        )
        self.context = context
        if initialize_actnorm is None:
            initialize_actnorm = loss_fn is None and data is not None
        self.initialize_actnorm = bool(initialize_actnorm)

    def __call__(self, model: nn.Module, step: int) -> Tensor:
        batch, ctx = (None, self.context) if self.batches is None else next(self.batches)
        batch, ctx = to_model(batch, model), to_model(ctx, model)
        if self.initialize_actnorm and step == 0 and batch is not None:
            _initialize_actnorm(model, batch, ctx)
        return self.loss_fn(model, batch, ctx)

    def state_dict(self) -> dict[str, Any]:
        """The batch order (see :meth:`Minibatches.state_dict`)."""
        return {"batches": None if self.batches is None else self.batches.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict`."""
        if self.batches is not None and state.get("batches") is not None:
            self.batches.load_state_dict(state["batches"])


def maximum_likelihood(
    data: Tensor,
    context: Tensor | None = None,
    *,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
) -> MinibatchLoss:
    r"""Forward KL (mean negative log-likelihood) on minibatches of ``data``, as an objective.

    :math:`\mathcal{L}_k = -\frac1B\sum_{i\in B_k}\log q(x_i \mid c_i)` on the ``k``-th
    minibatch; ActNorm layers are initialised on the first batch (see :class:`MinibatchLoss`).

    Arguments:
        data: training points ``(N, *event_shape)``.
        context: their context rows ``(N, context_dim)``, or ``None``.
        batch_size: rows per minibatch.
        generator: random generator for the batch order.

    Returns:
        A :class:`MinibatchLoss`.

    Example:
        >>> import torch
        >>> from manifoldflows.distributions import DiagNormal
        >>> from manifoldflows.training import training_step
        >>> x = 3.0 + torch.randn(512, 1, generator=torch.Generator().manual_seed(0))
        >>> q = DiagNormal(1)
        >>> objective = maximum_likelihood(x, batch_size=128)
        >>> opt = torch.optim.Adam(q.parameters(), lr=0.1)
        >>> for step in range(200):
        ...     _ = training_step(q, opt, objective(q, step))
        >>> abs(q.loc.item() - 3.0) < 0.2
        True
    """
    return MinibatchLoss(None, data, context, batch_size=batch_size, generator=generator)


class _Tempered:
    """The target ``u(x) / T``, keeping the target's ``space`` and its use of the context."""

    def __init__(self, target: Target, temperature: float):
        self.energy_of, self.temperature = energy_fn(target), temperature
        self.space = getattr(target, "space", None)

    def energy(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        # the context reaches the target only if it takes one (manifoldflows.targets)
        return self.energy_of(x, context) / self.temperature


class ReverseKL:
    r"""Reverse KL against the tempered target ``exp(-u(x) / T(step))``, as an objective.

    .. math::

        \mathcal{L}_k = \frac1n\sum_{i=1}^n \left[\log q(x_i) + \frac{u(x_i)}{T(k)}\right],
        \qquad x_i \sim q,

    evaluated with :func:`~manifoldflows.losses.reverse_kl` (``n`` fresh reparameterised
    samples per step). At ``T = 1`` it is the plain reverse-KL objective; a hot start
    (``T > 1`` flattens the barriers) lowered to ``T = 1`` keeps mode-seeking training from
    settling in one well.

    Arguments:
        target: callable ``x -> u(x)`` or object with ``.energy(x)`` (reduced energy).
        batch_size: model samples per step.
        temperature: a number, or a schedule ``step -> T`` (e.g. :func:`geometric_annealing`).
        context: conditioning passed to the model (and the losses) as is.
        generator: random generator for the model samples.

    References:
        Noe, Olsson, Koehler & Wu, "Boltzmann generators", Science 2019, arXiv:1812.01729.

    Example:
        >>> import torch
        >>> from manifoldflows.distributions import StandardNormal
        >>> u = lambda x: 0.5 * (x**2).sum(-1)
        >>> objective = ReverseKL(u, 4096, temperature=lambda step: 2.0 if step < 10 else 1.0)
        >>> objective.temperature_at(0), objective.temperature_at(10)
        (2.0, 1.0)
        >>> round(objective(StandardNormal(2), 10).item(), 1)  # KL = 0 at T = 1: -log(2 pi)
        -1.8
    """

    def __init__(
        self,
        target: Target,
        batch_size: int = 256,
        *,
        temperature: float | Callable[[int], float] = 1.0,
        context: Tensor | None = None,
        generator: torch.Generator | None = None,
    ):
        energy_fn(target)  # refuse a non-target now rather than at the first step
        self.target = target
        self.batch_size = positive_int(batch_size, "batch_size", type(self).__name__)
        if not callable(temperature):
            temperature = positive_float(temperature, "temperature", type(self).__name__)
        self.temperature = temperature
        self.context, self.generator = context, generator

    def temperature_at(self, step: int) -> float:
        """The temperature used at ``step`` (a positive finite number)."""
        if not callable(self.temperature):
            return self.temperature
        return positive_float(self.temperature(step), f"temperature at step {step}", "ReverseKL")

    def __call__(self, model: nn.Module, step: int) -> Tensor:
        temperature = self.temperature_at(step)
        target = self.target if temperature == 1.0 else _Tempered(self.target, temperature)
        ctx = to_model(self.context, model)
        return reverse_kl(model, target, self.batch_size, ctx, generator=self.generator)


def geometric_annealing(start: float, end: float = 1.0, steps: int = 1) -> Callable[[int], float]:
    r"""The schedule ``T(k) = start^(1 - f) * end^f`` with ``f = min(1, k / steps)``.

    Geometric interpolation from ``start`` at step ``0`` to ``end`` at step ``steps``, constant
    ``end`` afterwards (so ``steps`` is the length of the annealing phase, e.g. 60 % of a run).

    Arguments:
        start: temperature at step 0.
        end: final temperature.
        steps: steps over which the temperature moves from ``start`` to ``end``.

    Returns:
        A function ``step -> temperature``.

    Example:
        >>> schedule = geometric_annealing(4.0, 1.0, steps=10)
        >>> [schedule(k) for k in (0, 5, 10, 20)]
        [4.0, 2.0, 1.0, 1.0]
    """
    start = positive_float(start, "start temperature", "geometric_annealing")
    end = positive_float(end, "end temperature", "geometric_annealing")
    steps = positive_int(steps, "number of annealing steps", "geometric_annealing")

    def schedule(step: int) -> float:
        f = min(1.0, max(0.0, step / steps))
        return start ** (1.0 - f) * end**f

    return schedule


def annealed_reverse_kl(
    target: Target,
    batch_size: int = 256,
    *,
    start: float,
    end: float = 1.0,
    steps: int,
    context: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> ReverseKL:
    """Reverse KL with the temperature lowered geometrically from ``start`` to ``end``.

    Shorthand for ``ReverseKL(target, batch_size,
    temperature=geometric_annealing(start, end, steps))``; after ``steps`` steps it is plain
    reverse KL against the real target (at ``end = 1``).

    Arguments:
        target: callable ``x -> u(x)`` or object with ``.energy(x)``.
        batch_size: model samples per step.
        start: temperature at step 0.
        end: temperature from step ``steps`` on.
        steps: length of the annealing phase in steps.
        context: conditioning passed to the model as is.
        generator: random generator for the model samples.

    Returns:
        A :class:`ReverseKL` objective.

    Example:
        >>> import torch
        >>> from manifoldflows.presets import NSF
        >>> from manifoldflows.training import fit
        >>> u = lambda x: ((x**2 - 1.0) ** 2).sum(-1) * 3.0  # two wells per coordinate
        >>> objective = annealed_reverse_kl(u, 64, start=5.0, steps=6)
        >>> [round(objective.temperature_at(k), 3) for k in (0, 3, 6, 9)]
        [5.0, 2.236, 1.0, 1.0]
        >>> history = fit(NSF(2, layers=1), objective=objective, steps=10, progress=False)
        >>> len(history.train_loss)
        10
    """
    schedule = geometric_annealing(start, end, steps)
    return ReverseKL(target, batch_size, temperature=schedule, context=context, generator=generator)
