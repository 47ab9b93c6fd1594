r"""A prioritised replay buffer of weighted samples: :class:`PrioritisedReplayBuffer`.

Flow annealed importance sampling bootstrap (FAB, Midgley et al. 2023) produces, by annealed
importance sampling (AIS), samples ``x_i`` with log weights ``log w_i`` for the distribution
``p^alpha q^(1 - alpha)`` (``p^2 / q`` at ``alpha = 2``). AIS is expensive, so each batch is
reused for several gradient steps: the buffer keeps the last ``max_length`` samples together
with their weights and the flow's ``log q_old(x)`` at the time they were last used, hands out
minibatches drawn **in proportion to the weights** (without replacement within a batch), and
lets the objective **re-weight** the drawn samples to the current flow. Since the AIS target
depends on ``q`` only through ``q^(1 - alpha)``, a sample stored under ``q_old`` has, under the
current ``q``, the weight

.. math::

    \log w \leftarrow \log w + (1 - \alpha)\,\big(\log q(x) - \log q_{\rm old}(x)\big),
    \qquad \log q_{\rm old}(x) \leftarrow \log q(x),

which :meth:`PrioritisedReplayBuffer.adjust` applies after each use.

References:
    L. I. Midgley, V. Stimper, G. N. C. Simm, B. Schoelkopf, J. M. Hernandez-Lobato, "Flow
    annealed importance sampling bootstrap", ICLR 2023, arXiv:2208.01893 (section 4).
    T. Schaul, J. Quan, I. Antonoglou, D. Silver, "Prioritized experience replay", ICLR 2016,
    arXiv:1511.05952.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from .._checks import positive_int
from ..errors import InvalidInput

__all__ = ["PrioritisedReplayBuffer", "ReplayBatch"]


class ReplayBatch(NamedTuple):
    """A minibatch drawn from a :class:`PrioritisedReplayBuffer`.

    Attributes:
        x: samples ``(n, *event_shape)``.
        log_w: their current log weights ``(n,)``.
        log_q_old: ``log q`` of the flow when they were stored or last adjusted ``(n,)``.
        index: their positions in the buffer ``(n,)`` (for :meth:`~PrioritisedReplayBuffer.
            adjust`).
    """

    x: Tensor
    log_w: Tensor
    log_q_old: Tensor
    index: Tensor


class PrioritisedReplayBuffer:
    r"""Ring buffer of weighted samples, sampled in proportion to their weights.

    Samples are added in batches (:meth:`add`); once full, the oldest are overwritten. A
    minibatch of ``n`` distinct entries is drawn with probabilities proportional to ``w`` by the
    Gumbel top-``k`` trick (``argtopk(log w_i + G_i)`` with ``G_i ~ Gumbel(0, 1)``: successive
    sampling without replacement). Entries whose log weight is ``-inf`` are never drawn.
    :meth:`adjust` moves the weights of drawn entries to the current flow (see the module
    docstring). Storage is allocated on the first :meth:`add`, with that batch's event shape,
    dtype and device. The whole state (contents, position) is a ``state_dict``, so
    checkpoints written by :func:`~manifoldflows.training.fit` through an objective that owns
    the buffer (e.g. :class:`~manifoldflows.training.FAB`) resume it exactly.

    Arguments:
        max_length: capacity (entries).
        min_length: entries needed before :meth:`sample` may be called (:attr:`ready`); FAB
            fills the buffer up to it before its first gradient step, so the first batches are
            not drawn from one AIS run only.
        generator: random generator for the draws (on the storage device); default: torch's
            global generator.

    References:
        L. I. Midgley et al., "Flow annealed importance sampling bootstrap", ICLR 2023,
        arXiv:2208.01893. W. Kool, H. van Hoof, M. Welling, "Stochastic beams and where to find
        them: the Gumbel-top-k trick", ICML 2019, arXiv:1903.06059.

    Example:
        >>> buffer = PrioritisedReplayBuffer(max_length=4, min_length=2)
        >>> buffer.add(torch.arange(3.0).unsqueeze(-1), torch.tensor([0.0, -float("inf"), 0.0]),
        ...            torch.zeros(3))
        >>> len(buffer), buffer.ready
        (3, True)
        >>> batch = buffer.sample(2)  # the entry of weight zero is never drawn
        >>> sorted(batch.x.flatten().tolist())
        [0.0, 2.0]
        >>> buffer.adjust(batch.index, torch.ones(2), alpha=2.0)  # q grew by e: w shrinks by e
        >>> buffer.log_w[batch.index].tolist(), buffer.log_q_old[batch.index].tolist()
        ([-1.0, -1.0], [1.0, 1.0])
    """

    def __init__(
        self,
        max_length: int,
        min_length: int | None = None,
        *,
        generator: torch.Generator | None = None,
    ):
        who = type(self).__name__
        self.max_length = positive_int(max_length, "max_length", who)
        min_length = self.max_length // 10 if min_length is None else min_length
        self.min_length = positive_int(min_length, "min_length", who)
        if self.min_length > self.max_length:
            raise InvalidInput(
                f"{who}: expected min_length <= max_length, got {self.min_length} > "
                f"{self.max_length}"
            )
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"{who}: expected a torch.Generator, got {type(generator).__name__}")
        self.generator = generator
        self.x: Tensor | None = None
        self.log_w: Tensor | None = None
        self.log_q_old: Tensor | None = None
        self.position = 0  # where the next entry goes
        self.length = 0  # entries filled

    def __len__(self) -> int:
        return self.length

    @property
    def ready(self) -> bool:
        """Whether the buffer holds at least ``min_length`` entries."""
        return self.length >= self.min_length

    def __repr__(self) -> str:
        return (
            f"PrioritisedReplayBuffer(length={self.length}, max_length={self.max_length}, "
            f"min_length={self.min_length})"
        )

    # ------------------------------------------------------------------ writing
    @torch.no_grad()
    def add(self, x: Tensor, log_w: Tensor, log_q: Tensor) -> None:
        """Store a batch ``x (n, *event_shape)`` with log weights and ``log q`` (both ``(n,)``).

        NaN log weights are stored as ``-inf`` (never drawn); a batch longer than the buffer
        keeps its last ``max_length`` entries.
        """
        who = f"{type(self).__name__}.add"
        if not all(isinstance(t, Tensor) for t in (x, log_w, log_q)):
            raise InvalidInput(f"{who}: expected tensors x, log_w and log_q")
        n = x.shape[0] if x.dim() >= 1 else 0
        if x.dim() < 1 or log_w.shape != (n,) or log_q.shape != (n,):
            raise InvalidInput(
                f"{who}: expected x (n, *event_shape) with log_w and log_q of shape (n,), got "
                f"{tuple(x.shape)}, {tuple(log_w.shape)} and {tuple(log_q.shape)}"
            )
        if self.x is None:
            self.x = x.new_zeros(self.max_length, *x.shape[1:])
            self.log_w = log_w.new_full((self.max_length,), -torch.inf)
            self.log_q_old = log_q.new_zeros(self.max_length)
        elif x.shape[1:] != self.x.shape[1:]:
            raise InvalidInput(
                f"{who}: expected samples of event shape {tuple(self.x.shape[1:])}, got "
                f"{tuple(x.shape[1:])}"
            )
        x, log_w, log_q = (
            x[-self.max_length :],
            log_w[-self.max_length :],
            log_q[-self.max_length :],
        )
        n = x.shape[0]
        index = (self.position + torch.arange(n, device=self.x.device)) % self.max_length
        self.x[index] = x.to(self.x)
        log_w = log_w.to(self.log_w)
        self.log_w[index] = torch.where(torch.isnan(log_w), -torch.inf, log_w)
        self.log_q_old[index] = log_q.to(self.log_q_old)
        self.position = (self.position + n) % self.max_length
        self.length = min(self.length + n, self.max_length)

    @torch.no_grad()
    def adjust(self, index: Tensor, log_q: Tensor, alpha: float = 2.0) -> None:
        r"""Move the weights of entries ``index`` to the flow whose ``log q`` they now have.

        ``log w += (1 - alpha) (log q - log q_old)`` and ``log q_old = log q``; entries whose
        new ``log q`` is not finite are left unchanged.

        Arguments:
            index: buffer positions ``(n,)`` (from :meth:`sample`).
            log_q: the current flow's ``log q`` at those entries ``(n,)``.
            alpha: the order of the AIS target ``p^alpha q^(1 - alpha)``.
        """
        if self.log_w is None:
            raise InvalidInput(f"{type(self).__name__}.adjust: the buffer is empty")
        log_q = log_q.detach().to(self.log_q_old)
        keep = torch.isfinite(log_q)
        index, log_q = index[keep], log_q[keep]
        self.log_w[index] += (1.0 - float(alpha)) * (log_q - self.log_q_old[index])
        self.log_q_old[index] = log_q

    # ------------------------------------------------------------------ reading
    @torch.no_grad()
    def sample(self, n: int) -> ReplayBatch:
        """``n`` distinct entries drawn with probabilities proportional to their weights.

        When fewer than ``n`` entries have a non-zero weight, all of those are returned.

        Raises:
            InvalidInput: before :attr:`ready`, or when no entry has a non-zero weight.
        """
        who = f"{type(self).__name__}.sample"
        n = positive_int(n, "batch size", who)
        if not self.ready:
            raise InvalidInput(
                f"{who}: the buffer holds {self.length} entries, fewer than min_length="
                f"{self.min_length}; add samples first"
            )
        log_w = self.log_w[: self.length]
        drawable = int(torch.isfinite(log_w).sum())
        if drawable == 0:
            raise InvalidInput(
                f"{who}: every one of the {self.length} entries has weight zero; nothing to draw"
            )
        n = min(n, drawable)
        uniform = torch.rand(
            log_w.shape, generator=self.generator, dtype=log_w.dtype, device=log_w.device
        )
        gumbel = -torch.log(-torch.log(uniform.clamp_min(torch.finfo(log_w.dtype).tiny)))
        index = torch.topk(log_w + gumbel, n).indices
        return ReplayBatch(self.x[index], self.log_w[index], self.log_q_old[index], index)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Contents and position (tensors on the CPU)."""
        return {
            "x": None if self.x is None else self.x.cpu(),
            "log_w": None if self.log_w is None else self.log_w.cpu(),
            "log_q_old": None if self.log_q_old is None else self.log_q_old.cpu(),
            "position": self.position,
            "length": self.length,
            "max_length": self.max_length,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict` (onto the device of the generator, if any)."""
        if int(state["max_length"]) != self.max_length:
            raise InvalidInput(
                f"{type(self).__name__}.load_state_dict: the saved buffer has max_length "
                f"{state['max_length']}, this one {self.max_length}"
            )
        device = None if self.generator is None else self.generator.device
        for name in ("x", "log_w", "log_q_old"):
            value = state[name]
            if value is not None and device is not None:
                value = value.to(device)
            setattr(self, name, value)
        self.position, self.length = int(state["position"]), int(state["length"])
