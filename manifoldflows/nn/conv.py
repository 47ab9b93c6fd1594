"""Convolutional conditioner networks for image flows (Glow, RealNVP multi-scale)."""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .mlp import make_activation

__all__ = ["ConvNet"]


class ConvNet(nn.Module):
    """Fully convolutional net ``(C_in, H, W) -> (C_out, H, W)``, optionally conditional.

    The architecture of Glow's coupling network: a ``k x k`` convolution, ``1 x 1``
    convolutions for the middle hidden layers, and a final ``k x k`` convolution, with an
    activation in between and "same" zero padding, so the spatial size is kept::

        hidden=(h1, h2):  conv k x k (C_in -> h1), act, conv 1x1 (h1 -> h2), act,
                          conv k x k (h2 -> C_out)
        hidden=():        conv k x k (C_in -> C_out)  (Glow's split-prior network)

    **Context.** With ``context_dim`` set, a linear projection of the context vector is added
    to the feature maps of the first convolution, broadcast over all pixels:
    ``h1[c, i, j] = conv(x)[c, i, j] + (A context + b)[c]``. With ``hidden=()`` this makes the
    output's per-channel offset a function of the context (a class-conditional prior, as in
    Glow).

    Arguments:
        in_channels: input channels ``C_in``.
        out_channels: output channels ``C_out``.
        hidden: channels of the hidden layers.
        context_dim: size of the context vector (``None``: unconditional).
        activation: name in :data:`~manifoldflows.nn.mlp.ACTIVATIONS` or an ``nn.Module``
            class.
        kernel_size: odd size ``k`` of the first and last convolutions.
        zero_last: initialise the last convolution (and, with ``hidden=()``, the context
            projection) to zero, so the net outputs zeros and the flow layer starts as the
            identity.

    Inputs ``x`` have shape ``(..., C_in, H, W)`` and ``context`` ``(..., context_dim)``;
    their batch shapes broadcast and the output has shape ``batch + (C_out, H, W)``.

    References:
        Kingma & Dhariwal 2018, Glow: Generative Flow with Invertible 1x1 Convolutions,
        arXiv:1807.03039 (the coupling network ``NN()``).

    Example:
        >>> net = ConvNet(2, 4, hidden=(8, 8), context_dim=3)
        >>> net(torch.randn(5, 2, 4, 4), torch.randn(5, 3)).shape
        torch.Size([5, 4, 4, 4])
        >>> bool(net(torch.randn(2, 4, 4), torch.randn(3)).eq(0).all())  # zero_last
        True
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden: Sequence[int] = (64, 64),
        *,
        context_dim: int | None = None,
        activation: str | type[nn.Module] = "relu",
        kernel_size: int = 3,
        zero_last: bool = True,
    ):
        super().__init__()
        name = type(self).__name__
        sizes = [_positive(name, "in_channels", in_channels)]
        sizes += [_positive(name, "hidden channels", h) for h in hidden]
        sizes.append(_positive(name, "out_channels", out_channels))
        kernel_size = _positive(name, "kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"{name}: expected an odd kernel_size, got {kernel_size}")
        if context_dim is not None:
            context_dim = _positive(name, "context_dim", context_dim)
        n = len(sizes) - 1
        convs = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            k = kernel_size if i in (0, n - 1) else 1
            convs.append(nn.Conv2d(a, b, k, padding=k // 2))
        self.convs = nn.ModuleList(convs)
        self.activations = nn.ModuleList(make_activation(activation) for _ in range(n - 1))
        self.context_dim = context_dim
        self.context_proj = None if context_dim is None else nn.Linear(context_dim, sizes[1])
        self.in_channels, self.out_channels = sizes[0], sizes[-1]
        if zero_last:
            nn.init.zeros_(convs[-1].weight)
            nn.init.zeros_(convs[-1].bias)
            if n == 1 and self.context_proj is not None:
                nn.init.zeros_(self.context_proj.weight)
                nn.init.zeros_(self.context_proj.bias)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Apply the net; see the class docstring for shapes."""
        batch = x.shape[:-3]
        if self.context_proj is not None:
            if context is None:
                raise ValueError(
                    f"{type(self).__name__}: expected a context with {self.context_dim} "
                    "features, got None"
                )
            batch = torch.broadcast_shapes(batch, context.shape[:-1])
            context = context.expand(*batch, context.shape[-1]).reshape(-1, context.shape[-1])
        x = x.expand(*batch, *x.shape[-3:]).reshape(-1, *x.shape[-3:])
        h = self.convs[0](x)
        if self.context_proj is not None:
            h = h + self.context_proj(context)[..., None, None]
        for act, conv in zip(self.activations, self.convs[1:]):
            h = conv(act(h))
        return h.reshape(*batch, *h.shape[-3:])


def _positive(owner: str, what: str, value: object) -> int:
    try:
        out = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        out = None
    if isinstance(value, bool) or out is None or out < 1:
        raise ValueError(f"{owner}: expected a positive integer {what}, got {value!r}")
    return out
