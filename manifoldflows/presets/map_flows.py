"""Flows of coupling and autoregressive layers with element-wise maps, on any space with
coordinates (``R^d``, intervals, tori, products): RealNVP, NSF, MAF, IAF, NAF, Flow++ and the
torus presets, all wiring :func:`~manifoldflows.presets.builders.build_flow`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .._checks import positive_int
from ..core import Flow
from ..spaces import Euclidean, Space, Torus
from ..transforms.coupling import as_space
from ..transforms.maps import DeepSigmoidalMap, spline_options
from .builders import build_flow

__all__ = ["RealNVP", "NSF", "MAF", "IAF", "NAF", "FlowPP", "TorusNSF", "TorusMoebius"]


def RealNVP(
    space: Space | int, *, layers: int = 8, hidden: Sequence[int] = (128, 128), **options: Any
) -> Flow:
    """Affine-coupling flow (Dinh et al. 2016, RealNVP, arXiv:1605.08803).

    ``options``: see :func:`build_flow` (``context_dim``, ``activation``, ``actnorm``,
    ``permute``, ``seed``, ``scale_bound``).

    Example:
        >>> flow = RealNVP(2, layers=2, hidden=(16,))
        >>> flow.sample((5,)).shape
        torch.Size([5, 2])
    """
    return build_flow(space, "affine", layers=layers, hidden=hidden, who="RealNVP", **options)


def NSF(
    space: Space | int,
    *,
    bins: int = 8,
    bound: float = 5.0,
    autoregressive: bool = False,
    **options: Any,
) -> Flow:
    """Neural Spline Flow with rational-quadratic splines (Durkan et al. 2019, arXiv:1906.04032).

    Coupling layers by default; ``autoregressive=True`` gives the MAF-style (one-pass density)
    variant. On ``R^d`` splines act on ``[-bound, bound]`` and are the identity outside; on an
    interval they map the interval onto itself, on angles they are circular splines (Rezende et
    al. 2020), so ``NSF(Product(Euclidean(3), Interval(0, pi, 2), Torus(4)))`` is a flow on
    bonds, angles and torsions. Every slope is softly bounded (``slope_bound``, default 20), so
    deep stacks stay invertible. ``options``: see :func:`build_flow` (``layers`` (4),
    ``hidden`` ((64, 64)), ``context_dim``, ``mode``, ``actnorm``, ``permute``, ``seed``,
    ``slope_bound``, ``shift`` for circular splines).

    Example:
        >>> flow = NSF(2, layers=2, hidden=(16,), context_dim=1)
        >>> x, log_q = flow.sample_and_log_prob((3,), context=torch.zeros(1))
        >>> x.shape, log_q.shape
        (torch.Size([3, 2]), torch.Size([3]))
    """
    space = as_space(space, "NSF")
    if space == Euclidean(1) and not autoregressive:
        raise ValueError("NSF: coupling needs features >= 2; use autoregressive=True for 1-D")
    spline = spline_options(space.coordinates, bins, bound)
    return build_flow(
        space, "spline", autoregressive=autoregressive, who="NSF", **spline, **options
    )


def _affine_autoregressive(mode: str, name: str) -> Callable[..., Flow]:
    def preset(space: Space | int, *, layers: int = 5, **options: Any) -> Flow:
        return build_flow(space, "affine", layers=layers, autoregressive=True, mode=mode, **options)

    preset.__name__ = preset.__qualname__ = name
    return preset


MAF = _affine_autoregressive("maf", "MAF")
MAF.__doc__ = """Masked Autoregressive Flow (Papamakarios et al. 2017, arXiv:1705.07057).

    Affine MADE layers whose parameters are computed from the data side: ``log_prob`` is one
    pass per layer, sampling is sequential. Successive layers use reversed (or random, with
    ``permute="random"``) autoregressive orders. ``options``: see :func:`build_flow`.

    Example:
        >>> flow = MAF(3, layers=2, hidden=(16,))
        >>> flow.log_prob(torch.randn(4, 3)).shape
        torch.Size([4])
    """

IAF = _affine_autoregressive("iaf", "IAF")
IAF.__doc__ = """Inverse Autoregressive Flow (Kingma et al. 2016, arXiv:1606.04934).

    Affine MADE layers whose parameters are computed from the latent side: sampling (and
    ``sample_and_log_prob``) is one pass per layer, ``log_prob`` of given data is sequential.
    The natural choice for reverse-KL training against an energy. ``options``: see
    :func:`build_flow`.

    Example:
        >>> flow = IAF(3, layers=2, hidden=(16,))
        >>> x, log_q = flow.sample_and_log_prob((4,))
        >>> log_q.shape
        torch.Size([4])
    """


def NAF(
    space: Space | int,
    *,
    sigmoid_units: int = 8,
    sigmoid_layers: int = 1,
    mode: str = "maf",
    **options: Any,
) -> Flow:
    """Neural Autoregressive Flow with deep sigmoidal transformers (Huang et al. 2018,
    arXiv:1804.00779).

    Autoregressive blocks with :class:`~manifoldflows.transforms.maps.DeepSigmoidalMap`s, whose
    MADE orders alternate. In ``mode="maf"`` ``log_prob`` is closed form (one MADE pass per
    layer) and sampling inverts every coordinate numerically (``d`` passes per layer, each a
    bracketed Newton/bisection root find); ``mode="iaf"`` is the mirror image. ``options``:
    see :func:`build_flow`.

    Example:
        >>> flow = NAF(2, layers=2, hidden=(16,), sigmoid_units=4)
        >>> flow.log_prob(torch.randn(3, 2)).shape
        torch.Size([3])
    """
    analytic = "inverse" if mode == "maf" else "forward"
    dsf = DeepSigmoidalMap(sigmoid_units, sigmoid_layers, analytic=analytic)
    return build_flow(space, dsf, autoregressive=True, mode=mode, who="NAF", **options)


def FlowPP(space: Space | int, *, components: int = 8, **options: Any) -> Flow:
    """Flow++-style coupling flow on ``R^d`` (Ho et al. 2019, arXiv:1902.00275).

    Coupling layers with logistic-mixture CDF maps
    (:class:`~manifoldflows.transforms.maps.LogisticMixtureMap`): ``log_prob`` is closed form,
    sampling solves each coupling numerically. (Flow++'s variational dequantization and
    attention conditioners are not part of this preset.) ``options``: see :func:`build_flow`.

    Example:
        >>> flow = FlowPP(2, layers=2, hidden=(16,), components=4, context_dim=1)
        >>> x = flow.sample((3,), context=torch.zeros(1))
        >>> flow.log_prob(x, context=torch.zeros(1)).shape
        torch.Size([3])
    """
    if as_space(space, "FlowPP").ambient_dim < 2:
        raise ValueError(f"FlowPP: coupling layers need features >= 2, got {space}")
    return build_flow(space, "logistic_mixture", components=components, who="FlowPP", **options)


def TorusNSF(dim: int, *, bins: int = 8, shift: bool = True, **options: Any) -> Flow:
    """Circular neural spline flow on the torus ``T^n`` (Rezende et al. 2020, arXiv:2002.02428).

    ``NSF(Torus(n))``: a uniform base on ``Torus(n)`` (density ``(2 pi)^-n`` w.r.t. the angle
    box) and circular rational-quadratic splines with ``bins`` bins (and a learnable rotation
    when ``shift``) whose parameters come from conditioners that see ``(cos, sin)`` of other
    angles: couplings with alternating masks, or with ``autoregressive=True`` autoregressive
    layers in alternating orders (``mode="maf"``: one-pass density, ``"iaf"``: one-pass
    sampling). For ``n = 1`` the layers are element-wise circular splines, conditioned on the
    context if ``context_dim`` is given. ``options``: see :func:`build_flow`.

    Example:
        >>> flow = TorusNSF(2, layers=2, bins=4, hidden=(16,))
        >>> x, log_q = flow.sample_and_log_prob((5,))
        >>> x.shape, torch.allclose(flow.log_prob(x), log_q, atol=1e-4)
        (torch.Size([5, 2]), True)
    """
    space = Torus(positive_int(dim, "number of angles dim", "TorusNSF"))
    return build_flow(space, "spline", bins=bins, shift=shift, who="TorusNSF", **options)


def TorusMoebius(
    dim: int, *, components: int = 4, shift: bool = True, max_radius: float = 0.99, **options: Any
) -> Flow:
    """Moebius flow on the torus ``T^n`` (Rezende et al. 2020, arXiv:2002.02428).

    Like :func:`TorusNSF` with convex combinations of ``components`` Moebius maps (each fixing
    ``-pi``, followed by a learnable rotation when ``shift``) instead of splines. The centres
    satisfy ``|w| < max_radius``, which bounds every layer's density ratio by
    ``(1 + r) / (1 - r)``. Directions that invert a mixture with ``components > 1`` use a
    bracketed root finder.

    Example:
        >>> flow = TorusMoebius(1, layers=2, components=2)
        >>> x, log_q = flow.sample_and_log_prob((5,))
        >>> torch.allclose(flow.log_prob(x), log_q, atol=1e-4)
        True
    """
    space = Torus(positive_int(dim, "number of angles dim", "TorusMoebius"))
    moebius = dict(components=components, shift=shift, max_radius=max_radius)
    return build_flow(space, "moebius", **moebius, who="TorusMoebius", **options)
