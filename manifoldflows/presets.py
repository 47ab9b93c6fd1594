"""Ready-made flows. Every preset returns a :class:`~manifoldflows.core.Flow` (base distribution
plus a :class:`~manifoldflows.core.Chain`, ready to train) and takes ``context_dim`` for
conditional density estimation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ._checks import positive_int
from .core import Chain, Flow, Inverse, Transform
from .distributions import (
    Distribution,
    ImageStandardNormal,
    ProductDistribution,
    StandardNormal,
    Uniform,
)
from .spaces import Euclidean, Product, Space, Sphere, Torus
from .stochastic import HMC, AnnealedEnergy, MetropolisHastings, OverdampedLangevin
from .targets import Target
from .transforms.autoregressive import MaskedAutoregressive
from .transforms.coupling import AffineCoupling, Coupling, SplineCoupling, as_space
from .transforms.linear import RandomPermutation, Reverse
from .transforms.maps import DeepSigmoidalMap, MapSpec
from .transforms.multiscale import (
    ActNorm2d,
    AffineCoupling2d,
    InvertibleConv1x1,
    SplitPrior,
    Squeeze,
)
from .transforms.normalization import ActNorm
from .transforms.planar import PlanarFlow, SylvesterFlow
from .transforms.pointwise import Elementwise
from .transforms.residual import InvertibleResidual
from .transforms.sphere import (
    ExpMapRadial,
    MoebiusSphere,
    RecursiveSphereFlow,
    SphereRotation,
)

__all__ = [
    "default_base",
    "build_flow",
    "alternate_halves",
    "autoregressive_orders",
    "coupling_masks",
    "RealNVP",
    "NSF",
    "MAF",
    "IAF",
    "stack",
    "Glow",
    "ResidualFlow",
    "NAF",
    "FlowPP",
    "Planar",
    "Sylvester",
    "TorusNSF",
    "TorusMoebius",
    "SphereFlow",
    "SNF",
]

PERMUTATIONS = ("random", "reverse", "none")


def _check_permute(permute: str, who: str) -> None:
    if permute not in PERMUTATIONS:
        raise ValueError(f"{who}: permute must be 'random', 'reverse' or 'none', got {permute!r}")


def stack(
    dim: int,
    block: Callable[[int], Transform],
    layers: int,
    *,
    permute: str = "random",
    actnorm: bool = False,
    seed: int = 0,
) -> Chain:
    """Chain ``layers`` blocks, with an optional ActNorm before each and a permutation between.

    Arguments:
        dim: dimension ``d``.
        block: ``i -> Transform`` building the i-th block.
        layers: number of blocks.
        permute: ``"random"`` (seeded), ``"reverse"`` or ``"none"``.
        actnorm: put an :class:`~manifoldflows.transforms.ActNorm` before every block.
        seed: seed of the random permutations (reproducible architectures).
    """
    layers = positive_int(layers, "number of layers", "stack")
    _check_permute(permute, "stack")
    generator = torch.Generator().manual_seed(seed)
    parts: list[Transform] = []
    for i in range(layers):
        if actnorm:
            parts.append(ActNorm(dim))
        parts.append(block(i))
        if i < layers - 1 and permute != "none" and dim > 1:
            if permute == "reverse" or dim == 2:
                parts.append(Reverse(dim))
            else:
                parts.append(RandomPermutation(dim, generator=generator))
    return Chain(*parts)


def alternate_halves(permute: str, i: int) -> bool:
    """Whether coupling block ``i`` should transform the first half instead of the second.

    Coupling blocks alternate halves only when no permutation separates them: a reversal
    between blocks already swaps the halves, and alternating as well would make every block
    transform the same coordinates.
    """
    return permute == "none" and i % 2 == 1


def autoregressive_orders(
    dim: int, layers: int, permute: str = "reverse", seed: int = 0
) -> list[torch.Tensor | None]:
    """MADE orders (degrees ``1..d``) per layer that replace permutation layers.

    ``"reverse"`` alternates the natural and the reversed order, ``"random"`` draws a seeded
    random order per layer (the first keeps the natural order), ``"none"`` keeps the natural
    order everywhere. Folding the permutation into the masks saves a copy per layer.
    """
    _check_permute(permute, "autoregressive_orders")
    generator = torch.Generator().manual_seed(seed)
    natural = torch.arange(1, dim + 1)
    orders: list[torch.Tensor | None] = []
    for i in range(layers):
        if permute == "none" or i == 0:
            orders.append(None)
        elif permute == "reverse" or dim == 2:
            orders.append(natural.flip(0) if i % 2 == 1 else None)
        else:
            orders.append(torch.randperm(dim, generator=generator) + 1)
    return orders


def coupling_masks(dim: int, i: int) -> torch.Tensor:
    """Transformed coordinates of coupling ``i`` on a space without permutation layers.

    Halves, then the other half, then odd and even positions, so every pair of coordinates
    interacts within four layers (the masks of the torus and product presets).
    """
    index = torch.arange(dim)
    half = index >= dim // 2
    odd = index % 2 == 1
    masks = (half, ~half) if dim == 2 else (half, ~half, odd, ~odd)
    return masks[i % len(masks)]


def default_base(space: Space) -> Distribution:
    """The base distribution presets put on ``space``.

    Standard normal on ``R^d``, uniform on compact spaces (intervals, tori, spheres), and the
    product of those on a :class:`~manifoldflows.spaces.Product`.

    Example:
        >>> import math
        >>> from manifoldflows.spaces import Euclidean, Interval, Product, Torus
        >>> default_base(Product(Euclidean(2), Interval(0, math.pi, 1), Torus(3))).space.dim
        6
    """
    if isinstance(space, Product):
        return ProductDistribution([default_base(s) for s in space.spaces])
    if space.event_ndim == 1 and space == Euclidean(space.ambient_dim):
        return StandardNormal(space.ambient_dim)
    if space.is_compact:
        return Uniform(space)
    raise ValueError(
        f"default_base: no default base distribution on {space!r}; build the Flow with a base "
        "of your choice"
    )


def build_flow(
    space: Space | int,
    map: MapSpec,
    *,
    layers: int = 4,
    autoregressive: bool = False,
    mode: str = "maf",
    context_dim: int | None = None,
    hidden: Sequence[int] = (64, 64),
    activation: str = "relu",
    actnorm: bool = False,
    permute: str | None = None,
    seed: int = 0,
    base: Distribution | None = None,
    who: str = "build_flow",
    **map_options: Any,
) -> Flow:
    """The one builder behind the coupling and autoregressive presets, on any space.

    On ``R^d``: ``layers`` coupling blocks (:class:`~manifoldflows.transforms.Coupling`)
    separated by permutations (``permute="random"``, ``"reverse"``, or ``"none"``: the blocks
    alternate halves), or with ``autoregressive=True`` masked autoregressive blocks whose MADE
    orders replace the permutations (``mode="maf"``: one-pass density, ``"iaf"``: one-pass
    sampling); ``actnorm`` puts an ActNorm before every block. On any other space (tori,
    intervals, products of lines, intervals and circles) the couplings use
    :func:`coupling_masks` instead of permutations, and each coordinate gets the map ``map``
    resolves to for its kind; a one-dimensional space gets element-wise layers (conditioned on
    the context if ``context_dim`` is given). The base is :func:`default_base`.

    Arguments:
        space: a :class:`~manifoldflows.spaces.Space` or an integer ``d`` for ``R^d``.
        map: element-wise map (see :class:`~manifoldflows.transforms.Coupling`).
        layers: number of blocks.
        autoregressive: autoregressive blocks instead of couplings.
        mode: ``"maf"`` or ``"iaf"`` (autoregressive blocks).
        context_dim: context size for a conditional flow.
        hidden: hidden sizes of the conditioners.
        activation: activation of the conditioners.
        actnorm: ActNorm before every block (``R^d`` only; initialise it with
            :func:`~manifoldflows.transforms.initialize_actnorm` or by maximum-likelihood
            ``fit``).
        permute: ``"random"``, ``"reverse"`` or ``"none"`` (default: ``"random"`` for
            couplings, ``"reverse"`` for autoregressive blocks).
        seed: seed of random permutations and orders.
        base: the base distribution on ``space`` (default :func:`default_base`; a space
            without a default, e.g. a half-line or a new non-compact space, needs one).
        who: name used in error messages (presets pass their own).
        **map_options: options of the element-wise maps (``bins``, ``bound``, ...).

    Example:
        >>> import math
        >>> from manifoldflows.spaces import Euclidean, Interval, Product, Torus
        >>> space = Product(Euclidean(3), Interval(0, math.pi, 2), Torus(4))
        >>> flow = build_flow(space, "spline", layers=2, hidden=(16,), bins=4)
        >>> x, log_q = flow.sample_and_log_prob((5,))
        >>> torch.allclose(flow.log_prob(x), log_q, atol=1e-4)
        True
    """
    space = as_space(space, who)
    layers = positive_int(layers, "number of layers", who)
    if permute is None:
        permute = "reverse" if autoregressive else "random"
    _check_permute(permute, who)
    d = space.ambient_dim
    options = dict(context_dim=context_dim, hidden=hidden, activation=activation, **map_options)
    euclidean = space == Euclidean(d)
    if actnorm and not euclidean:
        raise ValueError(f"{who}: actnorm=True needs R^d, got {space!r}")

    if autoregressive:
        orders = autoregressive_orders(d, layers, permute, seed)

        def block(i: int) -> Transform:
            return MaskedAutoregressive(space, map, mode=mode, order=orders[i], **options)

    elif d == 1:

        def block(i: int) -> Transform:
            return Elementwise(space, map, **options)

    elif euclidean:

        def block(i: int) -> Transform:
            return Coupling(space, map, swap=alternate_halves(permute, i), **options)

    else:

        def block(i: int) -> Transform:
            return Coupling(space, map, mask=coupling_masks(d, i), **options)

    if euclidean and not autoregressive and d > 1:
        chain = stack(d, block, layers, permute=permute, actnorm=actnorm, seed=seed)
    else:
        chain = stack(d, block, layers, permute="none", actnorm=actnorm)
    return Flow(default_base(space) if base is None else base, chain)


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
    if space.ambient_dim < 2 and space == Euclidean(1) and not autoregressive:
        raise ValueError("NSF: coupling needs features >= 2; use autoregressive=True for 1-D")
    if any(c.kind == "real" for c in space.coordinates):
        options["bound"] = bound
    return build_flow(
        space, "spline", bins=bins, autoregressive=autoregressive, who="NSF", **options
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


def Glow(
    channels: int,
    height: int,
    width: int,
    *,
    levels: int = 3,
    steps: int = 4,
    hidden: int | Sequence[int] = 64,
    context_dim: int | None = None,
    split_prior: bool = True,
    activation: str = "relu",
    seed: int = 0,
) -> Flow:
    """Glow: multi-scale image flow (Kingma & Dhariwal 2018, arXiv:1807.03039).

    A standard normal on ``Image(C, H, W)`` pushed through ``levels`` nested levels. In the
    encoding (``log_prob``) direction, level ``l`` acting on ``(C_l, H_l, W_l)`` is::

        Squeeze -> steps x [ActNorm2d -> InvertibleConv1x1 -> AffineCoupling2d] -> SplitPrior

        (C_l, H_l, W_l) -> (4 C_l, H_l/2, W_l/2) -> ... -> keep 2 C_l channels for level l+1,
                                                           factor out 2 C_l with a learned
                                                           Gaussian prior given the kept ones

    and the last level has no split. The split is implemented as a bijection
    (:class:`~manifoldflows.transforms.SplitPrior`), so the latent has the data's shape and
    ``log q`` is exactly the multi-scale density with learned (conditional) priors; each
    level's latent is un-squeezed back to its input shape. ``flow.transform`` is the outermost
    level, a :class:`~manifoldflows.core.Chain` ``(Squeeze, SplitPrior(inner=next level),
    steps, Inverse(Squeeze))``. ActNorm layers initialise on the first training-mode
    ``log_prob`` batch.

    Arguments:
        channels, height, width: image shape ``(C, H, W)``; ``H`` and ``W`` must be divisible
            by ``2 ** levels``.
        levels: number of levels ``L`` (squeezes).
        steps: flow steps ``K`` per level.
        hidden: hidden channels of the coupling networks (an int ``h`` means ``(h, h)``).
        context_dim: context size; couplings and split priors are then conditional.
        split_prior: learned conditional Gaussian priors for the factored-out channels
            (Glow); ``False`` keeps them standard normal (RealNVP).
        activation: activation of the coupling networks.
        seed: seed of the random rotations initialising the 1x1 convolutions.

    Returns:
        A :class:`~manifoldflows.core.Flow` on ``Image(C, H, W)``.

    References:
        Kingma & Dhariwal 2018, Glow, arXiv:1807.03039; Dinh, Sohl-Dickstein & Bengio 2016,
        Real NVP (multi-scale architecture), arXiv:1605.08803.

    Example:
        >>> flow = Glow(1, 4, 4, levels=2, steps=1, hidden=8)
        >>> x = torch.randn(6, 1, 4, 4)
        >>> flow.log_prob(x).shape, flow.sample((2,)).shape
        (torch.Size([6]), torch.Size([2, 1, 4, 4]))
    """
    for what, value in (("levels", levels), ("steps", steps)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"Glow: expected a positive integer number of {what}, got {value!r}")
    image = ImageStandardNormal(channels, height, width).space
    block = 2**levels
    if height % block or width % block:
        raise ValueError(
            f"Glow: {levels} levels halve the image {levels} times, so height and width must be "
            f"divisible by {block}; got an image of {height}x{width} pixels"
        )
    generator = torch.Generator().manual_seed(seed)
    inner: Transform | None = None
    for level in reversed(range(levels)):
        c, h, w = image.channels << level, image.height >> level, image.width >> level
        squeeze = Squeeze(c, h, w)
        sc, sh, sw = squeeze.codomain.event_shape
        parts: list[Transform] = [squeeze]
        if level < levels - 1:
            parts.append(
                SplitPrior(
                    sc,
                    sh,
                    sw,
                    inner=inner,
                    learned=split_prior,
                    context_dim=context_dim if split_prior else None,
                )
            )
        for _ in range(steps):
            # forward (latent -> data) order; log_prob runs actnorm -> 1x1 conv -> coupling
            parts.append(
                AffineCoupling2d(
                    sc, sh, sw, context_dim=context_dim, hidden=hidden, activation=activation
                )
            )
            parts.append(InvertibleConv1x1(sc, sh, sw, generator=generator))
            parts.append(ActNorm2d(sc, sh, sw))
        parts.append(Inverse(Squeeze(c, h, w)))
        inner = Chain(*parts)
    assert inner is not None
    return Flow(ImageStandardNormal(channels, height, width), inner)


def ResidualFlow(dim: int, *, layers: int = 4, actnorm: bool = False, **options: Any) -> Flow:
    """Residual Flow: a chain of invertible residual blocks (Chen et al. 2019, arXiv:1906.02735).

    ``layers`` :class:`~manifoldflows.transforms.InvertibleResidual` blocks (optionally each
    preceded by an :class:`~manifoldflows.transforms.ActNorm`) on a standard normal base.
    Every block mixes all coordinates, so no permutations are needed. ``log_prob`` runs the
    explicit residual maps ``z = y + g(y)``; sampling solves fixed points. ``options``
    (``context_dim``, ``hidden`` ((64, 64)), ``activation`` ("lipswish"), ``coeff``, ``norm``,
    ``logdet`` ("auto": exact for ``dim <= 16``, the unbiased Russian-roulette estimator
    above), ``n_exact_terms``, ``stop_prob``, ``neumann_grad``) go to every
    :class:`~manifoldflows.transforms.InvertibleResidual` block.

    Example:
        >>> flow = ResidualFlow(2, layers=2, hidden=(16,))
        >>> x, log_q = flow.sample_and_log_prob((4,))
        >>> torch.allclose(flow.log_prob(x), log_q, atol=1e-4)
        True
    """
    options.setdefault("activation", "lipswish")

    def block(i: int) -> Transform:
        return InvertibleResidual(dim, **options)

    chain = stack(dim, block, layers, permute="none", actnorm=actnorm)
    return Flow(StandardNormal(dim), chain)


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


def Planar(dim: int, *, layers: int = 16, seed: int = 0, **options: Any) -> Flow:
    """Stack of planar flows (Rezende & Mohamed 2015, arXiv:1505.05770).

    ``layers`` :class:`~manifoldflows.transforms.PlanarFlow` layers on a standard normal base.
    Sampling and ``sample_and_log_prob`` are closed form (the natural use: reverse-KL training
    against an energy); ``log_prob`` inverts every layer by a scalar root search. ``options``
    (``context_dim``, ``hidden``, ``activation``) go to every layer: with ``context_dim`` each
    layer's ``(u, w, b)`` get context-dependent offsets from a conditioner. ``seed`` makes the
    random initialisation of the ``w`` reproducible.

    Example:
        >>> flow = Planar(2, layers=4)
        >>> x, log_q = flow.sample_and_log_prob((5,))
        >>> torch.allclose(flow.log_prob(x), log_q, atol=1e-4)
        True
    """
    generator = torch.Generator().manual_seed(seed)

    def block(i: int) -> Transform:
        return PlanarFlow(dim, generator=generator, **options)

    return Flow(StandardNormal(dim), stack(dim, block, layers, permute="none"))


def Sylvester(
    dim: int,
    *,
    layers: int = 4,
    kind: str = "orthogonal",
    seed: int = 0,
    **options: Any,
) -> Flow:
    """Stack of Sylvester flows (van den Berg et al. 2018, arXiv:1803.05649).

    ``layers`` :class:`~manifoldflows.transforms.SylvesterFlow` layers of the given ``kind``
    (``"orthogonal"``, ``"householder"`` or ``"triangular"``) on a standard normal base; the
    triangular kind alternates ``Q = I`` and the reversal permutation, as in the paper. Each
    layer's ``Q`` is initialised independently at random (reproducibly, from ``seed``).
    ``options`` (``num_ortho_vectors``, ``num_householder``, ``context_dim``, ``hidden``,
    ``activation``) go to every layer.

    Example:
        >>> flow = Sylvester(3, layers=2, kind="householder", num_householder=2)
        >>> x, log_q = flow.sample_and_log_prob((5,))
        >>> torch.allclose(flow.log_prob(x), log_q, atol=1e-4)
        True
    """
    generator = torch.Generator().manual_seed(seed)

    def block(i: int) -> Transform:
        reverse = kind == "triangular" and i % 2 == 1
        return SylvesterFlow(dim, kind=kind, reverse=reverse, generator=generator, **options)

    return Flow(StandardNormal(dim), stack(dim, block, layers, permute="none"))


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


SPHERE_FLOW_KINDS = ("recursive", "moebius", "expmap")


def SphereFlow(
    dim: int = 2,
    *,
    kind: str = "recursive",
    layers: int = 4,
    bins: int = 8,
    circle: str = "spline",
    components: int = 4,
    context_dim: int | None = None,
    hidden: Sequence[int] = (64, 64),
    activation: str = "relu",
    rotations: bool = True,
    seed: int = 0,
) -> Flow:
    """Flow on the n-sphere ``S^n`` (any ``n >= 1``) with a uniform base (Rezende et al. 2020).

    The base is :class:`~manifoldflows.distributions.Uniform` on ``Sphere(n)``; densities are
    w.r.t. the surface measure. ``layers`` blocks, each a learnable
    :class:`~manifoldflows.transforms.SphereRotation` (seeded random start; ``rotations=False``
    drops it) followed by one layer of the chosen ``kind``:

    * ``"recursive"``: :class:`~manifoldflows.transforms.RecursiveSphereFlow`, interval splines
      on the heights conditioned autoregressively, down to a ``circle`` map (``"spline"`` or
      ``"moebius"``) on ``S^1``; the most expressive choice (multimodal densities).
    * ``"moebius"``: :class:`~manifoldflows.transforms.MoebiusSphere`. On ``S^1`` each layer is
      a convex combination of ``components`` Moebius maps (expressive). On ``S^n``, ``n >= 2``,
      Moebius maps and rotations form a group, so any depth gives a spherical Cauchy
      distribution (unimodal; with a context, a conditional one).
    * ``"expmap"``: :class:`~manifoldflows.transforms.ExpMapRadial` with ``components`` radial
      potentials per layer (density evaluation inverts each layer by Newton's method; sampling
      and ``sample_and_log_prob`` are closed form).

    Arguments:
        dim: sphere dimension.
        kind: ``"recursive"``, ``"moebius"`` or ``"expmap"``.
        layers: number of blocks.
        bins: spline bins (``"recursive"``).
        circle: circle map of the recursive flow, ``"spline"`` or ``"moebius"``.
        components: Moebius components (circle maps, ``"moebius"`` on ``S^1``) or radial
            components (``"expmap"``).
        context_dim: context size for a conditional flow (rotations stay unconditional).
        hidden, activation: conditioner MLPs.
        rotations: insert a learnable rotation before every layer.
        seed: seed of the initial rotations and radial directions (reproducible architectures).

    Returns:
        A :class:`~manifoldflows.core.Flow` on ``Sphere(n)``.

    References:
        D. J. Rezende et al., "Normalizing Flows on Tori and Spheres", ICML 2020,
        arXiv:2002.02428.

    Example:
        >>> flow = SphereFlow(2, layers=2, bins=4, hidden=(16,))
        >>> x, log_q = flow.sample_and_log_prob((5,))
        >>> x.shape, torch.allclose(flow.log_prob(x), log_q, atol=1e-4)
        (torch.Size([5, 3]), True)
    """
    if kind not in SPHERE_FLOW_KINDS:
        raise ValueError(f"SphereFlow: expected kind in {SPHERE_FLOW_KINDS}, got {kind!r}")
    layers = positive_int(layers, "number of layers", "SphereFlow")
    space = Sphere(dim)  # validates n
    generator = torch.Generator().manual_seed(seed)
    options = dict(context_dim=context_dim, hidden=hidden, activation=activation)
    build = {
        "recursive": lambda: RecursiveSphereFlow(
            dim, bins=bins, circle=circle, components=components, **options
        ),
        "moebius": lambda: MoebiusSphere(dim, components=components if dim == 1 else 1, **options),
        "expmap": lambda: ExpMapRadial(dim, components=components, generator=generator, **options),
    }[kind]
    parts: list[Transform] = []
    for _ in range(layers):
        if rotations:
            parts.append(SphereRotation(dim, generator=generator))
        parts.append(build())
    return Flow(Uniform(space), Chain(*parts))


SNF_STOCHASTIC_KINDS = ("langevin", "mala", "mh", "hmc")
_SNF_DEFAULT_STEP = {"langevin": 0.01, "mala": 0.05, "mh": 0.3, "hmc": 0.1}


def SNF(
    dim: int,
    energy: Target,
    *,
    flow_layers: int = 2,
    stochastic: str = "mh",
    blocks: int = 2,
    hidden: Sequence[int] = (64, 64),
    coupling: str = "affine",
    steps: int = 10,
    step_size: float | None = None,
    leapfrog_steps: int = 5,
    anneal: bool = True,
    learnable_step: bool = True,
    bins: int = 8,
    bound: float = 5.0,
    activation: str = "relu",
    context_dim: int | None = None,
) -> Flow:
    r"""Stochastic normalizing flow on ``R^d``: coupling blocks interleaved with MCMC blocks.

    ``blocks`` times: ``flow_layers`` coupling layers (RealNVP affine or rational-quadratic
    spline, alternating the transformed half, no permutations, so every stochastic block sees
    the data coordinates) followed by one stochastic block of ``steps`` MCMC steps:

    * ``"langevin"``: :class:`~manifoldflows.stochastic.OverdampedLangevin` (unadjusted);
    * ``"mala"``: the Metropolis-adjusted Langevin algorithm;
    * ``"mh"``: :class:`~manifoldflows.stochastic.MetropolisHastings` (Gaussian random walk);
    * ``"hmc"``: :class:`~manifoldflows.stochastic.HMC` with ``leapfrog_steps`` per step.

    With ``anneal=True`` (as in Wu et al.) block ``k = 1..K`` targets the interpolated energy
    :math:`u_{\lambda_k} = (1 - \lambda_k) |x|^2 / 2 + \lambda_k u(x)`,
    :math:`\lambda_k = k / K` (:class:`~manifoldflows.stochastic.AnnealedEnergy`), so the last
    block targets ``u`` itself; with ``anneal=False`` every block targets ``u``. Any choice
    gives unbiased importance weights: every block returns its exact path weight. The base is
    ``N(0, I)``; ``flow.transform`` is stochastic, so the flow offers
    :meth:`~manifoldflows.core.Flow.sample_and_log_weight` (and no ``log_prob``), and
    :func:`manifoldflows.losses.reverse_kl` trains flow and step sizes end to end with the
    path-weighted reverse KL ``E[-log w]``. ``flow_layers=0`` gives a pure (annealed) MCMC
    sampler started from ``N(0, I)``.

    Note that a final block in detailed balance with ``u`` (``"mala"``, ``"mh"``, ``"hmc"``)
    has path weight ``u(y) - u(x)``, which cancels ``u(y)`` in ``log w``: it moves the samples
    towards the target without changing their weights, so its step size receives no
    reverse-KL gradient (the weights, ESS and ``log Z`` estimates are those of its input).

    Arguments:
        dim: dimension ``d`` (at least 2 when ``flow_layers > 0``).
        energy: the target, a callable ``x -> u(x)`` or an object with ``.energy(x)``.
        flow_layers: coupling layers before each stochastic block (``>= 0``).
        stochastic: ``"langevin"``, ``"mala"``, ``"mh"`` or ``"hmc"``.
        blocks: number of (coupling layers, stochastic block) pairs.
        hidden, activation: conditioner MLPs of the couplings.
        coupling: ``"affine"`` (RealNVP) or ``"spline"`` (NSF, ``bins`` bins on
            ``[-bound, bound]``).
        steps: MCMC steps per stochastic block.
        step_size: initial step size / proposal scale (default 0.01 for ``"langevin"``, 0.05
            for ``"mala"``, 0.3 for ``"mh"``, 0.1 for ``"hmc"``).
        leapfrog_steps: leapfrog steps per HMC step.
        anneal: interpolate the intermediate blocks' energies from the base to the target.
        learnable_step: make the step sizes parameters.
        context_dim: context size of the couplings (the stochastic blocks ignore context).

    Returns:
        A :class:`~manifoldflows.core.Flow` with a stochastic transform.

    References:
        H. Wu, J. Koehler, F. Noe, "Stochastic normalizing flows", NeurIPS 2020,
        arXiv:2002.06707.

    Example:
        >>> u = lambda x: (x[..., 0] ** 2 - 1.0) ** 2 + 0.5 * x[..., 1] ** 2
        >>> flow = SNF(2, u, flow_layers=1, blocks=2, hidden=(8,), steps=3)
        >>> x, log_w = flow.sample_and_log_weight(u, (5,))
        >>> x.shape, log_w.shape, flow.stochastic
        (torch.Size([5, 2]), torch.Size([5]), True)
    """
    if stochastic not in SNF_STOCHASTIC_KINDS:
        raise ValueError(f"SNF: expected stochastic in {SNF_STOCHASTIC_KINDS}, got {stochastic!r}")
    if coupling not in ("affine", "spline"):
        raise ValueError(f"SNF: expected coupling 'affine' or 'spline', got {coupling!r}")
    blocks = positive_int(blocks, "number of blocks", "SNF")
    flow_layers = positive_int(flow_layers, "number of flow_layers", "SNF", minimum=0)
    if flow_layers > 0 and positive_int(dim, "dimension", "SNF") < 2:
        raise ValueError(f"SNF: coupling layers need dim >= 2, got {dim!r}")
    step = _SNF_DEFAULT_STEP[stochastic] if step_size is None else step_size
    options = dict(context_dim=context_dim, hidden=hidden, activation=activation)
    if coupling == "spline":
        options.update(bins=bins, bound=bound)
    layer_type = AffineCoupling if coupling == "affine" else SplineCoupling
    mcmc = {
        "langevin": lambda u: OverdampedLangevin(dim, u, steps, step, learnable=learnable_step),
        "mala": lambda u: OverdampedLangevin(
            dim, u, steps, step, metropolis=True, learnable=learnable_step
        ),
        "mh": lambda u: MetropolisHastings(dim, u, steps, step, learnable=learnable_step),
        "hmc": lambda u: HMC(dim, u, steps, leapfrog_steps, step, learnable=learnable_step),
    }[stochastic]
    parts: list[Transform] = []
    for k in range(blocks):
        for i in range(flow_layers):
            parts.append(layer_type(dim, swap=(k * flow_layers + i) % 2 == 1, **options))
        lam = (k + 1) / blocks
        parts.append(mcmc(AnnealedEnergy(energy, lam) if anneal and k < blocks - 1 else energy))
    return Flow(StandardNormal(dim), Chain(*parts))
