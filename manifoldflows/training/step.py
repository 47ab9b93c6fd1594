"""One optimizer step done safely: :func:`training_step` and its error :class:`NonFiniteLoss`."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..errors import InvalidInput, NonFiniteOutput

__all__ = ["training_step", "NonFiniteLoss", "check_clip_grad_norm"]


class NonFiniteLoss(NonFiniteOutput):
    """The training loss (or its gradient) became NaN/inf; the weights were not updated."""


def check_clip_grad_norm(value: float | None, who: str) -> float | None:
    """Return ``value`` if it is ``None`` or a positive number (``inf`` allowed), else raise.

    Example:
        >>> check_clip_grad_norm(1.0, "fit"), check_clip_grad_norm(None, "fit")
        (1.0, None)
    """
    if value is None:
        return None
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and value > 0
    if not ok:
        raise InvalidInput(f"{who}: expected a positive clip_grad_norm or None, got {value!r}")
    return float(value)


def _non_finite_gradients(model: nn.Module, limit: int = 5) -> str:
    """Names of the parameters whose gradient holds NaN/inf (the first ``limit`` of them)."""
    bad = [
        name
        for name, p in model.named_parameters()
        if p.grad is not None and not bool(torch.isfinite(p.grad).all())
    ]
    if not bad:
        return "no single gradient is NaN/inf, their norm overflows"
    more = f" and {len(bad) - limit} more" if len(bad) > limit else ""
    return "NaN/inf gradient in " + ", ".join(bad[:limit]) + more


def _total_norm(grads: list[Tensor]) -> Tensor:
    """Euclidean norm of all gradients together (as ``clip_grad_norm_`` computes it)."""
    if not grads:
        return torch.zeros(())
    if hasattr(torch.nn.utils, "get_total_norm"):  # torch >= 2.6: the fused implementation
        return torch.nn.utils.get_total_norm(grads)
    device = grads[0].device
    return torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(g).to(device) for g in grads])
    )


def _scale_to_norm(params: list[Tensor], norm: Tensor, max_norm: float) -> None:
    """Scale the gradients in place so that their total norm is at most ``max_norm``."""
    if hasattr(torch.nn.utils, "clip_grads_with_norm_"):  # torch >= 2.6
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
        return
    coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    for p in params:
        p.grad.mul_(coef.to(p.grad.device))


def training_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss: Tensor,
    *,
    clip_grad_norm: float | None = None,
    step: int | None = None,
    who: str = "training_step",
) -> float:
    r"""Back-propagate ``loss`` and take one optimizer step, refusing NaN/inf on the way.

    In order: ``optimizer.zero_grad(set_to_none=True)``; check that ``loss`` is a finite scalar;
    ``loss.backward()``; check that the total gradient norm of the model's trainable parameters
    is finite; scale the gradients down to the norm ``clip_grad_norm`` where it is larger (as
    ``torch.nn.utils.clip_grad_norm_`` does); ``optimizer.step()``. If a check fails,
    :class:`NonFiniteLoss` is raised *before* the optimizer step (gradients cleared), so the
    weights stay those of the previous step, and the message says what went non-finite: the
    loss, or the gradient, naming the parameters whose gradient holds NaN/inf.

    Zeroing the gradients first means the loss must be computed from the current weights
    (after the previous step), as in every plain training loop; the learning-rate scheduler,
    if any, is stepped by the caller.

    Arguments:
        model: the module being trained (its trainable parameters are clipped and checked).
        optimizer: an optimizer over (some of) those parameters.
        loss: a scalar tensor computed from the model.
        clip_grad_norm: maximum total gradient norm (``None``: no clipping, only the check).
        step: number of this step (``1`` for the first), quoted in error messages.
        who: name that starts error messages.

    Returns:
        The loss value as a Python float (read before the update).

    Raises:
        NonFiniteLoss: the loss or the gradient norm is NaN/inf.
        InvalidInput: ``loss`` is not a scalar tensor.

    Example:
        >>> import torch
        >>> from manifoldflows.distributions import DiagNormal
        >>> from manifoldflows.losses import forward_kl
        >>> q = DiagNormal(1)
        >>> opt = torch.optim.SGD(q.parameters(), lr=0.1)
        >>> x = torch.tensor([[1.0], [3.0]])  # mean 2, standard deviation 1
        >>> for k in range(100):
        ...     value = training_step(q, opt, forward_kl(q, x), clip_grad_norm=1.0)
        >>> round(q.loc.item(), 2), round(q.log_scale.exp().item(), 2)
        (2.0, 1.0)
        >>> training_step(q, opt, forward_kl(q, x) * float("nan"), step=101)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        manifoldflows.training.step.NonFiniteLoss: training_step: step 101: the loss is nan; ...
    """
    clip_grad_norm = check_clip_grad_norm(clip_grad_norm, who)
    where = who if step is None else f"{who}: step {step}"
    kept = "the weights were not updated"
    if step is not None:
        kept = f"the weights are left as after step {step - 1}"
    optimizer.zero_grad(set_to_none=True)
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        got = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise InvalidInput(f"{who}: expected the loss to be a scalar tensor, got {got}")
    value = float(loss.detach())
    if not math.isfinite(value):
        raise NonFiniteLoss(
            f"{where}: the loss is {value}; {kept} (lower the learning rate, clip the "
            "gradient, or regularise the target)"
        )
    loss.backward()
    params = [p for p in model.parameters() if p.requires_grad and p.grad is not None]
    norm = _total_norm([p.grad for p in params])
    if not bool(torch.isfinite(norm)):
        culprits = _non_finite_gradients(model)
        optimizer.zero_grad(set_to_none=True)
        raise NonFiniteLoss(
            f"{where}: the gradient norm is {float(norm)} (loss {value:.6g}; {culprits}); {kept}"
        )
    if clip_grad_norm is not None:
        _scale_to_norm(params, norm, clip_grad_norm)
    optimizer.step()
    return value
