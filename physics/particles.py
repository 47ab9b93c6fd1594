r"""Particle systems with pair potentials: DW4 and LJ13 (Koehler, Klein & Noe 2020).

A configuration of ``n`` particles in ``d`` spatial dimensions is a flat vector of length
``n d`` (particle-major: ``x.reshape(*batch, n, d)`` gives the positions), so the energies live
on ``Euclidean(n d)`` like every other flow target here.

Centre of mass. The pair potentials depend only on inter-particle distances (and, for LJ13,
on positions relative to the centre of mass ``c = (1/n) sum_i x_i``), so they are invariant
under translations, rotations and reflections of the whole configuration and under
permutations of identical particles. ``exp(-u)`` is therefore not normalisable on ``R^{n d}``;
the Boltzmann density is defined on the zero-centre-of-mass subspace ``{x : sum_i x_i = 0}``
of dimension ``(n - 1) d``, with respect to its own Lebesgue measure. Samplers and flows should
produce zero-COM configurations (:func:`remove_com` projects onto that subspace; equivariant
flows with a zero-COM Gaussian base stay on it). The energy itself can be evaluated anywhere;
it ignores the COM. Alternatively ``com_spring = k > 0`` adds ``k |c|^2 / 2`` to ``U``, which
makes ``exp(-u)`` normalisable on the whole ``R^{n d}`` (for plain Euclidean flows); the COM
then factorises exactly:

.. math::

    \log Z_{\mathbb R^{nd}} = \log Z_{\rm zero\ COM}
        + \frac d2 \log n + \frac d2 \log\frac{2\pi kT}{k},

where ``(d/2) log n`` is the Jacobian between the COM ``c`` and the orthonormal coordinate
``sqrt(n) c`` along the COM directions.

References:
    J. Koehler, L. Klein, F. Noe, "Equivariant flows: exact likelihood generative learning
    for symmetric densities", ICML 2020, arXiv:2006.02425.
    V. G. Satorras, E. Hoogeboom, F. B. Fuchs, I. Posner, M. Welling, "E(n) equivariant
    normalizing flows", NeurIPS 2021, arXiv:2105.09016.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from manifoldflows.errors import InvalidInput
from manifoldflows.spaces import Euclidean

from .energy import Energy

__all__ = [
    "ParticleEnergy",
    "PairDoubleWell",
    "LennardJones",
    "DW4",
    "LJ13",
    "positions",
    "remove_com",
    "pair_distances",
]


def positions(x: Tensor, n_particles: int, spatial_dim: int) -> Tensor:
    """View flat configurations ``(*batch, n d)`` as positions ``(*batch, n, d)``.

    Example:
        >>> positions(torch.arange(6.0), 3, 2).tolist()
        [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]
    """
    if x.shape[-1] != n_particles * spatial_dim:
        raise InvalidInput(
            f"positions: expected configurations of length {n_particles} x {spatial_dim} = "
            f"{n_particles * spatial_dim}, got shape {tuple(x.shape)}"
        )
    return x.reshape(*x.shape[:-1], n_particles, spatial_dim)


def remove_com(x: Tensor, n_particles: int, spatial_dim: int) -> Tensor:
    r"""Project flat configurations onto the zero-centre-of-mass subspace.

    .. math:: x_i \mapsto x_i - \frac1n \sum_j x_j

    Arguments:
        x: configurations ``(*batch, n d)``.
        n_particles, spatial_dim: ``n`` and ``d``.

    Returns:
        Configurations of the same shape whose particle positions sum to zero.

    Example:
        >>> remove_com(torch.tensor([1.0, 0.0, 3.0, 2.0]), 2, 2).tolist()
        [-1.0, -1.0, 1.0, 1.0]
    """
    pos = positions(x, n_particles, spatial_dim)
    return (pos - pos.mean(-2, keepdim=True)).reshape(x.shape)


def pair_distances(x: Tensor, n_particles: int, spatial_dim: int) -> Tensor:
    r"""Distances ``d_ij = |x_i - x_j|`` of all pairs ``i < j`` (row-major order).

    Arguments:
        x: configurations ``(*batch, n d)``.
        n_particles, spatial_dim: ``n`` and ``d``.

    Returns:
        ``(*batch, n (n - 1) / 2)`` distances.

    Example:
        >>> pair_distances(torch.tensor([0.0, 0.0, 3.0, 4.0, 0.0, 1.0]), 3, 2).tolist()
        [5.0, 1.0, 4.242640495300293]
    """
    pos = positions(x, n_particles, spatial_dim)
    return torch.linalg.vector_norm(_pair_vectors(pos), dim=-1)


def _pair_vectors(pos: Tensor) -> Tensor:
    """``x_i - x_j`` for all pairs ``i < j`` (row-major), from positions ``(*batch, n, d)``."""
    n = pos.shape[-2]
    i, j = torch.triu_indices(n, n, 1, device=pos.device)
    return pos[..., i, :] - pos[..., j, :]


class ParticleEnergy(Energy):
    r"""Base class of ``n``-particle energies in ``d`` dimensions on flat configurations.

    Subclasses implement ``_interaction(pos)`` with positions ``(*batch, n, d)``; the optional
    centre-of-mass spring adds ``k |c|^2 / 2`` (see the module docstring):

    .. math:: U(x) = U_{\rm int}(x_1, \dots, x_n) + \tfrac k2 |c|^2,\qquad
        c = \frac1n \sum_i x_i

    Arguments:
        n_particles: ``n >= 2``.
        spatial_dim: ``d >= 1``.
        com_spring: ``k >= 0`` (default 0: translation invariant, the density lives on the
            zero-COM subspace).
        kT, temperature, units: the temperature (default ``kT = 1``).

    Attributes:
        n_particles, spatial_dim: ``n`` and ``d``.
        free_dim: ``(n - 1) d``, the dimension of the zero-COM subspace.
        com_log_volume: with ``com_spring > 0``, ``log Z_full - log Z_zero_COM``
            (``None`` otherwise).
    """

    def __init__(
        self,
        n_particles: int,
        spatial_dim: int,
        *,
        com_spring: float = 0.0,
        kT: float | None = None,
        temperature: float | None = None,
        units: str | None = None,
    ):
        who = type(self).__name__
        for name, v, low in (("n_particles", n_particles, 2), ("spatial_dim", spatial_dim, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{who}: expected an integer {name} >= {low}, got {v!r}")
        super().__init__(
            Euclidean(n_particles * spatial_dim), kT=kT, temperature=temperature, units=units
        )
        k = float(com_spring)
        if not (k >= 0 and math.isfinite(k)):
            raise ValueError(f"{who}: expected a finite com_spring >= 0, got {com_spring!r}")
        self.n_particles, self.spatial_dim, self.com_spring = n_particles, spatial_dim, k
        self.free_dim = (n_particles - 1) * spatial_dim
        self.com_log_volume = (
            0.5 * spatial_dim * (math.log(n_particles) + math.log(2 * math.pi * self.kT / k))
            if k > 0
            else None
        )

    def positions(self, x: Tensor) -> Tensor:
        """Positions ``(*batch, n, d)`` of flat configurations ``(*batch, n d)``."""
        return positions(x, self.n_particles, self.spatial_dim)

    def remove_com(self, x: Tensor) -> Tensor:
        """Project onto the zero-COM subspace (see :func:`remove_com`)."""
        return remove_com(x, self.n_particles, self.spatial_dim)

    def pair_distances(self, x: Tensor) -> Tensor:
        """Pair distances ``(*batch, n (n - 1) / 2)`` (see :func:`pair_distances`)."""
        return pair_distances(x, self.n_particles, self.spatial_dim)

    def _interaction(self, pos: Tensor) -> Tensor:
        raise NotImplementedError

    def _potential(self, x: Tensor) -> Tensor:
        pos = self.positions(x)
        u = self._interaction(pos)
        if self.com_spring > 0:
            com = pos.mean(-2)
            u = u + 0.5 * self.com_spring * (com * com).sum(-1)
        return u


class PairDoubleWell(ParticleEnergy):
    r"""Particles interacting by a double-well potential of their pair distances.

    .. math::

        U(x) = \sum_{i<j} a (d_{ij} - d_0) + b (d_{ij} - d_0)^2 + c (d_{ij} - d_0)^4

    (Koehler et al. write ``1/(2 tau) sum_{i != j}``, the same sum over unordered pairs.)

    Arguments:
        n_particles, spatial_dim: ``n`` and ``d``.
        a, b, c, d0: potential parameters (defaults: DW4's ``0, -4, 0.9, 4``).
        com_spring, kT, temperature, units: see :class:`ParticleEnergy`.

    References:
        Koehler, Klein & Noe, "Equivariant flows", ICML 2020, arXiv:2006.02425.

    Example:
        >>> e = PairDoubleWell(2, 1)
        >>> e.energy(torch.tensor([[0.0, 4.0], [0.0, 6.0]])).tolist()  # d = 4 and d = 6
        [0.0, -1.6000003814697266]
    """

    def __init__(
        self,
        n_particles: int,
        spatial_dim: int,
        a: float = 0.0,
        b: float = -4.0,
        c: float = 0.9,
        d0: float = 4.0,
        **kwargs: Any,
    ):
        super().__init__(n_particles, spatial_dim, **kwargs)
        values = [float(v) for v in (a, b, c, d0)]
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"{type(self).__name__}: expected finite a, b, c, d0, got {values}")
        self.a, self.b, self.c, self.d0 = values

    def extra_repr(self) -> str:
        return (
            f"n_particles={self.n_particles}, spatial_dim={self.spatial_dim}, a={self.a:g}, "
            f"b={self.b:g}, c={self.c:g}, d0={self.d0:g}, kT={self.kT:g}"
        )

    def _interaction(self, pos: Tensor) -> Tensor:
        r = torch.linalg.vector_norm(_pair_vectors(pos), dim=-1) - self.d0
        r2 = r * r
        return (self.a * r + self.b * r2 + self.c * r2 * r2).sum(-1)


class DW4(PairDoubleWell):
    r"""DW4: four particles in 2-D with the pair double well of Koehler et al. (2020).

    ``a = 0, b = -4, c = 0.9, d0 = 4, kT = 1`` (``tau = 1`` in the paper), i.e.
    ``u = sum_{i<j} -4 (d_ij - 4)^2 + 0.9 (d_ij - 4)^4``, on ``Euclidean(8)``.

    Arguments:
        com_spring, kT, temperature, units: see :class:`ParticleEnergy`.

    References:
        Koehler, Klein & Noe, "Equivariant flows", ICML 2020, arXiv:2006.02425.

    Example:
        >>> dw4 = DW4()
        >>> dw4.dim, dw4.free_dim
        (8, 6)
    """

    def __init__(self, **kwargs: Any):
        super().__init__(4, 2, a=0.0, b=-4.0, c=0.9, d0=4.0, **kwargs)


class LennardJones(ParticleEnergy):
    r"""Lennard-Jones cluster with a harmonic confinement to the centre of mass.

    .. math::

        U(x) = \varepsilon \sum_{i<j} \Big[\Big(\frac{r_m}{d_{ij}}\Big)^{12}
            - 2 \Big(\frac{r_m}{d_{ij}}\Big)^{6}\Big]
            + \frac{k_{\rm osc}}{2} \sum_i |x_i - c|^2

    The pair term has its minimum ``-epsilon`` at ``d = r_m``; the oscillator (as in the
    reference implementation of Koehler et al.) keeps the cluster from evaporating and is
    translation invariant. Coincident particles give ``+inf``/NaN: wrap the energy in
    :class:`~physics.regularize.LinLogCut` for training.

    Arguments:
        n_particles, spatial_dim: ``n`` and ``d``.
        epsilon: well depth (default 1).
        r_min: distance of the pair minimum ``r_m`` (default 1).
        oscillator_scale: ``k_osc >= 0`` (default 1; 0 switches the confinement off).
        com_spring, kT, temperature, units: see :class:`ParticleEnergy`.

    References:
        Koehler, Klein & Noe, "Equivariant flows", ICML 2020, arXiv:2006.02425.

    Example:
        >>> lj = LennardJones(2, 3, oscillator_scale=0.0)
        >>> lj.energy(torch.tensor([[0.0, 0.0, 0.0, 1.0, 0.0, 0.0]])).tolist()
        [-1.0]
    """

    def __init__(
        self,
        n_particles: int,
        spatial_dim: int,
        epsilon: float = 1.0,
        r_min: float = 1.0,
        oscillator_scale: float = 1.0,
        **kwargs: Any,
    ):
        super().__init__(n_particles, spatial_dim, **kwargs)
        who = type(self).__name__
        self.epsilon, self.r_min = float(epsilon), float(r_min)
        self.oscillator_scale = float(oscillator_scale)
        if not (self.epsilon > 0 and math.isfinite(self.epsilon)):
            raise ValueError(f"{who}: expected a positive finite epsilon, got {epsilon!r}")
        if not (self.r_min > 0 and math.isfinite(self.r_min)):
            raise ValueError(f"{who}: expected a positive finite r_min, got {r_min!r}")
        if not (self.oscillator_scale >= 0 and math.isfinite(self.oscillator_scale)):
            raise ValueError(
                f"{who}: expected a finite oscillator_scale >= 0, got {oscillator_scale!r}"
            )

    def extra_repr(self) -> str:
        return (
            f"n_particles={self.n_particles}, spatial_dim={self.spatial_dim}, "
            f"epsilon={self.epsilon:g}, r_min={self.r_min:g}, "
            f"oscillator_scale={self.oscillator_scale:g}, kT={self.kT:g}"
        )

    def _interaction(self, pos: Tensor) -> Tensor:
        diff = _pair_vectors(pos)
        s6 = (self.r_min**2 / (diff * diff).sum(-1)) ** 3
        u = self.epsilon * (s6 * s6 - 2.0 * s6).sum(-1)
        if self.oscillator_scale > 0:
            rel = pos - pos.mean(-2, keepdim=True)
            u = u + 0.5 * self.oscillator_scale * (rel * rel).sum((-2, -1))
        return u


class LJ13(LennardJones):
    r"""LJ13: 13 Lennard-Jones particles in 3-D (Koehler et al. 2020), on ``Euclidean(39)``.

    ``epsilon = 1, r_m = 1, kT = 1`` (``tau = 1``) and the unit harmonic oscillator to the
    centre of mass.

    Arguments:
        com_spring, kT, temperature, units: see :class:`ParticleEnergy`.

    References:
        Koehler, Klein & Noe, "Equivariant flows", ICML 2020, arXiv:2006.02425.

    Example:
        >>> lj13 = LJ13()
        >>> lj13.dim, lj13.free_dim
        (39, 36)
    """

    def __init__(self, **kwargs: Any):
        super().__init__(13, 3, epsilon=1.0, r_min=1.0, oscillator_scale=1.0, **kwargs)
