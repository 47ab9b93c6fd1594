r"""Analytic target densities on the torus ``T^2`` and the sphere ``S^2`` with exact ``log Z``.

These are the benchmark targets of Rezende et al. (2020), "Normalizing flows on tori and
spheres" (Tables 1 and 2), as unnormalised densities ``p(x) = exp(-u(x)) / Z`` given by their
reduced energy ``u``. Each target object has

* ``space``: the :mod:`manifoldflows.spaces` space it lives on (``Torus(2)`` or ``Sphere(2)``);
* ``energy(x)``: ``u(x)`` with the batch shape of ``x`` (also ``target(x)``), so it can be
  handed to :func:`manifoldflows.losses.reverse_kl` or :func:`manifoldflows.training.fit`;
* ``log_prob(x) = -u(x)``: the unnormalised log density, and
  ``normalized_log_prob(x) = -u(x) - log_Z``;
* ``log_Z``: the exact log-normaliser, in closed form (a float).

They are :class:`physics.energy.Energy` objects (the one target protocol of
:mod:`manifoldflows.targets`): the same names and meanings as every other target, forces by
autograd, and :class:`physics.energy.TemperatureConditioned` turns any of them into a
temperature-conditioned target (``u / T``).

Volume conventions are those of :mod:`manifoldflows.spaces`: the torus densities are w.r.t. the
Lebesgue measure on the angle box ``[-pi, pi)^2`` (total volume ``4 pi^2``), the sphere density
w.r.t. the surface measure of ``S^2`` (total area ``4 pi``). With ``I_0`` the modified Bessel
function of the first kind,

.. math::

    \int_{-\pi}^{\pi} e^{\kappa \cos(t - a)}\, dt = 2\pi I_0(\kappa), \qquad
    \int_{S^2} e^{\kappa\, \mu \cdot x}\, dS(x) = \frac{4\pi \sinh\kappa}{\kappa},

which give the ``log Z`` of every target below (the correlated torus target integrates over
``t_1`` at fixed ``s = t_1 + t_2`` first: ``Z = 2\pi \cdot 2\pi I_0(1)``). The defaults are the
paper's parameters; the values are

============================  =============================================  ===============
target                        unnormalised density                           ``log Z``
============================  =============================================  ===============
:class:`TorusUnimodal`        ``exp(cos(t1 - 4.18) + cos(t2 - 5.96))``       ``4.1475829``
:class:`TorusMultimodal`      mean of three such terms                       ``4.1475829``
:class:`TorusCorrelated`      ``exp(cos(t1 + t2 - 1.94))``                   ``3.9116685``
:class:`SphereMixture`        ``sum_i exp(10 mu_i . x)``, four centres       ``10.9215858``
============================  =============================================  ===============

References:
    D. J. Rezende, G. Papamakarios, S. Racaniere, M. S. Albergo, G. Kanwar, P. E. Shanahan,
    K. Cranmer, "Normalizing flows on tori and spheres", ICML 2020, arXiv:2002.02428.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import SupportsFloat

import torch
from torch import Tensor

from manifoldflows.errors import InvalidInput
from manifoldflows.spaces import Space, Sphere, Torus

from .energy import Energy

__all__ = [
    "ManifoldTarget",
    "TorusUnimodal",
    "TorusMultimodal",
    "TorusCorrelated",
    "SphereMixture",
    "log_bessel_i0",
    "sphere_point",
    "PAPER_SPHERE_CENTRES",
    "rezende2020_targets",
    "LOG_Z_TORUS_UNIMODAL",
    "LOG_Z_TORUS_MULTIMODAL",
    "LOG_Z_TORUS_CORRELATED",
    "LOG_Z_SPHERE_MIXTURE",
]


def log_bessel_i0(kappa: float) -> float:
    r"""``log I_0(kappa)`` for a float ``kappa >= 0``, to double precision.

    Power series :math:`I_0(\kappa) = \sum_k (\kappa^2/4)^k / (k!)^2` for ``kappa <= 30``;
    above, the scaled value ``log I_0 = kappa + log(i0e(kappa))`` from torch in float64.

    Arguments:
        kappa: a non-negative number.

    Returns:
        A Python float.

    Example:
        >>> round(log_bessel_i0(1.0), 10)
        0.2359143585
    """
    kappa = float(kappa)
    if not (kappa >= 0.0 and math.isfinite(kappa)):
        raise ValueError(f"log_bessel_i0: expected a finite kappa >= 0, got {kappa!r}")
    if kappa > 30.0:
        scaled = torch.special.i0e(torch.tensor(kappa, dtype=torch.float64)).item()
        return kappa + math.log(scaled)
    q, term, total, k = 0.25 * kappa * kappa, 1.0, 1.0, 0
    while term > 1e-17 * total:
        k += 1
        term *= q / (k * k)
        total += term
    return math.log(total)


def sphere_point(azimuth: float, polar: float) -> tuple[float, float, float]:
    r"""Unit vector with the given azimuth ``phi`` and polar angle ``theta`` (radians).

    .. math:: x = (\sin\theta \cos\phi,\ \sin\theta \sin\phi,\ \cos\theta)

    Arguments:
        azimuth: ``phi`` (any real).
        polar: ``theta``, the angle from the north pole ``(0, 0, 1)``.

    Returns:
        A tuple of three floats.

    Example:
        >>> [round(v, 6) for v in sphere_point(0.0, math.pi / 2)]
        [1.0, 0.0, 0.0]
    """
    s = math.sin(polar)
    return (s * math.cos(azimuth), s * math.sin(azimuth), math.cos(polar))


class ManifoldTarget(Energy):
    """Base class: an unnormalised density ``exp(-u(x))`` on a manifold with known ``log Z``.

    An :class:`~physics.energy.Energy` with ``kT = 1``; subclasses set ``log_Z`` and implement
    ``_potential(x)``. Points are assumed to lie on ``space`` (angles in radians for the torus,
    unit vectors for the sphere); the energies are smooth functions of the ambient coordinates
    and are evaluated as given.

    Arguments:
        space: the space the density lives on.

    Attributes:
        space: the space the density lives on.
        log_Z: exact ``log Z = log int exp(-u) dvol`` (Riemannian volume of ``space``).
    """

    log_Z: float

    def __init__(self, space: Space):
        super().__init__(space)

    def _check_x(self, x: Tensor) -> None:
        shape = tuple(self.space.event_shape)
        if not isinstance(x, Tensor) or tuple(x.shape[-1:]) != shape:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise InvalidInput(
                f"{type(self).__name__}: expected points of {self.space!r} with event shape "
                f"{shape}, got {got}"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(log_Z={self.log_Z:.7f})"


def _pair(value: Iterable[SupportsFloat], who: str, what: str) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: expected {what} as two numbers, got {value!r}") from None
    if not (math.isfinite(a) and math.isfinite(b)):
        raise ValueError(f"{who}: expected finite {what}, got {value!r}")
    return a, b


def _concentration(value: SupportsFloat, who: str) -> float:
    kappa = float(value)
    if not (kappa > 0.0 and math.isfinite(kappa)):
        raise ValueError(f"{who}: expected a positive finite concentration, got {value!r}")
    return kappa


class TorusUnimodal(ManifoldTarget):
    r"""Product of two von Mises factors on ``T^2`` (Rezende et al. 2020, Table 2, "unimodal").

    .. math::

        p(t_1, t_2) \propto \exp\big(\kappa\cos(t_1 - a) + \kappa\cos(t_2 - b)\big),
        \qquad \log Z = 2 \log\big(2\pi I_0(\kappa)\big)

    Arguments:
        loc: ``(a, b)`` in radians (default the paper's ``(4.18, 5.96)``).
        concentration: ``kappa > 0`` (default 1).

    References:
        Rezende et al. 2020, arXiv:2002.02428.

    Example:
        >>> target = TorusUnimodal()
        >>> round(target.log_Z, 6)
        4.147583
        >>> target.energy(torch.zeros(5, 2)).shape
        torch.Size([5])
    """

    def __init__(self, loc: Sequence[float] = (4.18, 5.96), concentration: float = 1.0):
        super().__init__(Torus(2))
        who = type(self).__name__
        self.loc = _pair(loc, who, "loc")
        self.concentration = _concentration(concentration, who)
        self.log_Z = 2.0 * (math.log(2.0 * math.pi) + log_bessel_i0(self.concentration))

    def _potential(self, x: Tensor) -> Tensor:
        a, b = self.loc
        return -self.concentration * (torch.cos(x[..., 0] - a) + torch.cos(x[..., 1] - b))


class TorusMultimodal(ManifoldTarget):
    r"""Equal mixture of products of von Mises factors on ``T^2`` (Rezende et al. 2020, Table 2).

    .. math::

        p(t_1, t_2) \propto \frac1K \sum_{k=1}^{K}
            \exp\big(\kappa\cos(t_1 - a_k) + \kappa\cos(t_2 - b_k)\big),
        \qquad \log Z = 2 \log\big(2\pi I_0(\kappa)\big)

    Arguments:
        locs: the ``K`` centres ``(a_k, b_k)`` (default the paper's three:
            ``(0.21, 2.85), (1.89, 6.18), (3.77, 1.56)``).
        concentration: ``kappa > 0`` (default 1).

    References:
        Rezende et al. 2020, arXiv:2002.02428.

    Example:
        >>> target = TorusMultimodal()
        >>> round(target.log_Z, 6), len(target.locs)
        (4.147583, 3)
    """

    def __init__(
        self,
        locs: Sequence[Sequence[float]] = ((0.21, 2.85), (1.89, 6.18), (3.77, 1.56)),
        concentration: float = 1.0,
    ):
        super().__init__(Torus(2))
        who = type(self).__name__
        try:
            self.locs = tuple(_pair(loc, who, "each centre") for loc in locs)
        except TypeError:
            raise ValueError(f"{who}: expected a sequence of centres, got {locs!r}") from None
        if not self.locs:
            raise ValueError(f"{who}: expected at least one centre, got none")
        self.concentration = _concentration(concentration, who)
        self.log_Z = 2.0 * (math.log(2.0 * math.pi) + log_bessel_i0(self.concentration))

    def _potential(self, x: Tensor) -> Tensor:
        terms = torch.stack(
            [torch.cos(x[..., 0] - a) + torch.cos(x[..., 1] - b) for a, b in self.locs], dim=-1
        )
        return -(torch.logsumexp(self.concentration * terms, -1) - math.log(len(self.locs)))


class TorusCorrelated(ManifoldTarget):
    r"""Density concentrated along the diagonal ``t_1 + t_2 = c`` of ``T^2`` (Rezende et al.).

    .. math::

        p(t_1, t_2) \propto \exp\big(\kappa \cos(t_1 + t_2 - c)\big),
        \qquad \log Z = \log\big(4\pi^2 I_0(\kappa)\big)

    Arguments:
        loc: ``c`` in radians (default the paper's ``1.94``).
        concentration: ``kappa > 0`` (default 1).

    References:
        Rezende et al. 2020, arXiv:2002.02428.

    Example:
        >>> round(TorusCorrelated().log_Z, 6)
        3.911668
    """

    def __init__(self, loc: float = 1.94, concentration: float = 1.0):
        super().__init__(Torus(2))
        who = type(self).__name__
        self.loc = float(loc)
        if not math.isfinite(self.loc):
            raise ValueError(f"{who}: expected a finite loc, got {loc!r}")
        self.concentration = _concentration(concentration, who)
        self.log_Z = math.log(4.0 * math.pi**2) + log_bessel_i0(self.concentration)

    def _potential(self, x: Tensor) -> Tensor:
        return -self.concentration * torch.cos(x[..., 0] + x[..., 1] - self.loc)


#: The paper's four S^2 centres as (azimuth phi, polar angle theta).
PAPER_SPHERE_CENTRES = (
    (1.5, 0.7 + math.pi / 2),
    (1.0, -1.0 + math.pi / 2),
    (0.5, 0.6 + math.pi / 2),
    (4.0, -0.7 + math.pi / 2),
)


class SphereMixture(ManifoldTarget):
    r"""Sum of von Mises-Fisher-like bumps on ``S^2`` (Rezende et al. 2020, Table 1).

    .. math::

        p(x) \propto \sum_{i=1}^{K} \exp(\kappa\, \mu_i \cdot x), \qquad
        \log Z = \log\Big(K \, \frac{4\pi \sinh\kappa}{\kappa}\Big)

    Default: ``kappa = 10`` and the paper's four centres, given in spherical coordinates
    (azimuth ``phi``, polar angle ``theta``) as ``(1.5, 0.7 + pi/2)``, ``(1.0, -1 + pi/2)``,
    ``(0.5, 0.6 + pi/2)``, ``(4.0, -0.7 + pi/2)`` and converted with :func:`sphere_point`. An
    independent reproduction reports that the paper's figures match azimuth ``5.0`` instead of
    ``0.5`` for the third centre (``third_azimuth=5.0`` selects it); ``log Z`` is the same
    either way.

    Arguments:
        centres: optional ``K`` centres as ``(phi, theta)`` pairs (default: the paper's).
        concentration: ``kappa > 0`` (default 10).
        third_azimuth: azimuth of the third default centre (``0.5`` as printed in the paper,
            ``5.0`` as in its figures); only used with the default centres.

    References:
        Rezende et al. 2020, arXiv:2002.02428.

    Example:
        >>> target = SphereMixture()
        >>> round(target.log_Z, 6)
        10.921586
        >>> x = torch.tensor([[0.0, 0.0, 1.0]])
        >>> target.energy(x).shape
        torch.Size([1])
    """

    def __init__(
        self,
        centres: Sequence[Sequence[float]] | None = None,
        concentration: float = 10.0,
        third_azimuth: float = 0.5,
    ):
        super().__init__(Sphere(2))
        who = type(self).__name__
        if centres is None:
            angles = list(PAPER_SPHERE_CENTRES)
            angles[2] = (float(third_azimuth), angles[2][1])
        else:
            try:
                angles = [_pair(c, who, "each centre (phi, theta)") for c in centres]
            except TypeError:
                raise ValueError(
                    f"{who}: expected a sequence of centres, got {centres!r}"
                ) from None
        if not angles:
            raise ValueError(f"{who}: expected at least one centre, got none")
        self.angles = tuple(tuple(float(v) for v in a) for a in angles)
        self.centres = tuple(sphere_point(phi, theta) for phi, theta in self.angles)
        self.concentration = kappa = _concentration(concentration, who)
        # log(4 pi sinh(k) / k) written stably: sinh(k) = e^k (1 - e^(-2k)) / 2
        log_one = math.log(2.0 * math.pi / kappa) + kappa + math.log1p(-math.exp(-2.0 * kappa))
        self.log_Z = math.log(len(self.centres)) + log_one

    def _potential(self, x: Tensor) -> Tensor:
        mu = torch.tensor(self.centres, dtype=x.dtype, device=x.device)  # (K, 3)
        return -torch.logsumexp(self.concentration * (x @ mu.T), dim=-1)


#: Exact ``log Z`` of the default targets (closed form; see the module docstring).
LOG_Z_TORUS_UNIMODAL = TorusUnimodal().log_Z
LOG_Z_TORUS_MULTIMODAL = TorusMultimodal().log_Z
LOG_Z_TORUS_CORRELATED = TorusCorrelated().log_Z
LOG_Z_SPHERE_MIXTURE = SphereMixture().log_Z


def rezende2020_targets() -> dict[str, ManifoldTarget]:
    """The four benchmark targets of Rezende et al. (2020) with the paper's parameters.

    Returns:
        ``{"torus_unimodal", "torus_multimodal", "torus_correlated", "sphere_mixture"}`` mapped
        to fresh target objects.

    Example:
        >>> sorted(rezende2020_targets())
        ['sphere_mixture', 'torus_correlated', 'torus_multimodal', 'torus_unimodal']
    """
    return {
        "torus_unimodal": TorusUnimodal(),
        "torus_multimodal": TorusMultimodal(),
        "torus_correlated": TorusCorrelated(),
        "sphere_mixture": SphereMixture(),
    }
