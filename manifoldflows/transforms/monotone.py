"""Elementwise monotone maps parameterised by a conditioner's output.

Coupling and autoregressive layers split into a *conditioner* (a network producing parameters)
and an elementwise *monotone map* ("transformer" in the autoregressive-flow literature) that
turns each coordinate ``x_i`` into ``y_i`` given its parameter vector. The maps below are small
picklable objects (not modules): ``params_per_dim`` says how many numbers each coordinate needs,
``forward(x, params)`` / ``inverse(y, params)`` take ``params`` of shape ``x.shape + (P,)`` and
return ``(output, elementwise logabsdet)``. All-zero parameters give the identity map (a
near-identity one for the mixture maps, whose components need distinct starting points).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..functional.affine import affine, affine_inverse, soft_clamp
from ..functional.monotonic import deep_sigmoidal_flow, logistic_mixture_transform
from ..functional.splines import rational_quadratic_spline

__all__ = [
    "MonotoneMap",
    "AdditiveMap",
    "AffineMap",
    "SplineMap",
    "make_monotone_map",
    "LogisticMixtureMap",
    "DeepSigmoidalMap",
]


class MonotoneMap:
    """Base class: an elementwise bijection ``R -> R`` with ``params_per_dim`` parameters."""

    params_per_dim: int = 0
    #: Whether conditioners should lay parameters out as ``P`` contiguous blocks of ``d`` (cheap
    #: ``params[..., p]`` views; best for maps with few parameters) rather than ``d`` blocks of
    #: ``P`` (best for maps that reduce over their parameter vector, such as splines).
    param_major: bool = False

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class AdditiveMap(MonotoneMap):
    """``y = x + t`` (NICE; Dinh et al. 2014, arXiv:1410.8516). Volume preserving."""

    params_per_dim = 1
    param_major = True

    def forward(self, x, params):
        y = x + params[..., 0]
        return y, y.new_zeros(()).expand(y.shape)

    def inverse(self, y, params):
        x = y - params[..., 0]
        return x, x.new_zeros(()).expand(x.shape)


class AffineMap(MonotoneMap):
    """``y = x exp(s) + t`` with ``s = c tanh(raw / c)`` softly clamped to ``(-c, c)``.

    RealNVP (Dinh et al. 2016, arXiv:1605.08803). The soft clamp keeps early training stable.
    """

    params_per_dim = 2
    param_major = True

    def __init__(self, scale_bound: float = 5.0):
        self.scale_bound = float(scale_bound)

    def __repr__(self) -> str:
        return f"AffineMap(scale_bound={self.scale_bound})"

    def _split(self, params: Tensor) -> tuple[Tensor, Tensor]:
        return params[..., 0], soft_clamp(params[..., 1], self.scale_bound)

    def forward(self, x, params):
        shift, log_scale = self._split(params)
        return affine(x, shift, log_scale)

    def inverse(self, y, params):
        shift, log_scale = self._split(params)
        return affine_inverse(y, shift, log_scale)


class SplineMap(MonotoneMap):
    """Rational-quadratic spline on ``[-bound, bound]`` with identity tails.

    ``3 * bins - 1`` parameters per coordinate: ``bins`` widths, ``bins`` heights and
    ``bins - 1`` interior derivatives (Durkan et al. 2019, Neural Spline Flows,
    arXiv:1906.04032). See :func:`manifoldflows.functional.splines.rational_quadratic_spline`.
    """

    def __init__(self, bins: int = 8, bound: float = 5.0):
        if bins < 2:
            raise ValueError(f"SplineMap: expected at least 2 bins, got {bins}")
        self.bins, self.bound = int(bins), float(bound)
        self.params_per_dim = 3 * self.bins - 1

    def __repr__(self) -> str:
        return f"SplineMap(bins={self.bins}, bound={self.bound})"

    def _call(self, x: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        k = self.bins
        return rational_quadratic_spline(
            x,
            params[..., :k],
            params[..., k : 2 * k],
            params[..., 2 * k :],
            inverse=inverse,
            bound=self.bound,
        )

    def forward(self, x, params):
        return self._call(x, params, inverse=False)

    def inverse(self, y, params):
        return self._call(y, params, inverse=True)


def make_monotone_map(kind: str | MonotoneMap, **options) -> MonotoneMap:
    """Build a map from its name (``"additive"``, ``"affine"``, ``"spline"``,
    ``"logistic_mixture"``, ``"deep_sigmoidal"``) and options."""
    if isinstance(kind, MonotoneMap):
        return kind
    table = {
        "additive": AdditiveMap,
        "affine": AffineMap,
        "spline": SplineMap,
        "logistic_mixture": LogisticMixtureMap,
        "deep_sigmoidal": DeepSigmoidalMap,
    }
    if kind not in table:
        raise ValueError(f"unknown monotone map {kind!r}; choose from {sorted(table)}")
    return table[kind](**options)


# --------------------------------------------------------------------------------------------
# Numerically inverted maps (Flow++ logistic mixtures, deep sigmoidal flows).

ANALYTIC_DIRECTIONS = ("inverse", "forward")


def _positive_int(value, name: str, who: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{who}: expected a positive integer {name}, got {value!r}")
    return value


def _symmetry_breaking_offsets(k: int, like: Tensor) -> Tensor:
    """``k`` evenly spaced constants in ``[-1, 1]`` (``0`` when ``k = 1``).

    Conditioners start with a zero last layer, so all components of a mixture would receive the
    same parameters and the same gradients forever; adding these fixed offsets to the locations
    makes them distinct from the first step.
    """
    if k == 1:
        return like.new_zeros(1)
    return torch.linspace(-1.0, 1.0, k, dtype=like.dtype, device=like.device)


class _NumericallyInvertedMap(MonotoneMap):
    """A map with one closed-form direction; the other is solved by a bracketed root finder.

    ``analytic="inverse"`` (the default) evaluates the formula in the data -> latent (density)
    direction, as in the papers, so ``log_prob`` is closed form and sampling root-finds;
    ``analytic="forward"`` swaps the roles (closed-form sampling, e.g. for reverse-KL training).
    """

    def __init__(self, analytic: str, iterations: int | None):
        who = type(self).__name__
        if analytic not in ANALYTIC_DIRECTIONS:
            raise ValueError(
                f"{who}: analytic must be one of {ANALYTIC_DIRECTIONS}, got {analytic!r}"
            )
        self.analytic = analytic
        self.iterations = (
            None if iterations is None else _positive_int(iterations, "iterations", who)
        )

    def _call(self, x: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def forward(self, x, params):
        return self._call(x, params, inverse=self.analytic == "inverse")

    def inverse(self, y, params):
        return self._call(y, params, inverse=self.analytic == "forward")


class LogisticMixtureMap(_NumericallyInvertedMap):
    r"""Flow++ map ``y = exp(a) logit(sum_k pi_k sigmoid((x - mu_k) / s_k)) + b``.

    ``3 * components + 2`` parameters per coordinate: mixture logits, locations (plus fixed
    offsets in ``[-1, 1]`` that break the symmetry between components), log-scales softly
    clamped to ``(-7, 7)``, the output log-scale ``a`` softly clamped to ``(-5, 5)`` and the
    shift ``b``. All-zero parameters give a near-identity map (exactly the identity for one
    component). Kernel: :func:`~manifoldflows.functional.monotonic.logistic_mixture_transform`
    (log-space evaluation, bracketed Newton/bisection inverse).

    Arguments:
        components: number of logistic components ``K``.
        analytic: ``"inverse"`` (closed-form density direction) or ``"forward"``.
        iterations: maximum root-finder iterations (default: enough for machine precision).

    References:
        Ho et al., "Flow++", ICML 2019, arXiv:1902.00275.

    Example:
        >>> m = LogisticMixtureMap(4)
        >>> x, params = torch.randn(3), torch.randn(3, m.params_per_dim)
        >>> y, ld = m.forward(x, params)
        >>> torch.allclose(m.inverse(y, params)[0], x, atol=1e-4)
        True
    """

    def __init__(
        self, components: int = 8, *, analytic: str = "inverse", iterations: int | None = None
    ):
        super().__init__(analytic, iterations)
        self.components = _positive_int(components, "number of components", type(self).__name__)
        self.params_per_dim = 3 * self.components + 2

    def __repr__(self) -> str:
        return f"LogisticMixtureMap(components={self.components}, analytic={self.analytic!r})"

    def _call(self, x: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        k = self.components
        logits = params[..., :k]
        loc = params[..., k : 2 * k] + _symmetry_breaking_offsets(k, params)
        log_scale = soft_clamp(params[..., 2 * k : 3 * k], 7.0)
        log_a = soft_clamp(params[..., 3 * k], 5.0)
        shift = params[..., 3 * k + 1]
        return logistic_mixture_transform(
            x, logits, loc, log_scale, log_a, shift, inverse=inverse, iterations=self.iterations
        )


class DeepSigmoidalMap(_NumericallyInvertedMap):
    r"""Deep sigmoidal flow ``y = logit(sum_j w_j sigmoid(a_j x + b_j))``, ``depth`` times composed.

    ``3 * hidden * depth`` parameters per coordinate; per layer: ``hidden`` weight logits
    (``w = softmax``), pre-slopes (``a = 1e-3 + softplus(.)``, equal to 1 at zero) and offsets
    ``b`` (plus fixed symmetry-breaking constants in ``[-1, 1]``). The map is a bijection of
    ``R`` with affine tails of slope ``min_j a_j`` and is evaluated in log space, so it never
    saturates. Kernel: :func:`~manifoldflows.functional.monotonic.deep_sigmoidal_flow`.

    Arguments:
        hidden: sigmoid units per layer.
        depth: number of composed DSF layers.
        analytic: ``"inverse"`` (closed-form density direction) or ``"forward"``.
        min_slope: lower bound of the slopes ``a``.
        iterations: maximum root-finder iterations (default: enough for machine precision).

    References:
        Huang et al., "Neural Autoregressive Flows", ICML 2018, arXiv:1804.00779.

    Example:
        >>> m = DeepSigmoidalMap(4, depth=2)
        >>> x, params = torch.randn(3), torch.randn(3, m.params_per_dim)
        >>> y, ld = m.forward(x, params)
        >>> torch.allclose(m.inverse(y, params)[0], x, atol=1e-4)
        True
    """

    def __init__(
        self,
        hidden: int = 8,
        depth: int = 1,
        *,
        analytic: str = "inverse",
        min_slope: float = 1e-3,
        iterations: int | None = None,
    ):
        super().__init__(analytic, iterations)
        who = type(self).__name__
        self.hidden = _positive_int(hidden, "number of sigmoid units (hidden)", who)
        self.depth = _positive_int(depth, "depth", who)
        if not 0.0 < min_slope < 1.0:
            raise ValueError(f"{who}: expected 0 < min_slope < 1, got {min_slope!r}")
        self.min_slope = float(min_slope)
        self.params_per_dim = 3 * self.hidden * self.depth

    def __repr__(self) -> str:
        return (
            f"DeepSigmoidalMap(hidden={self.hidden}, depth={self.depth}, "
            f"analytic={self.analytic!r})"
        )

    def _call(self, x: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        p = params.unflatten(-1, (self.depth, 3, self.hidden))
        offsets = p[..., 2, :] + _symmetry_breaking_offsets(self.hidden, params)
        return deep_sigmoidal_flow(
            x,
            p[..., 0, :],
            p[..., 1, :],
            offsets,
            inverse=inverse,
            min_slope=self.min_slope,
            iterations=self.iterations,
        )
