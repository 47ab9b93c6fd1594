"""OpenMM bridge (physics.openmm.bridge.OpenMMEnergy): energies and forces equal a direct OpenMM
Context, autograd forces, worker pool faults (kill -9, hangs), shutdown, non-finite counting,
executors (ProcessPoolExecutor, Dask) and every bad input."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import openmm
import psutil
import pytest
import torch
from openmm import unit

from manifoldflows.errors import InvalidInput
from physics.openmm import _worker
from physics.openmm.bridge import (
    DEFAULT_TEMPERATURE,
    OpenMMEnergy,
    OpenMMWorkerError,
    evaluate_chunk,
)
from physics.openmm.platforms import choose_platform, platform_properties
from physics.regularize import LinLogCut
from physics.systems import alanine_dipeptide

ROOT = Path(__file__).resolve().parents[1]
F64 = torch.float64
SYSTEMS = [
    ("vacuum", "amber99sbildn"),
    ("implicit", "amber99sbildn"),
    ("vacuum", "amber96"),
    ("implicit", "amber96"),
]
KJ = unit.kilojoule_per_mole
KJ_NM = unit.kilojoule_per_mole / unit.nanometer


# ---------------------------------------------------------------------------- helpers
def _direct(system: openmm.System, x: np.ndarray, platform: str = "Reference"):
    """Energies (kJ/mol) and forces (kJ/mol/nm) from a plain OpenMM Context, public API only."""
    context = openmm.Context(
        system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform)
    )
    energies, forces = [], []
    for row in x.reshape(len(x), -1, 3):
        context.setPositions(row * unit.nanometer)
        state = context.getState(getEnergy=True, getForces=True)
        energies.append(state.getPotentialEnergy().value_in_unit(KJ))
        forces.append(state.getForces(asNumpy=True).value_in_unit(KJ_NM).reshape(-1))
    return np.array(energies), np.array(forces)


def _md_frames(molecule, n: int = 8, seed: int = 1) -> np.ndarray:
    """Frames of a short Langevin run at 300 K (Reference platform, 1 fs, flexible bonds)."""
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.001)
    integrator.setRandomNumberSeed(seed)
    context = openmm.Context(
        molecule.system, integrator, openmm.Platform.getPlatformByName("Reference")
    )
    context.setPositions(molecule.positions * unit.nanometer)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 50)
    context.setVelocitiesToTemperature(300 * unit.kelvin, seed)
    frames = []
    for _ in range(n):
        integrator.step(25)
        state = context.getState(getPositions=True)
        frames.append(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer).reshape(-1))
    return np.array(frames)


def _perturbed(molecule, n: int = 8, scale: float = 0.01, seed: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return molecule.positions.reshape(-1) + scale * rng.standard_normal((n, 3 * molecule.n_atoms))


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_gone(pids, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if all(_gone(p) for p in pids):
            return True
        time.sleep(0.05)
    return all(_gone(p) for p in pids)


def _our_children() -> list[psutil.Process]:
    script = str(Path(_worker.__file__))
    out = []
    for child in psutil.Process().children(recursive=True):
        try:
            if script in " ".join(child.cmdline()) and child.status() != psutil.STATUS_ZOMBIE:
                out.append(child)
        except psutil.NoSuchProcess:
            pass
    return out


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def molecules():
    return {key: alanine_dipeptide(solvent=key[0], forcefield=key[1]) for key in SYSTEMS}


@pytest.fixture(scope="module")
def configs(molecules):
    """MD frames and perturbed configurations per system, with direct OpenMM references."""
    out = {}
    for key, molecule in molecules.items():
        x = np.concatenate([_md_frames(molecule), _perturbed(molecule)])
        out[key] = (x, *_direct(molecule.system, x))
    return out


@pytest.fixture(scope="module")
def pools(molecules):
    """One 2-worker energy per system, shared by the module (pool start costs ~0.3 s)."""
    energies = {key: OpenMMEnergy(m, n_workers=2) for key, m in molecules.items()}
    yield energies
    for energy in energies.values():
        energy.close()


@pytest.fixture(scope="module")
def vacuum(molecules):
    return molecules[("vacuum", "amber99sbildn")]


@pytest.fixture(scope="module")
def local(vacuum):
    return OpenMMEnergy(vacuum)


@pytest.fixture(scope="module")
def pool(pools):
    return pools[("vacuum", "amber99sbildn")]


def _check_against(energy, x, e_ref, f_ref):
    u, force = energy.energy_and_force(torch.as_tensor(x))
    assert u.dtype == F64 and force.shape == x.shape
    np.testing.assert_allclose(u.numpy() * energy.kT, e_ref, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(force.numpy() * energy.kT, f_ref, rtol=0, atol=1e-3)
    assert torch.equal(energy.energy(torch.as_tensor(x)), u)
    assert energy.last_batch_stats.n_nonfinite == 0


# ---------------------------------------------------------------------------- correctness
@pytest.mark.parametrize("key", SYSTEMS, ids=["-".join(k) for k in SYSTEMS])
def test_matches_direct_context_in_process_and_with_workers(key, molecules, configs, pools):
    x, e_ref, f_ref = configs[key]
    _check_against(OpenMMEnergy(molecules[key]), x, e_ref, f_ref)
    _check_against(pools[key], x, e_ref, f_ref)
    assert pools[key].last_batch_stats.mode == "pool"
    assert pools[key].last_batch_stats.n_chunks == 2


def test_cpu_platform_in_workers_matches_direct_cpu_context(vacuum, configs):
    x, _, _ = configs[("vacuum", "amber99sbildn")]
    e_ref, f_ref = _direct(vacuum.system, x, "CPU")
    with OpenMMEnergy(vacuum, n_workers=2, platform="CPU") as energy:
        assert energy.platform == "CPU"
        _check_against(energy, x, e_ref, f_ref)


def test_units_and_temperature(vacuum):
    r_gas = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)
    energy = OpenMMEnergy(vacuum)
    assert energy.kT == pytest.approx(r_gas * 300.0, rel=1e-12)
    assert energy.temperature == vacuum.temperature == 300.0
    assert energy.dim == 66 and energy.n_atoms == 22
    assert OpenMMEnergy(vacuum.system).temperature == DEFAULT_TEMPERATURE
    assert OpenMMEnergy(vacuum, temperature=600.0).kT == pytest.approx(2 * energy.kT)
    assert OpenMMEnergy(vacuum.system, temperature=450 * unit.kelvin).temperature == 450.0
    duck = SimpleNamespace(system=vacuum.system, temperature=350.0, name="duck")
    assert OpenMMEnergy(duck).temperature == 350.0


def test_evaluate_chunk_matches_direct_and_caches_its_context(vacuum, configs):
    x, e_ref, f_ref = configs[("vacuum", "amber99sbildn")]
    xml = openmm.XmlSerializer.serialize(vacuum.system)
    out = evaluate_chunk(xml, x)
    np.testing.assert_allclose(out.energies, e_ref, rtol=1e-5)
    np.testing.assert_allclose(out.forces, f_ref, atol=1e-3)
    first = _worker._cached_evaluator(xml, "Reference", None)
    evaluate_chunk(xml, x.reshape(len(x), 22, 3))
    assert _worker._cached_evaluator(xml, "Reference", None) is first
    with pytest.raises(ValueError, match=r"shape \(n, 66\) or \(n, 22, 3\), got \(16, 63\)"):
        evaluate_chunk(xml, x[:, :63])


def test_autograd_gradient_is_minus_force(local, pool, configs):
    x, _, _ = configs[("vacuum", "amber99sbildn")]
    for energy in (local, pool):
        xt = torch.tensor(x[:6], dtype=F64).reshape(2, 3, 66).requires_grad_(True)
        weights = torch.arange(1.0, 7.0, dtype=F64).reshape(2, 3)
        (energy.energy(xt) * weights).sum().backward()
        u, force = energy.energy_and_force(xt.detach())
        assert u.shape == (2, 3) and force.shape == (2, 3, 66)
        torch.testing.assert_close(xt.grad, -weights[..., None] * force, rtol=0, atol=0)
        assert torch.equal(energy.force(xt.detach()), force)


def test_force_is_minus_finite_difference_gradient(local, configs):
    x = torch.tensor(configs[("implicit", "amber99sbildn")][0][:1])
    energy = OpenMMEnergy(alanine_dipeptide("implicit"))
    _, force = energy.energy_and_force(x)
    h = 1e-5
    for i in (0, 17, 65):
        shift = torch.zeros_like(x)
        shift[0, i] = h
        slope = (energy.energy(x + shift) - energy.energy(x - shift)) / (2 * h)
        assert float(-slope) == pytest.approx(float(force[0, i]), rel=1e-4, abs=1e-3)


def test_energy_and_force_graph(local, configs):
    x = torch.tensor(configs[("vacuum", "amber99sbildn")][0][:3], requires_grad=True)
    u, force = local.energy_and_force(x)
    assert u.requires_grad and not force.requires_grad
    (grad,) = torch.autograd.grad(u.sum(), x, create_graph=True)
    assert not grad.requires_grad  # OpenMM gives no second derivatives: none are pretended
    torch.testing.assert_close(grad, -force, rtol=0, atol=0)


def test_dtype_and_batch_shapes(local, configs):
    x, e_ref, _ = configs[("vacuum", "amber99sbildn")]
    x32 = torch.tensor(x, dtype=torch.float32)
    u32, f32 = local.energy_and_force(x32)
    assert u32.dtype == f32.dtype == torch.float32
    np.testing.assert_allclose(u32.numpy() * local.kT, e_ref, rtol=1e-3, atol=0.2)
    assert local.energy(torch.tensor(x[0])).shape == ()
    empty_u, empty_f = local.energy_and_force(torch.zeros(0, 66, dtype=F64))
    assert empty_u.shape == (0,) and empty_f.shape == (0, 66)
    assert local.energy(torch.zeros(4, 0, 66)).shape == (4, 0)


def test_one_worker_and_batches_smaller_than_the_pool(vacuum, configs):
    x, e_ref, _ = configs[("vacuum", "amber99sbildn")]
    with OpenMMEnergy(vacuum, n_workers=1) as energy:
        u = energy.energy(torch.tensor(x))
        np.testing.assert_allclose(u.numpy() * energy.kT, e_ref, rtol=1e-5)
        assert energy.last_batch_stats.n_chunks == 1 and len(energy.worker_pids) == 1


def test_pool_grows_its_buffer_and_reuses_workers(pool, local, vacuum):
    x = torch.tensor(_perturbed(vacuum, 3000, seed=5))
    pids = pool.worker_pids
    torch.testing.assert_close(pool.energy(x[:1]), local.energy(x[:1]), rtol=0, atol=0)
    torch.testing.assert_close(pool.energy(x), local.energy(x), rtol=0, atol=0)
    assert pool.worker_pids == pids and pool.last_batch_stats.n_restarts == 0


def test_pickled_copy_evaluates_without_the_original_pool(pool, configs):
    x = torch.tensor(configs[("vacuum", "amber99sbildn")][0])
    copy = pickle.loads(pickle.dumps(pool))
    try:
        assert copy.worker_pids == [] and copy.system_xml == pool.system_xml
        torch.testing.assert_close(copy.energy(x), pool.energy(x), rtol=0, atol=0)
        assert set(copy.worker_pids).isdisjoint(pool.worker_pids)
    finally:
        copy.close()


# ---------------------------------------------------------------------------- platforms
def test_platform_rule():
    def system(n: int, gb: bool = False) -> openmm.System:
        out = openmm.System()
        for _ in range(n):
            out.addParticle(1.0)
        if gb:
            force = openmm.GBSAOBCForce()
            for _ in range(n):
                force.addParticle(0.0, 0.15, 1.0)
            out.addForce(force)
        return out

    names = [openmm.Platform.getPlatform(i) for i in range(openmm.Platform.getNumPlatforms())]
    fastest = max(names, key=lambda p: p.getSpeed()).getName()  # CPU here
    assert choose_platform(system(22)) == "Reference"
    assert choose_platform(system(96)) == "Reference"
    assert choose_platform(system(40, gb=True)) == "Reference"
    assert choose_platform(system(60, gb=True)) == fastest
    assert choose_platform(system(200)) == fastest
    assert choose_platform(system(200), "Reference") == "Reference"
    with pytest.raises(InvalidInput, match="expected platform 'auto' or one of .*'NoSuchPlatform'"):
        choose_platform(system(2), "NoSuchPlatform")
    assert platform_properties("CPU", in_worker=True) == {"Threads": "1"}
    assert platform_properties("CPU", in_worker=False) == {}
    assert platform_properties("Reference", {"X": 1}, in_worker=True) == {"X": "1"}


# ---------------------------------------------------------------------------- non-finite
def _bad_batch(molecule) -> torch.Tensor:
    x = torch.tensor(_perturbed(molecule, 5, seed=7))
    x[1] = float("nan")
    x[3, 3:6] = x[3, 0:3]  # atoms 0 and 1 on top of each other
    return x


@pytest.mark.parametrize("where", ["in-process", "pool", "cpu-platform"])
def test_nonfinite_energies_are_counted_and_returned_as_inf(where, local, pool, vacuum):
    energy = {"in-process": local, "pool": pool}.get(where) or OpenMMEnergy(vacuum, platform="CPU")
    x = _bad_batch(vacuum)
    before = energy.total_nonfinite
    u, force = energy.energy_and_force(x)
    stats = energy.last_batch_stats
    assert stats.n_nonfinite == 2 and stats.n_evaluated == 5
    assert energy.total_nonfinite == before + 2
    assert torch.isinf(u[[1, 3]]).all() and (u[[1, 3]] > 0).all()
    assert (force[[1, 3]] == 0).all()
    good = [0, 2, 4]
    e_ref, _ = _direct(vacuum.system, x[good].numpy(), energy.platform)
    np.testing.assert_allclose(u[good].numpy() * energy.kT, e_ref, rtol=1e-5)
    if where == "cpu-platform":  # the CPU platform raises for NaN coordinates
        assert stats.n_errors == 1 and "NaN" in stats.first_error


def test_energies_overflowing_float32_count_as_nonfinite(local, vacuum):
    x = torch.tensor(_perturbed(vacuum, 2, seed=11))
    x[1, :3] = 1e17  # atom 0 far away: U ~ 1e39 kJ/mol, finite in float64 only
    assert torch.isfinite(local.energy(x)).all() and local.last_batch_stats.n_nonfinite == 0
    u32, f32 = local.energy_and_force(x.float())
    assert torch.isfinite(u32[0]) and torch.isinf(u32[1]) and (f32[1] == 0).all()
    assert local.last_batch_stats.n_nonfinite == 1


def test_linlogcut_regularises_nonfinite_openmm_energies(local, vacuum):
    x = _bad_batch(vacuum).requires_grad_(True)
    reg = LinLogCut(local, high=1e3, max=1e9)
    u = reg.energy(x)
    assert reg.last_nonfinite == 2
    assert u[1].item() == u[3].item() == 1e9
    torch.testing.assert_close(u[[0, 2, 4]], local.energy(x.detach()[[0, 2, 4]]))
    u.sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad[[1, 3]] == 0).all()
    torch.testing.assert_close(x.grad[0], -local.force(x.detach()[:1])[0])


# ---------------------------------------------------------------------------- faults
def test_worker_killed_by_hook_is_replaced_and_chunk_rerun(vacuum, local):
    x = torch.tensor(_perturbed(vacuum, 200, seed=3))
    with OpenMMEnergy(vacuum, n_workers=2) as energy:
        energy.start()
        before = energy.worker_pids
        energy._fault_hook = {"chunk": 0, "action": "kill"}
        u = energy.energy(x)
        stats = energy.last_batch_stats
        assert stats.n_retries == 1 and stats.n_restarts == 1
        torch.testing.assert_close(u, local.energy(x), rtol=0, atol=0)
        after = energy.worker_pids
        assert len(after) == 2 and before[0] not in after and _gone(before[0])


def _kill_when_busy(pid: int) -> None:
    """kill -9 ``pid`` as soon as it has used 20 ms of CPU time: in the middle of its chunk."""
    process = psutil.Process(pid)
    start = sum(process.cpu_times()[:2])
    deadline = time.monotonic() + 30.0
    while sum(process.cpu_times()[:2]) - start < 0.02 and time.monotonic() < deadline:
        time.sleep(0.002)
    os.kill(pid, signal.SIGKILL)


def test_worker_killed_from_outside_mid_batch(vacuum, local):
    base = torch.tensor(_perturbed(vacuum, 50, seed=4))
    x = base.repeat(400, 1)  # 20000 configurations: 10000 (>= 0.1 s) per worker
    expected = local.energy(base).repeat(400)
    with OpenMMEnergy(vacuum, n_workers=2) as energy:
        energy.start()
        victim = energy.worker_pids[1]
        killer = threading.Thread(target=_kill_when_busy, args=(victim,))
        killer.start()
        u = energy.energy(x)
        killer.join()
        torch.testing.assert_close(u, expected, rtol=0, atol=0)
        assert energy.last_batch_stats.n_restarts == 1
        assert victim not in energy.worker_pids and len(energy.worker_pids) == 2
        assert all(psutil.pid_exists(p) for p in energy.worker_pids)


def test_worker_dead_between_batches_is_replaced(vacuum, local):
    x = torch.tensor(_perturbed(vacuum, 10, seed=6))
    with OpenMMEnergy(vacuum, n_workers=2) as energy:
        energy.start()
        victim = energy.worker_pids[0]
        os.kill(victim, signal.SIGKILL)
        assert _wait_gone([victim], 2.0)
        torch.testing.assert_close(energy.energy(x), local.energy(x), rtol=0, atol=0)
        assert victim not in energy.worker_pids


def test_hung_worker_times_out_and_is_replaced(vacuum, local):
    x = torch.tensor(_perturbed(vacuum, 40, seed=8))
    with OpenMMEnergy(vacuum, n_workers=2, timeout=1.0) as energy:
        energy.start()
        energy._fault_hook = {"chunk": 1, "action": "sleep", "seconds": 60.0}
        t0 = time.monotonic()
        u = energy.energy(x)
        assert time.monotonic() - t0 < 10.0
        torch.testing.assert_close(u, local.energy(x), rtol=0, atol=0)
        stats = energy.last_batch_stats
        assert stats.n_retries == 1 and stats.n_restarts == 1


def test_chunk_failing_every_retry_raises_a_clear_error(vacuum, local):
    x = torch.tensor(_perturbed(vacuum, 40, seed=9))
    with OpenMMEnergy(vacuum, n_workers=2, timeout=0.5, max_retries=1) as energy:
        energy._fault_hook = {"chunk": 1, "action": "sleep", "seconds": 60.0, "attempts": 99}
        with pytest.raises(OpenMMWorkerError, match=r"chunk 1 \(rows 20:40 of a batch of 40\)"):
            energy.energy(x)
        energy._fault_hook = {"chunk": 0, "action": "raise", "attempts": 99}
        with pytest.raises(OpenMMWorkerError, match="(?s)failed 2 times.*fault injected"):
            energy.energy(x)
        energy._fault_hook = None  # the pool still works afterwards
        torch.testing.assert_close(energy.energy(x), local.energy(x), rtol=0, atol=0)


def test_worker_that_cannot_create_a_context_raises(vacuum):
    energy = OpenMMEnergy(vacuum, n_workers=1, platform_properties={"NoSuchProperty": "1"})
    with energy, pytest.raises(OpenMMWorkerError, match="could not create its OpenMM Context"):
        energy.energy(torch.tensor(_perturbed(vacuum, 2)))


# ---------------------------------------------------------------------------- shutdown
def test_close_and_context_manager_leave_no_processes(vacuum):
    before = {p.pid for p in _our_children()}  # the module's shared pools
    energy = OpenMMEnergy(vacuum, n_workers=2)
    x = torch.tensor(_perturbed(vacuum, 4))
    energy.energy(x)
    pids = energy.worker_pids
    assert len(pids) == 2 and all(psutil.pid_exists(p) for p in pids)
    energy.close()
    energy.close()  # idempotent
    assert energy.worker_pids == [] and all(_gone(p) for p in pids)
    with energy:  # usable again: a fresh pool, closed at the end of the block
        energy.energy(x)
        pids = energy.worker_pids
    assert all(_gone(p) for p in pids)
    assert {p.pid for p in _our_children()} == before
    assert multiprocessing.active_children() == []


def test_garbage_collected_energy_stops_its_workers(vacuum):
    energy = OpenMMEnergy(vacuum, n_workers=2)
    energy.start()
    pids = energy.worker_pids
    del energy
    assert _wait_gone(pids, 3.0)


_SCRIPT_HEADER = """
import os, signal, sys, threading, time
import torch
from physics.openmm.bridge import OpenMMEnergy
from physics.systems import alanine_dipeptide
mol = alanine_dipeptide("vacuum")
energy = OpenMMEnergy(mol, n_workers=2)
x = torch.tensor(mol.positions.reshape(1, -1)).repeat(100000, 1)  # >= 1 s on 2 workers
x = x + 0.01 * torch.randn_like(x)
energy.energy(x[:10])
print("pids", *energy.worker_pids, flush=True)
"""
_SCRIPTS = {
    # Ctrl-C during a batch, the pool recovers; a forked child gets its own pool and leaves
    # the parent's alone; the script exits without close().
    "interrupt": """
threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
try:
    energy.energy(x)
    print("not interrupted", flush=True)
except KeyboardInterrupt:
    print("interrupted", flush=True)
energy.energy(x[:100])
print("pids", *energy.worker_pids, flush=True)
mine = energy.worker_pids
child = os.fork()
if child == 0:  # a forked copy starts its own pool and leaves the parent's alone at exit
    energy.energy(x[:10])
    print("child", *energy.worker_pids, flush=True)
    sys.exit(0)
assert os.waitpid(child, 0)[1] == 0
energy.energy(x[:100])
assert energy.worker_pids == mine and energy.last_batch_stats.n_restarts == 0
print("end", time.monotonic(), flush=True)
""",
    # The parent dies by kill -9: its workers must not outlive it.
    "parent-killed": "os.kill(os.getpid(), signal.SIGKILL)\n",
}


@pytest.fixture(scope="module")
def scripts():
    """Run the scripts above side by side (each pays ~3 s of imports); their outcomes."""
    flags = ["-W", "error", "-W", "ignore:`torch.jit.script` is deprecated:DeprecationWarning"]
    procs = {
        name: subprocess.Popen(
            [sys.executable, *flags, "-c", _SCRIPT_HEADER + body],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, body in _SCRIPTS.items()
    }
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        out[name] = SimpleNamespace(
            returncode=proc.returncode, stdout=stdout, stderr=stderr, ended=time.monotonic()
        )
    return out


def _pids(stdout: str) -> list[int]:
    lines = [line.split()[1:] for line in stdout.splitlines() if line.startswith("pids")]
    return [int(p) for line in lines for p in line]


def test_script_interrupted_mid_batch_forked_then_exiting_without_close(scripts):
    result = scripts["interrupt"]
    assert result.returncode == 0, result.stderr
    assert "interrupted" in result.stdout.split(), result.stdout
    assert result.stderr == "", result.stderr
    pids = _pids(result.stdout)
    child = [
        int(p)
        for line in result.stdout.splitlines()
        if line.startswith("child")
        for p in line.split()[1:]
    ]
    assert len(pids) == 4 and len(set(child) | set(pids)) == 6
    assert _wait_gone(pids + child, 2.0)
    end = float(result.stdout.split("end")[-1])
    assert result.ended - end < 5.0  # the atexit shutdown of the pool takes well under 5 s


def test_workers_exit_when_their_parent_is_killed(scripts):
    result = scripts["parent-killed"]
    assert result.returncode == -signal.SIGKILL, result.stderr
    pids = _pids(result.stdout)
    assert len(pids) == 2 and _wait_gone(pids, 3.0)


# ---------------------------------------------------------------------------- executors
def test_thread_pool_executor_retries_and_names_the_failed_chunk(vacuum, local):
    x = torch.tensor(_perturbed(vacuum, 30, seed=10))
    with cf.ThreadPoolExecutor(3) as executor:
        energy = OpenMMEnergy(vacuum, executor=executor, max_retries=1)
        assert energy.mode == "executor"
        energy._fault_hook = {"chunk": 2, "action": "raise"}
        torch.testing.assert_close(energy.energy(x), local.energy(x), rtol=0, atol=0)
        assert energy.last_batch_stats.n_chunks == 3 and energy.last_batch_stats.n_retries == 1
        energy._fault_hook = {"chunk": 1, "action": "raise", "attempts": 9}
        with pytest.raises(OpenMMWorkerError, match=r"chunk 1 \(rows 10:20 of a batch of 30\)"):
            energy.energy(x)
        timed = OpenMMEnergy(vacuum, executor=executor, n_workers=2, timeout=0.2)
        timed._fault_hook = {"chunk": 0, "action": "sleep", "seconds": 0.6}
        torch.testing.assert_close(timed.energy(x), local.energy(x), rtol=0, atol=0)
        assert timed.last_batch_stats.n_retries == 1


@pytest.fixture(scope="module")
def forkserver():
    """multiprocessing's fork server with physics (and Dask) imported once: executor processes
    forked from it start in milliseconds instead of importing torch for seconds each."""
    preload = ["physics.openmm.remote"]
    try:
        import distributed  # noqa: F401

        preload.insert(0, "distributed")
    except ImportError:
        pass
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(preload)
    return context


def test_process_pool_executor_matches_local_pool(vacuum, pool, configs, forkserver):
    x, e_ref, f_ref = configs[("vacuum", "amber99sbildn")]
    with cf.ProcessPoolExecutor(2, mp_context=forkserver) as executor:
        energy = OpenMMEnergy(vacuum, executor=executor)
        _check_against(energy, x, e_ref, f_ref)
        assert energy.last_batch_stats.n_chunks == 2
        xt = torch.tensor(x)
        assert torch.equal(energy.energy(xt), pool.energy(xt))


def test_dask_executor_matches_local_pool_and_direct(molecules, pools, configs, forkserver):
    distributed = pytest.importorskip("distributed", reason="Dask scale-out needs `distributed`")
    import dask

    key = ("implicit", "amber99sbildn")
    x, e_ref, f_ref = configs[key]
    with dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"}):
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        )
    try:
        client = distributed.Client(cluster)
        try:
            energy = OpenMMEnergy(molecules[key], executor=client.get_executor(), n_workers=2)
            _check_against(energy, x, e_ref, f_ref)
            xt = torch.tensor(x)
            u, force = energy.energy_and_force(xt)
            u_pool, force_pool = pools[key].energy_and_force(xt)
            assert torch.equal(u, u_pool) and torch.equal(force, force_pool)
            assert energy.last_batch_stats.n_chunks == 2
        finally:
            client.close()
    finally:
        cluster.close()


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("make", "match"),
    [
        (
            lambda x: x.reshape(-1, 22, 3),
            r"expected flat positions of shape \(\*batch, 66\).*\(8, 22, 3\)",
        ),
        (
            lambda x: x[:, :65],
            r"expected floating-point points of shape \(\*batch, 66\).*\(8, 65\)",
        ),
        (lambda x: x[:, :-3], r"\(\*batch, 66\).*\(8, 63\)"),
        (lambda x: x.long(), r"dtype torch.int64"),
        (lambda x: x.to(torch.complex128), r"dtype torch.complex128"),
        (lambda x: x.numpy(), r"expected a tensor of points, got ndarray"),
        (lambda x: x[0, 0], r"shape \(\)"),
    ],
    ids=["atoms-by-3", "short", "21-atoms", "int", "complex", "numpy", "scalar"],
)
def test_bad_positions_raise_invalid_input(make, match, local, pool):
    x = torch.tensor(_perturbed(alanine_dipeptide("vacuum")))
    for energy in (local, pool):
        for method in (energy.energy, energy.energy_and_force, energy.force):
            with pytest.raises(InvalidInput, match=f"^OpenMMEnergy: (?s:.*){match}"):
                method(make(x))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"system": "not a system"}, "expected an openmm.System or an object with .system"),
        ({"system": openmm.System()}, "at least one particle, got 0"),
        ({"n_workers": -1}, "n_workers as an integer >= 0, got -1"),
        ({"n_workers": True}, "n_workers as an integer >= 0, got True"),
        ({"n_workers": 1.5}, "n_workers as an integer >= 0, got 1.5"),
        ({"max_retries": -1}, "max_retries as an integer >= 0"),
        ({"timeout": 0}, "timeout as positive seconds or None, got 0"),
        ({"timeout": float("nan")}, "timeout as positive seconds"),
        ({"timeout": "1"}, "timeout as positive seconds"),
        ({"executor": "dask"}, "concurrent.futures.Executor, got str"),
        ({"platform": "NoSuchPlatform"}, "expected platform 'auto' or one of"),
        ({"temperature": -5.0}, r"temperature \(K\) as a positive finite number"),
        ({"temperature": "hot"}, r"temperature \(K\) as a positive number"),
        ({"platform_properties": [("Threads", "1")]}, "platform_properties as a dict"),
    ],
)
def test_bad_constructor_arguments_raise_invalid_input(kwargs, match, vacuum):
    kwargs = {"system": vacuum, **kwargs}
    with pytest.raises(InvalidInput, match=f"^OpenMMEnergy: (?s:.*){match}"):
        OpenMMEnergy(**kwargs)
