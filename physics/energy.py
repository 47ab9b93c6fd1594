r"""The :class:`Energy` base class: reduced potential energies ``u(x) = U(x) / kT``.

A Boltzmann target is the unnormalised density

.. math::

    p(x) = \frac{e^{-u(x)}}{Z}, \qquad u(x) = \frac{U(x)}{k_B T}, \qquad
    Z = \int e^{-u(x)}\, dx,

where ``U`` is the potential energy in some energy unit and ``kT = k_B T`` is fixed when the
energy object is built. Every energy in :mod:`physics` is an :class:`Energy`:

* ``energy(x, context=None)``: the reduced energy ``u(x)`` with the batch shape
  ``x.shape[:-1]`` (also ``energy_obj(x)``);
* ``force(x, context=None) = -grad_x u(x)`` (autograd, unless a subclass overrides
  :meth:`Energy.energy_and_force`);
* ``log_prob(x, context=None) = -u(x)``: always the *unnormalised* log density;
  ``normalized_log_prob(x) = -u(x) - log_Z`` where ``log_Z`` is known;
* ``space``: the :mod:`manifoldflows.spaces` space of the points and ``dim``, the length of a
  point;
* ``log_Z``: the exact ``log Z`` over ``space`` where known (``None`` otherwise), and further
  exact references documented per class (free energies, entropies);
* ``context_dim``: ``None`` for an ordinary target; the number of context features for a
  conditional target (e.g. :class:`TemperatureConditioned`, whose context is the
  temperature), which then needs ``context`` in every call.

This is the target protocol of :mod:`manifoldflows.targets`, followed by every target in
:mod:`physics` (the toy systems of :mod:`physics.toy`, the particle systems and the manifold
targets of :mod:`physics.toy_manifold` alike), so an :class:`Energy` can be handed to the
losses, estimators and stochastic layers directly (``manifoldflows`` never imports
``physics``; the protocol is duck-typed); a conditional one receives the flow's context.

Temperature is given in one of two ways: ``kT`` directly, in the energy unit of the potential,
or ``temperature`` (kelvin) together with ``units`` naming that energy unit (``"kJ/mol"``,
``"kcal/mol"``, ``"eV"`` or ``"J"``), from which ``kT = k_B T`` with the CODATA 2018 value of
``k_B``. With neither, ``kT = 1``: the potential is already in units of ``kT`` (the convention of
every toy system here).

References:
    F. Noe, S. Olsson, J. Koehler, H. Wu, "Boltzmann generators: Sampling equilibrium states
    of many-body systems with deep learning", Science 365 (2019), arXiv:1812.01729.
"""

from __future__ import annotations

import math
from typing import SupportsFloat

import torch
from torch import Tensor, nn

from manifoldflows.errors import InvalidInput
from manifoldflows.functional.autograd import value_and_grad
from manifoldflows.spaces import Space

__all__ = [
    "Energy",
    "TemperatureConditioned",
    "BOLTZMANN_CONSTANT",
    "resolve_kT",
    "positive_quantity",
]

#: Boltzmann's constant per kelvin in the energy units accepted by ``units=`` (CODATA 2018).
BOLTZMANN_CONSTANT = {
    "kJ/mol": 0.00831446261815324,
    "kcal/mol": 0.00831446261815324 / 4.184,
    "eV": 8.617333262e-5,
    "J": 1.380649e-23,
}


def positive_quantity(value: SupportsFloat, who: str, what: str) -> float:
    """``value`` as a positive finite float, or :class:`InvalidInput` naming ``who`` and ``what``.

    Example:
        >>> positive_quantity("300", "MolecularSystem", "the temperature (K)")
        300.0
    """
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{who}: expected {what} as a positive number, got {value!r}") from None
    if not (out > 0.0 and math.isfinite(out)):
        raise InvalidInput(f"{who}: expected {what} as a positive finite number, got {value!r}")
    return out


def resolve_kT(
    kT: float | None = None,
    temperature: float | None = None,
    units: str | None = None,
    who: str = "Energy",
) -> float:
    r"""The thermal energy ``kT`` from either ``kT`` or ``temperature`` and ``units``.

    .. math:: kT = k_B\, T \quad\text{(with } k_B \text{ in the given units per kelvin)}

    Arguments:
        kT: thermal energy in the potential's energy unit (exclusive with ``temperature``).
        temperature: absolute temperature in kelvin; needs ``units``.
        units: the potential's energy unit, a key of :data:`BOLTZMANN_CONSTANT`.
        who: name used in error messages.

    Returns:
        ``kT`` as a positive float (``1.0`` when nothing is given).

    Example:
        >>> round(resolve_kT(temperature=300.0, units="kJ/mol"), 6)
        2.494339
        >>> resolve_kT()
        1.0
    """
    if kT is not None and temperature is not None:
        raise ValueError(
            f"{who}: expected either kT or temperature (with units), got both "
            f"kT={kT!r} and temperature={temperature!r}"
        )
    if temperature is not None:
        if units not in BOLTZMANN_CONSTANT:
            raise ValueError(
                f"{who}: expected units among {sorted(BOLTZMANN_CONSTANT)} with a temperature, "
                f"got {units!r}"
            )
        temperature = positive_quantity(temperature, who, "the temperature (K)")
        return BOLTZMANN_CONSTANT[units] * temperature
    if units is not None:
        raise ValueError(f"{who}: units={units!r} needs a temperature; got none")
    return 1.0 if kT is None else positive_quantity(kT, who, "kT")


class Energy(nn.Module):
    r"""Base class of reduced energies ``u(x) = U(x) / kT`` on a space (a Boltzmann target).

    Subclasses implement ``_potential(x)``, the potential ``U`` in their energy unit with the
    batch shape of ``x``; :meth:`energy` divides by ``kT``. Wrappers that already work in
    reduced units override ``_reduced(x)`` instead; conditional energies set ``context_dim``
    and override ``_reduced_in_context(x, context)``. Forces come from autograd,

    .. math:: F(x) = -\nabla_x u(x),

    unless a subclass overrides :meth:`energy_and_force`. The module holds no noise and no
    hard-coded dtype or device: constants are cast to the input's dtype and device.

    Arguments:
        space: the space of the points (e.g. ``Euclidean(d)``).
        kT: thermal energy in the potential's unit (default 1; exclusive with ``temperature``).
        temperature: kelvin, with ``units`` (see :func:`resolve_kT`).
        units: the potential's energy unit (``"kJ/mol"``, ``"kcal/mol"``, ``"eV"``, ``"J"``).

    Attributes:
        space: the space of the points.
        dim: the length of a point (``space.event_shape[-1]``).
        kT: the thermal energy the reduced energy is measured in.
        beta: ``1 / kT``.
        log_Z: exact ``log Z = log int exp(-u(x)) dx`` over ``space`` when known, else ``None``.
        context_dim: ``None`` (the energy takes no context) or the number of context features
            of a conditional energy.

    References:
        Noe, Olsson, Koehler & Wu, "Boltzmann generators", Science 2019, arXiv:1812.01729.

    Example:
        >>> from manifoldflows.spaces import Euclidean
        >>> class Harmonic(Energy):
        ...     def _potential(self, x):
        ...         return 0.5 * (x**2).sum(-1)
        >>> e = Harmonic(Euclidean(2), kT=2.0)
        >>> x = torch.tensor([[1.0, 1.0]])
        >>> e.energy(x), e.force(x), e.log_prob(x)
        (tensor([0.5000]), tensor([[-0.5000, -0.5000]]), tensor([-0.5000]))
    """

    log_Z: float | None = None
    context_dim: int | None = None

    def __init__(
        self,
        space: Space,
        *,
        kT: float | None = None,
        temperature: float | None = None,
        units: str | None = None,
    ):
        super().__init__()
        who = type(self).__name__
        if not isinstance(space, Space):
            raise ValueError(f"{who}: expected a manifoldflows Space, got {type(space).__name__}")
        if len(space.event_shape) != 1:
            raise ValueError(
                f"{who}: expected a space of flat points (event shape (d,)), "
                f"got event shape {tuple(space.event_shape)}"
            )
        self.space = space
        self.dim = int(space.event_shape[-1])
        self.kT = resolve_kT(kT, temperature, units, who)
        self.beta = 1.0 / self.kT

    # ------------------------------------------------------------------ public API
    def energy(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Reduced energy ``u(x)`` (``u(x | context)`` for a conditional energy).

        Arguments:
            x: points, shape ``(*batch, dim)``.
            context: for a conditional energy (``context_dim`` set) the context, shape
                ``(*cbatch, context_dim)`` broadcastable against ``batch``; an unconditional
                energy does not depend on it and ignores it (the target protocol of
                :mod:`manifoldflows.targets`: a conditional flow may be trained against it).

        Returns:
            ``u(x)``, shape ``(*batch,)`` (broadcast with ``cbatch`` for a context).
        """
        self._check_x(x)
        who = type(self).__name__
        if self.context_dim is None:  # does not depend on a context: one given is ignored
            u = self._reduced(x)
            expected = x.shape[:-1]
        else:
            self._check_context(context)
            expected = torch.broadcast_shapes(x.shape[:-1], context.shape[:-1])
            u = self._reduced_in_context(x, context)
        if u.shape != expected:
            raise InvalidInput(
                f"{who}: expected the energy to have the batch shape {tuple(expected)}, got "
                f"{tuple(u.shape)}"
            )
        return u

    def energy_and_force(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Reduced energy and force ``-grad u`` in one pass (autograd).

        If ``x`` is part of a graph (``x.requires_grad`` with grad mode on), the force is
        differentiable with respect to it (second-order terms are kept, as a reparameterised
        Langevin step needs); otherwise both outputs are detached (see
        :func:`manifoldflows.functional.autograd.value_and_grad`).

        Arguments:
            x: points, shape ``(*batch, dim)``.
            context: the context of a conditional energy (see :meth:`energy`).

        Returns:
            ``(u, F)`` with shapes ``(*batch,)`` and ``(*batch, dim)``.
        """
        self._check_x(x)
        u, grad = value_and_grad(lambda y: self.energy(y, context), x, create_graph=x.requires_grad)
        return u, -grad

    def force(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Force ``F(x) = -grad_x u(x)`` in reduced units, shape ``x.shape``."""
        return self.energy_and_force(x, context)[1]

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Unnormalised log-density ``-u(x)``, always (``log p(x) = -u(x) - log_Z``)."""
        return -self.energy(x, context)

    def normalized_log_prob(self, x: Tensor) -> Tensor:
        """Normalised log-density ``-u(x) - log_Z``; needs an exact ``log_Z``.

        Raises:
            InvalidInput: when ``log_Z`` is unknown (``None``) or the energy is conditional.
        """
        if self.log_Z is None or self.context_dim is not None:
            raise InvalidInput(
                f"{type(self).__name__}: the normalised density needs an exact log_Z, which "
                "this energy does not know; use log_prob (unnormalised) or estimate log Z "
                "with manifoldflows.estimators"
            )
        return -self.energy(x) - self.log_Z

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Same as :meth:`energy`."""
        return self.energy(x, context)

    def extra_repr(self) -> str:
        return f"space={self.space!r}, kT={self.kT:g}"

    # ------------------------------------------------------------------ to implement
    def _potential(self, x: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not define a potential")

    def _reduced(self, x: Tensor) -> Tensor:
        u = self._potential(x)
        return u if self.kT == 1.0 else u * self.beta

    def _reduced_in_context(self, x: Tensor, context: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not define a conditional energy")

    # ------------------------------------------------------------------ helpers
    def _check_context(self, context: Tensor | None) -> None:
        who = type(self).__name__
        if context is None:
            raise InvalidInput(
                f"{who}: this energy is conditional (context_dim={self.context_dim}), expected "
                "a context, got None"
            )
        if not isinstance(context, Tensor) or context.dim() < 1:
            raise InvalidInput(f"{who}: expected a context tensor, got {type(context).__name__}")
        if context.shape[-1] != self.context_dim:
            raise InvalidInput(
                f"{who}: expected a context of shape (..., {self.context_dim}), got "
                f"{tuple(context.shape)}"
            )

    def _check_x(self, x: Tensor) -> None:
        who = type(self).__name__
        if not isinstance(x, Tensor):
            raise InvalidInput(f"{who}: expected a tensor of points, got {type(x).__name__}")
        if not torch.is_floating_point(x) or x.dim() < 1 or x.shape[-1] != self.dim:
            raise InvalidInput(
                f"{who}: expected floating-point points of shape (*batch, {self.dim}) on "
                f"{self.space!r}, got dtype {x.dtype} and shape {tuple(x.shape)}"
            )


class TemperatureConditioned(Energy):
    r"""A target whose temperature is given by the context: ``u(x | T) = U(x) / (k_B T)``.

    Wraps an :class:`Energy` defined at its own ``kT_0`` and rescales its reduced energy to the
    thermal energy given per context row,

    .. math::

        u(x \mid c) = \frac{U(x)}{kT(c)} = u_0(x)\,\frac{kT_0}{kT(c)}, \qquad
        kT(c) = c_j \ \text{(the context feature ``index``)},

    so a temperature-conditioned flow (``context_dim`` including the temperature) can be trained
    and its estimates (``log Z(T)``, free energies at each ``T``) computed per context row with
    one target. ``kT`` is in the wrapped energy's unit (for the toy systems, ``kT_0 = 1``: the
    context is the temperature relative to the wrapped one). Exact references of the wrapped
    energy hold at ``kT = kT_0`` only, so ``log_Z`` is ``None`` here. The context feature must
    be positive.

    Arguments:
        energy: the wrapped :class:`Energy` (unconditional).
        context_dim: number of context features (default 1: just the temperature).
        index: which feature holds ``kT`` (default 0).

    References:
        F. Noe, S. Olsson, J. Koehler, H. Wu, "Boltzmann generators", Science 2019,
        arXiv:1812.01729. M. Dibak, L. Klein, A. Kraemer, F. Noe, "Temperature steerable flows
        and Boltzmann generators", Phys. Rev. Research 4 (2022), arXiv:2108.01590.

    Example:
        >>> from physics import DoubleWell
        >>> hot = TemperatureConditioned(DoubleWell())
        >>> x = torch.zeros(3, 2)
        >>> t = torch.tensor([[1.0], [2.0], [4.0]])
        >>> torch.allclose(hot.energy(x, t) * t[:, 0], DoubleWell().energy(x).expand(3))
        True
    """

    def __init__(self, energy: Energy, context_dim: int = 1, index: int = 0):
        if not isinstance(energy, Energy) or energy.context_dim is not None:
            raise ValueError(
                "TemperatureConditioned: expected an unconditional physics Energy, got "
                f"{type(energy).__name__}"
            )
        super().__init__(energy.space)
        if isinstance(context_dim, bool) or not isinstance(context_dim, int) or context_dim < 1:
            raise ValueError(
                f"TemperatureConditioned: expected a positive integer context_dim, got "
                f"{context_dim!r}"
            )
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < context_dim:
            raise ValueError(
                f"TemperatureConditioned: expected an index in [0, {context_dim}), got {index!r}"
            )
        self.wrapped = energy
        self.context_dim = context_dim
        self.index = index

    def extra_repr(self) -> str:
        return f"context_dim={self.context_dim}, index={self.index}"

    def _reduced_in_context(self, x: Tensor, context: Tensor) -> Tensor:
        kT = context[..., self.index].to(dtype=x.dtype)
        if not bool((kT > 0).all()):
            raise InvalidInput(
                f"TemperatureConditioned: expected a positive temperature in context feature "
                f"{self.index}, got values down to {float(kT.min()):.4g}"
            )
        return self.wrapped.energy(x) * (self.wrapped.kT / kT)
