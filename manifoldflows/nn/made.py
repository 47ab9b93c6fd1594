"""MADE: masked autoencoder for distribution estimation (Germain et al. 2015, arXiv:1502.03509).

A feed-forward network whose outputs for coordinate ``i`` depend only on inputs that come
before ``i`` in a given order, obtained by masking the weights of ordinary linear layers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .mlp import make_activation

__all__ = ["MaskedLinear", "MADE", "made_masks"]


def made_masks(order: Tensor, hidden: Sequence[int], outputs_per_input: int) -> list[Tensor]:
    """Connectivity masks for MADE.

    Arguments:
        order: ``(d,)`` degrees of the inputs, a permutation of ``1..d``.
        hidden: hidden layer sizes.
        outputs_per_input: outputs per input coordinate; output ``(i, p)`` has degree
            ``order[i]`` and is laid out at position ``i * outputs_per_input + p``.

    Returns:
        One ``(out, in)`` 0/1 mask per linear layer.
    """
    d = order.numel()
    degrees = [order]
    for size in hidden:
        # Hidden degrees cycle through 1..d-1 so every degree is represented (when size >= d-1).
        degrees.append(torch.arange(size) % max(d - 1, 1) + 1)
    masks = [
        (deg_out[:, None] >= deg_in[None, :]) for deg_in, deg_out in zip(degrees[:-1], degrees[1:])
    ]
    out_degrees = order.repeat_interleave(outputs_per_input)
    masks.append(out_degrees[:, None] > degrees[-1][None, :])
    return [m.to(torch.get_default_dtype()) for m in masks]


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask."""

    def __init__(self, mask: Tensor, bias: bool = True):
        super().__init__(mask.shape[1], mask.shape[0], bias=bias)
        self.register_buffer("mask", mask.clone())

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """Autoregressive network: outputs ``(..., d, P)``, row ``i`` depends on ``x_j`` with
    ``order[j] < order[i]`` and on the context.

    Arguments:
        features: input dimension ``d``.
        outputs_per_input: ``P``.
        hidden: hidden layer sizes (each should be at least ``d - 1``).
        context_dim: context features, fed (unmasked) into the first hidden layer.
        order: input degrees, a permutation of ``1..d`` (default ``1..d``).
        activation: activation name.
        zero_last: zero-initialise the output layer.

    Example:
        >>> made = MADE(3, 2, hidden=(16,))
        >>> made(torch.randn(5, 3)).shape
        torch.Size([5, 3, 2])
    """

    def __init__(
        self,
        features: int,
        outputs_per_input: int,
        hidden: Sequence[int] = (64, 64),
        *,
        context_dim: int | None = None,
        order: Tensor | None = None,
        activation: str = "relu",
        zero_last: bool = True,
    ):
        super().__init__()
        if not hidden:
            raise ValueError("MADE: needs at least one hidden layer")
        order = torch.arange(1, features + 1) if order is None else torch.as_tensor(order)
        if sorted(order.tolist()) != list(range(1, features + 1)):
            raise ValueError(
                f"MADE: order must be a permutation of 1..{features}, got {order.tolist()}"
            )
        self.features, self.outputs_per_input = features, outputs_per_input
        self.register_buffer("order", order.clone())
        masks = made_masks(order, hidden, outputs_per_input)
        self.layers = nn.ModuleList(MaskedLinear(m) for m in masks)
        self.activation = make_activation(activation)
        self.context_layer = None if context_dim is None else nn.Linear(context_dim, hidden[0])
        if zero_last:
            nn.init.zeros_(self.layers[-1].weight)
            nn.init.zeros_(self.layers[-1].bias)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        h = self.layers[0](x)
        if self.context_layer is not None and context is not None:
            h = h + self.context_layer(context)
        for layer in self.layers[1:]:
            h = layer(self.activation(h))
        return h.unflatten(-1, (self.features, self.outputs_per_input))
