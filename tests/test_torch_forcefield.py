"""TorchForceField against OpenMM's Reference platform: energies, forces, terms, refusals."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest
import torch

import physics
from manifoldflows.errors import InvalidInput
from physics.energy import BOLTZMANN_CONSTANT
from physics.openmm.torch_forcefield import ONE_4PI_EPS0, TorchForceField

PDB = Path(physics.__file__).parent / "systems" / "data" / "alanine-dipeptide.pdb"
FORCE_FIELDS = {
    "amber99sbildn-vacuum": ("amber99sbildn.xml",),
    "amber99sbildn-implicit": ("amber99sbildn.xml", "amber99_obc.xml"),
    "amber96-vacuum": ("amber96.xml",),
    "amber96-implicit": ("amber96.xml", "amber96_obc.xml"),
}
TERM_OF_FORCE = {
    "HarmonicBondForce": ("bonds",),
    "HarmonicAngleForce": ("angles",),
    "PeriodicTorsionForce": ("torsions",),
    "NonbondedForce": ("lennard_jones", "coulomb"),
    "GBSAOBCForce": ("gbsa",),
}
# float32 against float64 at the same points: energies within 2e-6 of the sum of the magnitudes
# of the terms (measured: <= 4.3e-7; about 5e-7 relative to the energy), forces within 2e-6 of
# the largest force component (measured: <= 4.6e-7, i.e. ~0.02 kJ/mol/nm of ~5e4)
FLOAT32_ENERGY = 2e-6
FLOAT32_FORCE = 2e-6


@pytest.fixture(scope="module")
def pdb() -> app.PDBFile:
    return app.PDBFile(str(PDB))


@pytest.fixture(scope="module")
def systems(pdb) -> dict[str, openmm.System]:
    out = {}
    for name, files in FORCE_FIELDS.items():
        out[name] = app.ForceField(*files).createSystem(
            pdb.topology, nonbondedMethod=app.NoCutoff, constraints=None
        )
    return out


@pytest.fixture(scope="module")
def configurations(pdb, systems) -> dict[str, np.ndarray]:
    """Flat configurations (n, 66) in nm: MD frames and Gaussian perturbations of the PDB."""
    start = np.array(pdb.positions.value_in_unit(unit.nanometer))
    integrator = openmm.LangevinMiddleIntegrator(300.0, 1.0, 0.001)
    integrator.setRandomNumberSeed(1)
    context = openmm.Context(
        systems["amber99sbildn-implicit"],
        integrator,
        openmm.Platform.getPlatformByName("Reference"),
    )
    context.setPositions(start)
    context.setVelocitiesToTemperature(300.0, 1)
    frames = []
    for _ in range(5):
        integrator.step(100)
        state = context.getState(getPositions=True)
        frames.append(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    rng = np.random.default_rng(0)
    noise = rng.normal(scale=0.015, size=(6, *start.shape))
    return {
        "md": np.stack(frames).reshape(5, -1),
        "perturbed": (start + noise).reshape(6, -1),
    }


def _grouped(system: openmm.System) -> openmm.System:
    """A copy of ``system`` with force ``k`` in force group ``k``."""
    copy = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    for k, force in enumerate(copy.getForces()):
        force.setForceGroup(k)
    return copy


def openmm_reference(system: openmm.System, x: np.ndarray) -> dict:
    """Energies (n,), forces (n, 3N) and per-force energies from OpenMM's Reference platform."""
    system = _grouped(system)
    context = openmm.Context(
        system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
    )
    energies, forces = [], []
    groups = {type(f).__name__: [] for f in system.getForces()}
    for row in x:
        context.setPositions(row.reshape(-1, 3))
        state = context.getState(getEnergy=True, getForces=True)
        energies.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        forces.append(
            state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        )
        for k, force in enumerate(system.getForces()):
            energy = context.getState(getEnergy=True, groups={k}).getPotentialEnergy()
            groups[type(force).__name__].append(energy.value_in_unit(unit.kilojoule_per_mole))
    return {
        "energy": np.array(energies),
        "force": np.array(forces).reshape(len(x), -1),
        "groups": {k: np.array(v) for k, v in groups.items()},
    }


def _potential_and_force(ff: TorchForceField, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``U`` (kJ/mol) and ``F`` (kJ/mol/nm) as float64 NumPy arrays."""
    u, force = ff.energy_and_force(x)
    return (u * ff.kT).double().cpu().numpy(), (force * ff.kT).double().cpu().numpy()


# ---------------------------------------------------------------------------- against OpenMM
@pytest.mark.parametrize("kind", ["md", "perturbed"])
@pytest.mark.parametrize("name", list(FORCE_FIELDS))
def test_float64_matches_openmm(systems, configurations, name, kind, device):
    x = configurations[kind]
    reference = openmm_reference(systems[name], x)
    ff = TorchForceField.from_openmm(systems[name]).to(device)
    energy, force = _potential_and_force(ff, torch.tensor(x, device=device))
    np.testing.assert_allclose(energy, reference["energy"], rtol=1e-5)
    assert np.abs(force - reference["force"]).max() < 1e-3
    # the match is in fact exact up to rounding
    assert np.abs(energy - reference["energy"]).max() < 1e-8 * np.abs(reference["energy"]).max()

    terms = ff.energy_terms(torch.tensor(x, device=device))
    assert tuple(terms) == ff.terms
    for force_name, group in reference["groups"].items():
        if force_name == "CMMotionRemover":
            continue
        ours = sum(terms[k] for k in TERM_OF_FORCE[force_name]).cpu().numpy()
        np.testing.assert_allclose(ours, group, rtol=1e-7, atol=1e-7, err_msg=force_name)


def test_lennard_jones_and_coulomb_separately(systems, configurations):
    """Zeroing the charges in OpenMM leaves the Lennard-Jones part alone."""
    x = configurations["perturbed"]
    system = openmm.XmlSerializer.deserialize(
        openmm.XmlSerializer.serialize(systems["amber99sbildn-vacuum"])
    )
    nonbonded = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    for i in range(nonbonded.getNumParticles()):
        _, sigma, epsilon = nonbonded.getParticleParameters(i)
        nonbonded.setParticleParameters(i, 0.0, sigma, epsilon)
    for k in range(nonbonded.getNumExceptions()):
        i, j, _, sigma, epsilon = nonbonded.getExceptionParameters(k)
        nonbonded.setExceptionParameters(k, i, j, 0.0, sigma, epsilon)
    lj_only = openmm_reference(system, x)["groups"]["NonbondedForce"]
    terms = TorchForceField.from_openmm(systems["amber99sbildn-vacuum"]).energy_terms(
        torch.tensor(x)
    )
    np.testing.assert_allclose(terms["lennard_jones"].numpy(), lj_only, rtol=1e-9)


def _random_system(rng: np.random.Generator, n: int) -> openmm.System:
    """A small System exercising every term: a chain of bonds, angles, proper and improper
    torsions with arbitrary phases, charges, exceptions (scaled, excluded) and OBC radii and
    scale factors of every size (atoms inside each other's descreening spheres included)."""
    system = openmm.System()
    for _ in range(n):
        system.addParticle(12.0)
    bonds = openmm.HarmonicBondForce()
    angles = openmm.HarmonicAngleForce()
    torsions = openmm.PeriodicTorsionForce()
    for i in range(n - 1):
        bonds.addBond(i, i + 1, 0.1 + 0.05 * rng.random(), 1e4 * rng.random())
    for i in range(n - 2):
        angles.addAngle(i, i + 1, i + 2, 1.5 + rng.random(), 300.0 * rng.random())
    for i in range(n - 3):
        torsions.addTorsion(
            i, i + 1, i + 2, i + 3, int(rng.integers(1, 5)), 6.0 * rng.random(), 5.0
        )
        torsions.addTorsion(i + 3, i, i + 1, i + 2, 2, 2.0 * rng.random(), 3.0)  # improper-like
    nonbonded = openmm.NonbondedForce()
    nonbonded.setNonbondedMethod(openmm.NonbondedForce.NoCutoff)
    gbsa = openmm.GBSAOBCForce()
    gbsa.setSolventDielectric(80.0)
    gbsa.setSoluteDielectric(2.0)
    gbsa.setSurfaceAreaEnergy(3.0)
    charges = rng.normal(scale=0.5, size=n)
    for i in range(n):
        nonbonded.addParticle(charges[i], 0.2 + 0.2 * rng.random(), rng.random())
        gbsa.addParticle(charges[i], 0.1 + 0.15 * rng.random(), 0.5 + 0.9 * rng.random())
    for i in range(n - 1):
        nonbonded.addException(i, i + 1, 0.0, 0.1, 0.0)  # an exclusion
    for i in range(n - 3):
        nonbonded.addException(i, i + 3, 0.3 * rng.normal(), 0.3, 0.2 * rng.random())
    for force in (bonds, angles, torsions, nonbonded, gbsa):
        system.addForce(force)
    return system


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_branch_against_openmm(seed):
    """Random small systems at random, partly crowded geometries (OBC branches: pairs that do
    not count, atoms inside the descreening sphere of another)."""
    rng = np.random.default_rng(seed)
    n = 7
    system = _random_system(rng, n)
    x = rng.normal(scale=0.12, size=(6, 3 * n))
    reference = openmm_reference(system, x)
    ff = TorchForceField.from_openmm(system)
    energy, force = _potential_and_force(ff, torch.tensor(x))
    np.testing.assert_allclose(energy, reference["energy"], rtol=1e-9, atol=1e-8)
    np.testing.assert_allclose(force, reference["force"], rtol=1e-8, atol=1e-6)


def test_coulomb_constant_is_openmms():
    assert ONE_4PI_EPS0 == pytest.approx(138.93545764438198, rel=1e-15)


# ---------------------------------------------------------------------------- float32
@pytest.mark.parametrize("name", ["amber99sbildn-vacuum", "amber99sbildn-implicit"])
def test_float32(systems, configurations, name, device):
    x64 = torch.tensor(np.concatenate([configurations["md"], configurations["perturbed"]]))
    ff = TorchForceField.from_openmm(systems[name]).to(device)
    u32, f32 = ff.energy_and_force(x64.float().to(device))
    assert u32.dtype == f32.dtype == torch.float32
    u64, f64 = ff.energy_and_force(x64.float().double().to(device))  # the same points
    scale = sum(t.abs() for t in ff.energy_terms(x64.to(device)).values()) / ff.kT
    assert ((u32.double() - u64).abs() <= FLOAT32_ENERGY * scale).all()
    assert (f32.double() - f64).abs().max() <= FLOAT32_FORCE * f64.abs().max()


# ---------------------------------------------------------------------------- autograd
def test_autograd_gradient_is_minus_the_force(systems, configurations):
    ff = TorchForceField.from_openmm(systems["amber99sbildn-implicit"])
    x = torch.tensor(configurations["perturbed"], requires_grad=True)
    (grad,) = torch.autograd.grad(ff.energy(x).sum(), x)
    _, force = ff.energy_and_force(x.detach())
    torch.testing.assert_close(grad, -force, rtol=1e-10, atol=1e-10)
    # plain autograd through the energy terms (no analytic gradient involved)
    (plain,) = torch.autograd.grad(sum(ff.energy_terms(x).values()).sum() / ff.kT, x)
    torch.testing.assert_close(plain, -force, rtol=1e-8, atol=1e-8)


def test_second_derivatives(systems, configurations):
    ff = TorchForceField.from_openmm(systems["amber96-implicit"])
    x = torch.tensor(configurations["md"][:2], requires_grad=True)
    assert torch.autograd.gradcheck(ff.energy, (x,))
    assert torch.autograd.gradgradcheck(ff.energy, (x,))
    # a differentiable force (the create_graph path of energy_and_force)
    _, force = ff.energy_and_force(x)
    assert force.requires_grad
    v = torch.randn_like(x)
    (hv,) = torch.autograd.grad((force * v).sum(), x)
    eps = 1e-6
    _, f_plus = ff.energy_and_force((x + eps * v).detach())
    _, f_minus = ff.energy_and_force((x - eps * v).detach())
    fd = ((f_plus - f_minus) * v).sum(-1) / (2 * eps)
    torch.testing.assert_close((hv * v).sum(-1), fd, rtol=1e-5, atol=1e-3)


# ---------------------------------------------------------------------------- refusals
def test_refuses_every_unsupported_item(systems):
    system = openmm.XmlSerializer.deserialize(
        openmm.XmlSerializer.serialize(systems["amber99sbildn-vacuum"])
    )
    nonbonded_index = next(
        k for k, f in enumerate(system.getForces()) if isinstance(f, openmm.NonbondedForce)
    )
    system.getForce(nonbonded_index).setNonbondedMethod(openmm.NonbondedForce.PME)
    custom = openmm.CustomExternalForce("x^2")
    custom.addParticle(0, [])
    custom_index = system.addForce(custom)
    system.addConstraint(0, 1, 0.1)
    system.addConstraint(1, 2, 0.1)
    with pytest.raises(InvalidInput) as info:
        TorchForceField.from_openmm(system)
    message = str(info.value)
    assert message.startswith("TorchForceField: cannot evaluate")
    assert f"CustomExternalForce (force {custom_index})" in message
    assert f"NonbondedForce (force {nonbonded_index}) with nonbondedMethod PME" in message
    assert "2 constraints" in message
    assert "supported: HarmonicBondForce" in message


def test_refuses_custom_gb_and_virtual_sites(pdb):
    system = app.ForceField("amber99sbildn.xml", "implicit/obc2.xml").createSystem(
        pdb.topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds
    )
    index = next(k for k, f in enumerate(system.getForces()) if isinstance(f, openmm.CustomGBForce))
    with pytest.raises(InvalidInput, match=rf"CustomGBForce \(force {index}\).*12 constraints"):
        TorchForceField.from_openmm(system)
    small = openmm.System()
    for _ in range(3):
        small.addParticle(1.0)
    small.setVirtualSite(2, openmm.TwoParticleAverageSite(0, 1, 0.5, 0.5))
    with pytest.raises(InvalidInput, match="1 virtual site"):
        TorchForceField.from_openmm(small)
    with pytest.raises(InvalidInput, match="expected an openmm.System"):
        TorchForceField.from_openmm("not a system")


def test_wrong_shape(systems):
    ff = TorchForceField.from_openmm(systems["amber99sbildn-vacuum"])
    for bad in (torch.zeros(4, 65), torch.zeros(66, 3)):
        with pytest.raises(InvalidInput, match=r"TorchForceField: expected .*\(\*batch, 66\)") as e:
            ff.energy(bad)
        assert str(tuple(bad.shape)) in str(e.value)
        with pytest.raises(InvalidInput, match="66"):
            ff.energy_and_force(bad)
        with pytest.raises(InvalidInput, match="66"):
            ff.energy_terms(bad)


# ---------------------------------------------------------------------------- shapes, devices
def test_batch_shapes_and_chunks(systems, configurations, device):
    x = torch.tensor(configurations["perturbed"], device=device)
    ff = TorchForceField.from_openmm(systems["amber96-implicit"]).to(device)
    u, force = ff.energy_and_force(x)
    for shape in [(2, 3), (3, 1, 2), (6,)]:
        us, fs = ff.energy_and_force(x.reshape(*shape, 66))
        assert us.shape == shape and fs.shape == (*shape, 66)
        torch.testing.assert_close(us.reshape(-1), u)
        torch.testing.assert_close(fs.reshape(-1, 66), force)
        assert ff.energy(x.reshape(*shape, 66)).shape == shape
        assert all(t.shape == shape for t in ff.energy_terms(x.reshape(*shape, 66)).values())
    single_u, single_f = ff.energy_and_force(x[0])
    assert single_u.shape == () and single_f.shape == (66,)
    torch.testing.assert_close(single_u, u[0])
    empty_u, empty_f = ff.energy_and_force(x[:0])
    assert empty_u.shape == (0,) and empty_f.shape == (0, 66)
    chunked = TorchForceField.from_openmm(systems["amber96-implicit"], chunk_size=4).to(device)
    u_c, f_c = chunked.energy_and_force(x)
    torch.testing.assert_close(u_c, u, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(f_c, force, rtol=1e-12, atol=1e-9)


def test_chunk_size(systems):
    for bad in (0, -3, 2.5, True):
        with pytest.raises(InvalidInput, match="chunk_size"):
            TorchForceField.from_openmm(systems["amber96-vacuum"], chunk_size=bad)
    ff = TorchForceField.from_openmm(systems["amber96-vacuum"])
    assert ff.chunk_size is None
    threads = torch.get_num_threads()
    assert ff._chunk(torch.zeros(1, dtype=torch.float64)) == (1 << 17) * threads // 22**2
    assert ff._chunk(torch.zeros(1, dtype=torch.float32)) == (1 << 18) * threads // 22**2


def test_dtype_and_device_follow_the_input(systems, configurations, device, dtype):
    ff = TorchForceField.from_openmm(systems["amber99sbildn-implicit"])
    assert all(b.dtype in (torch.float64, torch.long) for b in ff.buffers())
    ff = ff.to(device)
    x = torch.tensor(configurations["md"], dtype=dtype, device=device)
    u, force = ff.energy_and_force(x)
    assert u.dtype == force.dtype == dtype and u.device == force.device == x.device
    e = ff.energy(x.requires_grad_(True))
    assert e.dtype == dtype and e.device == x.device
    terms = ff.energy_terms(x)
    assert all(t.dtype == dtype and t.device == x.device for t in terms.values())


def test_nan_and_overlapping_atoms(systems, configurations, dtype):
    ff = TorchForceField.from_openmm(systems["amber99sbildn-implicit"])
    x = torch.tensor(configurations["perturbed"][:3], dtype=dtype)
    x[0, 5] = float("nan")
    x[1, 3 * 10 : 3 * 11] = x[1, 0:3]  # atom 10 on top of atom 0 (a non-bonded pair)
    u, force = ff.energy_and_force(x)
    assert torch.isnan(u[0])
    assert u[1] == math.inf or u[1] > 1e10
    assert torch.isfinite(u[2]) and torch.isfinite(force[2]).all()


# ---------------------------------------------------------------------------- construction
def test_temperature_and_duck_typed_systems(systems, configurations):
    system = systems["amber99sbildn-vacuum"]
    plain = TorchForceField.from_openmm(system)
    assert plain.kT == pytest.approx(BOLTZMANN_CONSTANT["kJ/mol"] * 300.0)
    wrapped = TorchForceField.from_openmm(SimpleNamespace(system=system, temperature=500.0))
    assert wrapped.kT == pytest.approx(BOLTZMANN_CONSTANT["kJ/mol"] * 500.0)
    override = TorchForceField.from_openmm(
        SimpleNamespace(system=system, temperature=500.0), temperature=400.0 * unit.kelvin
    )
    assert override.temperature == pytest.approx(400.0)
    x = torch.tensor(configurations["md"])
    total = sum(plain.energy_terms(x).values())
    torch.testing.assert_close(plain.energy(x) * plain.kT, total)
    torch.testing.assert_close(wrapped.energy(x) * wrapped.kT, total)
    with pytest.raises(InvalidInput, match="temperature"):
        TorchForceField.from_openmm(system, temperature=-1.0)


def test_from_molecular_system(configurations):
    from physics.systems import alanine_dipeptide

    ala2 = alanine_dipeptide(solvent="implicit", temperature=310.0)
    ff = TorchForceField.from_openmm(ala2)
    assert ff.temperature == pytest.approx(310.0) and ff.n_atoms == 22
    x = torch.tensor(configurations["md"])
    reference = openmm_reference(ala2.system, configurations["md"])["energy"]
    np.testing.assert_allclose((ff.energy(x) * ff.kT).numpy(), reference, rtol=1e-9)
