r"""A molecular system: OpenMM topology and ``System``, reference positions and temperature.

:class:`MolecularSystem` is what the molecular energies (:mod:`physics.openmm`) and, later,
internal coordinates and Boltzmann generators are built from. It holds

* ``system``: the ``openmm.System`` (force field terms; positions in nm, energies in kJ/mol),
* ``topology``: the ``openmm.app.Topology`` (atoms, residues, bonds) and its mdtraj twin
  ``mdtraj_topology``,
* ``positions``: reference positions, a float64 array ``(n_atoms, 3)`` in nm,
* ``temperature`` in kelvin and ``kT = k_B T`` in kJ/mol,

and is built either from a PDB file plus OpenMM force-field files (:meth:`from_pdb`) or from any
``openmm.System`` a user already has (:meth:`from_openmm`). A configuration handed to an
energy is the flat vector of the ``3 N`` Cartesian coordinates in nm, atom-major
(``x.reshape(N, 3)`` gives the positions), the convention of :mod:`physics.particles`.

References:
    P. Eastman et al., "OpenMM 8: molecular dynamics simulation with machine learning
    potentials", J. Phys. Chem. B 128 (2024), arXiv:2310.03121.
    R. T. McGibbon et al., "MDTraj: a modern open library for the analysis of molecular
    dynamics trajectories", Biophys. J. 109 (2015).
"""

from __future__ import annotations

import io
import os
from typing import Any, Union

import mdtraj
import numpy as np
import openmm
import openmm.app as app
import torch
from torch import Tensor

from manifoldflows.errors import InvalidInput

from ..energy import BOLTZMANN_CONSTANT, positive_quantity

__all__ = [
    "MolecularSystem",
    "NONBONDED_METHODS",
    "CONSTRAINTS",
    "PositionsLike",
    "DEFAULT_TEMPERATURE",
    "kelvin",
    "system_temperature",
]

#: Positions accepted from users: an array or tensor ``(N, 3)`` / ``(3N,)`` in nm, an OpenMM
#: quantity with length units, or a list of ``Vec3``.
PositionsLike = Union[np.ndarray, Tensor, "openmm.unit.Quantity", list]

#: Names accepted by ``nonbonded_method=`` and the OpenMM constants they stand for.
NONBONDED_METHODS = {
    "NoCutoff": app.NoCutoff,
    "CutoffNonPeriodic": app.CutoffNonPeriodic,
    "CutoffPeriodic": app.CutoffPeriodic,
    "PME": app.PME,
}
#: Names accepted by ``constraints=`` (``None``: flexible bonds, the default here).
CONSTRAINTS = {None: None, "HBonds": app.HBonds, "AllBonds": app.AllBonds, "HAngles": app.HAngles}


#: Temperature (K) given to a plain ``openmm.System``, which carries none.
DEFAULT_TEMPERATURE = 300.0


def kelvin(value: float | openmm.unit.Quantity, who: str) -> float:
    """A temperature in kelvin from a number or an OpenMM quantity, checked positive and finite.

    Example:
        >>> kelvin(300 * openmm.unit.kelvin, "demo"), kelvin(350, "demo")
        (300.0, 350.0)
    """
    if openmm.unit.is_quantity(value):
        value = value.value_in_unit(openmm.unit.kelvin)
    return positive_quantity(value, who, "the temperature (K)")


def system_temperature(
    system: object, temperature: float | openmm.unit.Quantity | None, who: str
) -> float:
    """The temperature (K) an energy of ``system`` uses: ``temperature`` when given, else the
    system's own (a :class:`MolecularSystem`), else :data:`DEFAULT_TEMPERATURE`."""
    if temperature is None:
        temperature = getattr(system, "temperature", None)
    return kelvin(DEFAULT_TEMPERATURE if temperature is None else temperature, who)


def _positions_nm(positions: PositionsLike, n_atoms: int, who: str) -> np.ndarray:
    """Positions as a float64 ``(n_atoms, 3)`` array in nm (OpenMM quantities are converted)."""
    if isinstance(positions, openmm.unit.Quantity):
        positions = positions.value_in_unit(openmm.unit.nanometer)
    if isinstance(positions, Tensor):
        positions = positions.detach().cpu().numpy()
    array = np.array([[v[0], v[1], v[2]] for v in positions] if isinstance(positions, list)
                     else positions, dtype=np.float64)
    if array.shape != (n_atoms, 3) and array.shape != (3 * n_atoms,):
        raise InvalidInput(
            f"{who}: expected positions of shape ({n_atoms}, 3) (nm) for {n_atoms} atoms, "
            f"got shape {tuple(array.shape)}"
        )
    array = array.reshape(n_atoms, 3)
    if not np.isfinite(array).all():
        raise InvalidInput(f"{who}: expected finite reference positions, got NaN or inf")
    return array


class MolecularSystem:
    r"""An OpenMM ``System`` with its topology, reference positions and temperature.

    The constructor wraps any ``openmm.System`` a user already has; :meth:`from_pdb` builds
    one from a PDB file and force-field files.

    Arguments:
        system: the ``openmm.System``.
        topology: its ``openmm.app.Topology`` (same number of atoms).
        positions: reference positions, ``(n_atoms, 3)`` in nm (array, tensor or OpenMM
            quantity).
        temperature: kelvin (default 300).
        name: a short label used in reprs, checkpoints and plots.

    Attributes:
        system, topology, positions, temperature, name: as given (positions as a float64
            array in nm).
        n_atoms: the number of atoms ``N``.
        dim: ``3 N``, the length of a flat configuration.
        kT: ``k_B T`` in kJ/mol.
        mdtraj_topology: the ``mdtraj.Topology`` of ``topology``.
        force_names: the class names of the ``System``'s forces, in order.

    Example:
        >>> from physics.systems import alanine_dipeptide
        >>> ala2 = alanine_dipeptide(solvent="vacuum")
        >>> ala2.n_atoms, ala2.dim, round(ala2.kT, 4)
        (22, 66, 2.4943)
        >>> sorted(ala2.force_names)[:3]
        ['CMMotionRemover', 'HarmonicAngleForce', 'HarmonicBondForce']
    """

    def __init__(
        self,
        system: openmm.System,
        topology: app.Topology,
        positions: PositionsLike,
        temperature: float = 300.0,
        name: str = "molecule",
    ):
        who = type(self).__name__
        if not isinstance(system, openmm.System):
            raise InvalidInput(f"{who}: expected an openmm.System, got {type(system).__name__}")
        if not isinstance(topology, app.Topology):
            raise InvalidInput(
                f"{who}: expected an openmm.app.Topology, got {type(topology).__name__}"
            )
        n_atoms = system.getNumParticles()
        if topology.getNumAtoms() != n_atoms:
            raise InvalidInput(
                f"{who}: the topology has {topology.getNumAtoms()} atoms but the System has "
                f"{n_atoms} particles"
            )
        self.system = system
        self.topology = topology
        self.positions = _positions_nm(positions, n_atoms, who)
        self.temperature = kelvin(temperature, who)
        self.name = str(name)
        self._mdtraj_topology = None

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_pdb(
        cls,
        pdb: str | os.PathLike | app.PDBFile,
        forcefield: str | tuple[str, ...] | list[str],
        *,
        temperature: float = 300.0,
        nonbonded_method: str = "NoCutoff",
        constraints: str | None = None,
        name: str | None = None,
        **create_system_options: Any,
    ) -> MolecularSystem:
        """Parameterise a PDB structure with OpenMM force-field files.

        Arguments:
            pdb: a PDB file path or an ``openmm.app.PDBFile``; its positions become the
                reference positions.
            forcefield: one or more OpenMM force-field XML files (e.g.
                ``("amber99sbildn.xml", "amber99_obc.xml")``).
            temperature: kelvin.
            nonbonded_method: a key of :data:`NONBONDED_METHODS`.
            constraints: ``None`` (flexible bonds) or a key of :data:`CONSTRAINTS`.
            name: label (default: the PDB file's stem).
            **create_system_options: passed on to ``ForceField.createSystem``.

        Raises:
            InvalidInput: when the force field has no template for a residue (the message
                names each such residue) or an option is unknown.
        """
        who = f"{cls.__name__}.from_pdb"
        files = (forcefield,) if isinstance(forcefield, str) else tuple(forcefield)
        if nonbonded_method not in NONBONDED_METHODS:
            raise InvalidInput(
                f"{who}: expected nonbonded_method among {sorted(NONBONDED_METHODS)}, "
                f"got {nonbonded_method!r}"
            )
        if constraints not in CONSTRAINTS:
            raise InvalidInput(
                f"{who}: expected constraints among {list(CONSTRAINTS)}, got {constraints!r}"
            )
        if isinstance(pdb, app.PDBFile):
            pdb_file, label = pdb, "molecule"
        else:
            path = os.fspath(pdb)
            if not os.path.isfile(path):
                raise InvalidInput(f"{who}: expected a PDB file, got {path!r} (no such file)")
            pdb_file, label = app.PDBFile(path), os.path.splitext(os.path.basename(path))[0]
        try:
            force_field = app.ForceField(*files)
        except (ValueError, OSError) as error:
            raise InvalidInput(
                f"{who}: cannot load the force-field files {files}: {error}"
            ) from error
        unmatched = force_field.getUnmatchedResidues(pdb_file.topology)
        if unmatched:
            named = ", ".join(
                f"{residue.name} {residue.id} (chain {residue.chain.id}, residue index "
                f"{residue.index})"
                for residue in unmatched
            )
            raise InvalidInput(
                f"{who}: the force field {files} has no template for residue(s) {named}; "
                "check the residue and atom names, missing hydrogens or terminal caps"
            )
        try:
            system = force_field.createSystem(
                pdb_file.topology,
                nonbondedMethod=NONBONDED_METHODS[nonbonded_method],
                constraints=CONSTRAINTS[constraints],
                **create_system_options,
            )
        except ValueError as error:
            raise InvalidInput(f"{who}: OpenMM could not parameterise the PDB: {error}") from error
        return cls(
            system,
            pdb_file.topology,
            pdb_file.getPositions(asNumpy=True),
            temperature=temperature,
            name=label if name is None else name,
        )

    # ------------------------------------------------------------------ properties
    @property
    def n_atoms(self) -> int:
        return int(self.system.getNumParticles())

    @property
    def dim(self) -> int:
        return 3 * self.n_atoms

    @property
    def kT(self) -> float:  # noqa: N802 - the physical symbol
        return BOLTZMANN_CONSTANT["kJ/mol"] * self.temperature

    @property
    def force_names(self) -> tuple[str, ...]:
        return tuple(type(f).__name__ for f in self.system.getForces())

    @property
    def mdtraj_topology(self) -> mdtraj.Topology:
        if self._mdtraj_topology is None:
            self._mdtraj_topology = mdtraj.Topology.from_openmm(self.topology)
        return self._mdtraj_topology

    # ------------------------------------------------------------------ helpers
    def serialize(self) -> str:
        """The ``System`` as OpenMM XML (what worker processes rebuild their contexts from)."""
        return openmm.XmlSerializer.serialize(self.system)

    def configuration(
        self, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> Tensor:
        """The reference positions as a flat configuration ``(3 N,)`` in nm.

        Arguments:
            dtype: torch dtype (default: torch's default dtype).
            device: torch device (default: CPU).
        """
        return torch.as_tensor(self.positions.reshape(-1), dtype=dtype, device=device)

    def minimized_positions(self, tolerance: float = 1.0, max_iterations: int = 0) -> np.ndarray:
        """Positions after OpenMM's local energy minimisation (Reference platform), in nm.

        Arguments:
            tolerance: RMS force tolerance in kJ/mol/nm.
            max_iterations: 0 for no limit.

        Returns:
            A float64 array ``(n_atoms, 3)``; ``self.positions`` is left unchanged.
        """
        context = openmm.Context(
            self.system,
            openmm.VerletIntegrator(0.001),
            openmm.Platform.getPlatformByName("Reference"),
        )
        context.setPositions(self.positions)
        openmm.LocalEnergyMinimizer.minimize(context, tolerance, max_iterations)
        state = context.getState(getPositions=True)
        return np.asarray(state.getPositions(asNumpy=True).value_in_unit(openmm.unit.nanometer))

    def to_pdb_string(self, positions: np.ndarray | None = None) -> str:
        """A PDB text of the topology at ``positions`` (nm; default the reference)."""
        buffer = io.StringIO()
        xyz = self.positions if positions is None else _positions_nm(
            positions, self.n_atoms, type(self).__name__
        )
        app.PDBFile.writeFile(self.topology, xyz * openmm.unit.nanometer, buffer)
        return buffer.getvalue()

    def __repr__(self) -> str:
        return (
            f"MolecularSystem(name={self.name!r}, n_atoms={self.n_atoms}, "
            f"temperature={self.temperature:g} K, forces={list(self.force_names)})"
        )
