"""Fixed elementwise bijections between ``R^d`` and boxes, with exact logdets.

Each layer applies a scalar bijection ``f`` to every coordinate, so the Jacobian is diagonal
and ``log|det J| = sum_i log|f'(x_i)|``. The scalar maps and their log-derivatives come from
:mod:`manifoldflows.functional.elementwise` (written once, numerically stable in the tails).
These layers have no parameters. In the forward (latent -> data) direction, ``Sigmoid``,
``Tanh``, ``Softplus`` and ``Exp`` end a flow whose data are bounded (``Flow.log_prob`` then runs
their logit/atanh/log inverses); ``Logit`` and ``IntervalToReal`` go from a box to ``R^d``, e.g.
after a base distribution that lives on the box.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import Tensor

from ..core import Transform
from ..functional import elementwise as kernels
from ..spaces import Euclidean, Interval
from .linear import _check_features

__all__ = ["Sigmoid", "Logit", "Tanh", "Softplus", "Exp", "IntervalToReal"]

Kernel = Callable[[Tensor], tuple[Tensor, Tensor]]


def _check_bounds(owner: str, low: float, high: float) -> tuple[float, float]:
    try:
        low, high = float(low), float(high)
    except (TypeError, ValueError):
        raise ValueError(f"{owner}: expected real bounds, got low={low!r}, high={high!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"{owner}: expected finite bounds low < high, got low={low}, high={high}")
    return low, high


class _Elementwise(Transform):
    """Shared machinery: apply scalar kernels and sum their log-derivatives over the last dim."""

    def _forward_kernel(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _inverse_kernel(self, y: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        y, ld = self._forward_kernel(x)
        return y, ld.sum(-1)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        x, ld = self._inverse_kernel(y)
        return x, ld.sum(-1)


class Sigmoid(_Elementwise):
    """Scaled logistic sigmoid ``R^d -> (low, high)^d``.

    ``y = low + (high - low) * sigma(x)`` with ``sigma(x) = 1 / (1 + e^-x)``, so::

        log|dy/dx| = log(high - low) - softplus(-x) - softplus(x),

    which stays finite for all finite ``x`` (no ``log`` of a saturated sigmoid). The inverse
    is the scaled logit; data points exactly at a bound are moved inside by one ``eps`` of
    their dtype.

    Arguments:
        dim: dimension ``d``.
        low, high: finite bounds of the codomain ``Interval(low, high, d)``.

    Inputs of ``forward`` have shape ``(..., d)``; the logdet has shape ``(...)``.

    References:
        Dinh, Sohl-Dickstein & Bengio 2016, Real NVP, arXiv:1605.08803 (logit pre-processing
        of bounded data).

    Example:
        >>> import torch
        >>> layer = Sigmoid(2, low=-1.0, high=3.0)
        >>> y, logdet = layer(torch.zeros(2))
        >>> y.tolist(), round(logdet.item(), 6)  # 2 * log(4 / 4)
        ([1.0, 1.0], 0.0)
    """

    def __init__(self, dim: int, low: float = 0.0, high: float = 1.0):
        owner = type(self).__name__
        d = _check_features(owner, dim)
        low, high = _check_bounds(owner, low, high)
        super().__init__(Euclidean(d), Interval(low, high, d))
        self.features, self.low, self.high = d, low, high

    def _forward_kernel(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return kernels.real_to_interval(x, self.low, self.high)

    def _inverse_kernel(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return kernels.interval_to_real(y, self.low, self.high)


class Logit(_Elementwise):
    """Scaled logit ``(low, high)^d -> R^d``, the inverse direction of :class:`Sigmoid`.

    With ``u = (y - low) / (high - low)``::

        x = log u - log(1 - u),        log|dx/dy| = -log u - log(1 - u) - log(high - low).

    Inputs outside ``[low, high]`` are refused with :class:`~manifoldflows.errors.InvalidInput`
    (points exactly on a bound are moved inside by one ``eps`` of their dtype).

    Arguments:
        dim: dimension ``d``.
        low, high: finite bounds of the domain ``Interval(low, high, d)``.

    Inputs of ``forward`` have shape ``(..., d)``; the logdet has shape ``(...)``.

    References:
        Dinh, Sohl-Dickstein & Bengio 2016, Real NVP, arXiv:1605.08803;
        Papamakarios, Pavlakou & Murray 2017, MAF, arXiv:1705.07057.

    Example:
        >>> import torch
        >>> layer = Logit(1, low=0.0, high=2.0)
        >>> x, logdet = layer(torch.tensor([[1.0]]))
        >>> x.tolist(), round(logdet.item(), 6)  # log(1 / (0.25 * 2))
        ([[0.0]], 0.693147)
    """

    def __init__(self, dim: int, low: float = 0.0, high: float = 1.0):
        owner = type(self).__name__
        d = _check_features(owner, dim)
        low, high = _check_bounds(owner, low, high)
        super().__init__(Interval(low, high, d), Euclidean(d))
        self.features, self.low, self.high = d, low, high

    def _forward_kernel(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return kernels.interval_to_real(x, self.low, self.high)

    def _inverse_kernel(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return kernels.real_to_interval(y, self.low, self.high)


class Tanh(_Elementwise):
    """Hyperbolic tangent ``R^d -> (-1, 1)^d``.

    ``y = tanh x`` with the stable form ``log|dy/dx| = 2 (log 2 - x - softplus(-2x))``; the
    inverse is ``atanh`` (points at ``+-1`` are moved inside by one ``eps`` of their dtype).

    Arguments:
        dim: dimension ``d``.

    Inputs of ``forward`` have shape ``(..., d)``; the logdet has shape ``(...)``.

    References:
        Haarnoja et al. 2018, Soft Actor-Critic, arXiv:1801.01290 (tanh-squashed densities).

    Example:
        >>> import torch
        >>> layer = Tanh(3)
        >>> y, logdet = layer(torch.zeros(4, 3))
        >>> y.abs().max().item(), logdet.tolist()
        (0.0, [0.0, 0.0, 0.0, 0.0])
    """

    def __init__(self, dim: int):
        d = _check_features(type(self).__name__, dim)
        super().__init__(Euclidean(d), Interval(-1.0, 1.0, d))
        self.features = d

    def _forward_kernel(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return kernels.tanh(x)

    def _inverse_kernel(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return kernels.atanh(y)


class Softplus(_Elementwise):
    """Softplus ``R^d -> (0, inf)^d``.

    ``y = log(1 + e^x)``, ``log|dy/dx| = log sigma(x) = -softplus(-x)``; the inverse is
    ``x = y + log(-expm1(-y))`` (stable for small and large ``y``).

    Arguments:
        dim: dimension ``d``.

    Inputs of ``forward`` have shape ``(..., d)``; the logdet has shape ``(...)``.

    References:
        Dugas et al. 2001, Incorporating Second-Order Functional Knowledge for Better Option
        Pricing (NeurIPS; no arXiv id); used as a positivity bijector e.g. in Dillon et al. 2017,
        TensorFlow Distributions, arXiv:1711.10604.

    Example:
        >>> import torch
        >>> layer = Softplus(1)
        >>> y, logdet = layer(torch.zeros(1))
        >>> round(y.item(), 6), round(logdet.item(), 6)  # log 2, log(1/2)
        (0.693147, -0.693147)
    """

    def __init__(self, dim: int):
        d = _check_features(type(self).__name__, dim)
        super().__init__(Euclidean(d), Interval(0.0, math.inf, d))
        self.features = d

    def _forward_kernel(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return kernels.softplus(x)

    def _inverse_kernel(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return kernels.softplus_inverse(y)


class Exp(_Elementwise):
    """Exponential ``R^d -> (0, inf)^d``: ``y = e^x``, ``log|dy/dx| = x``; inverse ``log``.

    Its codomain is the same space as :class:`Softplus`'s, ``Interval(0, inf, d)``.

    Arguments:
        dim: dimension ``d``.

    Inputs of ``forward`` have shape ``(..., d)``; the logdet has shape ``(...)``.

    References:
        Dillon et al. 2017, TensorFlow Distributions, arXiv:1711.10604 (Exp bijector).

    Example:
        >>> import torch
        >>> layer = Exp(2)
        >>> y, logdet = layer(torch.tensor([0.0, 1.0]))
        >>> round(y[1].item(), 6), logdet.item()
        (2.718282, 1.0)
    """

    def __init__(self, dim: int):
        d = _check_features(type(self).__name__, dim)
        super().__init__(Euclidean(d), Interval(0.0, math.inf, d))
        self.features = d

    def _forward_kernel(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return kernels.exp(x)

    def _inverse_kernel(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return kernels.log(y)


class IntervalToReal(Transform):
    """The chart of an :class:`~manifoldflows.spaces.Interval` onto ``R^d``, as a layer.

    ``forward`` is ``space.to_real`` and ``inverse`` is ``space.from_real``: a scaled logit for
    a bounded box, ``log(y - low)`` / ``-log(high - y)`` for a half-line and the identity for
    the whole line, with the matching ``log|det|``. A flow for data in the box ends with
    ``Inverse(IntervalToReal(space))`` (its ``log_prob`` then runs this chart); the layer itself
    starts a chain whose base distribution lives on the box.

    Arguments:
        space: the box ``Interval(low, high, d)`` (the domain); the codomain is ``Euclidean(d)``.

    Inputs of ``forward`` have shape ``(..., d)``; the logdet has shape ``(...)``.

    References:
        Dinh, Sohl-Dickstein & Bengio 2016, Real NVP, arXiv:1605.08803 (logit transform of
        bounded data).

    Example:
        >>> import torch
        >>> import math
        >>> from manifoldflows.spaces import Interval
        >>> layer = IntervalToReal(Interval(1.0, math.inf, 2))
        >>> x, logdet = layer(torch.tensor([2.0, 1.0 + math.e]))
        >>> x.tolist(), round(logdet.item(), 6)  # log(y - 1), -sum log(y - 1)
        ([0.0, 1.0], -1.0)
    """

    domain: Interval

    def __init__(self, space: Interval):
        if not isinstance(space, Interval):
            raise ValueError(f"{type(self).__name__}: expected an Interval space, got {space!r}")
        super().__init__(space, Euclidean(space.d))
        self.features = space.d

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self.domain.to_real(x)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self.domain.from_real(y)
