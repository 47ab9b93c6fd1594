"""The :class:`Distribution` base class."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._checks import check_context, check_points, context_batch_shape, reference_tensor
from .._validation import validate_flag
from ..spaces import Space

__all__ = ["Distribution"]

Shape = tuple[int, ...] | torch.Size | int


def as_shape(shape: Shape) -> tuple[int, ...]:
    return (shape,) if isinstance(shape, int) else tuple(shape)


class Distribution(nn.Module):
    """A probability distribution on a :class:`~manifoldflows.spaces.Space`.

    Densities are with respect to the Riemannian volume of ``space``. Samples have shape
    ``shape + context.shape[:-1] + space.event_shape``: a context adds its batch dimensions
    after the requested sample shape (as in ``torch.distributions``). An unconditional
    distribution (``context_dim=None``) refuses a context with
    :class:`~manifoldflows.errors.InvalidInput` instead of silently ignoring it.

    Subclasses implement ``_rsample(shape, context, generator)`` and ``_log_prob(x, context)``,
    and may override ``_sample_and_log_prob`` when both come cheaper together.

    Attributes:
        space: where the samples live.
        context_dim: number of context features the distribution uses (``None``: none).
        validate: check inputs (shapes, dtypes, finiteness, membership) on every public call:
            ``True``/``False`` for this object, or ``None`` (the default) to follow the
            package-wide switch (:func:`manifoldflows.set_validation`).
    """

    validate = validate_flag()

    def __init__(self, space: Space, *, context_dim: int | None = None):
        super().__init__()
        self.space = space
        self.context_dim = context_dim

    @property
    def name(self) -> str:
        """The class name, used in error messages."""
        return type(self).__name__

    def _dtype_device(self) -> tuple[torch.dtype, torch.device]:
        ref = reference_tensor(self)
        if ref is None:
            return torch.get_default_dtype(), torch.device("cpu")
        return ref.dtype, ref.device

    def _full_shape(self, shape: Shape, context: Tensor | None) -> tuple[int, ...]:
        return as_shape(shape) + tuple(context_batch_shape(context))

    def _check_sample_context(self, context: Tensor | None) -> None:
        if self.validate and (self.context_dim is not None or context is not None):
            dtype, device = self._dtype_device()
            probe = torch.empty(0, dtype=dtype, device=device)
            check_context(context, self.context_dim, context_batch_shape(context), probe, self.name)

    # ------------------------------------------------------------------ public API
    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Log-density of ``x`` (batch shape ``x.shape[:-event_ndim]``)."""
        if self.validate:
            check_points(self, x, self.space, f"{self.name}.log_prob")
            check_context(
                context, self.context_dim, self.space.batch_shape(x), x, f"{self.name}.log_prob"
            )
        return self._log_prob(x, context)

    def rsample(
        self,
        shape: Shape = (),
        context: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Reparameterised samples (differentiable w.r.t. the parameters)."""
        self._check_sample_context(context)
        return self._rsample(self._full_shape(shape, context), context, generator)

    def sample(
        self,
        shape: Shape = (),
        context: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Samples without gradient."""
        with torch.no_grad():
            return self.rsample(shape, context, generator)

    def sample_and_log_prob(
        self,
        shape: Shape = (),
        context: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Reparameterised samples and their log-density in one pass."""
        self._check_sample_context(context)
        return self._sample_and_log_prob(self._full_shape(shape, context), context, generator)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Same as :meth:`log_prob`."""
        return self.log_prob(x, context)

    # ------------------------------------------------------------------ to implement
    def _rsample(
        self,
        shape: tuple[int, ...],
        context: Tensor | None,
        generator: torch.Generator | None,
    ) -> Tensor:
        raise NotImplementedError(f"{self.name} cannot be sampled")

    def _log_prob(self, x: Tensor, context: Tensor | None) -> Tensor:
        raise NotImplementedError(f"{self.name} has no density")

    def _sample_and_log_prob(
        self,
        shape: tuple[int, ...],
        context: Tensor | None,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, Tensor]:
        x = self._rsample(shape, context, generator)
        return x, self._log_prob(x, context)
