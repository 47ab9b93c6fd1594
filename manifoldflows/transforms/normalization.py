"""Normalisation layers: Glow's activation normalisation with data-dependent initialisation."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._checks import check_points
from ..core import Transform
from ..errors import InvalidInput
from ..spaces import Euclidean
from .linear import _batch_logdet, _check_features

__all__ = ["ActNorm"]


class ActNorm(Transform):
    """Per-feature affine map ``y = x * exp(log_scale) + shift`` with data-dependent init.

    Forward (latent -> data) and inverse are::

        y = x * exp(a) + b,        x = (y - b) * exp(-a),        log|det dy/dx| = sum_i a_i.

    **Data-dependent initialisation.** The first time :meth:`inverse` (the data -> latent
    direction, which ``Flow.log_prob`` runs) is called in training mode on a layer that is not
    yet initialised, ``b`` and ``a`` are set from that batch ``y`` so that its latents have
    zero mean and unit variance per feature::

        b = mean(y),        a = log(max(std(y), eps))

    (population statistics over all batch dimensions; ``eps`` guards constant features). The
    boolean buffer ``initialized`` records that this happened; it is part of the
    ``state_dict``, so a saved and reloaded layer is not re-initialised. ``forward`` never
    initialises, and neither does ``inverse`` in eval mode. :meth:`initialize` does the same
    explicitly on any data.

    Arguments:
        features: dimension ``d``.
        eps: lower bound on the per-feature standard deviation used by the initialisation.

    Inputs have shape ``(..., d)`` (any batch shape); the logdet has shape ``(...)``.

    References:
        Kingma & Dhariwal 2018, Glow: Generative Flow with Invertible 1x1 Convolutions,
        arXiv:1807.03039.

    Example:
        >>> import torch
        >>> layer = ActNorm(2)
        >>> data = torch.randn(500, 2) * torch.tensor([3.0, 0.5]) + torch.tensor([1.0, -2.0])
        >>> z, logdet = layer.inverse(data)  # first training-mode inverse: initialises
        >>> bool(layer.initialized)
        True
        >>> torch.allclose(z.mean(0), torch.zeros(2), atol=1e-5)
        True
        >>> torch.allclose(z.std(0, correction=0), torch.ones(2), atol=1e-5)
        True
    """

    initialized: Tensor

    def __init__(self, features: int, eps: float = 1e-6):
        d = _check_features(type(self).__name__, features)
        if not eps > 0:
            raise ValueError(f"{type(self).__name__}: expected eps > 0, got {eps!r}")
        super().__init__(Euclidean(d))
        self.features = d
        self.eps = float(eps)
        self.shift = nn.Parameter(torch.zeros(d))
        self.log_scale = nn.Parameter(torch.zeros(d))
        self.register_buffer("initialized", torch.tensor(False), persistent=True)
        # Host-side cache of ``initialized`` so that training steps do not synchronise with the
        # device; it is only ever trusted when True and is reset when a state dict is loaded.
        self._known_initialized = False

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, initialized={bool(self.initialized)}"

    @torch.no_grad()
    def initialize(self, data: Tensor) -> ActNorm:
        """Set ``shift``/``log_scale`` so that the latents of ``data`` are standardised.

        Arguments:
            data: data-side points, shape ``(..., d)`` with at least one point.

        Returns:
            The layer itself (initialised).
        """
        who = f"{self.name}.initialize"
        check_points(self, data, self.codomain, who)
        rows = data.detach().reshape(-1, self.features)
        if rows.shape[0] == 0:
            raise InvalidInput(
                f"{who}: expected at least one data point, got shape {tuple(data.shape)}"
            )
        mean = rows.mean(0)
        std = rows.std(0, correction=0).clamp_min(self.eps)
        self.shift.copy_(mean)
        self.log_scale.copy_(torch.log(std))
        self.initialized.fill_(True)
        self._known_initialized = True
        return self

    def _needs_init(self) -> bool:
        if not self.training or self._known_initialized:
            return False
        self._known_initialized = bool(self.initialized)
        return not self._known_initialized

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._known_initialized = False

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        y = x * torch.exp(self.log_scale) + self.shift
        return y, _batch_logdet(self.log_scale.sum(), x)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        if self._needs_init():
            self.initialize(y)
        x = (y - self.shift) * torch.exp(-self.log_scale)
        return x, _batch_logdet(-self.log_scale.sum(), y)
