r"""The training loop :func:`fit`, its :class:`History`, and checkpoint / model files.

:func:`fit` trains any distribution or flow by

* **forward KL** (maximum likelihood) on data: random minibatches of rows of ``data``;
* **reverse KL** against an unnormalised target ``exp(-u(x))``: ``batch_size`` fresh model
  samples per step;
* or a **custom objective** ``loss_fn(model, batch, batch_context) -> scalar``.

It adds what a real run needs: a progress bar, gradient clipping, validation with early
stopping, atomic checkpoints that resume to bit-identical results, and a clear error (with the
weights left untouched) when the loss turns NaN/inf.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import tqdm
from torch import Tensor, nn

from ._checks import reference_tensor
from .errors import InvalidInput, NonFiniteOutput
from .losses import forward_kl, reverse_kl

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

__all__ = [
    "fit",
    "History",
    "NonFiniteLoss",
    "save_checkpoint",
    "load_checkpoint",
    "save_model",
    "load_model",
]

PathLike = str | os.PathLike
_FORMAT = "manifoldflows.fit/1"


class NonFiniteLoss(NonFiniteOutput):
    """The training loss (or its gradient) became NaN/inf; the weights were not updated."""


@dataclass
class History:
    """What happened during :func:`fit`.

    Attributes:
        step: optimizer step numbers ``1, 2, ...`` (one entry per step).
        train_loss: training loss at each of those steps (before the update).
        val_step: steps after which the validation set was evaluated.
        val_loss: mean validation negative log-likelihood at those steps (nats).
        best_val_loss: lowest validation loss seen (``None`` without validation).
        best_step: step at which it was reached.
        stopped_early: whether early stopping ended the run before ``steps``.
        wall_time: seconds spent in :func:`fit` (summed over resumed runs).

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

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> History:
        """Inverse of :meth:`state_dict`."""
        names = {f.name for f in fields(cls)}
        kept = {k: (list(v) if isinstance(v, list) else v) for k, v in state.items() if k in names}
        return cls(**kept)

    def plot(self, path: PathLike | None = None, *, ax: Axes | None = None) -> Axes:
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
        from .plotting import new_axes, save_figure

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


# ---------------------------------------------------------------------------- files


def _atomic_save(obj: Any, path: PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace`` it."""
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


def save_checkpoint(
    path: PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    **extra: Any,
) -> Path:
    """Write model, optimizer and scheduler state (plus ``extra`` entries) to ``path`` atomically.

    The file is first written to a temporary file next to ``path`` and then moved over it with
    ``os.replace``, so an interrupted save leaves the previous checkpoint intact.

    Arguments:
        path: destination file (parent folders are created).
        model: module whose ``state_dict`` is saved under ``"model"``.
        optimizer: optional optimizer, saved under ``"optimizer"``.
        scheduler: optional learning-rate scheduler, saved under ``"scheduler"``.
        **extra: further picklable entries (tensors, numbers, strings, lists, dicts).

    Returns:
        The path written.

    Example:
        >>> import tempfile, os, torch
        >>> net = torch.nn.Linear(2, 1)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = save_checkpoint(os.path.join(d, "ck.pt"), net, step=7)
        ...     load_checkpoint(p, torch.nn.Linear(2, 1))["step"]
        7
    """
    state = {
        "model": model.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        **extra,
    }
    return _atomic_save(state, path)


def load_checkpoint(
    path: PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    *,
    weights_only: bool = True,
) -> dict[str, Any]:
    """Load a file written by :func:`save_checkpoint` into ``model`` (and optimizer, scheduler).

    Tensors are read onto the CPU and copied into the model's parameters wherever they live,
    so a checkpoint written on a GPU loads on a CPU-only machine and vice versa.

    Arguments:
        path: checkpoint file.
        model: module receiving the saved ``state_dict`` (strictly: names must match).
        optimizer: optional optimizer receiving the saved optimizer state.
        scheduler: optional scheduler receiving the saved scheduler state.
        weights_only: use ``torch.load``'s safe unpickler (set ``False`` only for files you
            trust that hold arbitrary Python objects).

    Returns:
        The whole checkpoint dictionary (``"model"``, ``"optimizer"``, ``"scheduler"`` and the
        extra entries).

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
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler)):
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
    return _atomic_save(model, path)


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


# ---------------------------------------------------------------------------- helpers


def _to_model(t: Tensor | None, dtype: torch.dtype, device: torch.device) -> Tensor | None:
    if t is None:
        return None
    if torch.is_floating_point(t):
        return t.to(device=device, dtype=dtype, non_blocking=True)
    return t.to(device=device, non_blocking=True)


class _RowSampler:
    """Minibatches of rows by epochs of random permutations, with a restorable state."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator):
        self.n, self.batch_size, self.generator = n, min(batch_size, n), generator
        self.perm: Tensor | None = None
        self.pos = 0

    def _new_perm(self) -> Tensor:
        g = self.generator
        return torch.randperm(self.n, generator=g, device=g.device)

    def next(self) -> Tensor | None:
        """Row indices of the next batch (``None``: the whole data set, no shuffling needed)."""
        if self.batch_size == self.n:
            return None
        if self.perm is None:
            self.perm, self.pos = self._new_perm(), 0
        end = self.pos + self.batch_size
        if end <= self.n:
            idx, self.pos = self.perm[self.pos : end], end
            return idx
        head = self.perm[self.pos :]
        self.perm = self._new_perm()
        self.pos = self.batch_size - head.numel()
        return torch.cat([head, self.perm[: self.pos]])

    def state_dict(self) -> dict[str, Any]:
        return {"perm": None if self.perm is None else self.perm.cpu(), "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        perm = state["perm"]
        self.perm = None if perm is None else perm.to(self.generator.device)
        self.pos = int(state["pos"])


def _check_rows(data: Tensor | None, context: Tensor | None, who: str, name: str) -> None:
    if data is None:
        return
    if not isinstance(data, Tensor) or data.dim() < 1 or data.shape[0] < 1:
        got = tuple(data.shape) if isinstance(data, Tensor) else type(data).__name__
        raise InvalidInput(f"{who}: expected {name} as a tensor with at least one row, got {got}")
    if context is not None:
        ok = isinstance(context, Tensor) and context.dim() >= 1
        if not ok or context.shape[0] != data.shape[0]:
            got = tuple(context.shape) if isinstance(context, Tensor) else type(context).__name__
            raise InvalidInput(
                f"{who}: expected the {name} context to have one row per {name} row "
                f"({data.shape[0]}), got {got}"
            )


def _positive_int(value: Any, name: str, allow_zero: bool = False) -> int:
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        kind = "non-negative" if allow_zero else "positive"
        raise InvalidInput(f"fit: expected a {kind} integer {name}, got {value!r}")
    return value


def _mean_nll(model, data: Tensor, context: Tensor | None, chunk: int, dtype, device) -> float:
    """Mean negative log-likelihood over ``data`` in chunks (eval mode, no gradient)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        with torch.no_grad():
            for start in range(0, data.shape[0], chunk):
                x = _to_model(data[start : start + chunk], dtype, device)
                c = None if context is None else context[start : start + chunk]
                c = _to_model(c, dtype, device)
                log_q = model.log_prob(x, c)
                total += float(-log_q.double().sum())
                count += log_q.numel()
    finally:
        model.train(was_training)
    return total / count


def _clone_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _is_plateau(scheduler: Any) -> bool:
    return isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)


def _rng_state(generator: torch.Generator, device: torch.device) -> dict[str, Tensor]:
    state = {"generator": generator.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Tensor], generator: torch.Generator, device) -> None:
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# ---------------------------------------------------------------------------- fit


def fit(
    model: nn.Module,
    data: Tensor | None = None,
    *,
    target: Any = None,
    loss_fn: Callable[[nn.Module, Tensor | None, Tensor | None], Tensor] | None = None,
    context: Tensor | None = None,
    steps: int = 1000,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    optimizer: torch.optim.Optimizer | Callable[..., torch.optim.Optimizer] | None = None,
    scheduler: Any = None,
    clip_grad_norm: float | None = 10.0,
    val_data: Tensor | None = None,
    val_context: Tensor | None = None,
    val_every: int = 100,
    patience: int | None = None,
    checkpoint: PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    progress: bool = True,
    generator: torch.Generator | None = None,
) -> History:
    r"""Train a distribution or flow with Adam (by default) and return its :class:`History`.

    Each step draws a batch, evaluates the objective, back-propagates, clips the gradient
    norm and takes an optimizer step (then a scheduler step):

    * ``data`` given: forward KL, :math:`-\frac1B\sum_{i\in B}\log q(x_i \mid c_i)` on a
      minibatch of ``batch_size`` rows (epochs of random permutations; rows of ``context``
      follow their data rows);
    * ``target`` given: reverse KL, :math:`\frac1B\sum_i [\log q(x_i) + u(x_i)]` with
      ``x_i ~ q`` (:func:`~manifoldflows.losses.reverse_kl`, ``batch_size`` samples per step,
      ``context`` passed as is);
    * ``loss_fn`` given: ``loss_fn(model, batch, batch_context)`` must return a scalar;
      ``batch`` is a minibatch of ``data`` (``None`` without data).

    The model is put in training mode for the steps (and eval mode for validation) and is
    left in the mode it came in. Minibatches are moved to the device and (floating-point)
    dtype of the model's parameters, so ``data`` may stay on the CPU while the model trains on
    a GPU.

    **Validation and early stopping.** With ``val_data``, the mean negative log-likelihood on
    it (in chunks, eval mode, no gradient) is recorded every ``val_every`` steps and at the last
    step. With ``patience``, training stops after ``patience`` validation rounds without
    improvement, and the weights of the best round are restored at the end. A
    ``ReduceLROnPlateau`` scheduler is stepped with the validation loss.

    **Checkpoints.** With ``checkpoint``, a file holding the model, optimizer and scheduler
    states, the step, the history, the early-stopping state, the minibatch order and the random
    states (of ``generator`` and torch's global generators, which stochastic layers use) is
    written atomically every ``checkpoint_every`` steps and at the end (then with the weights
    that ``fit`` returns). ``resume=True`` continues from that file when it exists (restoring
    those random states too), and the result is identical to an uninterrupted run; ``steps``
    counts the total, so a finished run is simply returned.

    **Failures.** A NaN/inf loss or gradient norm raises :class:`NonFiniteLoss` naming the
    step and value before the optimizer step, so the weights are those of the previous step.

    Arguments:
        model: a :class:`~manifoldflows.distributions.Distribution` or flow (any module with
            ``log_prob`` / ``sample_and_log_prob`` as the objective requires).
        data: training points ``(N, *event_shape)`` for forward KL or ``loss_fn``.
        target: callable ``x -> u(x)`` or object with ``.energy(x)`` for reverse KL.
        loss_fn: custom objective ``(model, batch, batch_context) -> scalar tensor``.
        context: conditioning: ``(N, context_dim)`` rows matching ``data``, or anything the
            model accepts in reverse-KL / ``loss_fn``-without-data mode.
        steps: total number of optimizer steps.
        batch_size: rows (forward KL) or model samples (reverse KL) per step.
        lr: learning rate of the default Adam optimizer.
        weight_decay: L2 penalty of the default Adam optimizer.
        optimizer: an optimizer over the model's parameters, or a factory
            ``params -> optimizer`` (then ``lr`` and ``weight_decay`` are not used).
        scheduler: a learning-rate scheduler (stepped once per step, or with the validation
            loss for ``ReduceLROnPlateau``), or a factory ``optimizer -> scheduler``.
        clip_grad_norm: maximum total gradient norm (``None``: no clipping).
        val_data: validation points ``(M, *event_shape)``.
        val_context: their context rows ``(M, context_dim)``.
        val_every: validation period in steps.
        patience: early-stopping patience in validation rounds (``None``: no early stop).
        checkpoint: checkpoint file path.
        checkpoint_every: checkpoint period in steps (``None``: only at the end).
        resume: continue from ``checkpoint`` if the file exists.
        progress: show a ``tqdm`` progress bar (on stderr) with the current loss.
        generator: random generator for minibatches and model samples, on the model's device
            (default: a new one seeded from torch's global generator, so ``torch.manual_seed``
            makes runs reproducible).

    Returns:
        The :class:`History` of the run.

    References:
        Papamakarios et al., "Normalizing flows for probabilistic modeling and inference",
        JMLR 2021, arXiv:1912.02762; Kingma & Ba, "Adam: a method for stochastic
        optimization", arXiv:1412.6980.

    Example:
        >>> import torch
        >>> from manifoldflows.distributions import DiagNormal
        >>> g = torch.Generator().manual_seed(0)
        >>> x = 3.0 + 0.5 * torch.randn(200, 1, generator=g)
        >>> q = DiagNormal(1)
        >>> h = fit(q, x, steps=200, batch_size=200, lr=0.1, progress=False, generator=g)
        >>> abs(q.loc.item() - x.mean().item()) < 0.01  # maximum likelihood: the sample mean
        True
    """
    who = "fit"
    # -------------------------------------------------------------- arguments
    if not isinstance(model, nn.Module):
        raise TypeError(f"{who}: expected a torch.nn.Module model, got {type(model).__name__}")
    modes = [name for name, v in (("data", data), ("target", target)) if v is not None]
    if len(modes) == 2:
        raise InvalidInput(
            f"{who}: expected either data (forward KL) or target (reverse KL), got both"
        )
    if target is not None and loss_fn is not None:
        raise InvalidInput(
            f"{who}: expected either target (reverse KL) or loss_fn, got both; "
            "close over the target inside loss_fn instead"
        )
    if not modes and loss_fn is None:
        raise InvalidInput(f"{who}: expected data, target or loss_fn, got none of them")
    steps = _positive_int(steps, "number of steps", allow_zero=True)
    batch_size = _positive_int(batch_size, "batch_size")
    val_every = _positive_int(val_every, "val_every")
    if patience is not None:
        patience = _positive_int(patience, "patience")
        if val_data is None:
            raise InvalidInput(f"{who}: early stopping (patience={patience}) needs val_data")
    if checkpoint_every is not None:
        checkpoint_every = _positive_int(checkpoint_every, "checkpoint_every")
    if (checkpoint_every is not None or resume) and checkpoint is None:
        raise InvalidInput(f"{who}: checkpoint_every and resume need a checkpoint path")
    if clip_grad_norm is not None and not (clip_grad_norm > 0):
        raise InvalidInput(
            f"{who}: expected a positive clip_grad_norm or None, got {clip_grad_norm!r}"
        )
    _check_rows(data, context if data is not None else None, who, "data")
    _check_rows(val_data, val_context, who, "val_data")
    if val_data is None and val_context is not None:
        raise InvalidInput(f"{who}: got val_context without val_data")

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise InvalidInput(f"{who}: the model has no trainable parameters")
    ref = reference_tensor(model)
    dtype, device = ref.dtype, ref.device
    if generator is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
        generator = torch.Generator(device=device).manual_seed(seed)
    elif not isinstance(generator, torch.Generator):
        raise TypeError(f"{who}: expected a torch.Generator, got {type(generator).__name__}")
    elif generator.device.type != device.type:
        raise InvalidInput(
            f"{who}: expected a generator on the model's device ({device}), got one on "
            f"{generator.device}"
        )

    if optimizer is None:
        optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    elif not isinstance(optimizer, torch.optim.Optimizer):
        if not callable(optimizer):
            raise TypeError(f"{who}: expected an optimizer or a factory params -> optimizer")
        optimizer = optimizer(params)
    if scheduler is not None and not hasattr(scheduler, "state_dict"):
        if not callable(scheduler):
            raise TypeError(f"{who}: expected a scheduler or a factory optimizer -> scheduler")
        scheduler = scheduler(optimizer)
    if _is_plateau(scheduler) and val_data is None:
        raise InvalidInput(f"{who}: a ReduceLROnPlateau scheduler needs val_data")

    sampler = None if data is None else _RowSampler(data.shape[0], batch_size, generator)
    val_chunk = max(batch_size, 1024)

    # -------------------------------------------------------------- state (maybe resumed)
    history = History()
    step = 0
    best_state: dict[str, Tensor] | None = None
    bad_rounds = 0
    if resume and Path(checkpoint).is_file():
        state = load_checkpoint(checkpoint, model, optimizer, scheduler)
        if state.get("format") != _FORMAT:
            raise InvalidInput(
                f"{who}: expected a checkpoint written by fit in {checkpoint}, got format "
                f"{state.get('format')!r}"
            )
        step = int(state["step"])
        history = History.from_state_dict(state["history"])
        best_state = state["best_state"]
        if best_state is not None:
            best_state = {k: v.to(device) for k, v in best_state.items()}
        bad_rounds = int(state["bad_rounds"])
        if sampler is not None and state["sampler"] is not None:
            sampler.load_state_dict(state["sampler"])
        _set_rng_state(state["rng"], generator, device)

    def write_checkpoint() -> None:
        save_checkpoint(
            checkpoint,
            model,
            optimizer,
            scheduler,
            format=_FORMAT,
            step=step,
            history=history.state_dict(),
            best_state=None if best_state is None else {k: v.cpu() for k, v in best_state.items()},
            bad_rounds=bad_rounds,
            sampler=None if sampler is None else sampler.state_dict(),
            rng=_rng_state(generator, device),
        )

    def objective() -> Tensor:
        if data is not None:
            idx = sampler.next()
            if idx is None:
                batch, batch_ctx = data, context
            else:
                idx = idx.to(data.device)
                batch = data[idx]
                batch_ctx = None if context is None else context[idx.to(context.device)]
            batch = _to_model(batch, dtype, device)
            batch_ctx = _to_model(batch_ctx, dtype, device)
        else:
            batch, batch_ctx = None, _to_model(context, dtype, device)
        if loss_fn is not None:
            return loss_fn(model, batch, batch_ctx)
        if target is not None:
            return reverse_kl(model, target, batch_size, batch_ctx, generator=generator)
        return forward_kl(model, batch, batch_ctx)

    # -------------------------------------------------------------- loop
    start_time = time.perf_counter()
    was_training = model.training
    model.train()
    bar = tqdm.tqdm(
        total=steps, initial=min(step, steps), disable=not progress, desc=who, dynamic_ncols=True
    )
    try:
        while step < steps and not history.stopped_early:
            optimizer.zero_grad(set_to_none=True)
            try:
                loss = objective()
            except NonFiniteLoss:
                raise
            except NonFiniteOutput as err:
                raise NonFiniteLoss(f"{who}: step {step + 1}: {err}") from err
            if not isinstance(loss, Tensor) or loss.numel() != 1:
                got = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
                raise InvalidInput(f"{who}: expected the loss to be a scalar tensor, got {got}")
            value = float(loss.detach())
            if not math.isfinite(value):
                raise NonFiniteLoss(
                    f"{who}: step {step + 1}: the loss is {value}; the weights are left as after "
                    f"step {step} (lower lr, clip the gradient, or regularise the target)"
                )
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(
                params, math.inf if clip_grad_norm is None else clip_grad_norm
            )
            if not bool(torch.isfinite(norm)):
                optimizer.zero_grad(set_to_none=True)
                raise NonFiniteLoss(
                    f"{who}: step {step + 1}: the gradient norm is {float(norm)} "
                    f"(loss {value:.6g}); the weights are left as after step {step}"
                )
            optimizer.step()
            if scheduler is not None and not _is_plateau(scheduler):
                scheduler.step()
            step += 1
            history.step.append(step)
            history.train_loss.append(value)

            if val_data is not None and (step % val_every == 0 or step == steps):
                val = _mean_nll(model, val_data, val_context, val_chunk, dtype, device)
                history.val_step.append(step)
                history.val_loss.append(val)
                if history.best_val_loss is None or val < history.best_val_loss:
                    history.best_val_loss, history.best_step = val, step
                    bad_rounds = 0
                    if patience is not None:
                        best_state = _clone_state(model)
                else:
                    bad_rounds += 1
                    if patience is not None and bad_rounds >= patience and step < steps:
                        history.stopped_early = True
                if _is_plateau(scheduler):
                    scheduler.step(val)
                bar.set_postfix(loss=f"{value:.4g}", val=f"{val:.4g}", refresh=False)
            else:
                bar.set_postfix(loss=f"{value:.4g}", refresh=False)
            bar.update(1)

            if checkpoint_every is not None and step % checkpoint_every == 0:
                history.wall_time += time.perf_counter() - start_time
                start_time = time.perf_counter()
                write_checkpoint()
    finally:
        bar.close()
        model.train(was_training)
        history.wall_time += time.perf_counter() - start_time

    if patience is not None and best_state is not None:
        model.load_state_dict(best_state)
    if checkpoint is not None:
        write_checkpoint()
    return history
