"""physics.systems.reference: the shipped alanine-dipeptide reference, basins, MD and umbrella
sampling, and the MBAR / block estimators of physics.systems.reference_estimators."""

from __future__ import annotations

import math
import os
from pathlib import Path

import mdtraj
import numpy as np
import openmm
import pytest
import scipy.integrate
import torch

import physics.systems.reference
from manifoldflows.errors import InvalidInput
from physics.systems import PHI_ATOMS, alanine_dipeptide
from physics.systems.reference import (
    ALPHA_R_PSI,
    UMBRELLA_FORCE_GROUP,
    backbone_torsions,
    basin_alpha_r,
    basin_beta,
    generate_reference,
    load_reference,
    phi_negative,
    phi_positive,
    reference_filename,
    run_md,
    run_umbrella,
    umbrella_system,
)
from physics.systems.reference_estimators import (
    block_free_energy_difference,
    block_population,
    mbar,
    umbrella_bias,
    umbrella_mbar,
    wrap_angle,
)


@pytest.fixture(scope="module")
def reference():
    return load_reference()


@pytest.fixture(scope="module")
def ala2():
    return alanine_dipeptide()


def _circular_gap(a, b):
    return np.abs(wrap_angle(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)))


# ---------------------------------------------------------------------------- the shipped file
def test_shipped_reference_shapes_and_metadata(reference):
    ref = reference
    assert os.path.basename(ref.path) == reference_filename("amber99sbildn", "implicit")
    assert os.path.getsize(ref.path) < 5.5e6
    assert ref.forcefield == "amber99sbildn" and ref.solvent == "implicit"
    assert ref.temperature == 300.0 and ref.kT == pytest.approx(2.494339, abs=1e-5)
    n = ref.phi.shape[0]
    for array in (ref.psi, ref.energies, ref.run):
        assert array.shape == (n,)
    assert ref.frames_train.dtype == np.float32 and ref.frames_test.dtype == np.float32
    assert ref.frames_train.shape == (ref.train_index.size, 22, 3)
    assert ref.frames_test.shape == (ref.test_index.size, 22, 3)
    assert ref.energies_train.shape == (ref.train_index.size,)
    assert np.isfinite(ref.frames_train).all() and np.isfinite(ref.energies).all()
    # train and test come from different runs
    assert set(ref.run[ref.train_index].tolist()).isdisjoint(ref.run[ref.test_index].tolist())
    meta = ref.metadata
    assert meta["integrator"]["name"] == "LangevinMiddleIntegrator"
    assert meta["integrator"]["timestep_fs"] == 1.0 and meta["integrator"]["friction_per_ps"] == 1.0
    assert meta["md"]["frame_interval_ps"] == 1.0
    assert sum(meta["md"]["frames_per_run"]) == n
    assert len(meta["md"]["seeds"]) == len(set(meta["md"]["seeds"])) == int(ref.run.max()) + 1
    assert meta["command"].startswith(("python -m physics.systems.reference", "python examples"))
    assert meta["versions"]["openmm"] and meta["date"] and "commit" in meta["git"]
    m = ref.umbrella_phi.shape[0]
    for array in (ref.umbrella_psi, ref.umbrella_window, ref.umbrella_series,
                  ref.umbrella_log_weights):
        assert array.shape == (m,)
    assert ref.umbrella_centers.shape == (meta["umbrella"]["n_windows"],)
    assert np.logaddexp.reduce(ref.umbrella_log_weights) == pytest.approx(0.0, abs=1e-9)
    for name in ("df_alpha_r_beta_md", "df_alpha_r_beta_umbrella", "df_phi_positive_umbrella",
                 "p_alpha_r_md", "p_beta_md", "p_phi_positive_umbrella", "p_alpha_r_umbrella"):
        value, stderr = ref.estimates[name]
        assert math.isfinite(float(value)) and 0.0 < float(stderr) < 1.0, name
    assert ref.df_alpha_r_beta is ref.estimates["df_alpha_r_beta_md"]
    assert ref.df_phi_positive is ref.estimates["df_phi_positive_umbrella"]
    # the two estimates of F(alpha_R) - F(beta) agree within 3 standard errors (the umbrella
    # one is biased towards beta, see the module docstring), the two umbrella repeats agree on
    # F(phi > 0) - F(phi < 0), and F(phi) of the umbrella sampling matches the MD histogram
    # wherever MD samples well (F < 3 kT above the minimum)
    md, us = ref.estimates["df_alpha_r_beta_md"], ref.estimates["df_alpha_r_beta_umbrella"]
    assert abs(float(md.value) - float(us.value)) < 3.0 * math.hypot(md.stderr, us.stderr)
    first, second = (r["df_phi_positive_umbrella"] for r in meta["umbrella"]["repeats"])
    assert abs(first["value"] - second["value"]) < 3.0 * math.hypot(first["stderr"],
                                                                     second["stderr"])
    bins = [b for b in meta["umbrella"]["cross_check_with_md_by_phi_bin"] if b["F_md_kT"] < 3]
    assert len(bins) >= 8
    assert max(abs(b["F_md_kT"] - b["F_umbrella_kT"]) for b in bins) < 0.3
    assert "p_phi_positive_md" not in ref.estimates  # 2 frames of plain MD: no estimate
    # populations from plain MD agree with the frames they were computed from
    alpha = basin_alpha_r(ref.phi, ref.psi)
    assert float(ref.estimates["p_alpha_r_md"].value) == pytest.approx(alpha.mean(), abs=0.02)
    centres, free, stderr = ref.phi_profile
    assert centres.shape == free.shape == stderr.shape and free.min() == 0.0
    assert "MDReference(" in repr(ref) and "df_phi_positive_umbrella" in ref.summary()


def test_shipped_torsions_match_mdtraj(reference, ala2):
    ref = reference
    pick_train, pick_test = [0, 7, ref.train_index.size - 1], [0, ref.test_index.size - 1]
    frames = np.concatenate([ref.frames_train[pick_train], ref.frames_test[pick_test]])
    index = np.concatenate([ref.train_index[pick_train], ref.test_index[pick_test]])
    traj = mdtraj.Trajectory(frames, ala2.mdtraj_topology)
    phi_atoms, phi = mdtraj.compute_phi(traj)
    psi_atoms, psi = mdtraj.compute_psi(traj)
    assert tuple(phi_atoms[0]) == PHI_ATOMS
    assert _circular_gap(phi[:, 0], ref.phi[index]).max() < 1e-4
    assert _circular_gap(psi[:, 0], ref.psi[index]).max() < 1e-4
    ours = backbone_torsions(frames)
    assert _circular_gap(ours[0], phi[:, 0]).max() < 1e-4
    assert _circular_gap(ours[1], psi[:, 0]).max() < 1e-4


SHIPPED = sorted(
    (Path(physics.systems.reference.__file__).parent / "data").glob("*_reference.npz")
)


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_energies_match_openmm(path):
    ref = load_reference(path=path)
    assert path.name == reference_filename(ref.forcefield, ref.solvent, ref.temperature)
    assert ref.frames_train.shape[1:] == (22, 3) and ref.frames_test.shape[1:] == (22, 3)
    assert ref.metadata["command"] and ref.metadata["md"]["seeds"]
    context = openmm.Context(
        ref.system().system, openmm.VerletIntegrator(0.001),
        openmm.Platform.getPlatformByName("Reference"),
    )
    for frames, energies in ((ref.frames_train, ref.energies_train),
                             (ref.frames_test, ref.energies_test)):
        for i in (0, 3, len(frames) - 1):
            context.setPositions(frames[i].astype(np.float64))
            energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(
                openmm.unit.kilojoule_per_mole
            )
            assert energy == pytest.approx(energies[i], abs=1e-6)


def test_missing_variant_names_the_command(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="python -m physics.systems.reference "
                       "--forcefield amber96 --solvent vacuum"):
        load_reference("amber96", "vacuum")
    with pytest.raises(InvalidInput, match="expected forcefield among .* got forcefield='charmm'"):
        load_reference("charmm")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_reference(path=tmp_path / "nothing.npz")


# ---------------------------------------------------------------------------- basins
def test_basins_partition_phi_negative():
    rng = np.random.default_rng(0)
    phi = rng.uniform(-np.pi, np.pi, 5000)
    psi = rng.uniform(-np.pi, np.pi, 5000)
    alpha, beta = basin_alpha_r(phi, psi), basin_beta(phi, psi)
    assert not np.any(alpha & beta)
    np.testing.assert_array_equal(alpha | beta, phi < 0)
    np.testing.assert_array_equal(alpha | beta | phi_positive(phi), np.ones(5000, bool))
    np.testing.assert_array_equal(phi_negative(phi), ~phi_positive(phi))
    # edges: psi = -120 and 50 degrees belong to beta; phi = 0 to phi > 0
    edge = np.array([ALPHA_R_PSI[0], ALPHA_R_PSI[1], 0.0])
    assert basin_beta(np.full(3, -1.0), edge).tolist() == [True, True, False]
    assert phi_positive(np.array([0.0, -np.pi])).tolist() == [True, False]
    # tensors in, tensors out (float32 too)
    t_phi, t_psi = torch.tensor(phi, dtype=torch.float32), torch.tensor(psi, dtype=torch.float32)
    t_alpha = basin_alpha_r(t_phi, t_psi)
    assert isinstance(t_alpha, torch.Tensor) and t_alpha.dtype == torch.bool
    assert (t_alpha | basin_beta(t_phi, t_psi) | phi_positive(t_phi)).all()


def test_basins_refuse_degrees_and_integers():
    with pytest.raises(InvalidInput, match=r"basin_alpha_r: expected phi in radians .* 70"):
        basin_alpha_r(np.array([-70.0]), np.array([-40.0]))
    with pytest.raises(InvalidInput, match="basin_beta: expected psi as floating-point radians"):
        basin_beta(np.array([-1.0]), np.array([1]))


# ---------------------------------------------------------------------------- estimators
def _double_well(phi):
    """Reduced energy of a double well on the circle, asymmetric between phi < 0 and > 0."""
    return -2.0 * np.cos(2.0 * (phi + 0.4)) + 0.8 * np.sin(phi)


def test_umbrella_mbar_recovers_a_double_well_on_the_circle():
    # exact F(phi > 0) - F(phi < 0) by quadrature
    pos = scipy.integrate.quad(lambda x: np.exp(-_double_well(x)), 0.0, np.pi)[0]
    neg = scipy.integrate.quad(lambda x: np.exp(-_double_well(x)), -np.pi, 0.0)[0]
    exact = -math.log(pos / neg)
    # exact samples of each biased window by inverse CDF on a fine grid
    rng = np.random.default_rng(1)
    centers = -np.pi + 2 * np.pi * np.arange(12) / 12
    k_s, per_window = 20.0, 1000
    grid = np.linspace(-np.pi, np.pi, 20001)
    cv, window = [], []
    for k, c in enumerate(centers):
        density = np.exp(-_double_well(grid) - umbrella_bias(grid, [c], k_s)[0])
        cdf = np.cumsum(density)
        cv.append(np.interp(rng.uniform(0, cdf[-1], per_window), cdf, grid))
        window.append(np.full(per_window, k))
    cv, window = wrap_angle(np.concatenate(cv)), np.concatenate(window)
    result = umbrella_mbar(cv, window, centers, k_s, 1.0, n_bootstrap=40, seed=2)
    value, stderr = result.free_energy_difference(cv < 0, cv >= 0)
    assert 0.0 < float(stderr) < 0.15
    assert abs(float(value) - exact) < 3.5 * float(stderr)
    populations = result.population(cv >= 0).value + result.population(cv < 0).value
    assert float(populations) == pytest.approx(1.0, abs=1e-12)
    # window free energies match quadrature of the biased partition functions (a sanity check:
    # their statistical error grows along the chain of windows to ~0.2 here)
    z = [scipy.integrate.quad(lambda x, c=c: np.exp(-_double_well(x) - umbrella_bias(
        np.atleast_1d(x), [c], k_s)[0, 0]), -np.pi, np.pi, points=[c])[0] for c in centers]
    np.testing.assert_allclose(result.free_energies, -np.log(np.array(z) / z[0]), atol=0.5)


def test_mbar_equals_plain_averages_for_one_state_and_checks_inputs():
    solution = mbar(np.zeros((1, 5)), [5])
    np.testing.assert_allclose(np.exp(solution.log_weights), np.full(5, 0.2))
    with pytest.raises(InvalidInput, match="mbar: expected counts as 2 positive integers"):
        mbar(np.zeros((2, 4)), [4, 0])
    with pytest.raises(InvalidInput, match=r"mbar: expected reduced_potentials of shape \(K, N\)"):
        mbar(np.zeros(4), [4])
    with pytest.raises(InvalidInput, match="every window sampled"):
        umbrella_mbar(np.zeros(4), np.zeros(4, int), np.array([0.0, 1.0]), 10.0, 1.0)
    with pytest.raises(InvalidInput, match="expected a positive finite number kT"):
        umbrella_mbar(np.zeros(4), np.zeros(4, int), np.array([0.0]), 10.0, -1.0)


def test_block_estimates_match_independent_frames():
    rng = np.random.default_rng(3)
    p, n = 0.3, 40000
    in_a = rng.uniform(size=n) < p
    value, stderr = block_free_energy_difference(in_a, ~in_a, block_length=100)
    assert abs(float(value) - math.log(p / (1 - p))) < 4 * float(stderr)
    assert float(stderr) == pytest.approx(1 / math.sqrt(n * p * (1 - p)), rel=0.25)
    population = block_population(in_a, runs=np.repeat([0, 1], n // 2), block_length=100)
    assert float(population.stderr) == pytest.approx(math.sqrt(p * (1 - p) / n), rel=0.25)
    with pytest.raises(InvalidInput, match="region_b holds 0 of 10 frames"):
        block_free_energy_difference(np.ones(10, bool), np.zeros(10, bool), block_length=2)
    with pytest.raises(InvalidInput, match="expected at least 2 blocks of 500 frames"):
        block_population(np.ones(10, bool))
    with pytest.raises(InvalidInput, match="expected a region mask as a boolean mask"):
        block_population(np.ones(10), block_length=2)


# ---------------------------------------------------------------------------- simulations
def test_run_md_is_finite_and_reproducible(ala2):
    options = dict(seed=4, frame_interval_ps=0.01, equilibration_ps=0.01, progress=False)
    run = run_md(ala2, 0.05, **options)
    assert run.frames.shape == (5, 22, 3) and run.frames.dtype == np.float32
    assert np.isfinite(run.frames).all() and np.isfinite(run.energies).all()
    assert run.energies.max() < 0.0  # a few fs after minimisation at 300 K
    np.testing.assert_array_equal(run_md(ala2, 0.05, **options).frames, run.frames)


def test_umbrella_force_equals_the_estimators_bias(ala2):
    run = run_umbrella(ala2, seed=3, n_windows=4, production_ps=0.05, equilibration_ps=0.01,
                       initial_equilibration_ps=0.01, frame_interval_ps=0.01, progress=False)
    assert run.phi.shape == run.window.shape == (20,)
    np.testing.assert_array_equal(run.cv, run.phi)
    assert sorted(set(run.window.tolist())) == [0, 1, 2, 3]
    biased = umbrella_system(ala2.system, PHI_ATOMS, 200.0)
    context = openmm.Context(
        biased, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
    )
    frames = run_md(ala2, 0.03, seed=1, frame_interval_ps=0.01, equilibration_ps=0.0,
                    progress=False).frames
    phi, _ = backbone_torsions(frames)
    for center in (-2.5, 0.7, 3.0):
        context.setParameter("umbrella_center", center)
        for frame, expected in zip(frames, umbrella_bias(phi, [center], 200.0)[0]):
            context.setPositions(frame.astype(np.float64))
            state = context.getState(getEnergy=True, groups={UMBRELLA_FORCE_GROUP})
            assert state.getPotentialEnergy()._value == pytest.approx(expected, abs=1e-6)


def test_simulations_refuse_bad_inputs(ala2):
    with pytest.raises(InvalidInput, match="run_md: expected a MolecularSystem, got str"):
        run_md("ala2", 1.0, seed=0)
    with pytest.raises(InvalidInput, match="whole number of time steps"):
        run_md(ala2, 1.0, seed=0, frame_interval_ps=0.0015)
    with pytest.raises(InvalidInput, match="run_md: expected a non-negative integer seed"):
        run_md(ala2, 1.0, seed=-1)
    with pytest.raises(InvalidInput, match=r"expected frames of shape \(n, 22, 3\) in nm, got "
                       r"\(5, 21, 3\)"):
        backbone_torsions(np.zeros((5, 21, 3)))
    with pytest.raises(InvalidInput, match="expected direction"):
        run_umbrella(ala2, seed=0, direction=2)
    with pytest.raises(InvalidInput, match="expected bootstrap_block_ps at most a quarter of "
                       r"window_ps \(100\), got 50"):
        generate_reference(window_ps=100, bootstrap_block_ps=50)


def test_generate_reference_round_trip(tmp_path):
    ref = generate_reference(
        tmp_path / "tiny.npz", md_ps=0.4, md_seeds=(1, 2), equilibration_ps=0.1,
        frame_interval_ps=0.02, umbrella_seeds=(3,), n_windows=4, window_ps=0.2,
        window_equilibration_ps=0.02, umbrella_interval_ps=0.02, umbrella_initial_ps=0.02,
        force_constant=10.0, md_block_ps=0.1, bootstrap_block_ps=0.04, n_bootstrap=4, processes=1,
        workdir=tmp_path / "runs", progress=False, command="test",
    )
    assert ref.frames_train.shape == (20, 22, 3) and ref.frames_test.shape == (10, 22, 3)
    assert ref.umbrella_phi.shape == (40,) and ref.metadata["command"] == "test"
    assert ref.metadata["md"]["seeds"] == [1, 2] and ref.metadata["umbrella"]["seeds"] == [3]
    np.testing.assert_array_equal(ref.phi[ref.train_index], backbone_torsions(
        ref.frames_train)[0].astype(np.float32))
    again = load_reference(path=ref.path)
    np.testing.assert_array_equal(again.frames_test, ref.frames_test)
    assert again.metadata["wall_time_s"]["processes"] == 1
