"""Glow, the multi-scale image flow."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..core import Chain, Flow, Inverse, Transform
from ..distributions import (
    ImageStandardNormal,
)
from ..transforms.multiscale import (
    ActNorm2d,
    AffineCoupling2d,
    InvertibleConv1x1,
    SplitPrior,
    Squeeze,
)

__all__ = ["Glow"]


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
