"""Periodic conditioner inputs for angles: the ``[cos, sin]`` embedding and a MADE over it.

A conditioner that reads raw angles sees a jump of ``2 pi`` at the seam ``-pi == pi``, so the
flow it parameterises would be discontinuous on the torus. Feeding ``(cos x, sin x)`` instead
(Rezende et al. 2020, arXiv:2002.02428) makes every conditioner output a smooth, periodic
function of the angles.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .made import MADE

__all__ = ["periodic_embedding", "PeriodicEmbedding", "PeriodicMADE"]


def periodic_embedding(x: Tensor, frequencies: int = 1) -> Tensor:
    """Embed angles as ``[cos(k x), sin(k x)]`` for ``k = 1..frequencies``, angle by angle.

    .. math:: x_i \\mapsto (\\cos x_i, \\sin x_i, \\cos 2x_i, \\sin 2x_i, \\dots)

    The columns of angle ``i`` are contiguous (positions ``2 F i`` to ``2 F (i + 1) - 1``), the
    layout :class:`PeriodicMADE` relies on.

    Arguments:
        x: ``(..., n)`` angles.
        frequencies: number ``F`` of harmonics.

    Returns:
        ``(..., 2 F n)`` features, smooth and ``2 pi``-periodic in every angle.

    References:
        D. J. Rezende et al., "Normalizing Flows on Tori and Spheres", ICML 2020,
        arXiv:2002.02428.

    Example:
        >>> periodic_embedding(torch.tensor([0.0, torch.pi / 2])).round(decimals=6).tolist()
        [1.0, 0.0, -0.0, 1.0]
    """
    if isinstance(frequencies, bool) or int(frequencies) != frequencies or frequencies < 1:
        raise ValueError(
            f"periodic_embedding: expected a positive integer frequencies, got {frequencies!r}"
        )
    if frequencies == 1:
        angles = x.unsqueeze(-1)
    else:
        k = torch.arange(1, int(frequencies) + 1, dtype=x.dtype, device=x.device)
        angles = x.unsqueeze(-1) * k
    return torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1).flatten(-3)


class PeriodicEmbedding(nn.Module):
    """Module form of :func:`periodic_embedding`: ``(..., n) -> (..., 2 F n)``.

    Arguments:
        frequencies: number of harmonics ``F``.

    Example:
        >>> PeriodicEmbedding(2)(torch.zeros(5, 3)).shape
        torch.Size([5, 12])
    """

    def __init__(self, frequencies: int = 1):
        super().__init__()
        periodic_embedding(torch.zeros(1), frequencies)  # validates
        self.frequencies = int(frequencies)

    def extra_repr(self) -> str:
        return f"frequencies={self.frequencies}"

    def forward(self, x: Tensor) -> Tensor:
        return periodic_embedding(x, self.frequencies)


class PeriodicMADE(MADE):
    """MADE over the ``[cos, sin]`` embedding of ``n`` angles.

    Output row ``i`` depends only on the angles ``j`` with ``order[j] < order[i]`` (through
    ``cos x_j`` and ``sin x_j``, which share the degree ``order[j]``) and on the context (every
    row, the first included). It is :class:`~manifoldflows.nn.made.MADE` with a
    :class:`PeriodicEmbedding` of its inputs, so it also has MADE's incremental ``solve``.

    Arguments:
        dim: number of angles ``n``.
        outputs_per_input: ``P``, parameters per angle.
        hidden: hidden layer sizes (each should be at least ``n - 1``).
        **options: ``context_dim``, ``order``, ``activation``, ``zero_last`` as for MADE.

    References:
        M. Germain, K. Gregor, I. Murray, H. Larochelle, "MADE: Masked Autoencoder for
        Distribution Estimation", ICML 2015, arXiv:1502.03509.
        D. J. Rezende et al., "Normalizing Flows on Tori and Spheres", ICML 2020,
        arXiv:2002.02428.

    Example:
        >>> made = PeriodicMADE(3, 4, hidden=(16,))
        >>> made(torch.rand(5, 3)).shape
        torch.Size([5, 3, 4])
    """

    def __init__(
        self,
        dim: int,
        outputs_per_input: int,
        hidden: Sequence[int] = (64, 64),
        **options: Any,
    ):
        from ..spaces.circle import ANGLE
        from .embedding import CoordinateEmbedding  # (embedding builds on this module)

        angles = [ANGLE] * dim
        super().__init__(
            dim, outputs_per_input, hidden, embedding=CoordinateEmbedding(angles), **options
        )
