"""A base class for layers whose parameters may be shifted by a function of the context."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..core import Transform
from ..nn.mlp import MLP

__all__ = ["ContextShiftedParameters"]


class ContextShiftedParameters(Transform):
    """Raw parameters (``nn.Parameter``) plus, with a context, an MLP adding offsets to them.

    Subclasses call :meth:`_setup_raw` with the initial raw values; :meth:`_raw` returns them,
    each shifted by its slice of the context network's output (broadcast over the context's
    batch shape) when a context is given. The network's last layer starts at zero, so a
    conditional layer starts equal to the unconditional one.
    """

    def _setup_raw(
        self,
        raw: dict[str, Tensor],
        context_dim: int | None,
        hidden: Sequence[int],
        activation: str,
    ) -> None:
        self._raw_names = tuple(raw)
        for name, value in raw.items():
            self.register_parameter(name, nn.Parameter(value.to(torch.get_default_dtype())))
        total = sum(v.numel() for v in raw.values())
        self.context_net = (
            None
            if context_dim is None
            else MLP(context_dim, total, tuple(hidden), activation, zero_last=True)
        )

    def _raw(self, context: Tensor | None) -> dict[str, Tensor]:
        params = {name: getattr(self, name) for name in self._raw_names}
        if context is None or self.context_net is None:
            return params
        delta = self.context_net(context)
        batch = delta.shape[:-1]
        out, offset = {}, 0
        for name, value in params.items():
            size = value.numel()
            out[name] = value + delta[..., offset : offset + size].reshape(*batch, *value.shape)
            offset += size
        return out
