"""Plain multilayer perceptrons used as conditioners."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["MLP", "ACTIVATIONS", "concat_context"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
}


def make_activation(activation: str | type[nn.Module], inplace: bool = False) -> nn.Module:
    """Instantiate an activation by name or class.

    With ``inplace=True`` activations that support it (ReLU, ELU, SiLU, LeakyReLU) overwrite
    their input, saving an allocation; only use it where the input is not needed afterwards
    (e.g. right after a linear layer).
    """
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}"
            )
        activation = ACTIVATIONS[activation]
    if inplace and "inplace" in inspect.signature(activation).parameters:
        return activation(inplace=True)
    return activation()


class MLP(nn.Sequential):
    """``in_features -> hidden... -> out_features`` with an activation between linear layers.

    Arguments:
        in_features: input size.
        out_features: output size.
        hidden: sizes of the hidden layers.
        activation: name in :data:`ACTIVATIONS` or an ``nn.Module`` class.
        zero_last: initialise the last layer's weights and bias to zero (the flow layer then
            starts at its identity or a fixed point).

    Example:
        >>> net = MLP(3, 2, hidden=(16, 16))
        >>> net(torch.randn(5, 3)).shape
        torch.Size([5, 2])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (64, 64),
        activation: str | type[nn.Module] = "relu",
        zero_last: bool = False,
    ):
        sizes = [in_features, *hidden, out_features]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(make_activation(activation, inplace=True))
        super().__init__(*layers)
        if zero_last:
            nn.init.zeros_(layers[-1].weight)
            nn.init.zeros_(layers[-1].bias)


def concat_context(x: Tensor, context: Tensor | None) -> Tensor:
    """Concatenate ``context`` to ``x`` along the last dimension, broadcasting batch shapes."""
    if context is None:
        return x
    batch = torch.broadcast_shapes(x.shape[:-1], context.shape[:-1])
    return torch.cat(
        [x.expand(*batch, x.shape[-1]), context.expand(*batch, context.shape[-1])], dim=-1
    )
