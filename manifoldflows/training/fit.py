""":func:`fit`: the ready-made training loop, wired from the public pieces of this package."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import tqdm
from torch import Tensor, nn

from .._checks import positive_int, reference_tensor
from ..errors import InvalidInput, NonFiniteOutput
from ..targets import Target
from .batches import check_rows, mean_nll
from .checkpoint import PathLike, RandomStates, Scheduler, load_checkpoint, save_checkpoint
from .early_stopping import EarlyStopping
from .history import History
from .objectives import MinibatchLoss, Objective, ReverseKL
from .step import NonFiniteLoss, check_clip_grad_norm, training_step

__all__ = ["fit"]

_FORMAT = "manifoldflows.fit/2"
LossFn = Callable[[nn.Module, Tensor | None, Tensor | None], Tensor]


def fit(
    model: nn.Module,
    data: Tensor | None = None,
    *,
    target: Target | None = None,
    objective: Objective | None = None,
    loss_fn: LossFn | None = None,
    context: Tensor | None = None,
    steps: int = 1000,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    optimizer: torch.optim.Optimizer | Callable[..., torch.optim.Optimizer] | None = None,
    scheduler: Scheduler | Callable[[torch.optim.Optimizer], Scheduler] | None = None,
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

    ``fit`` is a short composition of the pieces a custom loop can use directly: an
    :class:`~manifoldflows.training.Objective` ``(model, step) -> loss``, :func:`training_step`
    (backward, clipping, NaN/inf check, optimizer step), :func:`mean_nll` for validation,
    :class:`EarlyStopping`, and :func:`save_checkpoint` / :func:`load_checkpoint` with
    :class:`RandomStates`. The objective is, by mode:

    * ``data`` given: forward KL, :math:`-\frac1B\sum_{i\in B}\log q(x_i \mid c_i)` on a
      minibatch of ``batch_size`` rows (:func:`maximum_likelihood`: epochs of random
      permutations, rows of ``context`` follow their data rows); before the first step,
      :func:`~manifoldflows.transforms.initialize_actnorm` initialises the ActNorm layers of a
      flow on the first batch;
    * ``target`` given: reverse KL, :math:`\frac1B\sum_i [\log q(x_i) + u(x_i)]` with
      ``x_i ~ q`` (:class:`ReverseKL`, ``batch_size`` samples per step, ``context`` passed as
      is);
    * ``loss_fn`` given: ``loss_fn(model, batch, batch_context)`` must return a scalar;
      ``batch`` is a minibatch of ``data`` (``None`` without data) (:class:`MinibatchLoss`);
    * ``objective`` given: ``objective(model, step)`` with ``step = 0, 1, ...`` the number of
      steps already taken, e.g. :func:`annealed_reverse_kl`; it carries its own data or
      context (a ``context`` given to ``fit`` alongside is refused rather than dropped), and
      its ``state_dict``, if it has one, goes into the checkpoints.

    The model is put in training mode for the steps (eval mode for validation) and is **left in
    eval mode** when ``fit`` returns (or raises): the mode in which a trained flow is evaluated
    and sampled. Minibatches are moved to the device and (floating-point) dtype of the model's
    parameters, so ``data`` may stay on the CPU while the model trains on a GPU.

    **Validation and early stopping.** With ``val_data``, the mean negative log-likelihood on
    it (:func:`mean_nll`: chunks, eval mode, no gradient) is recorded every ``val_every`` steps
    and at the last step. With ``patience``, training stops after ``patience`` validation rounds
    without improvement, and the weights of the best round are restored at the end
    (:class:`EarlyStopping`). A ``ReduceLROnPlateau`` scheduler is stepped with the validation
    loss.

    **Checkpoints.** With ``checkpoint``, a file holding the model, optimizer and scheduler
    states, the step, the history, the early-stopping state, the objective's state (minibatch
    order) and the random states (of ``generator`` and torch's global generators, which
    stochastic layers use) is written atomically every ``checkpoint_every`` steps and at the
    end (then with the weights that ``fit`` returns). ``resume=True`` continues from that file
    when it exists (restoring those random states too), and the result is identical to an
    uninterrupted run; ``steps`` counts the total, so a finished run is simply returned.

    **Failures.** A NaN/inf loss or gradient norm raises :class:`NonFiniteLoss` naming the
    step, what went non-finite and its value, before the optimizer step, so the weights are
    those of the previous step.

    Arguments:
        model: a :class:`~manifoldflows.distributions.Distribution` or flow (any module with
            ``log_prob`` / ``sample_and_log_prob`` as the objective requires).
        data: training points ``(N, *event_shape)`` for forward KL or ``loss_fn``.
        target: callable ``x -> u(x)`` or object with ``.energy(x)`` for reverse KL.
        objective: a step-aware objective ``(model, step) -> scalar tensor`` (alone: not with
            ``data``, ``target``, ``loss_fn`` or ``context``).
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
        >>> q.training  # left in eval mode
        False
    """
    who = "fit"
    if not isinstance(model, nn.Module):
        raise TypeError(f"{who}: expected a torch.nn.Module model, got {type(model).__name__}")
    _check_modes(data, target, objective, loss_fn, context, who)
    steps = positive_int(steps, "number of steps", who, minimum=0)
    batch_size = positive_int(batch_size, "batch_size", who)
    val_every = positive_int(val_every, "val_every", who)
    stopper = EarlyStopping(None if patience is None else positive_int(patience, "patience", who))
    if patience is not None and val_data is None:
        raise InvalidInput(f"{who}: early stopping (patience={patience}) needs val_data")
    if checkpoint_every is not None:
        checkpoint_every = positive_int(checkpoint_every, "checkpoint_every", who)
    if (checkpoint_every is not None or resume) and checkpoint is None:
        raise InvalidInput(f"{who}: checkpoint_every and resume need a checkpoint path")
    clip_grad_norm = check_clip_grad_norm(clip_grad_norm, who)
    check_rows(data, context if data is not None else None, who, "data")
    check_rows(val_data, val_context, who, "val_data")
    if val_data is None and val_context is not None:
        raise InvalidInput(f"{who}: got val_context without val_data")

    generator = _generator(model, generator, who)
    optimizer, scheduler = _optimizer(model, optimizer, scheduler, lr, weight_decay, who)
    plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    if plateau and val_data is None:
        raise InvalidInput(f"{who}: a ReduceLROnPlateau scheduler needs val_data")
    if objective is None:
        if target is not None:
            objective = ReverseKL(target, batch_size, context=context, generator=generator)
        else:
            objective = MinibatchLoss(
                loss_fn, data, context, batch_size=batch_size, generator=generator
            )

    history = History()
    parts = {"history": history, "stopper": stopper, "rng": RandomStates(generator)}
    if callable(getattr(objective, "state_dict", None)):
        parts["objective"] = objective
    step = 0
    if resume and Path(checkpoint).is_file():
        step = _resume(checkpoint, model, optimizer, scheduler, parts, who)

    def save() -> None:
        save_checkpoint(checkpoint, model, optimizer, scheduler, format=_FORMAT, step=step, **parts)

    start = time.perf_counter()
    model.train()
    bar = tqdm.tqdm(
        total=steps, initial=min(step, steps), disable=not progress, desc=who, dynamic_ncols=True
    )
    try:
        while step < steps and not history.stopped_early:
            loss = _evaluate(objective, model, step, who)
            value = training_step(
                model, optimizer, loss, clip_grad_norm=clip_grad_norm, step=step + 1, who=who
            )
            if scheduler is not None and not plateau:
                scheduler.step()
            step += 1
            history.step.append(step)
            history.train_loss.append(value)
            postfix = {"loss": f"{value:.4g}"}
            if val_data is not None and (step % val_every == 0 or step == steps):
                val = mean_nll(model, val_data, val_context, batch_size=max(batch_size, 1024))
                history.val_step.append(step)
                history.val_loss.append(val)
                stopper.update(val, model, step)
                history.best_val_loss, history.best_step = stopper.best_loss, stopper.best_step
                history.stopped_early = stopper.should_stop and step < steps
                if plateau:
                    scheduler.step(val)
                postfix["val"] = f"{val:.4g}"
            bar.set_postfix(postfix, refresh=False)
            bar.update(1)
            if checkpoint_every is not None and step % checkpoint_every == 0:
                history.wall_time += time.perf_counter() - start
                start = time.perf_counter()
                save()
    finally:
        bar.close()
        model.eval()
        history.wall_time += time.perf_counter() - start

    stopper.restore(model)
    if checkpoint is not None:
        save()
    return history


def _check_modes(
    data: Tensor | None,
    target: Target | None,
    objective: Objective | None,
    loss_fn: LossFn | None,
    context: Tensor | None,
    who: str,
) -> None:
    """Exactly one way to form the loss: data, target, loss_fn (with or without data), objective."""
    if data is not None and target is not None:
        raise InvalidInput(
            f"{who}: expected either data (forward KL) or target (reverse KL), got both"
        )
    if target is not None and loss_fn is not None:
        raise InvalidInput(
            f"{who}: expected either target (reverse KL) or loss_fn, got both; "
            "close over the target inside loss_fn instead"
        )
    if objective is not None:
        others = [
            n
            for n, v in zip(("data", "target", "loss_fn"), (data, target, loss_fn))
            if v is not None
        ]
        if others:
            raise InvalidInput(
                f"{who}: expected an objective alone, got it with {' and '.join(others)}; "
                "build the objective from them (e.g. maximum_likelihood(data))"
            )
        if context is not None:
            raise InvalidInput(
                f"{who}: an objective(model, step) gets no context from fit; give the context "
                "to the objective (e.g. ReverseKL(target, context=c)) instead"
            )
        if not callable(objective):
            raise TypeError(
                f"{who}: expected an objective callable (model, step) -> loss, got "
                f"{type(objective).__name__}"
            )
    elif data is None and target is None and loss_fn is None:
        raise InvalidInput(
            f"{who}: expected data, target or loss_fn, got none of them "
            "(or give an objective(model, step))"
        )


def _generator(model: nn.Module, generator: torch.Generator | None, who: str) -> torch.Generator:
    """The run's generator, on the model's device (a fresh seeded one by default)."""
    ref = reference_tensor(model)
    device = torch.device("cpu") if ref is None else ref.device
    if generator is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
        return torch.Generator(device=device).manual_seed(seed)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"{who}: expected a torch.Generator, got {type(generator).__name__}")
    if generator.device.type != device.type:
        raise InvalidInput(
            f"{who}: expected a generator on the model's device ({device}), got one on "
            f"{generator.device}"
        )
    return generator


def _optimizer(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | Callable[..., torch.optim.Optimizer] | None,
    scheduler: Scheduler | Callable[[torch.optim.Optimizer], Scheduler] | None,
    lr: float,
    weight_decay: float,
    who: str,
) -> tuple[torch.optim.Optimizer, Scheduler | None]:
    """The optimizer and scheduler, built from factories or defaults where needed."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise InvalidInput(f"{who}: the model has no trainable parameters")
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
    return optimizer, scheduler


def _resume(
    path: PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Scheduler | None,
    parts: dict[str, Any],
    who: str,
) -> int:
    """Load a checkpoint written by :func:`fit` into every piece; return its step."""
    state = load_checkpoint(path, model)
    if state.get("format") != _FORMAT:
        raise InvalidInput(
            f"{who}: expected a checkpoint written by fit ({_FORMAT}) in {path}, got format "
            f"{state.get('format')!r}"
        )
    for name, part in {"optimizer": optimizer, "scheduler": scheduler, **parts}.items():
        if part is None:
            continue
        if state.get(name) is None:
            raise InvalidInput(f"{who}: {path} holds no {name} state to resume from")
        part.load_state_dict(state[name])
    return int(state["step"])


def _evaluate(objective: Objective, model: nn.Module, step: int, who: str) -> Tensor:
    """``objective(model, step)``, with a NaN/inf raised inside it reported as this step's."""
    try:
        return objective(model, step)
    except NonFiniteLoss:
        raise
    except NonFiniteOutput as err:
        raise NonFiniteLoss(f"{who}: step {step + 1}: {err}") from err
