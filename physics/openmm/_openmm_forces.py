r"""Read the parameters of an ``openmm.System`` into plain arrays for :class:`TorchForceField`.

:func:`read_system` walks the forces of a ``System`` once, refuses everything the torch force
field cannot evaluate exactly (naming every unsupported item at once) and returns a
:class:`ForceFieldParameters`: NumPy arrays in OpenMM's default units (nm, kJ/mol, radians,
elementary charges), with the Lennard-Jones/Coulomb pair list already resolved (combining rules
applied, exclusions dropped, exceptions given their own parameters).

Supported: ``HarmonicBondForce``, ``HarmonicAngleForce``, ``PeriodicTorsionForce`` (without
periodic boundary conditions), ``NonbondedForce`` with ``NoCutoff`` and no parameter offsets,
one ``GBSAOBCForce`` with ``NoCutoff``; ``CMMotionRemover`` is ignored (it changes velocities,
not energies).

References:
    P. Eastman et al., "OpenMM 7: rapid development of high performance algorithms for
    molecular dynamics", PLoS Comput. Biol. 13 (2017) e1005659.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import openmm
import openmm.unit as unit

from manifoldflows.errors import InvalidInput

__all__ = ["ForceFieldParameters", "GBSAParameters", "read_system", "SUPPORTED", "ONE_4PI_EPS0"]

#: ``1 / (4 pi eps_0)`` in kJ mol^-1 nm e^-2, built from the CODATA 2018 constants exactly as
#: OpenMM's ``SimTKOpenMMRealType.h`` builds it (138.93545764438198).
ONE_4PI_EPS0 = 1.0 / (
    4.0 * math.pi * (1e-6 * 8.8541878128e-12 / (1.602176634e-19**2 * 6.02214076e23))
)

#: What the torch force field evaluates (used in error messages).
SUPPORTED = (
    "HarmonicBondForce, HarmonicAngleForce, PeriodicTorsionForce, NonbondedForce (NoCutoff), "
    "GBSAOBCForce (NoCutoff); CMMotionRemover is ignored"
)

_NONBONDED_METHODS = {
    0: "NoCutoff",
    1: "CutoffNonPeriodic",
    2: "CutoffPeriodic",
    3: "Ewald",
    4: "PME",
    5: "LJPME",
}


@dataclass(frozen=True)
class GBSAParameters:
    """Per-atom parameters of one ``GBSAOBCForce`` (OBC2 generalized Born + ACE).

    Attributes:
        charge: ``(N,)`` partial charges (e).
        radius: ``(N,)`` intrinsic radii ``rho_i`` (nm).
        scale: ``(N,)`` descreening scale factors ``s_i``.
        solute_dielectric, solvent_dielectric: ``eps_in`` and ``eps_out``.
        surface_area_energy: ``gamma_SA`` of the ACE term (kJ mol^-1 nm^-2).
    """

    charge: np.ndarray
    radius: np.ndarray
    scale: np.ndarray
    solute_dielectric: float
    solvent_dielectric: float
    surface_area_energy: float


@dataclass(frozen=True)
class ForceFieldParameters:
    """Everything :class:`TorchForceField` evaluates, as NumPy arrays (OpenMM default units).

    Attributes:
        n_atoms: number of particles ``N``.
        bonds: ``(n_b, 2)`` atom indices; ``bond_length`` (nm) and ``bond_k``
            (kJ mol^-1 nm^-2), ``(n_b,)`` each.
        angles: ``(n_a, 3)``; ``angle_theta0`` (rad) and ``angle_k`` (kJ mol^-1 rad^-2).
        torsions: ``(n_t, 4)``; ``torsion_periodicity`` (int), ``torsion_phase`` (rad) and
            ``torsion_k`` (kJ/mol).
        pairs: ``(n_p, 2)`` Lennard-Jones/Coulomb pairs ``i < j`` (non-excluded pairs and
            exceptions with a nonzero charge product or epsilon), with ``pair_charge_product``
            (e^2), ``pair_sigma`` (nm) and ``pair_epsilon`` (kJ/mol), ``(n_p,)`` each.
        has_nonbonded: whether the System has a ``NonbondedForce``.
        gbsa: the ``GBSAOBCForce`` parameters, or ``None``.
        force_names: class names of the forces read (the ignored ones excluded).
    """

    n_atoms: int
    bonds: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    bond_length: np.ndarray = field(default_factory=lambda: np.zeros(0))
    bond_k: np.ndarray = field(default_factory=lambda: np.zeros(0))
    angles: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int64))
    angle_theta0: np.ndarray = field(default_factory=lambda: np.zeros(0))
    angle_k: np.ndarray = field(default_factory=lambda: np.zeros(0))
    torsions: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int64))
    torsion_periodicity: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    torsion_phase: np.ndarray = field(default_factory=lambda: np.zeros(0))
    torsion_k: np.ndarray = field(default_factory=lambda: np.zeros(0))
    pairs: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    pair_charge_product: np.ndarray = field(default_factory=lambda: np.zeros(0))
    pair_sigma: np.ndarray = field(default_factory=lambda: np.zeros(0))
    pair_epsilon: np.ndarray = field(default_factory=lambda: np.zeros(0))
    has_nonbonded: bool = False
    gbsa: GBSAParameters | None = None
    force_names: tuple[str, ...] = ()


def _value(quantity: unit.Quantity | float, target: unit.Unit) -> float:
    """A plain float from an OpenMM quantity (or a number already in the default unit)."""
    if isinstance(quantity, unit.Quantity):
        return float(quantity.value_in_unit(target))
    return float(quantity)


_KJ = unit.kilojoule_per_mole
_NM = unit.nanometer
_RAD = unit.radian
_E = unit.elementary_charge


def _problems(system: openmm.System) -> list[str]:
    """Every item of ``system`` that the torch force field cannot evaluate."""
    problems: list[str] = []
    n_gbsa = 0
    for index, force in enumerate(system.getForces()):
        name = type(force).__name__
        if isinstance(force, openmm.CMMotionRemover):
            continue
        if isinstance(
            force,
            (openmm.HarmonicBondForce, openmm.HarmonicAngleForce, openmm.PeriodicTorsionForce),
        ):
            if force.usesPeriodicBoundaryConditions():
                problems.append(f"{name} (force {index}) with periodic boundary conditions")
        elif isinstance(force, openmm.NonbondedForce):
            method = force.getNonbondedMethod()
            if method != openmm.NonbondedForce.NoCutoff:
                label = _NONBONDED_METHODS.get(method, str(method))
                problems.append(f"{name} (force {index}) with nonbondedMethod {label}")
            offsets = (
                force.getNumParticleParameterOffsets() + force.getNumExceptionParameterOffsets()
            )
            if offsets:
                problems.append(f"{name} (force {index}) with {offsets} parameter offsets")
        elif isinstance(force, openmm.GBSAOBCForce):
            n_gbsa += 1
            if force.getNonbondedMethod() != openmm.GBSAOBCForce.NoCutoff:
                label = {1: "CutoffNonPeriodic", 2: "CutoffPeriodic"}.get(
                    force.getNonbondedMethod(), str(force.getNonbondedMethod())
                )
                problems.append(f"{name} (force {index}) with nonbondedMethod {label}")
            if n_gbsa == 2:
                problems.append(f"a second {name} (force {index})")
        else:
            problems.append(f"{name} (force {index})")
    n_constraints = system.getNumConstraints()
    if n_constraints:
        problems.append(f"{n_constraints} constraint{'s' if n_constraints > 1 else ''}")
    n_virtual = sum(system.isVirtualSite(i) for i in range(system.getNumParticles()))
    if n_virtual:
        problems.append(f"{n_virtual} virtual site{'s' if n_virtual > 1 else ''}")
    return problems


def _as_arrays(rows: list[tuple], n_index: int, n_values: int) -> tuple[np.ndarray, ...]:
    """Split rows ``(i_1, ..., i_k, p_1, ..., p_m)`` into an index array and parameter arrays."""
    index = np.array([row[:n_index] for row in rows], dtype=np.int64).reshape(-1, n_index)
    values = np.array([row[n_index:] for row in rows], dtype=np.float64).reshape(-1, n_values)
    return (index, *values.T)


def _nonbonded_pairs(force: openmm.NonbondedForce, n_atoms: int) -> tuple[np.ndarray, ...]:
    """Pairs ``i < j`` with (charge product, sigma, epsilon) of one NoCutoff NonbondedForce.

    Non-excluded pairs get the Lorentz-Berthelot combination ``q_i q_j``,
    ``(sigma_i + sigma_j) / 2``, ``sqrt(eps_i eps_j)``; an exception replaces its pair's
    parameters; pairs whose charge product and epsilon both vanish are dropped (exclusions).
    """
    params = np.array(
        [
            [_value(v, u) for v, u in zip(force.getParticleParameters(i), (_E, _NM, _KJ))]
            for i in range(n_atoms)
        ],
        dtype=np.float64,
    ).reshape(n_atoms, 3)
    charge, sigma, epsilon = params.T
    i, j = np.triu_indices(n_atoms, 1)
    qq = charge[i] * charge[j]
    sig = 0.5 * (sigma[i] + sigma[j])
    eps = np.sqrt(epsilon[i] * epsilon[j])
    for k in range(force.getNumExceptions()):
        a, b, q, s, e = force.getExceptionParameters(k)
        a, b = min(a, b), max(a, b)
        p = a * n_atoms - a * (a + 1) // 2 + (b - a - 1)  # row-major index of (a, b) in triu
        qq[p], sig[p], eps[p] = _value(q, _E * _E), _value(s, _NM), _value(e, _KJ)
    keep = (qq != 0.0) | (eps != 0.0)
    return np.stack([i[keep], j[keep]], 1).astype(np.int64), qq[keep], sig[keep], eps[keep]


def read_system(system: openmm.System, who: str = "TorchForceField") -> ForceFieldParameters:
    """Parameters of every supported force of ``system`` (see the module docstring).

    Arguments:
        system: an ``openmm.System``.
        who: name used in error messages.

    Returns:
        A :class:`ForceFieldParameters`.

    Raises:
        InvalidInput: naming every unsupported force, constraint count and virtual-site count.

    Example:
        >>> s = openmm.System()
        >>> _ = s.addParticle(1.0)
        >>> _ = s.addForce(openmm.CustomExternalForce("x^2"))
        >>> try:
        ...     read_system(s)
        ... except InvalidInput as error:
        ...     print(error)  # doctest: +ELLIPSIS
        TorchForceField: cannot evaluate CustomExternalForce (force 0); supported: ...
    """
    if not isinstance(system, openmm.System):
        raise InvalidInput(
            f"{who}: expected an openmm.System (or an object with a .system attribute), "
            f"got {type(system).__name__}"
        )
    problems = _problems(system)
    if problems:
        raise InvalidInput(f"{who}: cannot evaluate {', '.join(problems)}; supported: {SUPPORTED}")
    n_atoms = system.getNumParticles()
    bonds: list[tuple] = []
    angles: list[tuple] = []
    torsions: list[tuple] = []
    pair_blocks: list[tuple[np.ndarray, ...]] = []
    gbsa = None
    names: list[str] = []
    for force in system.getForces():
        if isinstance(force, openmm.CMMotionRemover):
            continue
        names.append(type(force).__name__)
        if isinstance(force, openmm.HarmonicBondForce):
            for k in range(force.getNumBonds()):
                a, b, length, kb = force.getBondParameters(k)
                bonds.append((a, b, _value(length, _NM), _value(kb, _KJ / _NM**2)))
        elif isinstance(force, openmm.HarmonicAngleForce):
            for k in range(force.getNumAngles()):
                a, b, c, theta, ka = force.getAngleParameters(k)
                angles.append((a, b, c, _value(theta, _RAD), _value(ka, _KJ / _RAD**2)))
        elif isinstance(force, openmm.PeriodicTorsionForce):
            for k in range(force.getNumTorsions()):
                a, b, c, d, n, phase, kt = force.getTorsionParameters(k)
                torsions.append((a, b, c, d, n, _value(phase, _RAD), _value(kt, _KJ)))
        elif isinstance(force, openmm.NonbondedForce):
            pair_blocks.append(_nonbonded_pairs(force, n_atoms))
        elif isinstance(force, openmm.GBSAOBCForce):
            rows = [force.getParticleParameters(i) for i in range(n_atoms)]
            gbsa = GBSAParameters(
                charge=np.array([_value(r[0], _E) for r in rows], dtype=np.float64),
                radius=np.array([_value(r[1], _NM) for r in rows], dtype=np.float64),
                scale=np.array([float(r[2]) for r in rows], dtype=np.float64),
                solute_dielectric=float(force.getSoluteDielectric()),
                solvent_dielectric=float(force.getSolventDielectric()),
                surface_area_energy=_value(force.getSurfaceAreaEnergy(), _KJ / _NM**2),
            )
    b_idx, b_len, b_k = _as_arrays(bonds, 2, 2)
    a_idx, a_theta, a_k = _as_arrays(angles, 3, 2)
    t_idx, t_phase, t_k = _as_arrays(torsions, 5, 2)  # the periodicity is an integer
    if pair_blocks:
        pairs = np.concatenate([blk[0] for blk in pair_blocks])
        pair_values = [np.concatenate([blk[k] for blk in pair_blocks]) for k in (1, 2, 3)]
    else:
        pairs, pair_values = np.zeros((0, 2), np.int64), [np.zeros(0)] * 3
    return ForceFieldParameters(
        n_atoms=n_atoms,
        bonds=b_idx,
        bond_length=b_len,
        bond_k=b_k,
        angles=a_idx,
        angle_theta0=a_theta,
        angle_k=a_k,
        torsions=t_idx[:, :4],
        torsion_periodicity=t_idx[:, 4],
        torsion_phase=t_phase,
        torsion_k=t_k,
        pairs=pairs,
        pair_charge_product=pair_values[0],
        pair_sigma=pair_values[1],
        pair_epsilon=pair_values[2],
        has_nonbonded=bool(pair_blocks),
        gbsa=gbsa,
        force_names=tuple(names),
    )
