r"""Analytic toy targets on ``R^d`` with exact reference values where they exist.

==================================  ====  =================================  ===============
target                              dim   exact references                   exact sampling
==================================  ====  =================================  ===============
:class:`DoubleWell`                 2     ``log_Z``, ``delta_F``, entropy    yes (rejection)
:class:`ManyWell`                   2n    ``log_Z``, entropy                 yes (rejection)
:class:`GaussianMixtureEnergy`      d     ``log_Z = 0``                      yes
:class:`FABGaussianMixture`         2     ``log_Z = 0``                      yes
:class:`MuellerBrown`               2     minima and saddles (locations)     no
==================================  ====  =================================  ===============

The double-well references are one-dimensional quadratures in ``x1`` (``scipy.integrate.quad``
in float64 at construction) times the exact Gaussian integral in ``x2``. With FAB's parameters
``(a, b, c) = (-0.5, -6, 1)`` and ``kT = 1``: ``log Z = 10.293480``, ``delta_F = +1.690631``
and the many-well (16 copies, 32 dimensions) has ``log Z = 16 x 10.293480 = 164.6957`` and
entropy ``27.4972`` nats (so ``KL(p || q) = NLL_q(exact samples) - 27.4972``).

References:
    L. I. Midgley, V. Stimper, G. N. C. Simm, B. Schoelkopf, J. M. Hernandez-Lobato, "Flow
    annealed importance sampling bootstrap", ICLR 2023, arXiv:2208.01893.
    F. Noe, S. Olsson, J. Koehler, H. Wu, "Boltzmann generators", Science 2019,
    arXiv:1812.01729.
    K. Mueller, L. D. Brown, "Location of saddle points and minimum energy paths by a
    constrained simplex optimization procedure", Theor. Chim. Acta 53 (1979) 75-93.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import SupportsFloat, TypeVar

import numpy as np
import torch
from torch import Tensor

from manifoldflows.spaces import Euclidean

from .energy import Energy

#: A scalar or an array of points of the quartic (the marginal is evaluated on both).
_Points = TypeVar("_Points", float, np.ndarray)

__all__ = [
    "DoubleWell",
    "ManyWell",
    "GaussianMixtureEnergy",
    "FABGaussianMixture",
    "MuellerBrown",
    "MUELLER_BROWN_MINIMA",
    "MUELLER_BROWN_SADDLES",
]

#: Truncation of the quartic marginal: where ``(V(x) - V_min) / kT`` exceeds this, the density
#: is below ``e^-60`` of its peak and contributes nothing at double precision.
_TAIL = 60.0


def _finite(value: SupportsFloat, who: str, what: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: expected {what} as a number, got {value!r}") from None
    if not math.isfinite(out):
        raise ValueError(f"{who}: expected a finite {what}, got {value!r}")
    return out


class _Quartic:
    r"""The 1-D marginal ``exp(-V(x)/kT)``, ``V(x) = a x + b x^2 + c x^4`` (float64, internal).

    Provides stationary points, ``log int exp(-V/kT)`` over intervals by adaptive quadrature,
    moments, and an exact rejection sampler whose envelope is piecewise constant on a fine
    grid: on each cell the maximum of ``exp(-V/kT)`` is at an end point or at a minimum of
    ``V`` inside the cell, so the bound is rigorous.
    """

    def __init__(self, a: float, b: float, c: float, kT: float, cells: int = 4096):
        self.a, self.b, self.c, self.kT = a, b, c, kT
        roots = np.roots([4.0 * c, 0.0, 2.0 * b, a])
        real = np.sort(roots[np.abs(roots.imag) < 1e-9].real)
        curv = 12.0 * c * real**2 + 2.0 * b
        self.stationary = real
        self.minima = real[curv > 0] if np.any(curv > 0) else real[:1]
        self.maxima = real[curv < 0]
        self.v_min = float(min(self.v(m) for m in self.minima))
        # Truncation radius: beyond the outermost stationary points V increases monotonically.
        r = float(np.max(np.abs(real))) + 1.0
        while min(self.w(-r), self.w(r)) < _TAIL:
            r *= 1.5
        self.radius = r
        # Envelope for exact sampling on [-r, r].
        edges = np.linspace(-r, r, cells + 1)
        f_edges = np.exp(-self.w(edges))
        bound = np.maximum(f_edges[:-1], f_edges[1:])
        for m in self.minima:
            k = min(int(np.searchsorted(edges, m) - 1), cells - 1)
            if k >= 0:
                bound[k] = max(bound[k], math.exp(-self.w(m)))
        self.edges, self.bound = edges, bound

    def v(self, x: _Points) -> _Points:
        return self.a * x + self.b * x**2 + self.c * x**4

    def w(self, x: _Points) -> _Points:
        """Shifted reduced potential ``(V(x) - V_min) / kT >= 0``."""
        return (self.v(x) - self.v_min) / self.kT

    def _integral(self, g: Callable[[float], float], lo: float, hi: float) -> float:
        from scipy.integrate import quad

        lo, hi = max(lo, -self.radius), min(hi, self.radius)
        if lo >= hi:
            return 0.0
        cuts = [lo, *[float(s) for s in self.stationary if lo < s < hi], hi]
        total = 0.0
        for u, v in zip(cuts[:-1], cuts[1:]):
            total += quad(g, u, v, epsabs=0.0, epsrel=1e-13, limit=200)[0]
        return total

    def log_integral(self, lo: float = -math.inf, hi: float = math.inf) -> float:
        """``log int_lo^hi exp(-V(x)/kT) dx``."""
        value = self._integral(lambda x: math.exp(-self.w(x)), lo, hi)
        return math.log(value) - self.v_min / self.kT if value > 0 else -math.inf

    def mean_reduced(self) -> float:
        """``E[V(x)/kT]`` under the normalised marginal."""
        z = self._integral(lambda x: math.exp(-self.w(x)), -math.inf, math.inf)
        m = self._integral(lambda x: self.w(x) * math.exp(-self.w(x)), -math.inf, math.inf)
        return m / z + self.v_min / self.kT

    def sample(
        self,
        n: int,
        generator: torch.Generator | None,
        dtype: torch.dtype,
        device: torch.device | str,
    ) -> Tensor:
        """``n`` exact draws (float64 on the CPU, then cast), by rejection from the envelope."""
        bound = torch.as_tensor(self.bound, dtype=torch.float64)
        edges = torch.as_tensor(self.edges, dtype=torch.float64)
        width = float(edges[1] - edges[0])
        out, have = [], 0
        while have < n:
            m = int(1.1 * (n - have)) + 16
            cell = torch.multinomial(bound, m, replacement=True, generator=generator)
            u = torch.rand(2, m, dtype=torch.float64, generator=generator)
            x = edges[cell] + width * u[0]
            w = torch.as_tensor(self.w(x.numpy()), dtype=torch.float64)
            keep = x[u[1] * bound[cell] <= torch.exp(-w)]
            out.append(keep)
            have += keep.numel()
        return torch.cat(out)[:n].to(dtype=dtype, device=device)


def _sample_args(
    generator: torch.Generator | None,
    dtype: torch.dtype | None,
    device: torch.device | str | None,
) -> tuple[torch.dtype, torch.device]:
    dtype = torch.get_default_dtype() if dtype is None else dtype
    device = torch.device("cpu") if device is None else torch.device(device)
    if generator is not None and generator.device.type != "cpu":
        raise ValueError(
            f"exact toy samplers draw on the CPU; expected a CPU generator, got one on "
            f"{generator.device}"
        )
    return dtype, device


class DoubleWell(Energy):
    r"""Two-dimensional double well: a quartic in ``x1`` times a Gaussian in ``x2``.

    .. math::

        U(x) = a x_1 + b x_1^2 + c x_1^4 + \tfrac12 x_2^2, \qquad u = U / kT,

        \log Z = \log\int e^{-(a x_1 + b x_1^2 + c x_1^4)/kT}\, dx_1
            + \tfrac12 \log(2\pi kT).

    The wells are the half-planes ``x1 < s`` ("left") and ``x1 > s`` ("right") with the split
    ``s = split``. Free energies are ``F_left = -log Z_left`` and ``F_right = -log Z_right`` (in
    units of ``kT``, ``Z`` restricted to the half-plane) and

    .. math:: \Delta F = F_{\rm left} - F_{\rm right} = \log Z_{\rm right} - \log Z_{\rm left},

    positive when the right well holds more probability. The default split ``s = 0`` (the sign
    of ``x1``) is the convention of the published reference values: for ``(a, b, c) =
    (-0.5, -6, 1)``, ``log Z = 10.293480`` and ``delta_F = +1.690631``; for ``(1, -6, 1)``,
    ``delta_F = -3.379901``. ``split="barrier"`` uses the top of the barrier between the
    minima instead (``x1 = -0.0417`` resp. ``0.0835`` for these; ``delta_F`` then differs in the
    fifth decimal). All references are computed by adaptive quadrature in float64 when the
    object is built.

    Arguments:
        a, b, c: coefficients of the quartic; ``c > 0`` (the defaults are FAB's, ``b < 0``
            gives two wells).
        split: ``x1`` position separating the wells (default ``0.0``) or ``"barrier"``.
        kT, temperature, units: the temperature (see :class:`~physics.energy.Energy`;
            default ``kT = 1``).

    Attributes:
        log_Z: exact ``log Z`` of ``exp(-u)`` over ``R^2``.
        log_Z_left, log_Z_right: ``log Z`` restricted to ``x1 < split`` and ``x1 > split``.
        delta_F: ``F_left - F_right = log Z_right - log Z_left`` (units of ``kT``).
        prob_right: probability of the right well, ``Z_right / Z``.
        entropy: ``H = -E_p[log p] = log Z + E_p[u]`` in nats.
        split: the split position used.
        barrier_top: ``x1`` of the local maximum of the quartic (``None`` for a single well).
        minima: ``x1`` positions of the minima of the quartic.

    References:
        Midgley et al., "Flow annealed importance sampling bootstrap", ICLR 2023,
        arXiv:2208.01893; Noe et al., "Boltzmann generators", arXiv:1812.01729.

    Example:
        >>> target = DoubleWell()
        >>> round(target.log_Z, 6), round(target.delta_F, 6)
        (10.29348, 1.690631)
        >>> target.energy(torch.zeros(3, 2))
        tensor([0., 0., 0.])
    """

    def __init__(
        self,
        a: float = -0.5,
        b: float = -6.0,
        c: float = 1.0,
        *,
        split: float | str = 0.0,
        kT: float | None = None,
        temperature: float | None = None,
        units: str | None = None,
    ):
        super().__init__(Euclidean(2), kT=kT, temperature=temperature, units=units)
        who = type(self).__name__
        self.a, self.b, self.c = (_finite(v, who, n) for v, n in ((a, "a"), (b, "b"), (c, "c")))
        if not self.c > 0:
            raise ValueError(f"{who}: expected c > 0 (a normalisable density), got c={c!r}")
        q = self._quartic = _Quartic(self.a, self.b, self.c, self.kT)
        self.minima = tuple(float(m) for m in q.minima)
        self.barrier_top = float(q.maxima[0]) if len(q.maxima) else None
        if split == "barrier":
            if self.barrier_top is None:
                raise ValueError(
                    f"{who}: split='barrier' needs two wells, but a={a}, b={b}, c={c} give one"
                )
            split = self.barrier_top
        self.split = _finite(split, who, "split (a number or 'barrier')")
        log_gauss = 0.5 * math.log(2.0 * math.pi * self.kT)
        log_z1 = q.log_integral()
        self.log_Z = log_z1 + log_gauss
        self.log_Z_left = q.log_integral(hi=self.split) + log_gauss
        self.log_Z_right = q.log_integral(lo=self.split) + log_gauss
        self.delta_F = self.log_Z_right - self.log_Z_left
        self.prob_right = math.exp(self.log_Z_right - self.log_Z)
        self.entropy = self.log_Z + q.mean_reduced() + 0.5

    def extra_repr(self) -> str:
        return f"a={self.a:g}, b={self.b:g}, c={self.c:g}, kT={self.kT:g}"

    def _potential(self, x: Tensor) -> Tensor:
        x1, x2 = x[..., 0], x[..., 1]
        x1sq = x1 * x1
        return self.a * x1 + self.b * x1sq + self.c * x1sq * x1sq + 0.5 * x2 * x2

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        r"""Exact samples: ``x1`` by rejection from its quartic marginal, ``x2 ~ N(0, kT)``.

        The rejection envelope is piecewise constant on 4096 cells of ``[-R, R]`` (a rigorous
        bound, see the module source); ``R`` is where the density has dropped below ``e^-60`` of
        its peak, so the truncation is invisible at double precision.

        Arguments:
            n: number of samples.
            generator: optional CPU generator.
            dtype, device: of the result (default: torch's default dtype, CPU).

        Returns:
            Samples of shape ``(n, 2)``.

        Example:
            >>> g = torch.Generator().manual_seed(0)
            >>> DoubleWell().sample(4, generator=g).shape
            torch.Size([4, 2])
        """
        dtype, device = _sample_args(generator, dtype, device)
        x1 = self._quartic.sample(int(n), generator, torch.float64, "cpu")
        x2 = math.sqrt(self.kT) * torch.randn(int(n), dtype=torch.float64, generator=generator)
        return torch.stack([x1, x2], -1).to(dtype=dtype, device=device)


class ManyWell(Energy):
    r"""``n`` independent copies of :class:`DoubleWell` in ``2n`` dimensions (FAB's many-well).

    Coordinates come in consecutive pairs ``(x_{2i}, x_{2i+1})``, the quartic coordinate first:

    .. math::

        U(x) = \sum_{i=0}^{n-1} U_{\rm DW}(x_{2i}, x_{2i+1}), \qquad
        \log Z = n \log Z_{\rm DW}, \qquad H = n H_{\rm DW}.

    With the default ``n = 16`` and ``(a, b, c) = (-0.5, -6, 1)`` (FAB's 32-dimensional
    many-well, ``2^16`` modes): ``log Z = 16 x 10.293480 = 164.6957`` and entropy
    ``H = 27.4972`` nats, so the forward KL of a model ``q`` is its NLL on exact samples minus
    27.4972.

    Arguments:
        n_wells: number ``n`` of double-well pairs (default 16).
        a, b, c: quartic coefficients of every pair (default FAB's).
        kT, temperature, units: the temperature (default ``kT = 1``).

    Attributes:
        pair: the :class:`DoubleWell` of one pair (its references: ``pair.log_Z``, ...).
        log_Z: ``n * pair.log_Z``.
        entropy: ``n * pair.entropy`` (nats).

    References:
        Midgley et al., "Flow annealed importance sampling bootstrap", ICLR 2023,
        arXiv:2208.01893.

    Example:
        >>> target = ManyWell()
        >>> target.dim, round(target.log_Z, 4), round(target.entropy, 4)
        (32, 164.6957, 27.4972)
    """

    def __init__(
        self,
        n_wells: int = 16,
        a: float = -0.5,
        b: float = -6.0,
        c: float = 1.0,
        *,
        kT: float | None = None,
        temperature: float | None = None,
        units: str | None = None,
    ):
        if isinstance(n_wells, bool) or int(n_wells) != n_wells or n_wells < 1:
            raise ValueError(f"ManyWell: expected a positive integer n_wells, got {n_wells!r}")
        super().__init__(Euclidean(2 * int(n_wells)), kT=kT, temperature=temperature, units=units)
        self.n_wells = int(n_wells)
        self.pair = DoubleWell(a, b, c, kT=self.kT)
        self.log_Z = self.n_wells * self.pair.log_Z
        self.entropy = self.n_wells * self.pair.entropy

    def extra_repr(self) -> str:
        p = self.pair
        return f"n_wells={self.n_wells}, a={p.a:g}, b={p.b:g}, c={p.c:g}, kT={self.kT:g}"

    def _potential(self, x: Tensor) -> Tensor:
        pairs = x.reshape(*x.shape[:-1], self.n_wells, 2)
        return self.pair._potential(pairs).sum(-1)

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Exact samples, every pair drawn independently by :meth:`DoubleWell.sample`.

        Arguments:
            n: number of samples.
            generator: optional CPU generator.
            dtype, device: of the result (default: torch's default dtype, CPU).

        Returns:
            Samples of shape ``(n, 2 * n_wells)``.

        Example:
            >>> ManyWell(3).sample(5).shape
            torch.Size([5, 6])
        """
        dtype, device = _sample_args(generator, dtype, device)
        pairs = self.pair.sample(int(n) * self.n_wells, generator=generator, dtype=torch.float64)
        return pairs.reshape(int(n), self.dim).to(dtype=dtype, device=device)


class GaussianMixtureEnergy(Energy):
    r"""Mixture of isotropic Gaussians as a reduced energy ``u = -log p`` (``log Z = 0``).

    .. math::

        u(x) = -\log \sum_{k=1}^{K} w_k\, \mathcal N(x;\ \mu_k, \sigma^2 I), \qquad
        \int e^{-u(x)}\, dx = 1.

    The energy is a normalised log-density, so it has no temperature (``kT = 1``).

    Arguments:
        means: ``(K, d)`` component means.
        scale: standard deviation ``sigma > 0`` shared by all components and coordinates.
        weights: optional ``(K,)`` positive weights (normalised here; default equal).

    Attributes:
        log_Z: ``0.0``.
        means, log_weights: buffers (float64; cast to the input's dtype and device on use).

    Example:
        >>> target = GaussianMixtureEnergy(torch.tensor([[-2.0], [2.0]]), scale=0.5)
        >>> target.log_Z, target.sample(3).shape
        (0.0, torch.Size([3, 1]))
    """

    def __init__(self, means: Tensor, scale: float = 1.0, weights: Tensor | None = None):
        who = type(self).__name__
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.dim() != 2 or means.shape[0] < 1 or not bool(torch.isfinite(means).all()):
            raise ValueError(
                f"{who}: expected finite means of shape (K, d), got shape {tuple(means.shape)}"
            )
        super().__init__(Euclidean(means.shape[1]))
        k = means.shape[0]
        self.scale = float(scale)
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise ValueError(f"{who}: expected a positive finite scale, got {scale!r}")
        if weights is None:
            weights = torch.full((k,), 1.0 / k, dtype=torch.float64)
        weights = torch.as_tensor(weights, dtype=torch.float64)
        if weights.shape != (k,) or not bool((weights > 0).all() & torch.isfinite(weights).all()):
            raise ValueError(f"{who}: expected {k} positive finite weights, got {weights.tolist()}")
        self.register_buffer("means", means.clone())
        self.register_buffer("log_weights", (weights / weights.sum()).log())
        self.log_Z = 0.0
        self.n_modes = k

    def extra_repr(self) -> str:
        return f"n_modes={self.n_modes}, dim={self.dim}, scale={self.scale:g}"

    def _potential(self, x: Tensor) -> Tensor:
        mu = self.means.to(dtype=x.dtype, device=x.device)
        log_w = self.log_weights.to(dtype=x.dtype, device=x.device)
        z = (x.unsqueeze(-2) - mu) / self.scale
        log_norm = self.dim * (math.log(self.scale) + 0.5 * math.log(2.0 * math.pi))
        return -torch.logsumexp(log_w - 0.5 * (z * z).sum(-1), dim=-1) + log_norm

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Exact samples: a component by its weight, then a Gaussian draw.

        Arguments:
            n: number of samples.
            generator: optional generator (on the buffers' device).
            dtype, device: of the result (default: torch's default dtype, the buffers' device).

        Returns:
            Samples of shape ``(n, d)``.
        """
        dtype = torch.get_default_dtype() if dtype is None else dtype
        device = self.means.device if device is None else torch.device(device)
        mu = self.means
        k = torch.multinomial(self.log_weights.exp(), int(n), replacement=True, generator=generator)
        eps = torch.randn(int(n), self.dim, dtype=mu.dtype, device=mu.device, generator=generator)
        return (mu[k] + self.scale * eps).to(dtype=dtype, device=device)


class FABGaussianMixture(GaussianMixtureEnergy):
    r"""The 40-mode, 2-D Gaussian mixture benchmark of FAB (Midgley et al. 2023).

    Means are uniform in the box ``[-box, box]^d``, drawn as ``(U - 1/2) * 2 box`` from
    ``torch.rand((n_modes, d))`` in float32 right after seeding torch's CPU generator with
    ``seed`` (as in FAB's experiments, so the modes coincide with the published ones); weights
    are equal and every component has covariance ``scale^2 I``. FAB's code uses the standard
    deviation ``softplus(1) = log(1 + e) = 1.3133`` (its ``log_var_scaling = 1``), which is the
    default here; ``scale=1.0`` gives unit covariance. The density is normalised:
    ``log_Z = 0``.

    Arguments:
        n_modes: number of components (default 40).
        dim: dimension (default 2).
        box: half-width of the box of the means (default 40, i.e. ``[-40, 40]^2``).
        scale: component standard deviation (default ``softplus(1)``).
        seed: seed of the means (default 0).

    References:
        Midgley et al., "Flow annealed importance sampling bootstrap", ICLR 2023,
        arXiv:2208.01893 (section 5.1).

    Example:
        >>> target = FABGaussianMixture()
        >>> target.means.shape, round(target.scale, 4), target.log_Z
        (torch.Size([40, 2]), 1.3133, 0.0)
        >>> bool(target.means.abs().max() <= 40)
        True
    """

    def __init__(
        self,
        n_modes: int = 40,
        dim: int = 2,
        box: float = 40.0,
        scale: float = math.log1p(math.e),
        seed: int = 0,
    ):
        who = type(self).__name__
        for name, v in (("n_modes", n_modes), ("dim", dim)):
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise ValueError(f"{who}: expected a positive integer {name}, got {v!r}")
        box = _finite(box, who, "box")
        if box <= 0:
            raise ValueError(f"{who}: expected a positive box half-width, got {box!r}")
        g = torch.Generator().manual_seed(int(seed))
        u = torch.rand((int(n_modes), int(dim)), generator=g, dtype=torch.float32)
        means = ((u - 0.5) * 2 * box).to(torch.float64)
        super().__init__(means, scale=scale)
        self.box, self.seed = box, int(seed)


#: Approximate minima of the Mueller-Brown potential (lowest first) and their energies.
MUELLER_BROWN_MINIMA = ((-0.558, 1.442), (0.623, 0.028), (-0.050, 0.467))
#: Approximate saddle points of the Mueller-Brown potential.
MUELLER_BROWN_SADDLES = ((-0.822, 0.624), (0.212, 0.293))


class MuellerBrown(Energy):
    r"""The Mueller-Brown potential: a sum of four anisotropic Gaussian terms on ``R^2``.

    .. math::

        V(x, y) = \sum_{k=1}^{4} A_k \exp\big(a_k (x - x_k)^2 + b_k (x - x_k)(y - y_k)
            + c_k (y - y_k)^2\big), \qquad u = \frac{\text{scale}\cdot V}{kT}

    with the standard parameters ``A = (-200, -100, -170, 15)``, ``a = (-1, -1, -6.5, 0.7)``,
    ``b = (0, 0, 11, 0.6)``, ``c = (-10, -10, -6.5, 0.7)``, ``x_k = (1, 0, -0.5, -1)``,
    ``y_k = (0, 0.5, 1.5, 1)``. Three minima (:data:`MUELLER_BROWN_MINIMA`, ``V = -146.70,
    -108.17, -80.77``) and two saddles (:data:`MUELLER_BROWN_SADDLES`). At ``kT = 1`` the
    density is essentially a point mass on the deepest minimum; ``scale = 0.1`` (or ``kT = 10``)
    is a common choice for sampling benchmarks. The density is normalisable (the fourth term
    grows without bound), but no exact ``log Z`` is provided.

    Arguments:
        scale: multiplies ``V`` (default 1).
        kT, temperature, units: the temperature (default ``kT = 1``).

    References:
        Mueller & Brown, Theor. Chim. Acta 53 (1979) 75-93.

    Example:
        >>> mb = MuellerBrown()
        >>> round(mb.energy(torch.tensor([[-0.558, 1.442]])).item(), 2)
        -146.7
    """

    A = (-200.0, -100.0, -170.0, 15.0)
    ALPHA = (-1.0, -1.0, -6.5, 0.7)
    BETA = (0.0, 0.0, 11.0, 0.6)
    GAMMA = (-10.0, -10.0, -6.5, 0.7)
    X0 = (1.0, 0.0, -0.5, -1.0)
    Y0 = (0.0, 0.5, 1.5, 1.0)

    def __init__(
        self,
        scale: float = 1.0,
        *,
        kT: float | None = None,
        temperature: float | None = None,
        units: str | None = None,
    ):
        super().__init__(Euclidean(2), kT=kT, temperature=temperature, units=units)
        self.scale = _finite(scale, type(self).__name__, "scale")
        if self.scale <= 0:
            raise ValueError(f"MuellerBrown: expected a positive scale, got {scale!r}")
        self.minima = MUELLER_BROWN_MINIMA
        self.saddles = MUELLER_BROWN_SADDLES

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}, kT={self.kT:g}"

    def _potential(self, x: Tensor) -> Tensor:
        def const(values: Sequence[float]) -> Tensor:
            return torch.tensor(values, dtype=x.dtype, device=x.device)

        dx = x[..., :1] - const(self.X0)
        dy = x[..., 1:] - const(self.Y0)
        expo = const(self.ALPHA) * dx * dx + const(self.BETA) * dx * dy + const(self.GAMMA) * dy**2
        return self.scale * (const(self.A) * torch.exp(expo)).sum(-1)
