"""Element-wise bijections of the real line: additive, affine, spline, logistic mixture, DSF."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from ..._checks import positive_int
from ...functional.affine import affine, affine_inverse, soft_clamp
from ...functional.monotonic import deep_sigmoidal_flow, logistic_mixture_transform
from ...functional.splines import rational_quadratic_spline
from ...spaces.base import Coordinate
from .base import ElementwiseMap, Params, register_map

__all__ = [
    "AdditiveMap",
    "AffineMap",
    "SplineMap",
    "spline_options",
    "LogisticMixtureMap",
    "DeepSigmoidalMap",
]

#: Default bound ``B`` on knot derivatives and bin slopes (see ``bounded_spline_knots``):
#: an 8-layer NSF(4) with all parameters perturbed by N(0, 0.1^2) then inverts 6 N(0, I) to
#: 1e-10..6e-9 in float64 and 0.02..0.35 in float32 over three seeds (zuko 1.6's coupling NSF:
#: 2e-9..4e-8 and 0.8..2.5; tests/test_spline_stacks.py).
DEFAULT_SLOPE_BOUND = 20.0


@register_map
class AdditiveMap(ElementwiseMap):
    """``y = x + t`` (NICE; Dinh et al. 2014, arXiv:1410.8516). Volume preserving."""

    name, kind = "additive", "real"

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {"shift": ()}

    def forward(self, x: Tensor, params: Params) -> tuple[Tensor, Tensor]:
        y = x + params["shift"]
        return y, y.new_zeros(()).expand(y.shape)

    def inverse(self, y: Tensor, params: Params) -> tuple[Tensor, Tensor]:
        x = y - params["shift"]
        return x, x.new_zeros(()).expand(x.shape)


@register_map
class AffineMap(ElementwiseMap):
    """``y = x exp(s) + t`` with ``s`` softly clamped to ``(-scale_bound, scale_bound)``.

    RealNVP (Dinh et al. 2016, arXiv:1605.08803). The soft clamp keeps early training stable.

    Example:
        >>> m = AffineMap()
        >>> y, ld = m.forward(torch.ones(2), {"shift": torch.ones(2), "log_scale": torch.zeros(2)})
        >>> y.tolist(), ld.tolist()
        ([2.0, 2.0], [0.0, 0.0])
    """

    name, kind = "affine", "real"

    def __init__(self, scale_bound: float = 5.0):
        self.scale_bound = float(scale_bound)

    def __repr__(self) -> str:
        return f"AffineMap(scale_bound={self.scale_bound})"

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {"shift": (), "log_scale": ()}

    def forward(self, x: Tensor, params: Params) -> tuple[Tensor, Tensor]:
        return affine(x, params["shift"], soft_clamp(params["log_scale"], self.scale_bound))

    def inverse(self, y: Tensor, params: Params) -> tuple[Tensor, Tensor]:
        return affine_inverse(y, params["shift"], soft_clamp(params["log_scale"], self.scale_bound))


@register_map
class SplineMap(ElementwiseMap):
    """Rational-quadratic spline on ``[-bound, bound]`` with identity tails.

    Parameters per coordinate: ``bins`` widths, ``bins`` heights and ``bins - 1`` interior
    derivatives (Durkan et al. 2019, Neural Spline Flows, arXiv:1906.04032), softly bounded so
    that every knot derivative and bin's mean slope lies in ``[1/slope_bound, slope_bound]``
    whatever the conditioner outputs (the interpolant inside a bin can be flatter, down to
    about ``1e-3`` at ``slope_bound=20`` for adversarial parameters; ``slope_bound=None``:
    the unbounded parameterisation). See
    :func:`manifoldflows.functional.splines.rational_quadratic_spline`.

    Example:
        >>> m = SplineMap(4)
        >>> m.shapes
        {'widths': (4,), 'heights': (4,), 'derivatives': (3,)}
    """

    name, kind = "spline", "real"

    def __init__(
        self, bins: int = 8, bound: float = 5.0, slope_bound: float | None = DEFAULT_SLOPE_BOUND
    ):
        self.bins = positive_int(bins, "number of bins", "SplineMap", minimum=2)
        self.bound = float(bound)
        self.slope_bound = None if slope_bound is None else float(slope_bound)

    def __repr__(self) -> str:
        return f"SplineMap(bins={self.bins}, bound={self.bound})"

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        k = self.bins
        return {"widths": (k,), "heights": (k,), "derivatives": (k - 1,)}

    def _call(self, x: Tensor, params: Params, inverse: bool) -> tuple[Tensor, Tensor]:
        return rational_quadratic_spline(
            x,
            params["widths"],
            params["heights"],
            params["derivatives"],
            inverse=inverse,
            bound=self.bound,
            slope_bound=self.slope_bound,
        )

    def forward(self, x: Tensor, params: Params) -> tuple[Tensor, Tensor]:
        return self._call(x, params, inverse=False)

    def inverse(self, y: Tensor, params: Params) -> tuple[Tensor, Tensor]:
        return self._call(y, params, inverse=True)


def spline_options(coordinates: Iterable[Coordinate], bins: int, bound: float) -> dict[str, Any]:
    """Options of ``"spline"`` maps on ``coordinates``: ``bins`` for every kind, and ``bound``
    (the half-width of the real-line spline) only when some coordinate is real, so a space
    without real coordinates is not handed an option none of its maps takes.

    Example:
        >>> from manifoldflows.spaces import Torus
        >>> spline_options(Torus(2).coordinates, 8, 5.0)
        {'bins': 8}
    """
    if any(c.kind == "real" for c in coordinates):
        return {"bins": bins, "bound": bound}
    return {"bins": bins}


# --------------------------------------------------------------------------------------------
# Numerically inverted maps (Flow++ logistic mixtures, deep sigmoidal flows).

ANALYTIC_DIRECTIONS = ("inverse", "forward")


def symmetry_breaking_offsets(k: int, like: Tensor) -> Tensor:
    """``k`` evenly spaced constants in ``[-1, 1]`` (``0`` when ``k = 1``).

    Conditioners start with a zero last layer, so all components of a mixture would receive the
    same parameters and the same gradients forever; adding these fixed offsets to the locations
    makes them distinct from the first step.
    """
    if k == 1:
        return like.new_zeros(1)
    return torch.linspace(-1.0, 1.0, k, dtype=like.dtype, device=like.device)


class _NumericallyInvertedMap(ElementwiseMap):
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
            None if iterations is None else positive_int(iterations, "iterations", who)
        )

    def _call(self, x: Tensor, params: Params, inverse: bool) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def forward(self, x: Tensor, params: Params) -> tuple[Tensor, Tensor]:
        return self._call(x, params, inverse=self.analytic == "inverse")

    def inverse(self, y: Tensor, params: Params) -> tuple[Tensor, Tensor]:
        return self._call(y, params, inverse=self.analytic == "forward")


@register_map
class LogisticMixtureMap(_NumericallyInvertedMap):
    r"""Flow++ map ``y = exp(a) logit(sum_k pi_k sigmoid((x - mu_k) / s_k)) + b``.

    Parameters per coordinate: mixture ``logits``, locations ``loc`` (plus fixed offsets in
    ``[-1, 1]`` that break the symmetry between components), ``log_scale`` softly clamped to
    ``(-7, 7)``, the output log-scale ``log_a`` softly clamped to ``(-5, 5)`` and the ``shift``
    ``b``. All-zero parameters give a near-identity map (exactly the identity for one
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
        >>> x = torch.randn(3)
        >>> params = {k: torch.randn(3, *s) for k, s in m.shapes.items()}
        >>> y, ld = m.forward(x, params)
        >>> torch.allclose(m.inverse(y, params)[0], x, atol=1e-4)
        True
    """

    name, kind = "logistic_mixture", "real"

    def __init__(
        self, components: int = 8, *, analytic: str = "inverse", iterations: int | None = None
    ):
        super().__init__(analytic, iterations)
        self.components = positive_int(components, "number of components", type(self).__name__)

    def __repr__(self) -> str:
        return f"LogisticMixtureMap(components={self.components}, analytic={self.analytic!r})"

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        k = self.components
        return {"logits": (k,), "loc": (k,), "log_scale": (k,), "log_a": (), "shift": ()}

    def _call(self, x: Tensor, params: Params, inverse: bool) -> tuple[Tensor, Tensor]:
        k = self.components
        loc = params["loc"] + symmetry_breaking_offsets(k, params["loc"])
        return logistic_mixture_transform(
            x,
            params["logits"],
            loc,
            soft_clamp(params["log_scale"], 7.0),
            soft_clamp(params["log_a"], 5.0),
            params["shift"],
            inverse=inverse,
            iterations=self.iterations,
        )


@register_map
class DeepSigmoidalMap(_NumericallyInvertedMap):
    r"""Deep sigmoidal flow ``y = logit(sum_j w_j sigmoid(a_j x + b_j))``, ``depth`` times composed.

    Parameters per coordinate and layer: ``hidden`` weight logits (``w = softmax``), pre-slopes
    (``a = 1e-3 + softplus(.)``, equal to 1 at zero) and offsets ``b`` (plus fixed
    symmetry-breaking constants in ``[-1, 1]``). The map is a bijection of ``R`` with affine
    tails of slope ``min_j a_j`` and is evaluated in log space, so it never saturates. Kernel:
    :func:`~manifoldflows.functional.monotonic.deep_sigmoidal_flow`.

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
        >>> x = torch.randn(3)
        >>> params = {k: torch.randn(3, *s) for k, s in m.shapes.items()}
        >>> y, ld = m.forward(x, params)
        >>> torch.allclose(m.inverse(y, params)[0], x, atol=1e-4)
        True
    """

    name, kind = "deep_sigmoidal", "real"

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
        self.hidden = positive_int(hidden, "number of sigmoid units (hidden)", who)
        self.depth = positive_int(depth, "depth", who)
        if not 0.0 < min_slope < 1.0:
            raise ValueError(f"{who}: expected 0 < min_slope < 1, got {min_slope!r}")
        self.min_slope = float(min_slope)

    def __repr__(self) -> str:
        return (
            f"DeepSigmoidalMap(hidden={self.hidden}, depth={self.depth}, "
            f"analytic={self.analytic!r})"
        )

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        s = (self.depth, self.hidden)
        return {"weights": s, "slopes": s, "offsets": s}

    def _call(self, x: Tensor, params: Params, inverse: bool) -> tuple[Tensor, Tensor]:
        offsets = params["offsets"] + symmetry_breaking_offsets(self.hidden, params["offsets"])
        return deep_sigmoidal_flow(
            x,
            params["weights"],
            params["slopes"],
            offsets,
            inverse=inverse,
            min_slope=self.min_slope,
            iterations=self.iterations,
        )
