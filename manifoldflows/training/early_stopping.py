"""Early stopping on a validation loss, keeping the weights of the best round."""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor, nn

from .._checks import positive_int

__all__ = ["EarlyStopping"]


class EarlyStopping:
    """Track a validation loss, say when it stopped improving, and rewind to its best weights.

    Call :meth:`update` after each validation round. A round improves when its loss is strictly
    below the best so far; then a copy of the model's ``state_dict`` is kept (only when
    ``patience`` is given). :attr:`should_stop` turns true after ``patience`` rounds in a row
    without improvement, and :meth:`restore` loads the best weights back into the model. With
    ``patience=None`` it only records the best loss and step (never stops, keeps no weights).

    The object is checkpointable (``state_dict`` / ``load_state_dict``, weights on the CPU).

    Arguments:
        patience: rounds without improvement before stopping (``None``: never stop).

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(1, 1)
        >>> stop = EarlyStopping(patience=2)
        >>> for step, loss in enumerate([3.0, 2.0, 2.5, 2.1], start=1):
        ...     with torch.no_grad():
        ...         _ = net.bias.fill_(loss)
        ...     improved = stop.update(loss, net, step)
        >>> stop.should_stop, stop.best_step, stop.best_loss
        (True, 2, 2.0)
        >>> stop.restore(net), net.bias.item()  # the weights of step 2 are back
        (True, 2.0)
    """

    def __init__(self, patience: int | None = None):
        if patience is not None:
            patience = positive_int(patience, "patience", type(self).__name__)
        self.patience = patience
        self.best_loss: float | None = None
        self.best_step: int | None = None
        self.bad_rounds = 0
        self.best_state: dict[str, Tensor] | None = None

    def update(self, loss: float, model: nn.Module, step: int) -> bool:
        """Record the validation ``loss`` of ``model`` after ``step``; return whether it improved.

        A NaN loss never improves.
        """
        loss = float(loss)
        improved = not math.isnan(loss) and (self.best_loss is None or loss < self.best_loss)
        if improved:
            self.best_loss, self.best_step, self.bad_rounds = loss, int(step), 0
            if self.patience is not None:
                self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.bad_rounds += 1
        return improved

    @property
    def should_stop(self) -> bool:
        """Whether ``patience`` rounds in a row went by without improvement."""
        return self.patience is not None and self.bad_rounds >= self.patience

    def restore(self, model: nn.Module) -> bool:
        """Load the best weights into ``model``; return whether there were any to load."""
        if self.best_state is None:
            return False
        model.load_state_dict(self.best_state)
        return True

    def state_dict(self) -> dict[str, Any]:
        """Best loss, step, rounds without improvement and best weights (on the CPU)."""
        best = None if self.best_state is None else {k: v.cpu() for k, v in self.best_state.items()}
        return {
            "patience": self.patience,
            "best_loss": self.best_loss,
            "best_step": self.best_step,
            "bad_rounds": self.bad_rounds,
            "best_state": best,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict` (the patience given to the constructor is kept)."""
        self.best_loss, self.best_step = state["best_loss"], state["best_step"]
        self.bad_rounds = int(state["bad_rounds"])
        self.best_state = state["best_state"]
