"""A base class for layers whose raw parameters may be shifted by a function of the context."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..core import Transform
from ..nn.conditioner import Conditioner

__all__ = ["ContextShiftedParameters"]


class ContextShiftedParameters(Transform):
    """Raw parameters held by a :class:`~manifoldflows.nn.conditioner.Conditioner` with no inputs.

    Subclasses call :meth:`_setup_raw` with the initial raw values; :meth:`_raw` returns them,
    unconditional layers also expose each by name as an attribute (``layer.u``);
    without a context as learned tensors, with a context as the output of the conditioner's MLP
    of the context (whose last layer starts at zero and whose last bias holds the raw values, so
    a conditional layer starts equal to the unconditional one).
    """

    def _setup_raw(
        self,
        raw: dict[str, Tensor],
        context_dim: int | None,
        hidden: Sequence[int],
        activation: str,
    ) -> None:
        self.parameter_net = Conditioner(
            0,
            {name: tuple(value.shape) for name, value in raw.items()},
            context_dim=context_dim,
            hidden=hidden,
            activation=activation,
            initial=raw,
        )

    def _raw(self, context: Tensor | None) -> dict[str, Tensor]:
        return self.parameter_net(None, context)

    def __getattr__(self, name: str) -> Tensor | nn.Module:
        """Unconditional layers expose their raw parameters by name (``layer.u``, ...)."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            net = self._modules.get("parameter_net")
            if net is not None and net.net is None and name in net.free:
                return net.free[name]
            raise
