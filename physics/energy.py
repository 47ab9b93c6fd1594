r"""The :class:`Energy` base class: reduced potential energies ``u(x) = U(x) / kT``.

A Boltzmann target is the unnormalised density

.. math::

    p(x) = \frac{e^{-u(x)}}{Z}, \qquad u(x) = \frac{U(x)}{k_B T}, \qquad
    Z = \int e^{-u(x)}\, dx,

where ``U`` is the potential energy in some energy unit and ``kT = k_B T`` is fixed when the
energy object is built. Every energy in :mod:`physics` is an :class:`Energy`:

* ``energy(x)``: the reduced energy ``u(x)`` with the batch shape ``x.shape[:-1]`` (also
  ``energy_obj(x)``);
* ``force(x) = -grad_x u(x)`` (autograd, unless a subclass overrides
  :meth:`Energy.energy_and_force`);
* ``log_prob(x) = -u(x)``: the *unnormalised* log-density (subtract ``log_Z`` where it is known);
* ``space``: the :mod:`manifoldflows.spaces` space of the points (``Euclidean(d)`` here) and
  ``dim``, the length of a point;
* optional exact references, documented per class: ``log_Z`` (``None`` when unknown), free
  energies, entropies.

Objects with an ``.energy(x)`` method are what :func:`manifoldflows.core.energy_fn` and
:func:`manifoldflows.losses.reverse_kl` accept as a target, so an :class:`Energy` can be handed
to them directly (``manifoldflows`` never imports ``physics``; the protocol is duck-typed).

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

import torch
from torch import Tensor, nn

from manifoldflows.errors import InvalidInput
from manifoldflows.spaces import Space

__all__ = ["Energy", "BOLTZMANN_CONSTANT", "resolve_kT"]

#: Boltzmann's constant per kelvin in the energy units accepted by ``units=`` (CODATA 2018).
BOLTZMANN_CONSTANT = {
    "kJ/mol": 0.00831446261815324,
    "kcal/mol": 0.00831446261815324 / 4.184,
    "eV": 8.617333262e-5,
    "J": 1.380649e-23,
}


def _positive(value, who: str, what: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: expected {what} as a positive number, got {value!r}") from None
    if not (out > 0.0 and math.isfinite(out)):
        raise ValueError(f"{who}: expected {what} as a positive finite number, got {value!r}")
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
        return BOLTZMANN_CONSTANT[units] * _positive(temperature, who, "the temperature (K)")
    if units is not None:
        raise ValueError(f"{who}: units={units!r} needs a temperature; got none")
    return 1.0 if kT is None else _positive(kT, who, "kT")


class Energy(nn.Module):
    r"""Base class of reduced energies ``u(x) = U(x) / kT`` on a space (a Boltzmann target).

    Subclasses implement ``_potential(x)``, the potential ``U`` in their energy unit with the
    batch shape of ``x``; :meth:`energy` divides by ``kT``. Wrappers that already work in
    reduced units override ``_reduced(x)`` instead. Forces come from autograd,

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
    def energy(self, x: Tensor) -> Tensor:
        """Reduced energy ``u(x)`` with shape ``x.shape[:-1]``.

        Arguments:
            x: points, shape ``(*batch, dim)``.

        Returns:
            ``u(x)``, shape ``(*batch,)``.
        """
        self._check_x(x)
        u = self._reduced(x)
        if u.shape != x.shape[:-1]:
            raise InvalidInput(
                f"{type(self).__name__}: expected the energy to have the batch shape "
                f"{tuple(x.shape[:-1])}, got {tuple(u.shape)}"
            )
        return u

    def energy_and_force(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Reduced energy and force ``-grad u`` in one pass (autograd).

        If ``x`` is part of a graph (``x.requires_grad`` with grad mode on), the force is
        differentiable with respect to it (second-order terms are kept, as a reparameterised
        Langevin step needs); otherwise both outputs are detached.

        Arguments:
            x: points, shape ``(*batch, dim)``.

        Returns:
            ``(u, F)`` with shapes ``(*batch,)`` and ``(*batch, dim)``.
        """
        self._check_x(x)
        if x.requires_grad and torch.is_grad_enabled():
            u = self.energy(x)
            (grad,) = torch.autograd.grad(u.sum(), x, create_graph=True)
            return u, -grad
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            u = self.energy(xg)
            (grad,) = torch.autograd.grad(u.sum(), xg)
        return u.detach(), -grad

    def force(self, x: Tensor) -> Tensor:
        """Force ``F(x) = -grad_x u(x)`` in reduced units, shape ``x.shape``."""
        return self.energy_and_force(x)[1]

    def log_prob(self, x: Tensor) -> Tensor:
        """Unnormalised log-density ``-u(x)`` (``log p(x) = -u(x) - log_Z``)."""
        return -self.energy(x)

    def forward(self, x: Tensor) -> Tensor:
        """Same as :meth:`energy`."""
        return self.energy(x)

    def extra_repr(self) -> str:
        return f"space={self.space!r}, kT={self.kT:g}"

    # ------------------------------------------------------------------ to implement
    def _potential(self, x: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not define a potential")

    def _reduced(self, x: Tensor) -> Tensor:
        u = self._potential(x)
        return u if self.kT == 1.0 else u * self.beta

    # ------------------------------------------------------------------ helpers
    def _check_x(self, x: Tensor) -> None:
        who = type(self).__name__
        if not isinstance(x, Tensor):
            raise InvalidInput(f"{who}: expected a tensor of points, got {type(x).__name__}")
        if not torch.is_floating_point(x) or x.dim() < 1 or x.shape[-1] != self.dim:
            raise InvalidInput(
                f"{who}: expected floating-point points of shape (*batch, {self.dim}) on "
                f"{self.space!r}, got dtype {x.dtype} and shape {tuple(x.shape)}"
            )
