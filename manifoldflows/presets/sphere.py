"""Flows on the n-sphere."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .._checks import positive_int
from ..core import Chain, Flow, Transform
from ..distributions import (
    Uniform,
)
from ..spaces import Sphere
from ..transforms.sphere import (
    ExpMapRadial,
    MoebiusSphere,
    RecursiveSphereFlow,
    SphereRotation,
)

__all__ = ["SphereFlow"]


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
