"""Flow-proposal Metropolis-Hastings inside OpenMM simulations (physics.openmm_sampler).

Detailed balance is checked on a 3-atom molecule (two harmonic bonds, one harmonic angle) whose
Boltzmann marginals are known exactly: with bonds r1, r2 and angle theta, the density on R^9 is
proportional to r1^2 exp(-k_b (r1 - b0)^2 / 2kT) r2^2 exp(...) sin(theta) exp(-k_a (theta -
theta0)^2 / 2kT). The proposal is an internal-coordinate Gaussian that is deliberately off
(shifted, too wide), so only a correct acceptance rule - including the rigid-motion volume
r1^2 r2 sin(theta) of the canonical frame - recovers those marginals.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest
import torch

from manifoldflows import Chain, Flow
from manifoldflows.distributions import DiagNormal, ProductDistribution, StandardNormal
from manifoldflows.errors import InvalidInput
from physics.coordinates import InternalCoordinates
from physics.openmm_sampler import FlowMetropolisSampler, draw_positions, load_flow

B0, KB = 0.15, 2000.0  # nm, kJ/mol/nm^2: bond sd ~ 0.035 nm at 300 K
THETA0, KA = 1.9, 20.0  # rad, kJ/mol/rad^2: angle sd ~ 0.35 rad
TEMPERATURE = 300.0
KT = (unit.MOLAR_GAS_CONSTANT_R * TEMPERATURE * unit.kelvin).value_in_unit(unit.kilojoule_per_mole)


def triatomic_simulation(seed: int = 1) -> app.Simulation:
    top = app.Topology()
    residue = top.addResidue("TRI", top.addChain())
    atoms = [top.addAtom(f"C{i}", app.Element.getBySymbol("C"), residue) for i in range(3)]
    top.addBond(atoms[0], atoms[1])
    top.addBond(atoms[1], atoms[2])
    system = openmm.System()
    for _ in range(3):
        system.addParticle(12.0)
    bonds = openmm.HarmonicBondForce()
    bonds.addBond(0, 1, B0, KB)
    bonds.addBond(1, 2, B0, KB)
    system.addForce(bonds)
    angle = openmm.HarmonicAngleForce()
    angle.addAngle(0, 1, 2, THETA0, KA)
    system.addForce(angle)
    integrator = openmm.LangevinMiddleIntegrator(TEMPERATURE, 5.0, 0.001)
    integrator.setRandomNumberSeed(seed)
    sim = app.Simulation(top, system, integrator, openmm.Platform.getPlatformByName("Reference"))
    start = [
        [0.0, 0.0, 0.0],
        [B0, 0.0, 0.0],
        [B0 - B0 * math.cos(THETA0), B0 * math.sin(THETA0), 0],
    ]
    sim.context.setPositions(np.array(start) * unit.nanometer)
    sim.context.setVelocitiesToTemperature(TEMPERATURE, seed)
    return sim


def triatomic_flow(shift: float = 0.5, widen: float = 1.5) -> Flow:
    """Gaussian in (r1, r2, theta), off by ``shift`` standard deviations and ``widen`` too
    wide: a real flow on the canonical frame of the three atoms."""
    ic = InternalCoordinates(zmatrix=[(0,), (1, 0), (2, 1, 0)])
    sd_b, sd_a = math.sqrt(KT / KB), math.sqrt(KT / KA)
    centre = torch.tensor(
        [[0.0, 0, 0, B0, 0, 0, B0 - B0 * math.cos(THETA0), B0 * math.sin(THETA0), 0]]
    )
    std = ic.standardization(centre, bond_scale=sd_b, angle_scale=sd_a)
    base = ProductDistribution(
        [DiagNormal(2, torch.full((2,), shift), widen), DiagNormal(1, -shift, widen)]
    )
    return Flow(base, Chain(std, ic))


def exact_marginals(edges_r: np.ndarray, edges_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact bin probabilities of one bond length and of the angle (quadrature)."""
    r = np.linspace(1e-4, 0.45, 200001)
    pr = r**2 * np.exp(-KB * (r - B0) ** 2 / (2 * KT))
    t = np.linspace(1e-6, math.pi - 1e-6, 200001)
    pt = np.sin(t) * np.exp(-KA * (t - THETA0) ** 2 / (2 * KT))

    def bins(x, p, edges):
        cdf = np.concatenate([[0.0], np.cumsum(0.5 * (p[1:] + p[:-1]) * np.diff(x))])
        return np.diff(np.interp(edges, x, cdf / cdf[-1]))

    return bins(r, pr, edges_r), bins(t, pt, edges_t)


def batch_means_z(values: np.ndarray, expected: np.ndarray, n_blocks: int = 40) -> np.ndarray:
    """z-scores of chain averages of indicator columns against the exact values (batch means)."""
    blocks = np.array_split(values, n_blocks)
    means = np.stack([b.mean(0) for b in blocks])
    stderr = means.std(0, ddof=1) / math.sqrt(n_blocks)
    return (values.mean(0) - expected) / np.maximum(stderr, 1e-12)


def chain_geometry(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    b1 = positions[:, 0] - positions[:, 1]
    b2 = positions[:, 2] - positions[:, 1]
    r1 = np.linalg.norm(b1, axis=-1)
    cos = (b1 * b2).sum(-1) / (r1 * np.linalg.norm(b2, axis=-1))
    return r1, np.arccos(np.clip(cos, -1, 1))


def test_detailed_balance_recovers_exact_marginals():
    sim = triatomic_simulation()
    flow = triatomic_flow()
    g = torch.Generator().manual_seed(3)
    sampler = FlowMetropolisSampler(sim, flow, generator=g, proposal_batch=2048)
    run = sampler.run(12000, md_steps=0, record=True)  # flow moves only: the MH kernel alone
    assert 0.2 < sampler.acceptance_rate < 0.9
    assert run.accepted.sum() == sampler.n_accepted
    r1, theta = chain_geometry(run.positions.astype(np.float64))
    edges_r = np.array([0.0, 0.11, 0.14, 0.17, 0.2, 10.0])
    edges_t = np.array([0.0, 1.5, 1.8, 2.1, 2.4, math.pi])
    exact_r, exact_t = exact_marginals(edges_r, edges_t)
    ind_r = (np.digitize(r1, edges_r[1:-1])[:, None] == np.arange(5)).astype(float)
    ind_t = (np.digitize(theta, edges_t[1:-1])[:, None] == np.arange(5)).astype(float)
    z = np.concatenate([batch_means_z(ind_r, exact_r), batch_means_z(ind_t, exact_t)])
    assert np.abs(z).max() < 4.0, z
    # The proposal alone is visibly wrong: the correction matters.
    with torch.no_grad():
        raw = flow.sample((12000,), generator=torch.Generator().manual_seed(0))
    raw_r, _ = chain_geometry(raw.reshape(-1, 3, 3).double().numpy())
    raw_ind = (np.digitize(raw_r, edges_r[1:-1])[:, None] == np.arange(5)).astype(float)
    assert np.abs((raw_ind.mean(0) - exact_r) / np.sqrt(exact_r / 12000)).max() > 8.0


def test_interleaved_md_and_counters():
    sim = triatomic_simulation(seed=2)
    sampler = FlowMetropolisSampler(
        sim, triatomic_flow(), generator=torch.Generator().manual_seed(0), proposal_batch=64
    )
    run = sampler.run(50, md_steps=10, moves_per_cycle=2)
    stats = sampler.statistics()
    assert stats["n_md_steps"] == 500 and stats["n_proposed"] == 100
    assert stats["n_accepted"] == int(run.accepted.sum()) == sampler.n_accepted
    assert stats["acceptance_rate"] == pytest.approx(sampler.n_accepted / 100)
    assert stats["n_flow_samples"] == 128  # two batches of 64
    # one energy per proposal plus one per cycle for the state left by the integrator
    assert stats["n_energy_evaluations"] == 100 + 50
    assert stats["n_density_evaluations"] == 50
    assert "acceptance=" in repr(sampler)
    # the simulation's own state is consistent after the moves
    state = sim.context.getState(getPositions=True, getEnergy=True)
    assert np.allclose(
        state.getPositions(asNumpy=True).value_in_unit(unit.nanometer), sampler.positions()
    )
    assert math.isfinite(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))


def test_rejected_moves_restore_the_state():
    sim = triatomic_simulation()
    far = triatomic_flow(shift=30.0, widen=0.1)  # proposals with absurd energies: all rejected
    before = sim.context.getState(getPositions=True, getVelocities=True)
    sampler = FlowMetropolisSampler(sim, far, generator=torch.Generator().manual_seed(0))
    assert sampler.move(20) == 0 and sampler.acceptance_rate == 0.0
    after = sim.context.getState(getPositions=True, getVelocities=True)
    assert np.array_equal(
        before.getPositions(asNumpy=True)._value, after.getPositions(asNumpy=True)._value
    )
    assert np.array_equal(
        before.getVelocities(asNumpy=True)._value, after.getVelocities(asNumpy=True)._value
    )


def test_draw_positions_units_and_loading(tmp_path):
    flow = triatomic_flow()
    pos = draw_positions(flow, 5, generator=torch.Generator().manual_seed(0))
    assert isinstance(pos, unit.Quantity) and pos.unit == unit.nanometer
    nm = pos.value_in_unit(unit.nanometer)
    assert nm.shape == (5, 3, 3) and nm.dtype == np.float64
    assert np.allclose(pos.value_in_unit(unit.angstrom), 10.0 * nm)
    sim = triatomic_simulation()
    sim.context.setPositions(pos[0])  # usable as they are
    torch.save(flow, tmp_path / "flow.pt")
    loaded = load_flow(tmp_path / "flow.pt")
    x = torch.as_tensor(nm.reshape(5, 9), dtype=torch.get_default_dtype())
    assert torch.allclose(loaded.log_prob(x), flow.log_prob(x))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_flow(tmp_path / "missing.pt")


def test_bad_input_is_refused():
    sim = triatomic_simulation()
    with pytest.raises(InvalidInput, match=r"4 atoms .*\(12,\).* 3 particles .*\(9,\)"):
        FlowMetropolisSampler(sim, StandardNormal(12))
    with pytest.raises(InvalidInput, match="expected an openmm.app.Simulation"):
        FlowMetropolisSampler(object(), triatomic_flow())
    with pytest.raises(InvalidInput, match="flow over flat configurations"):
        draw_positions(StandardNormal(4), 2)
    verlet = app.Simulation(
        sim.topology,
        sim.system,
        openmm.VerletIntegrator(0.001),
        openmm.Platform.getPlatformByName("Reference"),
    )
    with pytest.raises(InvalidInput, match="no temperature"):
        FlowMetropolisSampler(verlet, triatomic_flow())
    sampler = FlowMetropolisSampler(verlet, triatomic_flow(), temperature=300 * unit.kelvin)
    assert sampler.temperature == 300.0


def test_example_script_core_function():
    path = Path(__file__).resolve().parents[1] / "examples" / "alanine_openmm_sampler.py"
    spec = importlib.util.spec_from_file_location("alanine_openmm_sampler", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.compare_with_md(
        module.standin_flow(module.load_reference(), alpha_l=False),
        n_cycles=30,
        md_steps=5,
        seed=0,
        progress=False,
    )
    assert result["sampler"]["n_proposed"] == 30
    assert 0.0 <= result["sampler"]["phi_positive_fraction"] <= 1.0
    assert 0.0 <= result["md"]["phi_positive_fraction"] <= 1.0
    assert result["md"]["md_steps"] >= 150
