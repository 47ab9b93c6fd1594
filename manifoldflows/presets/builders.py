"""Shared builders of the presets: stacks, orders, masks, base distributions, ``build_flow``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from .._checks import positive_int
from ..core import Chain, Flow, Transform
from ..distributions import (
    Distribution,
    ProductDistribution,
    StandardNormal,
    Uniform,
)
from ..spaces import Euclidean, Product, Space
from ..transforms.autoregressive import MaskedAutoregressive
from ..transforms.coupling import Coupling, as_space
from ..transforms.linear import RandomPermutation, Reverse
from ..transforms.maps import MapSpec
from ..transforms.normalization import ActNorm
from ..transforms.pointwise import Elementwise

__all__ = [
    "default_base",
    "build_flow",
    "stack",
    "alternate_halves",
    "autoregressive_orders",
    "coupling_masks",
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
