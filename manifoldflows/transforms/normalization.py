"""Normalisation layers: Glow's activation normalisation with data-dependent initialisation."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._checks import check_points
from ..core import Flow, Transform
from ..errors import InvalidInput
from ..spaces import Euclidean
from .linear import _batch_logdet, _check_features

__all__ = ["ActNorm", "initialize_actnorm"]


class ActNorm(Transform):
    """Per-feature affine map ``y = x * exp(log_scale) + shift`` with data-dependent init.

    Forward (latent -> data) and inverse are::

        y = x * exp(a) + b,        x = (y - b) * exp(-a),        log|det dy/dx| = sum_i a_i.

    **Data-dependent initialisation** happens only when asked for: :func:`initialize_actnorm`
    (which :func:`~manifoldflows.training.fit` calls on its first maximum-likelihood batch)
    runs the density direction of a whole flow on data and initialises every ActNorm on the
    points that reach it; :meth:`initialize` does it for one layer. ``b`` and ``a`` are set so
    that the latents of that batch ``y`` have zero mean and unit variance per feature::

        b = mean(y),        a = log(std(y))

    (population statistics over all batch dimensions). Neither :meth:`forward` nor
    :meth:`inverse` ever initialises, in training or eval mode, so evaluating a density
    (``log_prob`` after reverse-KL training, inside AIS, on a single point) never changes the
    layer. An uninitialised layer is the identity (``a = b = 0``), trainable like any other.

    Degenerate batches: fewer than two points (no spread to measure) or non-finite values
    raise :class:`~manifoldflows.errors.InvalidInput` naming the layer; a feature whose spread
    is at most ``eps * (1 + |mean|)`` (constant up to rounding) is only centred and keeps
    ``a = 0``, instead of being blown up by ``1 / spread``.

    The boolean buffer ``initialized`` records whether the layer was initialised; it is part of
    the ``state_dict``, so a saved and reloaded layer is not initialised again.

    Arguments:
        dim: dimension ``d``.
        eps: relative spread below which a feature counts as constant (see above).

    Inputs have shape ``(..., d)`` (any batch shape); the logdet has shape ``(...)``.

    References:
        Kingma & Dhariwal 2018, Glow: Generative Flow with Invertible 1x1 Convolutions,
        arXiv:1807.03039.

    Example:
        >>> import torch
        >>> layer = ActNorm(2)
        >>> data = torch.randn(500, 2) * torch.tensor([3.0, 0.5]) + torch.tensor([1.0, -2.0])
        >>> z, _ = layer.inverse(data)  # evaluating never initialises: still the identity
        >>> bool(layer.initialized), torch.equal(z, data)
        (False, True)
        >>> initialize_actnorm(layer, data)  # explicit: returns how many layers it initialised
        1
        >>> z, logdet = layer.inverse(data)
        >>> torch.allclose(z.mean(0), torch.zeros(2), atol=1e-5)
        True
        >>> torch.allclose(z.std(0, correction=0), torch.ones(2), atol=1e-5)
        True
    """

    initialized: Tensor

    def __init__(self, dim: int, eps: float = 1e-6):
        d = _check_features(type(self).__name__, dim)
        if not eps > 0:
            raise ValueError(f"{type(self).__name__}: expected eps > 0, got {eps!r}")
        super().__init__(Euclidean(d))
        self.features = d
        self.eps = float(eps)
        self.shift = nn.Parameter(torch.zeros(d))
        self.log_scale = nn.Parameter(torch.zeros(d))
        self.register_buffer("initialized", torch.tensor(False), persistent=True)
        # Armed only by initialize_actnorm for the duration of one density pass.
        self._init_on_next_inverse = False

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, initialized={bool(self.initialized)}"

    def _rows(self, data: Tensor) -> Tensor:
        """The data as rows of ``features`` values, one row per point (and pixel)."""
        return data.reshape(-1, self.features)

    @torch.no_grad()
    def initialize(self, data: Tensor) -> ActNorm:
        """Set ``shift``/``log_scale`` so that the latents of ``data`` are standardised.

        Arguments:
            data: data-side points, shape ``(..., d)`` with at least two points.

        Returns:
            The layer itself (initialised).

        Raises:
            InvalidInput: for fewer than two points, non-finite values, or points of the wrong
                shape, dtype or device (checked whatever the validation switch says).
        """
        who = f"{self.name}.initialize"
        check_points(self, data, self.codomain, who)
        rows = self._rows(data.detach())
        if rows.shape[0] < 2:
            raise InvalidInput(
                f"{who}: expected at least two data points to measure their spread, got "
                f"shape {tuple(data.shape)}; initialise on a larger batch"
            )
        mean = rows.mean(0)
        std = rows.std(0, correction=0)
        constant = std <= self.eps * (1.0 + mean.abs())
        self.shift.copy_(mean)
        self.log_scale.copy_(torch.where(constant, torch.zeros_like(std), torch.log(std)))
        self.initialized.fill_(True)
        return self

    def _maybe_initialize(self, y: Tensor) -> None:
        if self._init_on_next_inverse:
            self._init_on_next_inverse = False
            self.initialize(y)

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        y = x * torch.exp(self.log_scale) + self.shift
        return y, _batch_logdet(self.log_scale.sum(), x)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        self._maybe_initialize(y)
        x = (y - self.shift) * torch.exp(-self.log_scale)
        return x, _batch_logdet(-self.log_scale.sum(), y)


@torch.no_grad()
def initialize_actnorm(model: Flow | Transform, x: Tensor, context: Tensor | None = None) -> int:
    """Data-dependent initialisation of every not-yet-initialised ActNorm in ``model``.

    Runs the density direction (``inverse``, data -> latent) of ``model`` once on ``x``
    without gradients; each :class:`ActNorm` (and
    :class:`~manifoldflows.transforms.ActNorm2d`) that is not initialised yet is initialised
    on the points that reach it, in order, so the layers downstream see the already
    standardised activations (Glow's scheme). Layers already initialised are left alone, so
    the call is idempotent. This is the only way, besides :meth:`ActNorm.initialize`, that an
    ActNorm gets initialised; :func:`~manifoldflows.training.fit` calls it on its first
    maximum-likelihood batch.

    Arguments:
        model: a :class:`~manifoldflows.core.Flow` (its transform is run), a
            :class:`~manifoldflows.core.Chain` or a single layer.
        x: data-side points of shape ``(..., *model's event shape)``; at least two.
        context: the context rows of ``x`` for a conditional model.

    Returns:
        How many layers were initialised (0 when there was nothing to do).

    Raises:
        InvalidInput: from the layers' checks, e.g. a batch of one point (naming the ActNorm).

    Example:
        >>> import torch
        >>> from manifoldflows.presets import RealNVP
        >>> flow = RealNVP(2, layers=2, actnorm=True)
        >>> data = torch.randn(256, 2) * 3.0 + 1.0
        >>> initialize_actnorm(flow, data), initialize_actnorm(flow, data)
        (2, 0)
    """
    if isinstance(model, Flow):
        transform = model.transform
    elif isinstance(model, Transform):
        transform = model
    else:
        raise TypeError(
            f"initialize_actnorm: expected a Flow or a Transform, got {type(model).__name__}"
        )
    pending = [m for m in transform.modules() if isinstance(m, ActNorm) and not m.initialized]
    if not pending:
        return 0
    for layer in pending:
        layer._init_on_next_inverse = True
    try:
        transform.inverse(x, context)
    finally:
        for layer in pending:
            layer._init_on_next_inverse = False
    return sum(bool(layer.initialized) for layer in pending)
