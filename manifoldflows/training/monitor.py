r"""Budget and progress of energy-based training: :class:`CountedTarget` and :class:`Monitor`.

Methods that train a flow against an energy (reverse KL, annealing, FAB) are compared by what
they reach for a given number of **target evaluations** and a given **wall time**. Two small
pieces record both without touching the training loop:

* :class:`CountedTarget` wraps a target and counts the configurations it is evaluated on
  (every energy call, including those inside MCMC transitions and gradient evaluations);
* :class:`Monitor` wraps an objective ``(model, step) -> loss`` for
  :func:`~manifoldflows.training.fit`: it shows a ``tqdm`` progress bar with the loss, the
  effective sample size of the step's importance weights and the number of target evaluations
  so far, and keeps a :class:`TrainingRecord` of them per step (with the wall time), which
  checkpoints include (it has a ``state_dict``), so a resumed run continues the record.

An objective reports its diagnostics by setting ``objective.diagnostics``, a dict of floats
refreshed at every call: ``"ess"`` (relative Kish ESS of the step's importance weights w.r.t.
the target), and anything else it measures (``"temperature"``, ``"ess_ais"``, ...).
Evaluations made only to monitor (not to train) are reported as
``diagnostics["monitor_evaluations"]`` (their number in this step) and kept apart from the
training budget.

Example:
    >>> import torch
    >>> from manifoldflows.distributions import DiagNormal
    >>> from manifoldflows.training import KLObjective, fit
    >>> target = CountedTarget(lambda x: 0.5 * ((x - 1.0) ** 2).sum(-1))
    >>> monitor = Monitor(KLObjective(target, batch_size=64), target, progress=False)
    >>> _ = fit(DiagNormal(2), objective=monitor, steps=20, lr=0.05, progress=False)
    >>> monitor.record.step[-1], monitor.record.energy_evaluations[-1], target.count
    (20, 1280, 1280)
    >>> 0.0 < monitor.record.diagnostics["ess"][-1] <= 1.0
    True
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import tqdm
from torch import Tensor, nn

from ..errors import InvalidInput
from ..targets import Target, energy_fn
from .objectives import Objective

__all__ = ["CountedTarget", "Monitor", "TrainingRecord"]


class CountedTarget:
    """A target that counts the configurations it is evaluated on.

    ``energy(x, context=None)`` evaluates the wrapped target (see
    :mod:`manifoldflows.targets`) and adds the number of configurations in ``x`` (the product
    of its batch shape) to :attr:`count`. Gradients flow through unchanged, so MCMC
    transitions that need forces count one evaluation per gradient, as they cost one.

    Arguments:
        target: a callable ``x -> u(x)`` or an object with ``.energy(x)``; its ``space`` and
            ``log_Z`` (when it has them) are passed on.

    Attributes:
        count: configurations evaluated so far (a ``state_dict`` holds it).
        target: the wrapped target.

    Example:
        >>> import torch
        >>> u = CountedTarget(lambda x: (x**2).sum(-1))
        >>> _ = u.energy(torch.zeros(3, 4, 2))
        >>> _ = u(torch.zeros(5, 2))
        >>> u.count
        17
    """

    def __init__(self, target: Target):
        self._fn = energy_fn(target)
        self.target = target
        self.space = getattr(target, "space", None)
        self.log_Z = getattr(target, "log_Z", None)
        event_ndim = getattr(self.space, "event_ndim", 1)
        self._event_ndim = event_ndim if isinstance(event_ndim, int) else 1
        self.count = 0

    def energy(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """The wrapped target's ``u(x | context)``, counted."""
        self.count += math.prod(x.shape[: x.dim() - self._event_ndim])
        return self._fn(x, context)

    __call__ = energy

    def __repr__(self) -> str:
        return f"CountedTarget({self.target!r}, count={self.count})"

    def state_dict(self) -> dict[str, int]:
        """The count."""
        return {"count": self.count}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue counting from a :meth:`state_dict`."""
        self.count = int(state["count"])


@dataclass
class TrainingRecord:
    """Per-step diagnostics of a monitored run (one entry per optimizer step).

    Attributes:
        step: step numbers ``1, 2, ...``.
        loss: the training loss at each step (before the update).
        energy_evaluations: target evaluations spent on training up to and including the step.
        monitor_evaluations: target evaluations spent on monitoring only, up to the step.
        wall_time: seconds since the start of the run when the step's loss was ready (summed
            over resumed runs).
        diagnostics: per name (``"ess"``, ``"temperature"``, ...), the value at each step
            (NaN where the objective did not report it).

    Example:
        >>> r = TrainingRecord(step=[1], loss=[2.0], energy_evaluations=[64],
        ...                    monitor_evaluations=[0], wall_time=[0.1],
        ...                    diagnostics={"ess": [0.5]})
        >>> r.final("ess"), TrainingRecord.from_state_dict(r.state_dict()) == r
        (0.5, True)
    """

    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    energy_evaluations: list[int] = field(default_factory=list)
    monitor_evaluations: list[int] = field(default_factory=list)
    wall_time: list[float] = field(default_factory=list)
    diagnostics: dict[str, list[float]] = field(default_factory=dict)

    def final(self, name: str) -> float | None:
        """The last finite value of a diagnostic (``None`` if it never had one)."""
        for value in reversed(self.diagnostics.get(name, [])):
            if math.isfinite(value):
                return value
        return None

    def state_dict(self) -> dict[str, Any]:
        """Plain-Python copy (lists, dicts, floats)."""
        return asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> TrainingRecord:
        """Inverse of :meth:`state_dict`."""
        return cls(
            step=list(state["step"]),
            loss=list(state["loss"]),
            energy_evaluations=list(state["energy_evaluations"]),
            monitor_evaluations=list(state["monitor_evaluations"]),
            wall_time=list(state["wall_time"]),
            diagnostics={k: list(v) for k, v in state["diagnostics"].items()},
        )

    def _append(
        self,
        step: int,
        loss: float,
        evaluations: int,
        monitor: int,
        seconds: float,
        diagnostics: dict[str, float],
    ) -> None:
        n = len(self.step)
        for name in diagnostics:
            self.diagnostics.setdefault(name, [math.nan] * n)
        for name, values in self.diagnostics.items():
            values.append(float(diagnostics.get(name, math.nan)))
        self.step.append(step)
        self.loss.append(loss)
        self.energy_evaluations.append(evaluations)
        self.monitor_evaluations.append(monitor)
        self.wall_time.append(seconds)


def _short(value: float) -> str:
    """A compact number for the progress bar."""
    if not math.isfinite(value):
        return str(value)
    if value == int(value) and abs(value) < 1e5:
        return str(int(value))
    return f"{value:.3g}"


class Monitor:
    r"""An objective wrapper with a progress bar and a per-step record of loss, ESS and budget.

    ``monitor(model, step)`` evaluates the wrapped objective, then records, for this step, the
    loss, the objective's ``diagnostics`` (see the module docstring), the number of
    evaluations of ``target`` so far (a :class:`CountedTarget`; evaluations the objective
    declares as monitoring only are subtracted) and the wall time, and updates a ``tqdm`` bar
    whose postfix shows ``loss``, ``ess`` (relative, in percent; the latest measured),
    ``evals`` and, once it has differed from 1, the ``temperature``. It is itself an
    :class:`~manifoldflows.training.Objective` and has a ``state_dict`` (the record, the count,
    the elapsed time and the wrapped objective's own state), so ``fit(model,
    objective=monitor, checkpoint=..., resume=True)`` resumes all of
    them. Call :meth:`close` (or use it as a context manager) to close the bar.

    Arguments:
        objective: the objective ``(model, step) -> loss`` to monitor.
        target: the :class:`CountedTarget` the objective evaluates (``None``: no budget).
        steps: total number of steps, for the bar (``None``: no total).
        progress: show the bar (on stderr).
        desc: the bar's label.

    Attributes:
        record: the :class:`TrainingRecord`.
        objective, target: as given.

    Example:
        See the module docstring.
    """

    def __init__(
        self,
        objective: Objective,
        target: CountedTarget | None = None,
        *,
        steps: int | None = None,
        progress: bool = True,
        desc: str = "train",
    ):
        if not callable(objective):
            raise TypeError(
                f"Monitor: expected an objective (model, step) -> loss, got "
                f"{type(objective).__name__}"
            )
        if target is not None and not isinstance(target, CountedTarget):
            raise InvalidInput(
                f"Monitor: expected the target as a CountedTarget, got {type(target).__name__}"
            )
        self.objective = objective
        self.target = target
        self.steps = steps
        self.progress = bool(progress)
        self.desc = desc
        self.record = TrainingRecord()
        self._monitor_evaluations = 0
        self._elapsed = 0.0  # seconds of earlier (resumed) runs
        self._start: float | None = None
        self._bar: tqdm.tqdm | None = None

    # ------------------------------------------------------------------ objective
    def __call__(self, model: nn.Module, step: int) -> Tensor:
        if self._start is None:
            self._start = time.perf_counter()
        loss = self.objective(model, step)
        diagnostics = dict(getattr(self.objective, "diagnostics", None) or {})
        self._monitor_evaluations += int(diagnostics.pop("monitor_evaluations", 0))
        counted = 0 if self.target is None else self.target.count
        evaluations = counted - self._monitor_evaluations
        seconds = self._elapsed + time.perf_counter() - self._start
        value = float(loss.detach()) if isinstance(loss, Tensor) else math.nan
        self.record._append(
            step + 1, value, evaluations, self._monitor_evaluations, seconds, diagnostics
        )
        self._show(step, value, evaluations, diagnostics)
        return loss

    def _show(
        self, step: int, loss: float, evaluations: int, diagnostics: dict[str, float]
    ) -> None:
        if not self.progress:
            return
        if self._bar is None:
            self._bar = tqdm.tqdm(
                total=self.steps, initial=step, desc=self.desc, dynamic_ncols=True
            )
        postfix = {"loss": f"{loss:.4g}"}
        ess = self.record.final("ess")  # the latest measured, also between measurements
        if ess is not None:
            postfix["ess"] = f"{100.0 * ess:.3g}%"
        if self.target is not None:
            postfix["evals"] = _short(float(evaluations))
        if any(t != 1.0 for t in self.record.diagnostics.get("temperature", [])):
            postfix["T"] = f"{diagnostics.get('temperature', math.nan):.3g}"
        self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        """Close the progress bar (a later call opens a new one)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The record, the evaluation counts, the elapsed time and the objective's state."""
        elapsed = self._elapsed
        if self._start is not None:
            elapsed += time.perf_counter() - self._start
        inner = getattr(self.objective, "state_dict", None)
        return {
            "record": self.record.state_dict(),
            "monitor_evaluations": self._monitor_evaluations,
            "elapsed": elapsed,
            "target": None if self.target is None else self.target.state_dict(),
            "objective": inner() if callable(inner) else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict` (the clock restarts at the next step)."""
        self.record = TrainingRecord.from_state_dict(state["record"])
        self._monitor_evaluations = int(state["monitor_evaluations"])
        self._elapsed = float(state["elapsed"])
        self._start = None
        if self.target is not None and state.get("target") is not None:
            self.target.load_state_dict(state["target"])
        loader = getattr(self.objective, "load_state_dict", None)
        if callable(loader) and state.get("objective") is not None:
            loader(state["objective"])
