r"""Two-dimensional toy densities for density-estimation demos and tests.

Every sampler has the signature ``name(n, ..., generator=None)`` and returns an ``(n, 2)``
tensor in the default dtype, created on the generator's device (CPU without one). Points are
independent and identically distributed (the mixture component of each point is random), so
any slice of a sample is itself a valid sample. All densities live roughly in ``[-4, 4]^2``,
the default window of :func:`manifoldflows.plotting.plot_density_2d`.

References:
    Grathwohl et al., "FFJORD: free-form continuous dynamics for scalable reversible generative
    models", ICLR 2019, arXiv:1810.01367 (the usual benchmark set of such densities).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["two_moons", "eight_gaussians", "checkerboard", "pinwheel", "TOY_DATASETS"]


def _check_n(n: int, who: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"{who}: expected a non-negative integer number of samples n, got {n!r}")
    return n


def _check_nonneg(value: float, name: str, who: str, strict: bool = False) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0 or (strict and value == 0):
        bound = "positive" if strict else "non-negative"
        raise ValueError(f"{who}: expected a {bound} finite {name}, got {value!r}")
    return value


def _check_count(value: int, name: str, who: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{who}: expected a positive integer {name}, got {value!r}")
    return value


def _options(generator: torch.Generator | None) -> dict:
    device = generator.device if generator is not None else torch.device("cpu")
    return {"dtype": torch.get_default_dtype(), "device": device, "generator": generator}


def two_moons(n: int, noise: float = 0.05, generator: torch.Generator | None = None) -> Tensor:
    r"""Two interleaved half circles ("two moons"), centred at the origin.

    Each point picks a moon with probability 1/2 and an angle ``t ~ U[0, pi]``:

    .. math::

        m_1(t) = (\cos t - \tfrac12,\ \sin t - \tfrac14), \qquad m_2(t) = -m_1(t),
        \qquad x = 2\,(m(t) + \sigma \varepsilon), \ \varepsilon \sim N(0, I)

    so the moons have radius 2 and span about ``[-3, 3] x [-1.5, 1.5]``.

    Arguments:
        n: number of samples.
        noise: standard deviation ``sigma`` of the Gaussian noise, relative to the unit moons.
        generator: optional random generator (its device is used).

    Returns:
        An ``(n, 2)`` tensor.

    Example:
        >>> import torch
        >>> two_moons(5, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([5, 2])
    """
    who = "two_moons"
    n, noise = _check_n(n, who), _check_nonneg(noise, "noise", who)
    opts = _options(generator)
    t = math.pi * torch.rand(n, **opts)
    sign = 1.0 - 2.0 * torch.randint(0, 2, (n,), **opts)
    moon = torch.stack([torch.cos(t) - 0.5, torch.sin(t) - 0.25], dim=-1) * sign.unsqueeze(-1)
    return 2.0 * (moon + noise * torch.randn(n, 2, **opts))


def eight_gaussians(
    n: int, radius: float = 2.5, std: float = 0.25, generator: torch.Generator | None = None
) -> Tensor:
    r"""Equal mixture of eight isotropic Gaussians whose means sit evenly on a circle.

    .. math::

        p(x) = \frac18 \sum_{k=0}^{7} N\!\left(x;\ r(\cos\tfrac{k\pi}{4}, \sin\tfrac{k\pi}{4}),
        \ s^2 I\right)

    Arguments:
        n: number of samples.
        radius: radius ``r`` of the circle of means.
        std: standard deviation ``s`` of each component.
        generator: optional random generator (its device is used).

    Returns:
        An ``(n, 2)`` tensor.

    Example:
        >>> import torch
        >>> x = eight_gaussians(1000, std=0.0, generator=torch.Generator().manual_seed(0))
        >>> bool(torch.allclose(x.norm(dim=-1), torch.full((1000,), 2.5)))
        True
    """
    who = "eight_gaussians"
    n = _check_n(n, who)
    radius, std = _check_nonneg(radius, "radius", who), _check_nonneg(std, "std", who)
    opts = _options(generator)
    angle = (math.pi / 4) * torch.randint(0, 8, (n,), **opts)
    means = radius * torch.stack([torch.cos(angle), torch.sin(angle)], dim=-1)
    return means + std * torch.randn(n, 2, **opts)


def checkerboard(
    n: int, cells: int = 4, width: float = 6.0, generator: torch.Generator | None = None
) -> Tensor:
    r"""Uniform density on the dark squares of a ``cells x cells`` checkerboard.

    The board is the square ``[-width/2, width/2]^2`` cut into ``cells^2`` equal squares; the
    square in column ``i`` and row ``j`` (counted from the lower left) is dark when ``i + j`` is
    even. Each point picks a dark square uniformly and a uniform position inside it.

    Arguments:
        n: number of samples.
        cells: number of squares per side.
        width: side length of the board.
        generator: optional random generator (its device is used).

    Returns:
        An ``(n, 2)`` tensor.

    Example:
        >>> import torch
        >>> x = checkerboard(1000, generator=torch.Generator().manual_seed(0))
        >>> cell = torch.floor((x + 3.0) / 1.5).long()  # column and row of each point
        >>> bool(((cell.sum(-1) % 2) == 0).all())
        True
    """
    who = "checkerboard"
    n, cells = _check_n(n, who), _check_count(cells, "number of cells", who)
    width = _check_nonneg(width, "width", who, strict=True)
    opts = _options(generator)
    idx = torch.arange(cells * cells, device=opts["device"])
    col, row = idx % cells, idx // cells
    dark = idx[(col + row) % 2 == 0]
    pick = dark[torch.randint(0, dark.numel(), (n,), device=opts["device"], generator=generator)]
    corner = torch.stack([pick % cells, pick // cells], dim=-1).to(opts["dtype"])
    size = width / cells
    return -0.5 * width + size * (corner + torch.rand(n, 2, **opts))


def pinwheel(
    n: int,
    arms: int = 5,
    radial_std: float = 0.3,
    tangential_std: float = 0.1,
    rate: float = 0.25,
    radius: float = 2.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""A pinwheel: ``arms`` elongated Gaussian blobs, each bent into a spiral arm.

    A point of arm ``k`` starts as ``(1 + a\,\varepsilon_1,\ b\,\varepsilon_2)`` (radial and
    tangential spread) and is rotated by an angle that grows with its radial coordinate:

    .. math::

        \phi = \frac{2\pi k}{K} + \rho\, e^{1 + a \varepsilon_1},
        \qquad x = R \cdot \mathrm{rot}(\phi)\,(1 + a\varepsilon_1,\ b\varepsilon_2)^\top

    Arguments:
        n: number of samples.
        arms: number of arms ``K``.
        radial_std: radial spread ``a``.
        tangential_std: tangential spread ``b``.
        rate: twist ``rho`` (0 gives straight arms).
        radius: overall scale ``R``.
        generator: optional random generator (its device is used).

    Returns:
        An ``(n, 2)`` tensor.

    References:
        Johnson, Duvenaud, Wiltschko, Datta & Adams, "Composing graphical models with neural
        networks for structured representations and fast inference", NeurIPS 2016,
        arXiv:1603.06277 (the pinwheel data set).

    Example:
        >>> import torch
        >>> pinwheel(4, arms=3, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([4, 2])
    """
    who = "pinwheel"
    n, arms = _check_n(n, who), _check_count(arms, "number of arms", who)
    radial_std = _check_nonneg(radial_std, "radial_std", who)
    tangential_std = _check_nonneg(tangential_std, "tangential_std", who)
    rate = float(rate)
    if not math.isfinite(rate):
        raise ValueError(f"{who}: expected a finite rate, got {rate!r}")
    radius = _check_nonneg(radius, "radius", who, strict=True)
    opts = _options(generator)
    arm = torch.randint(0, arms, (n,), **opts)
    eps = torch.randn(n, 2, **opts)
    r = 1.0 + radial_std * eps[:, 0]
    t = tangential_std * eps[:, 1]
    phi = (2.0 * math.pi / arms) * arm + rate * torch.exp(r)
    c, s = torch.cos(phi), torch.sin(phi)
    return radius * torch.stack([c * r - s * t, s * r + c * t], dim=-1)


#: Name -> sampler ``f(n, generator=None)`` for every toy density in this module.
TOY_DATASETS: dict[str, Callable[..., Tensor]] = {
    "two_moons": two_moons,
    "eight_gaussians": eight_gaussians,
    "checkerboard": checkerboard,
    "pinwheel": pinwheel,
}
