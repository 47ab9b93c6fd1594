"""Stacks of residual-type layers on ``R^d``: invertible residual blocks, planar and Sylvester
flows."""

from __future__ import annotations

from typing import Any

import torch

from ..core import Flow, Transform
from ..distributions import (
    StandardNormal,
)
from ..transforms.planar import PlanarFlow, SylvesterFlow
from ..transforms.residual import InvertibleResidual
from .builders import stack

__all__ = ["ResidualFlow", "Planar", "Sylvester"]


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
