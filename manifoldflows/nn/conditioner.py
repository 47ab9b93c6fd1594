"""One conditioner: ``(features, context) -> named parameters``.

Every learned layer of the package gets its parameters the same way:

* from features (a coupling's conditioning coordinates) and optionally a context, through an MLP
  whose last layer starts at zero and whose last bias holds the initial raw parameters, so a new
  layer starts exactly at its initial state;
* from a context alone (a conditional element-wise layer, a conditional distribution), the same
  MLP with the context as input — the initial raw parameters plus a context-dependent offset;
* from nothing (an unconditional element-wise layer): the raw parameters themselves, learned.

The flat output is cut into named tensors by a :class:`ParameterLayout` (zuko-style ``shapes``):
name-major blocks, so ``params["shift"]`` of an affine map is a contiguous view and
``params["widths"]`` of a spline keeps each coordinate's bins together.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from .mlp import MLP, concat_context

__all__ = ["ParameterLayout", "Conditioner"]

Shape = tuple[int, ...]


class ParameterLayout:
    """Named parameter shapes and how they sit in one flat vector.

    Arguments:
        shapes: ``name -> shape`` (without batch dimensions), in the order they are stored.

    Example:
        >>> layout = ParameterLayout({"shift": (3,), "widths": (3, 4)})
        >>> layout.total
        15
        >>> {k: tuple(v.shape) for k, v in layout.unpack(torch.zeros(2, 15)).items()}
        {'shift': (2, 3), 'widths': (2, 3, 4)}
    """

    def __init__(self, shapes: Mapping[str, Sequence[int]]):
        self.shapes: dict[str, Shape] = {k: tuple(int(n) for n in v) for k, v in shapes.items()}
        self.sizes = {k: math.prod(v) for k, v in self.shapes.items()}
        self.total = sum(self.sizes.values())
        # (name, start, stop, shape) once, so unpacking is a few views per call
        self._blocks: list[tuple[str, int, int, Shape]] = []
        offset = 0
        for name, shape in self.shapes.items():
            self._blocks.append((name, offset, offset + self.sizes[name], shape))
            offset += self.sizes[name]

    def __repr__(self) -> str:
        return f"ParameterLayout({self.shapes})"

    def unpack(self, flat: Tensor) -> dict[str, Tensor]:
        """Cut ``(..., total)`` into ``{name: (..., *shape)}`` views."""
        out = {}
        for name, start, stop, shape in self._blocks:
            if not shape:
                out[name] = flat[..., start]
            elif len(shape) == 1:
                out[name] = flat[..., start:stop]
            else:
                out[name] = flat[..., start:stop].unflatten(-1, shape)
        return out

    def pack(self, params: Mapping[str, Tensor]) -> Tensor:
        """Inverse of :meth:`unpack` for unbatched parameters (e.g. initial values)."""
        return torch.cat([params[name].reshape(-1) for name in self.shapes])


class Conditioner(nn.Module):
    """``(features, context) -> {name: parameters}``, the package's one conditioner.

    Arguments:
        in_features: number of input features (``0``: the parameters depend on the context only,
            or on nothing).
        shapes: ``name -> shape`` of the parameters to produce (see :class:`ParameterLayout`).
        context_dim: context size, or ``None``.
        hidden: hidden sizes of the MLP (when there are inputs).
        activation: MLP activation.
        initial: initial raw values per name (default zeros); a new conditioner outputs exactly
            these for every input.

    Example:
        >>> net = Conditioner(2, {"shift": (3,)}, context_dim=1, hidden=(8,))
        >>> net(torch.randn(5, 2), torch.randn(5, 1))["shift"].shape
        torch.Size([5, 3])
        >>> free = Conditioner(0, {"angle": ()}, initial={"angle": torch.tensor(0.5)})
        >>> free()["angle"].item(), free.free["angle"].requires_grad
        (0.5, True)
    """

    def __init__(
        self,
        in_features: int,
        shapes: Mapping[str, Sequence[int]],
        *,
        context_dim: int | None = None,
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
        initial: Mapping[str, Tensor] | None = None,
    ):
        super().__init__()
        self.layout = ParameterLayout(shapes)
        self.in_features, self.context_dim = int(in_features), context_dim
        dtype = torch.get_default_dtype()
        init = torch.zeros(self.layout.total, dtype=dtype)
        if initial:
            full = {
                k: (initial[k] if k in initial else torch.zeros(s))
                for k, s in self.layout.shapes.items()
            }
            init = self.layout.pack({k: torch.as_tensor(v, dtype=dtype) for k, v in full.items()})
        inputs = self.in_features + (context_dim or 0)
        if inputs == 0:
            self.net = None
            #: the raw parameters by name when they depend on nothing (learned directly)
            self.free = nn.ParameterDict(
                {k: nn.Parameter(v.clone()) for k, v in self.layout.unpack(init).items()}
            )
        else:
            self.net = MLP(inputs, self.layout.total, tuple(hidden), activation, zero_last=True)
            with torch.no_grad():
                self.net[-1].bias.copy_(init)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, context_dim={self.context_dim}, {self.layout!r}"

    def raw(self, x: Tensor | None = None, context: Tensor | None = None) -> Tensor:
        """The flat ``(..., total)`` parameter vector."""
        if self.net is None:
            return self.layout.pack(dict(self.free.items()))
        if self.in_features == 0:
            if context is None:  # unconditional use of a conditional layer: the initial state
                return self.net[-1].bias
            return self.net(context)
        return self.net(concat_context(x, context if self.context_dim is not None else None))

    def forward(self, x: Tensor | None = None, context: Tensor | None = None) -> dict[str, Tensor]:
        if self.net is None:
            return dict(self.free.items())
        return self.layout.unpack(self.raw(x, context))
