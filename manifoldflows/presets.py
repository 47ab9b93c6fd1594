"""Ready-made flows. Every preset returns a :class:`~manifoldflows.core.Flow` (base distribution
plus a :class:`~manifoldflows.core.Chain`, ready to train) and takes ``context_dim`` for
conditional density estimation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .core import Chain, Flow, Transform
from .distributions import StandardNormal
from .transforms.autoregressive import MaskedAffineAutoregressive, MaskedSplineAutoregressive
from .transforms.coupling import AffineCoupling, SplineCoupling
from .transforms.linear import RandomPermutation, Reverse
from .transforms.normalization import ActNorm

__all__ = ["RealNVP", "NSF", "MAF", "IAF", "stack"]


def stack(
    features: int,
    block: Callable[[int], Transform],
    layers: int,
    *,
    permute: str = "random",
    actnorm: bool = False,
    seed: int = 0,
) -> Chain:
    """Chain ``layers`` blocks, with an optional ActNorm before each and a permutation between.

    Arguments:
        features: dimension ``d``.
        block: ``i -> Transform`` building the i-th block.
        layers: number of blocks.
        permute: ``"random"`` (seeded), ``"reverse"`` or ``"none"``.
        actnorm: put an :class:`~manifoldflows.transforms.ActNorm` before every block.
        seed: seed of the random permutations (reproducible architectures).
    """
    if layers < 1:
        raise ValueError(f"stack: expected at least one layer, got {layers}")
    if permute not in ("random", "reverse", "none"):
        raise ValueError(f"stack: permute must be 'random', 'reverse' or 'none', got {permute!r}")
    generator = torch.Generator().manual_seed(seed)
    parts: list[Transform] = []
    for i in range(layers):
        if actnorm:
            parts.append(ActNorm(features))
        parts.append(block(i))
        if i < layers - 1 and permute != "none" and features > 1:
            if permute == "reverse" or features == 2:
                parts.append(Reverse(features))
            else:
                parts.append(RandomPermutation(features, generator=generator))
    return Chain(*parts)


def RealNVP(
    features: int,
    *,
    context_dim: int | None = None,
    layers: int = 8,
    hidden: Sequence[int] = (128, 128),
    activation: str = "relu",
    actnorm: bool = False,
    permute: str = "random",
    seed: int = 0,
) -> Flow:
    """Affine-coupling flow (Dinh et al. 2016, RealNVP, arXiv:1605.08803).

    Example:
        >>> flow = RealNVP(2, layers=2, hidden=(16,))
        >>> flow.sample((5,)).shape
        torch.Size([5, 2])
    """

    def block(i: int) -> Transform:
        return AffineCoupling(
            features, context_dim=context_dim, hidden=hidden, activation=activation, swap=i % 2 == 1
        )

    chain = stack(features, block, layers, permute=permute, actnorm=actnorm, seed=seed)
    return Flow(StandardNormal(features), chain)


def NSF(
    features: int,
    *,
    context_dim: int | None = None,
    layers: int = 4,
    hidden: Sequence[int] = (64, 64),
    bins: int = 8,
    bound: float = 5.0,
    autoregressive: bool = False,
    activation: str = "relu",
    actnorm: bool = False,
    permute: str = "random",
    seed: int = 0,
) -> Flow:
    """Neural Spline Flow with rational-quadratic splines (Durkan et al. 2019, arXiv:1906.04032).

    Coupling layers by default; ``autoregressive=True`` gives the MAF-style (one-pass density)
    variant. Splines act on ``[-bound, bound]`` and are the identity outside.

    Example:
        >>> flow = NSF(2, layers=2, hidden=(16,), context_dim=1)
        >>> x, log_q = flow.sample_and_log_prob((3,), context=torch.zeros(1))
        >>> x.shape, log_q.shape
        (torch.Size([3, 2]), torch.Size([3]))
    """
    if autoregressive:

        def block(i: int) -> Transform:
            return MaskedSplineAutoregressive(
                features,
                bins=bins,
                bound=bound,
                context_dim=context_dim,
                hidden=hidden,
                activation=activation,
                mode="maf",
            )
    else:
        if features < 2:
            raise ValueError("NSF: coupling needs features >= 2; use autoregressive=True for 1-D")

        def block(i: int) -> Transform:
            return SplineCoupling(
                features,
                bins=bins,
                bound=bound,
                context_dim=context_dim,
                hidden=hidden,
                activation=activation,
                swap=i % 2 == 1,
            )

    chain = stack(features, block, layers, permute=permute, actnorm=actnorm, seed=seed)
    return Flow(StandardNormal(features), chain)


def _affine_autoregressive(mode: str, name: str):
    def preset(
        features: int,
        *,
        context_dim: int | None = None,
        layers: int = 5,
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
        actnorm: bool = False,
        permute: str = "reverse",
        seed: int = 0,
    ) -> Flow:
        def block(i: int) -> Transform:
            return MaskedAffineAutoregressive(
                features, mode=mode, context_dim=context_dim, hidden=hidden, activation=activation
            )

        chain = stack(features, block, layers, permute=permute, actnorm=actnorm, seed=seed)
        return Flow(StandardNormal(features), chain)

    preset.__name__ = preset.__qualname__ = name
    return preset


MAF = _affine_autoregressive("maf", "MAF")
MAF.__doc__ = """Masked Autoregressive Flow (Papamakarios et al. 2017, arXiv:1705.07057).

    Affine MADE layers whose parameters are computed from the data side: ``log_prob`` is one
    pass per layer, sampling is sequential. Layers are separated by reversals.

    Example:
        >>> flow = MAF(3, layers=2, hidden=(16,))
        >>> flow.log_prob(torch.randn(4, 3)).shape
        torch.Size([4])
    """

IAF = _affine_autoregressive("iaf", "IAF")
IAF.__doc__ = """Inverse Autoregressive Flow (Kingma et al. 2016, arXiv:1606.04934).

    Affine MADE layers whose parameters are computed from the latent side: sampling (and
    ``sample_and_log_prob``) is one pass per layer, ``log_prob`` of given data is sequential.
    The natural choice for reverse-KL training against an energy.

    Example:
        >>> flow = IAF(3, layers=2, hidden=(16,))
        >>> x, log_q = flow.sample_and_log_prob((4,))
        >>> log_q.shape
        torch.Size([4])
    """
