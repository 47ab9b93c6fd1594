"""Checkpoint and model files, written atomically, and the random states a resumed run needs.

* :func:`save_checkpoint` / :func:`load_checkpoint`: model, optimizer and scheduler states plus
  any further entries; an entry with a ``state_dict()`` method (an
  :class:`~manifoldflows.training.EarlyStopping`, a stateful objective, :class:`RandomStates`,
  a :class:`~manifoldflows.training.History`) is stored as its state and loaded back into the
  object given under the same name, so a whole training state round-trips in one call each way.
* :func:`save_model` / :func:`load_model`: a whole pickled module (architecture and weights).
* :func:`atomic_save`: ``torch.save`` to a temporary file, then ``os.replace``, so an
  interrupted write never destroys the previous file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, TypeAlias

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from ..errors import InvalidInput

__all__ = [
    "atomic_save",
    "save_checkpoint",
    "load_checkpoint",
    "save_model",
    "load_model",
    "RandomStates",
]

PathLike = str | os.PathLike
#: A learning-rate scheduler (``ReduceLROnPlateau`` is not an ``LRScheduler`` in every torch).
Scheduler: TypeAlias = LRScheduler | ReduceLROnPlateau


def atomic_save(obj: object, path: PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` through a temporary file in the same folder.

    The temporary file is flushed to disk and then moved over ``path`` with ``os.replace``
    (atomic on POSIX and Windows), so readers see either the old or the new file, never half of
    one; on failure the temporary file is removed and ``path`` is untouched.

    Arguments:
        obj: anything ``torch.save`` accepts.
        path: destination file (parent folders are created).

    Returns:
        The path written.

    Example:
        >>> import tempfile, os, torch
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = atomic_save({"x": torch.arange(3)}, os.path.join(d, "sub", "x.pt"))
        ...     torch.load(p)["x"].tolist(), os.listdir(os.path.dirname(p))
        ([0, 1, 2], ['x.pt'])
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def _stateful(obj: object) -> bool:
    return not isinstance(obj, Tensor) and callable(getattr(obj, "state_dict", None))


def save_checkpoint(
    path: PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Scheduler | None = None,
    **extra: Any,
) -> Path:
    """Write model, optimizer and scheduler state (plus ``extra`` entries) to ``path`` atomically.

    The file is first written to a temporary file next to ``path`` and then moved over it with
    ``os.replace`` (:func:`atomic_save`), so an interrupted save leaves the previous checkpoint
    intact.

    Arguments:
        path: destination file (parent folders are created).
        model: module whose ``state_dict`` is saved under ``"model"``.
        optimizer: optional optimizer, saved under ``"optimizer"``.
        scheduler: optional learning-rate scheduler, saved under ``"scheduler"``.
        **extra: further entries: tensors, numbers, strings, lists, dicts, or objects with a
            ``state_dict()`` method, which are saved as that state (and restored by passing
            the object to :func:`load_checkpoint` under the same name).

    Returns:
        The path written.

    Example:
        >>> import tempfile, os, torch
        >>> from manifoldflows.training import EarlyStopping
        >>> net = torch.nn.Linear(2, 1)
        >>> stop = EarlyStopping(patience=3)
        >>> _ = stop.update(0.5, net, step=10)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = save_checkpoint(os.path.join(d, "ck.pt"), net, step=7, stopper=stop)
        ...     again = EarlyStopping(patience=3)
        ...     state = load_checkpoint(p, torch.nn.Linear(2, 1), stopper=again)
        >>> state["step"], again.best_loss, again.best_step
        (7, 0.5, 10)
    """
    state = {
        "model": model.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
    }
    for name, value in extra.items():
        state[name] = value.state_dict() if _stateful(value) else value
    return atomic_save(state, path)


def load_checkpoint(
    path: PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Scheduler | None = None,
    *,
    weights_only: bool = True,
    **into: Any,
) -> dict[str, Any]:
    """Load a file written by :func:`save_checkpoint` into ``model`` (and the other objects).

    Tensors are read onto the CPU and copied into the model's parameters wherever they live,
    so a checkpoint written on a GPU loads on a CPU-only machine and vice versa.

    Arguments:
        path: checkpoint file.
        model: module receiving the saved ``state_dict`` (strictly: names must match).
        optimizer: optional optimizer receiving the saved optimizer state.
        scheduler: optional scheduler receiving the saved scheduler state.
        weights_only: use ``torch.load``'s safe unpickler (set ``False`` only for files you
            trust that hold arbitrary Python objects).
        **into: objects with a ``load_state_dict`` method, each receiving the entry of the
            same name (saved from an object with ``state_dict()``).

    Returns:
        The whole checkpoint dictionary (``"model"``, ``"optimizer"``, ``"scheduler"`` and the
        extra entries, as stored).

    Example:
        See :func:`save_checkpoint`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"load_checkpoint: expected a checkpoint file, {path} does not exist"
        )
    state = torch.load(path, map_location="cpu", weights_only=weights_only)
    if not isinstance(state, dict) or "model" not in state:
        raise InvalidInput(
            f"load_checkpoint: expected a dict with a 'model' entry in {path}, got "
            f"{type(state).__name__}"
        )
    model.load_state_dict(state["model"])
    for name, obj in {"optimizer": optimizer, "scheduler": scheduler, **into}.items():
        if obj is None:
            continue
        if state.get(name) is None:
            raise InvalidInput(f"load_checkpoint: {path} holds no {name} state to load")
        obj.load_state_dict(state[name])
    return state


def save_model(model: nn.Module, path: PathLike) -> Path:
    """Pickle a whole module (architecture and weights) to ``path``, atomically.

    Reload it with :func:`load_model`; the classes of the module must be importable there.

    Arguments:
        model: the trained module (e.g. a :class:`~manifoldflows.core.Flow`).
        path: destination file (parent folders are created).

    Returns:
        The path written.

    Example:
        >>> import tempfile, os
        >>> from manifoldflows.distributions import DiagNormal
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = save_model(DiagNormal(2, loc=3.0), os.path.join(d, "q.pt"))
        ...     load_model(p).loc.tolist()
        [3.0, 3.0]
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"save_model: expected a torch.nn.Module, got {type(model).__name__}")
    return atomic_save(model, path)


def load_model(path: PathLike, map_location: str | torch.device | None = None) -> nn.Module:
    """Load a module written by :func:`save_model`.

    This unpickles arbitrary Python objects (``torch.load(weights_only=False)``): only load
    files you trust.

    Arguments:
        path: file written by :func:`save_model`.
        map_location: device to load onto (default: where it was saved).

    Returns:
        The module.

    Example:
        See :func:`save_model`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_model: expected a model file, {path} does not exist")
    model = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(model, nn.Module):
        raise InvalidInput(
            f"load_model: expected {path} to hold a torch.nn.Module, got {type(model).__name__}"
        )
    return model


class RandomStates:
    """The random states a training run draws from, as one checkpointable object.

    That is the state of ``generator`` (minibatch order, model samples), of torch's global CPU
    generator and, when ``generator`` lives on a GPU, of that GPU's global generator (layers
    that draw their own noise use those). Saving it with :func:`save_checkpoint` and loading it
    back with :func:`load_checkpoint` makes a resumed run draw exactly the numbers the
    uninterrupted run would have drawn.

    Arguments:
        generator: the run's explicit generator (``None``: only the global generators).

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> states = RandomStates(g)
        >>> saved = states.state_dict()
        >>> first = torch.rand(2, generator=g), torch.rand(2)
        >>> states.load_state_dict(saved)
        >>> again = torch.rand(2, generator=g), torch.rand(2)
        >>> all(torch.equal(a, b) for a, b in zip(first, again))
        True
    """

    def __init__(self, generator: torch.Generator | None = None):
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                f"RandomStates: expected a torch.Generator or None, got {type(generator).__name__}"
            )
        self.generator = generator

    def state_dict(self) -> dict[str, Tensor]:
        """Copies of the states (byte tensors on the CPU)."""
        state = {"torch": torch.get_rng_state()}
        if self.generator is not None:
            state["generator"] = self.generator.get_state()
            if self.generator.device.type == "cuda":
                state["cuda"] = torch.cuda.get_rng_state(self.generator.device)
        return state

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Set the generators back to a :meth:`state_dict`."""
        torch.set_rng_state(state["torch"])
        if self.generator is not None:
            self.generator.set_state(state["generator"])
            if self.generator.device.type == "cuda" and "cuda" in state:
                torch.cuda.set_rng_state(state["cuda"], self.generator.device)
