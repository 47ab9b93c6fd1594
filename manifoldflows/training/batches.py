"""Training data: :class:`Minibatches` (restorable epochs of random rows), :func:`mean_nll`."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .._checks import positive_int, reference_tensor
from ..errors import InvalidInput

__all__ = ["Minibatches", "mean_nll", "to_model"]


def to_model(t: Tensor | None, model: nn.Module) -> Tensor | None:
    """``t`` moved to the device of ``model`` (and to its dtype when ``t`` is floating-point).

    So data may stay on the CPU, or in another precision, while the model trains on a GPU.

    Example:
        >>> import torch
        >>> to_model(torch.zeros(2, dtype=torch.float32), torch.nn.Linear(1, 1).double()).dtype
        torch.float64
    """
    if t is None:
        return None
    ref = reference_tensor(model)
    if ref is None:
        return t
    if torch.is_floating_point(t):
        return t.to(device=ref.device, dtype=ref.dtype, non_blocking=True)
    return t.to(device=ref.device, non_blocking=True)


def check_rows(data: Tensor | None, context: Tensor | None, who: str, name: str = "data") -> None:
    """Refuse ``data`` without rows, or ``context`` without one row per data row."""
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


class Minibatches:
    """Endless random minibatches of the rows of ``data`` (and the matching ``context`` rows).

    Rows are drawn epoch by epoch without replacement: each epoch is a fresh random permutation,
    and a batch that crosses the end of one epoch is completed from the next. With
    ``batch_size >= len(data)`` every batch is the whole data set (nothing is drawn). The
    position in the current permutation is a ``state_dict``, so a checkpointed run continues
    with exactly the batches it would have drawn.

    Batches are returned on the device and in the dtype of ``data`` (see :func:`to_model`).

    Arguments:
        data: points ``(N, *event_shape)``, at least one row.
        context: optional conditioning rows ``(N, ...)``; batch rows follow their data rows.
        batch_size: rows per batch (at most ``N`` are used).
        generator: random generator for the permutations (default: a new CPU generator seeded
            from torch's global one, so ``torch.manual_seed`` makes the order reproducible).

    Example:
        >>> import torch
        >>> x = torch.arange(5.0).unsqueeze(-1)
        >>> batches = Minibatches(x, batch_size=2, generator=torch.Generator().manual_seed(0))
        >>> rows = [next(batches)[0] for _ in range(5)]  # two epochs of 5 rows
        >>> sorted(torch.cat(rows).flatten().tolist())  # each row once per epoch
        [0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0]
    """

    def __init__(
        self,
        data: Tensor,
        context: Tensor | None = None,
        batch_size: int = 256,
        *,
        generator: torch.Generator | None = None,
    ):
        who = type(self).__name__
        check_rows(data, context, who)
        batch_size = positive_int(batch_size, "batch_size", who)
        if generator is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
            generator = torch.Generator().manual_seed(seed)
        self.data, self.context, self.generator = data, context, generator
        self.n = data.shape[0]
        self.batch_size = min(batch_size, self.n)
        self.perm: Tensor | None = None
        self.pos = 0

    def _new_perm(self) -> Tensor:
        g = self.generator
        return torch.randperm(self.n, generator=g, device=g.device)

    def indices(self) -> Tensor | None:
        """Row indices of the next batch (``None``: the whole data set, nothing drawn)."""
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

    def __iter__(self) -> Minibatches:
        return self

    def __next__(self) -> tuple[Tensor, Tensor | None]:
        """The next ``(batch, batch_context)`` (``batch_context`` is ``None`` without context)."""
        idx = self.indices()
        if idx is None:
            return self.data, self.context
        batch = self.data[idx.to(self.data.device)]
        ctx = None if self.context is None else self.context[idx.to(self.context.device)]
        return batch, ctx

    def state_dict(self) -> dict[str, Any]:
        """The current permutation and position in it (the generator is saved separately)."""
        return {"perm": None if self.perm is None else self.perm.cpu(), "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict`."""
        perm = state["perm"]
        self.perm = None if perm is None else perm.to(self.generator.device)
        self.pos = int(state["pos"])


def mean_nll(
    model: nn.Module, data: Tensor, context: Tensor | None = None, *, batch_size: int = 1024
) -> float:
    r"""Mean negative log-likelihood :math:`-\frac1N\sum_i \log q(x_i \mid c_i)` of a data set.

    Evaluated in chunks of ``batch_size`` rows, in eval mode and without gradients (the model's
    mode is restored afterwards), summed in float64; the validation loss of
    :func:`~manifoldflows.training.fit`. Rows are moved to the model's device and dtype.

    Arguments:
        model: a distribution or flow with ``log_prob(x, context)``.
        data: points ``(N, *event_shape)``.
        context: their context rows ``(N, ...)``, or ``None``.
        batch_size: rows per chunk.

    Returns:
        The mean in nats, as a Python float.

    Example:
        >>> import math, torch
        >>> from manifoldflows.distributions import StandardNormal
        >>> round(mean_nll(StandardNormal(2), torch.zeros(10, 2), batch_size=3), 4)  # log(2 pi)
        1.8379
    """
    check_rows(data, context, "mean_nll")
    batch_size = positive_int(batch_size, "batch_size", "mean_nll")
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        with torch.no_grad():
            for start in range(0, data.shape[0], batch_size):
                x = to_model(data[start : start + batch_size], model)
                c = (
                    None
                    if context is None
                    else to_model(context[start : start + batch_size], model)
                )
                log_q = model.log_prob(x, c)
                total += float(-log_q.double().sum())
                count += log_q.numel()
    finally:
        model.train(was_training)
    return total / count
