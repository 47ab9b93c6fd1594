"""physics.systems: MolecularSystem and alanine_dipeptide."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import mdtraj
import numpy as np
import openmm
import openmm.app as app
import pytest
import torch

from manifoldflows.errors import InvalidInput
from physics.systems import (
    PHI_ATOMS,
    PSI_ATOMS,
    MolecularSystem,
    alanine_dipeptide,
    alanine_dipeptide_pdb,
)


def _energy(system, positions):
    context = openmm.Context(
        system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
    )
    context.setPositions(positions)
    return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(
        openmm.unit.kilojoule_per_mole
    )


@pytest.mark.parametrize("forcefield", ["amber99sbildn", "amber96"])
@pytest.mark.parametrize("solvent", ["vacuum", "implicit"])
def test_alanine_dipeptide_systems(solvent, forcefield):
    ala2 = alanine_dipeptide(solvent=solvent, forcefield=forcefield)
    assert ala2.n_atoms == 22 and ala2.dim == 66
    assert ala2.system.getNumConstraints() == 0
    names = set(ala2.force_names)
    assert ("GBSAOBCForce" in names) == (solvent == "implicit")
    assert not any("Custom" in n for n in names)
    for force in ala2.system.getForces():
        if isinstance(force, openmm.NonbondedForce):
            assert force.getNonbondedMethod() == openmm.NonbondedForce.NoCutoff
    assert ala2.temperature == 300.0
    assert ala2.kT == pytest.approx(
        (openmm.unit.MOLAR_GAS_CONSTANT_R * 300 * openmm.unit.kelvin).value_in_unit(
            openmm.unit.kilojoule_per_mole
        ),
        rel=1e-14,
    )
    # the shipped geometry equals the PDB read by OpenMM, and the system is the same as one
    # parameterised directly with the force-field files
    pdb = app.PDBFile(alanine_dipeptide_pdb())
    np.testing.assert_allclose(ala2.positions, pdb.getPositions(asNumpy=True)._value)
    files = {"amber99sbildn": "amber99sbildn.xml", "amber96": "amber96.xml"}[forcefield]
    solvent_file = {"amber99sbildn": "amber99_obc.xml", "amber96": "amber96_obc.xml"}[forcefield]
    direct = app.ForceField(files, *([solvent_file] if solvent == "implicit" else []))
    direct_system = direct.createSystem(pdb.topology, nonbondedMethod=app.NoCutoff)
    assert _energy(ala2.system, ala2.positions) == pytest.approx(
        _energy(direct_system, pdb.positions), rel=1e-12
    )


def test_implicit_solvent_lowers_the_energy_and_force_fields_differ():
    e = {
        (ff, s): _energy(alanine_dipeptide(s, ff).system, alanine_dipeptide(s, ff).positions)
        for ff in ("amber99sbildn", "amber96")
        for s in ("vacuum", "implicit")
    }
    assert e["amber99sbildn", "implicit"] < e["amber99sbildn", "vacuum"]
    assert e["amber96", "implicit"] < e["amber96", "vacuum"]
    assert abs(e["amber96", "vacuum"] - e["amber99sbildn", "vacuum"]) > 1.0


def test_backbone_torsion_atoms_match_mdtraj():
    ala2 = alanine_dipeptide()
    phi_idx, _ = mdtraj.compute_phi(mdtraj.Trajectory(ala2.positions[None], ala2.mdtraj_topology))
    psi_idx, _ = mdtraj.compute_psi(mdtraj.Trajectory(ala2.positions[None], ala2.mdtraj_topology))
    assert tuple(phi_idx[0]) == PHI_ATOMS and tuple(psi_idx[0]) == PSI_ATOMS
    assert ala2.mdtraj_topology.n_bonds == 21


def test_configuration_follows_dtype_and_device():
    ala2 = alanine_dipeptide("vacuum")
    x = ala2.configuration(dtype=torch.float64)
    assert x.shape == (66,) and x.dtype == torch.float64
    np.testing.assert_array_equal(x.numpy().reshape(22, 3), ala2.positions)
    assert ala2.configuration(dtype=torch.float32).dtype == torch.float32


def test_minimisation_lowers_the_energy_and_keeps_the_reference():
    ala2 = alanine_dipeptide("vacuum")
    before = ala2.positions.copy()
    minimized = ala2.minimized_positions()
    assert minimized.shape == (22, 3)
    assert _energy(ala2.system, minimized) < _energy(ala2.system, before) - 10.0
    np.testing.assert_array_equal(ala2.positions, before)


def test_pickle_and_pdb_round_trip():
    ala2 = alanine_dipeptide()
    clone = pickle.loads(pickle.dumps(ala2))
    assert clone.n_atoms == 22 and clone.name == ala2.name
    assert _energy(clone.system, clone.positions) == pytest.approx(
        _energy(ala2.system, ala2.positions), rel=1e-12
    )
    pdb = app.PDBFile(io.StringIO(ala2.to_pdb_string()))
    np.testing.assert_allclose(pdb.getPositions(asNumpy=True)._value, ala2.positions, atol=1e-4)
    assert "alanine_dipeptide" in repr(ala2) and "22" in repr(ala2)
    assert openmm.XmlSerializer.deserialize(ala2.serialize()).getNumParticles() == 22


def test_from_openmm_with_a_users_system():
    pdb = app.PDBFile(alanine_dipeptide_pdb())
    system = app.ForceField("amber14-all.xml").createSystem(pdb.topology)
    mol = MolecularSystem(system, pdb.topology, pdb.positions, temperature=350)
    assert mol.n_atoms == 22 and mol.temperature == 350.0
    np.testing.assert_allclose(mol.positions, pdb.getPositions(asNumpy=True)._value)


def test_unparameterisable_residue_is_named(tmp_path):
    text = Path(alanine_dipeptide_pdb()).read_text().replace("NME A   3", "XYZ A   3")
    path = tmp_path / "bad.pdb"
    path.write_text(text)
    with pytest.raises(InvalidInput, match=r"no template for residue\(s\) .*XYZ 3 \(chain A"):
        MolecularSystem.from_pdb(path, "amber99sbildn.xml")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"forcefield": "charmm"}, "expected forcefield 'amber99sbildn' or 'amber96'"),
        ({"solvent": "explicit"}, "expected solvent 'implicit' or 'vacuum'"),
        ({"temperature": -1.0}, r"expected the temperature \(K\) as a positive finite number"),
    ],
)
def test_alanine_dipeptide_bad_options(kwargs, match):
    with pytest.raises(InvalidInput, match=match):
        alanine_dipeptide(**kwargs)


def test_bad_constructor_input():
    ala2 = alanine_dipeptide("vacuum")
    shape_error = r"expected positions of shape \(22, 3\).*got shape \(21, 3\)"
    with pytest.raises(InvalidInput, match=shape_error):
        MolecularSystem(ala2.system, ala2.topology, ala2.positions[:21])
    with pytest.raises(InvalidInput, match="the topology has 22 atoms but the System has 3"):
        small = openmm.System()
        for _ in range(3):
            small.addParticle(1.0)
        MolecularSystem(small, ala2.topology, ala2.positions)
    with pytest.raises(InvalidInput, match="expected an openmm.System, got str"):
        MolecularSystem("system", ala2.topology, ala2.positions)
    with pytest.raises(InvalidInput, match="expected a PDB file"):
        MolecularSystem.from_pdb("/nonexistent.pdb", "amber99sbildn.xml")
    with pytest.raises(InvalidInput, match="nonbonded_method"):
        MolecularSystem.from_pdb(alanine_dipeptide_pdb(), "amber99sbildn.xml", nonbonded_method="x")
    with pytest.raises(InvalidInput, match="cannot load the force-field files"):
        MolecularSystem.from_pdb(alanine_dipeptide_pdb(), "no_such_forcefield.xml")
    nan = ala2.positions.copy()
    nan[0, 0] = np.nan
    with pytest.raises(InvalidInput, match="finite"):
        MolecularSystem(ala2.system, ala2.topology, nan)
