"""The record of a training run: :class:`History` (losses per step, validation, best round)."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

__all__ = ["History"]


@dataclass
class History:
    """What happened during :func:`~manifoldflows.training.fit`.

    Attributes:
        step: optimizer step numbers ``1, 2, ...`` (one entry per step).
        train_loss: training loss at each of those steps (before the update).
        val_step: steps after which the validation set was evaluated.
        val_loss: mean validation negative log-likelihood at those steps (nats).
        best_val_loss: lowest validation loss seen (``None`` without validation).
        best_step: step at which it was reached.
        stopped_early: whether early stopping ended the run before ``steps``.
        wall_time: seconds spent in :func:`~manifoldflows.training.fit` (summed over resumed
            runs).

    Example:
        >>> h = History(step=[1, 2], train_loss=[1.0, 0.5])
        >>> h.final_train_loss
        0.5
    """

    step: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_step: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_val_loss: float | None = None
    best_step: int | None = None
    stopped_early: bool = False
    wall_time: float = 0.0

    @property
    def final_train_loss(self) -> float | None:
        """The last recorded training loss (``None`` before the first step)."""
        return self.train_loss[-1] if self.train_loss else None

    def state_dict(self) -> dict[str, Any]:
        """Plain-Python copy (lists, floats) suitable for ``torch.save(weights_only=True)``."""
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace the contents of this history by a :meth:`state_dict` (in place)."""
        restored = self.from_state_dict(state)
        for f in fields(self):
            setattr(self, f.name, getattr(restored, f.name))

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> History:
        """Inverse of :meth:`state_dict`.

        Example:
            >>> h = History([1, 2], [3.0, 2.0], best_step=2)
            >>> History.from_state_dict(h.state_dict()) == h
            True
        """
        names = {f.name for f in fields(cls)}
        kept = {k: (list(v) if isinstance(v, list) else v) for k, v in state.items() if k in names}
        return cls(**kept)

    def plot(self, path: str | os.PathLike | None = None, *, ax: Axes | None = None) -> Axes:
        """Plot the training loss (raw and smoothed) and the validation loss against the step.

        Arguments:
            path: if given, the figure is written there (PNG unless the extension says
                otherwise; parent folders are created).
            ax: axes to draw on (default: a new figure, no pyplot involved).

        Returns:
            The axes drawn on.

        Example:
            >>> h = History([1, 2, 3], [3.0, 2.0, 1.5], val_step=[3], val_loss=[1.7])
            >>> ax = h.plot()
            >>> len(ax.lines)  # raw, smoothed, validation
            3
        """
        from ..plotting import new_axes, save_figure

        if ax is None:
            ax = new_axes(1, size=3.5)[0]
            ax.figure.set_size_inches(6.0, 3.5)
        if self.step:
            ax.plot(self.step, self.train_loss, color="C0", alpha=0.3, lw=0.8, label="train")
            ax.plot(self.step, _ema(self.train_loss), color="C0", lw=1.5, label="train (EMA)")
        if self.val_step:
            ax.plot(self.val_step, self.val_loss, "o-", color="C1", ms=3, lw=1.2, label="val")
        if self.best_step is not None:
            ax.axvline(self.best_step, color="C1", ls=":", lw=1.0)
        ax.set_xlabel("step")
        ax.set_ylabel("loss (nats)")
        if self.step or self.val_step:
            ax.legend(frameon=False)
        if path is not None:
            save_figure(ax.figure, path)
        return ax


def _ema(values: list[float], weight: float = 0.95) -> list[float]:
    """Bias-corrected exponential moving average (skips non-finite values)."""
    out, acc, norm = [], 0.0, 0.0
    for v in values:
        if math.isfinite(v):
            acc, norm = weight * acc + (1 - weight) * v, weight * norm + (1 - weight)
        out.append(acc / norm if norm > 0 else math.nan)
    return out
