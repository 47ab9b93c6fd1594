"""Energy+force evaluations per second for alanine dipeptide: OpenMM bridges and the torch
force field, side by side in one run.

Contenders (each evaluates energies *and* forces of a batch of configurations):

* ``OpenMM loop``: the bare single-process loop ``context.setPositions(x_i)`` +
  ``context.getState(getEnergy=True, getForces=True)`` on one Reference-platform context,
  reading ``getPotentialEnergy()._value`` and ``getForces(asNumpy=True)._value`` (OpenMM's
  own units, no unit conversion): the ceiling of one process written with OpenMM's public
  API, and the unit of the speed-ups.
* ``bridge, in-process`` / ``bridge, 1 worker`` / ``bridge, 2 workers``:
  :class:`physics.openmm.OpenMMEnergy` with ``n_workers=0, 1, 2`` (chunks of whole arrays).
* ``naive bridge, 2 workers``: two worker processes fed one queue message per configuration
  and answering one message per configuration (the design of bgflow's multi-process OpenMM
  bridge), written here as the baseline.
* ``torch FF float32`` / ``float64``: :class:`physics.openmm.TorchForceField`, vectorised over
  the batch (forces by autograd or analytic, whichever the class uses), torch threads = cores.

Configurations: the minimised structure plus Gaussian noise of 0.01 nm per coordinate (the
cost of OpenMM does not depend on them; the same arrays go to every contender). Times are
medians over round-robin repeats after a warm-up (pools are started before timing). Peak memory
of the torch force field is the peak resident-memory increase of one evaluation in a fresh
process.

Targets (issue "Molecular energies at full speed", same run, 2 cores): bridge with 2 workers
>= 1.8x the OpenMM loop at batch 16384 and >= 2x the naive bridge; torch FF >= 10x the OpenMM
loop at batch 4096.

Run::

    .venv/bin/python benchmarks/energy_throughput.py           # -> results/energy_throughput.md
    .venv/bin/python benchmarks/energy_throughput.py --quick   # small batches, no file written
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import openmm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    interleaved_median_times,
    machine_header,
    markdown_table,
    peak_rss_increase_mib,
    write_result,
)

from physics.openmm import OpenMMEnergy, TorchForceField  # noqa: E402
from physics.systems import alanine_dipeptide  # noqa: E402

BATCHES = (64, 1024, 4096, 16384)
SOLVENTS = ("vacuum", "implicit")
KJ_PER_MOL = openmm.unit.kilojoule_per_mole
NM = openmm.unit.nanometer


# ----------------------------------------------------------------------------- bare loop
def _reference_context(xml: str) -> openmm.Context:
    system = openmm.XmlSerializer.deserialize(xml)
    return openmm.Context(
        system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
    )


def openmm_loop(context: openmm.Context, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The bare loop: one setPositions + getState per configuration, ``positions (B, N, 3)``."""
    energies = np.empty(len(positions))
    forces = np.empty_like(positions)
    for i, xyz in enumerate(positions):
        context.setPositions(xyz)
        state = context.getState(getEnergy=True, getForces=True)
        energies[i] = state.getPotentialEnergy()._value  # kJ/mol: OpenMM's own unit
        forces[i] = state.getForces(asNumpy=True)._value  # kJ/mol/nm
    return energies, forces


# ----------------------------------------------------------------------------- naive bridge
def _naive_worker(xml: str, tasks: mp.Queue, results: mp.Queue) -> None:
    context = _reference_context(xml)
    while True:
        task = tasks.get()
        if task is None:
            return
        index, xyz = task
        context.setPositions(xyz)
        state = context.getState(getEnergy=True, getForces=True)
        results.put(
            (
                index,
                state.getPotentialEnergy().value_in_unit(KJ_PER_MOL),
                state.getForces(asNumpy=True).value_in_unit(KJ_PER_MOL / NM),
            )
        )


class NaiveBridge:
    """One queue message per configuration each way (bgflow's multi-process design)."""

    def __init__(self, xml: str, n_workers: int):
        ctx = mp.get_context("spawn")
        self.tasks, self.results = ctx.Queue(), ctx.Queue()
        self.workers = [
            ctx.Process(target=_naive_worker, args=(xml, self.tasks, self.results), daemon=True)
            for _ in range(n_workers)
        ]
        for worker in self.workers:
            worker.start()

    def __call__(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        for i, xyz in enumerate(positions):
            self.tasks.put((i, xyz))
        energies = np.empty(len(positions))
        forces = np.empty_like(positions)
        for _ in range(len(positions)):
            i, energy, force = self.results.get()
            energies[i], forces[i] = energy, force
        return energies, forces

    def close(self) -> None:
        for _ in self.workers:
            self.tasks.put(None)
        for worker in self.workers:
            worker.join(timeout=10)


# ----------------------------------------------------------------------------- set-up
def configurations(solvent: str, batch: int, seed: int = 0) -> np.ndarray:
    ala2 = alanine_dipeptide(solvent)
    rng = np.random.default_rng(seed)
    base = ala2.minimized_positions()
    return base[None] + 0.01 * rng.standard_normal((batch, ala2.n_atoms, 3))


def contenders(solvent: str, quick: bool = False) -> tuple[dict[str, Callable], Callable[[], None]]:
    """name -> function(positions (B, N, 3) float64 nm) evaluating energies and forces."""
    ala2 = alanine_dipeptide(solvent)
    context = _reference_context(ala2.serialize())
    bridges = {k: OpenMMEnergy(ala2, n_workers=k, platform="Reference") for k in (0, 1, 2)}
    naive = NaiveBridge(ala2.serialize(), 2)
    fns: dict[str, Callable] = {"OpenMM loop": lambda p: openmm_loop(context, p)}
    for k, name in ((0, "bridge, in-process"), (1, "bridge, 1 worker"), (2, "bridge, 2 workers")):
        bridge = bridges[k]
        fns[name] = lambda p, b=bridge: b.energy_and_force(torch.from_numpy(p.reshape(len(p), -1)))
    fns["naive bridge, 2 workers"] = naive
    for dtype in (torch.float32, torch.float64):
        ff = TorchForceField.from_openmm(ala2)
        name = f"torch FF {str(dtype).removeprefix('torch.')}"
        fns[name] = lambda p, f=ff, d=dtype: f.energy_and_force(
            torch.as_tensor(p.reshape(len(p), -1), dtype=d)
        )

    def close() -> None:
        naive.close()
        for bridge in bridges.values():
            bridge.close()

    return fns, close


# ----------------------------------------------------------------------------- memory
def memory_worker(solvent: str, batch: int, dtype_name: str) -> float:
    """Peak extra memory (MiB) of one torch force-field evaluation, in this fresh process."""
    ala2 = alanine_dipeptide(solvent)
    ff = TorchForceField.from_openmm(ala2)
    dtype = getattr(torch, dtype_name)
    x = torch.as_tensor(configurations(solvent, batch).reshape(batch, -1), dtype=dtype)
    ff.energy_and_force(x[:2])  # load kernels and caches outside the measurement
    return peak_rss_increase_mib(lambda: ff.energy_and_force(x))


def measure_memory(solvent: str, batch: int, dtype_name: str, threads: int) -> float:
    cmd = [sys.executable, __file__, "--memory-worker", solvent, str(batch), dtype_name]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["mib"]


# ----------------------------------------------------------------------------- run
def repeats_for(batch: int, quick: bool) -> int:
    if quick:
        return 2
    return {64: 30, 1024: 7, 4096: 5}.get(batch, 3)


def run(
    solvents: tuple[str, ...], batches: tuple[int, ...], quick: bool, memory: bool, threads: int
) -> tuple[dict, dict]:
    """Rates (evaluations per second) per (solvent, batch, contender) and torch FF memory."""
    rates: dict[tuple[str, int, str], float] = {}
    mem: dict[tuple[str, int, str], float] = {}
    for solvent in solvents:
        fns, close = contenders(solvent, quick)
        try:
            for batch in batches:
                positions = configurations(solvent, batch)
                calls = {name: (lambda f=fn, p=positions: f(p)) for name, fn in fns.items()}
                times = interleaved_median_times(
                    calls, repeats=repeats_for(batch, quick), warmup=1, sync=lambda: None
                )
                for name, seconds in times.items():
                    rates[(solvent, batch, name)] = batch / seconds
                print(
                    f"{solvent:8s} batch {batch:6d}: "
                    + ", ".join(f"{n} {batch / t:,.0f}/s" for n, t in times.items()),
                    flush=True,
                )
        finally:
            close()
        if memory:
            for batch in batches:
                for dtype_name in ("float32", "float64"):
                    mem[(solvent, batch, dtype_name)] = measure_memory(
                        solvent, batch, dtype_name, threads
                    )
    return rates, mem


def table(rates: dict, mem: dict, solvents: tuple[str, ...], batches: tuple[int, ...]) -> list[str]:
    names = sorted({k[2] for k in rates}, key=list(dict.fromkeys(k[2] for k in rates)).index)
    lines: list[str] = []
    for solvent in solvents:
        loop = {b: rates[(solvent, b, "OpenMM loop")] for b in batches}
        rows = []
        for name in names:
            cells = [
                f"{rates[(solvent, b, name)]:,.0f} ({rates[(solvent, b, name)] / loop[b]:.2f}x)"
                for b in batches
            ]
            rows.append([name, *cells])
        if mem:
            for dtype_name in ("float32", "float64"):
                rows.append(
                    [f"torch FF {dtype_name} peak memory (MiB)"]
                    + [f"{mem[(solvent, b, dtype_name)]:.1f}" for b in batches]
                )
        lines += [f"### alanine dipeptide, {solvent}", ""]
        lines += markdown_table(["evaluations/s (x OpenMM loop)", *map(str, batches)], rows)
        lines.append("")
        big = max(batches)
        two = rates[(solvent, big, "bridge, 2 workers")]
        lines.append(
            f"- bridge with 2 workers at batch {big}: {two / loop[big]:.2f}x the OpenMM loop "
            f"(target >= 1.8x), {two / rates[(solvent, big, 'naive bridge, 2 workers')]:.2f}x "
            "the naive bridge (target >= 2x)"
        )
        if 4096 in batches:
            for dtype_name in ("float32", "float64"):
                ratio = rates[(solvent, 4096, f"torch FF {dtype_name}")] / loop[4096]
                lines.append(
                    f"- torch FF {dtype_name} at batch 4096: {ratio:.1f}x the OpenMM loop "
                    "(target >= 10x)"
                )
        lines.append("")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--solvents", nargs="+", default=list(SOLVENTS), choices=SOLVENTS)
    parser.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    parser.add_argument("--quick", action="store_true", help="batches 64 and 1024, no file")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--memory-worker", nargs=3, metavar=("SOLVENT", "BATCH", "DTYPE"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_worker:
        solvent, batch, dtype_name = args.memory_worker
        print(json.dumps({"mib": memory_worker(solvent, int(batch), dtype_name)}))
        return
    batches = (64, 1024) if args.quick else tuple(args.batches)
    solvents = tuple(args.solvents)
    start = time.perf_counter()
    memory = not (args.no_memory or args.quick)
    rates, mem = run(solvents, batches, args.quick, memory, args.threads)
    lines = ["# Energy+force throughput: alanine dipeptide (22 atoms)", ""]
    lines += machine_header(torch.device("cpu"), ["openmm", "numpy"])
    lines += [
        f"- wall time of the run: {time.perf_counter() - start:.0f} s",
        "- configurations: minimised structure + N(0, 0.01 nm) per coordinate; energies and "
        "forces of every configuration; cells are evaluations per second (median of "
        "round-robin repeats) and, in brackets, the ratio to the bare OpenMM loop",
        "",
    ]
    lines += table(rates, mem, solvents, batches)
    print("\n".join(lines))
    if not args.quick:
        path = write_result("energy_throughput.md", lines)
        print(f"written to {path}")


if __name__ == "__main__":
    main()
