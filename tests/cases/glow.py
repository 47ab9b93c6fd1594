"""Checker cases for the image layers of Glow (squeeze, actnorm, 1x1 conv, coupling, split)."""

from __future__ import annotations

import torch

from manifoldflows.core import Chain
from manifoldflows.presets import Glow
from manifoldflows.transforms import (
    ActNorm2d,
    AffineCoupling2d,
    InvertibleConv1x1,
    SplitPrior,
    Squeeze,
    initialize_actnorm,
)

from . import Case

__all__ = ["CASES"]


def _gen(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _actnorm2d() -> ActNorm2d:
    """ActNorm2d initialised by initialize_actnorm on data with per-channel stats."""
    layer = ActNorm2d(2, 3, 3)
    data = torch.randn(32, 2, 3, 3, generator=_gen())
    data = data * torch.tensor([3.0, 0.5]).view(2, 1, 1) + torch.tensor([1.0, -2.0]).view(2, 1, 1)
    initialize_actnorm(layer, data)
    return layer


def _split_with_inner() -> SplitPrior:
    """A split whose kept channels go through a conditional coupling (a nested level)."""
    inner = AffineCoupling2d(2, 2, 2, hidden=(6,), context_dim=2)
    return SplitPrior(4, 2, 2, inner=inner, context_dim=2, hidden=(6,))


def _glow_chain() -> Chain:
    """The transform of a tiny conditional two-level Glow, with its actnorms initialised."""
    flow = Glow(1, 4, 4, levels=2, steps=1, hidden=6, context_dim=2)
    data = torch.randn(64, 1, 4, 4, generator=_gen())
    initialize_actnorm(flow, data, torch.randn(64, 2, generator=_gen(2)))
    return flow.transform


CASES = [
    Case("Squeeze", Squeeze, lambda: Squeeze(2, 4, 4), check={"perturb": 0}),
    Case("Squeeze-factor3", Squeeze, lambda: Squeeze(1, 3, 6, factor=3), check={"perturb": 0}),
    Case("ActNorm2d", ActNorm2d, _actnorm2d),
    Case(
        "InvertibleConv1x1",
        InvertibleConv1x1,
        lambda: InvertibleConv1x1(3, 2, 2, generator=_gen()),
    ),
    Case(
        "InvertibleConv1x1-bias-identity",
        InvertibleConv1x1,
        lambda: InvertibleConv1x1(2, 3, 2, bias=True, identity_init=True),
    ),
    Case("AffineCoupling2d", AffineCoupling2d, lambda: AffineCoupling2d(2, 4, 4, hidden=(8,))),
    Case(
        "AffineCoupling2d-swap-context",
        AffineCoupling2d,
        lambda: AffineCoupling2d(3, 2, 2, hidden=(6, 6), swap=True, context_dim=2),
    ),
    Case("SplitPrior", SplitPrior, lambda: SplitPrior(4, 2, 2)),
    Case("SplitPrior-inner-context", SplitPrior, _split_with_inner),
    Case(
        "SplitPrior-unlearned-inner",
        SplitPrior,
        lambda: SplitPrior(4, 2, 2, inner=AffineCoupling2d(2, 2, 2, hidden=(6,)), learned=False),
    ),
    Case("Glow-chain", Chain, _glow_chain),
]
