"""Periodic conditioner inputs for angles: the ``[cos, sin]`` embedding and a MADE over it.

A conditioner that reads raw angles sees a jump of ``2 pi`` at the seam ``-pi == pi``, so the
flow it parameterises would be discontinuous on the torus. Feeding ``(cos x, sin x)`` instead
(Rezende et al. 2020, arXiv:2002.02428) makes every conditioner output a smooth, periodic
function of the angles.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .made import MaskedLinear, made_masks
from .mlp import make_activation

__all__ = ["periodic_embedding", "PeriodicEmbedding", "PeriodicMADE"]


def periodic_embedding(x: Tensor, frequencies: int = 1) -> Tensor:
    """Embed angles as ``[cos(k x), sin(k x)]`` for ``k = 1..frequencies``, angle by angle.

    .. math:: x_i \\mapsto (\\cos x_i, \\sin x_i, \\cos 2x_i, \\sin 2x_i, \\dots)

    The columns of angle ``i`` are contiguous (positions ``2 F i`` to ``2 F (i + 1) - 1``), the
    layout :class:`PeriodicMADE` relies on.

    Arguments:
        x: ``(..., n)`` angles.
        frequencies: number ``F`` of harmonics.

    Returns:
        ``(..., 2 F n)`` features, smooth and ``2 pi``-periodic in every angle.

    References:
        D. J. Rezende et al., "Normalizing Flows on Tori and Spheres", ICML 2020,
        arXiv:2002.02428.

    Example:
        >>> periodic_embedding(torch.tensor([0.0, torch.pi / 2])).round(decimals=6).tolist()
        [1.0, 0.0, -0.0, 1.0]
    """
    if isinstance(frequencies, bool) or int(frequencies) != frequencies or frequencies < 1:
        raise ValueError(
            f"periodic_embedding: expected a positive integer frequencies, got {frequencies!r}"
        )
    if frequencies == 1:
        angles = x.unsqueeze(-1)
    else:
        k = torch.arange(1, int(frequencies) + 1, dtype=x.dtype, device=x.device)
        angles = x.unsqueeze(-1) * k
    return torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1).flatten(-3)


class PeriodicEmbedding(nn.Module):
    """Module form of :func:`periodic_embedding`: ``(..., n) -> (..., 2 F n)``.

    Arguments:
        frequencies: number of harmonics ``F``.

    Example:
        >>> PeriodicEmbedding(2)(torch.zeros(5, 3)).shape
        torch.Size([5, 12])
    """

    def __init__(self, frequencies: int = 1):
        super().__init__()
        periodic_embedding(torch.zeros(1), frequencies)  # validates
        self.frequencies = int(frequencies)

    def extra_repr(self) -> str:
        return f"frequencies={self.frequencies}"

    def forward(self, x: Tensor) -> Tensor:
        return periodic_embedding(x, self.frequencies)


class PeriodicMADE(nn.Module):
    """MADE over the ``[cos, sin]`` embedding of ``n`` angles.

    Output row ``i`` depends only on the angles ``j`` with ``order[j] < order[i]`` (through
    ``cos x_j`` and ``sin x_j``, which share the degree ``order[j]``) and on the context (every
    row, the first included). The
    masks are those of :func:`~manifoldflows.nn.made.made_masks` with the input columns of the
    first mask duplicated for the two embedding columns of each angle (Germain et al. 2015).

    Arguments:
        features: number of angles ``n``.
        outputs_per_input: ``P``, parameters per angle.
        hidden: hidden layer sizes (each should be at least ``n - 1``).
        context_dim: context features, fed (unmasked) into the first hidden layer.
        order: degrees of the angles, a permutation of ``1..n`` (default ``1..n``).
        activation: activation name.
        zero_last: zero-initialise the output layer.

    References:
        M. Germain, K. Gregor, I. Murray, H. Larochelle, "MADE: Masked Autoencoder for
        Distribution Estimation", ICML 2015, arXiv:1502.03509.
        D. J. Rezende et al., "Normalizing Flows on Tori and Spheres", ICML 2020,
        arXiv:2002.02428.

    Example:
        >>> made = PeriodicMADE(3, 4, hidden=(16,))
        >>> made(torch.rand(5, 3)).shape
        torch.Size([5, 3, 4])
    """

    def __init__(
        self,
        features: int,
        outputs_per_input: int,
        hidden: Sequence[int] = (64, 64),
        *,
        context_dim: int | None = None,
        order: Sequence[int] | Tensor | None = None,
        activation: str = "relu",
        zero_last: bool = True,
    ):
        super().__init__()
        if not hidden:
            raise ValueError("PeriodicMADE: needs at least one hidden layer")
        order = torch.arange(1, features + 1) if order is None else torch.as_tensor(order)
        if sorted(order.tolist()) != list(range(1, features + 1)):
            raise ValueError(
                f"PeriodicMADE: order must be a permutation of 1..{features}, got {order.tolist()}"
            )
        self.features, self.outputs_per_input = features, outputs_per_input
        self.register_buffer("order", order.clone())
        # With a context, degree-0 hidden units see only the context, so that the first angle's
        # parameters depend on it too.
        masks = made_masks(order, hidden, outputs_per_input, conditional=context_dim is not None)
        masks[0] = masks[0].repeat_interleave(2, dim=1)  # cos x_i and sin x_i share a degree
        self.layers = nn.ModuleList(MaskedLinear(m) for m in masks)
        self.activation = make_activation(activation)
        self.context_layer = None if context_dim is None else nn.Linear(context_dim, hidden[0])
        if zero_last:
            nn.init.zeros_(self.layers[-1].weight)
            nn.init.zeros_(self.layers[-1].bias)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``(..., n)`` angles -> ``(..., n, P)`` parameters."""
        h = self.layers[0](periodic_embedding(x))
        if self.context_layer is not None and context is not None:
            h = h + self.context_layer(context)
        for layer in self.layers[1:]:
            h = layer(self.activation(h))
        return h.unflatten(-1, (self.features, self.outputs_per_input))

    def solve(
        self,
        x: Tensor,
        context: Tensor | None,
        step: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]],
    ) -> tuple[Tensor, Tensor]:
        """Solve ``out_i = step(x_i, theta_i(out_<i))`` angle by angle, in autoregressive order.

        The first layer's pre-activation is updated by ``cos(out_i) W[:, 2i] + sin(out_i)
        W[:, 2i + 1]`` after each solved angle and only the output rows of the angle being
        solved are evaluated, so each of the ``n`` steps costs the hidden layers only.

        Arguments:
            x: ``(..., n)`` inputs of the circle maps.
            context: context or ``None``.
            step: ``(x_i, params_i) -> (out_i, logabsdet_i)`` with ``x_i`` of shape ``(...)``
                and ``params_i`` of shape ``(..., P)``.

        Returns:
            ``(out, logabsdet)`` with ``out`` like ``x`` and the logdet summed over angles.
        """
        first, last = self.layers[0], self.layers[-1]
        w_first = first.weight * first.mask
        w_last = last.weight * last.mask
        n, p = self.features, self.outputs_per_input
        pre = first.bias
        if self.context_layer is not None and context is not None:
            pre = pre + self.context_layer(context)
        batch = torch.broadcast_shapes(x.shape[:-1], pre.shape[:-1])
        pre = pre.expand(*batch, pre.shape[-1])
        x = x.expand(*batch, n)
        outputs: list[Tensor | None] = [None] * n
        total = None
        for i in torch.argsort(self.order).tolist():
            h = self.activation(pre)
            for layer in self.layers[1:-1]:
                h = self.activation(layer(h))
            rows = slice(i * p, (i + 1) * p)
            out, logdet = step(x[..., i], F.linear(h, w_last[rows], last.bias[rows]))
            outputs[i] = out
            total = logdet if total is None else total + logdet
            pre = (
                pre
                + torch.cos(out).unsqueeze(-1) * w_first[:, 2 * i]
                + torch.sin(out).unsqueeze(-1) * w_first[:, 2 * i + 1]
            )
        return torch.stack(outputs, dim=-1), total
