"""The energy-throughput benchmark runs end to end on tiny batches and its contenders agree."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "energy_throughput.py"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("energy_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_every_contender_computes_the_same_energies(bench):
    fns, close = bench.contenders("implicit", quick=True)
    try:
        positions = bench.configurations("implicit", 6)
        reference, reference_forces = fns["OpenMM loop"](positions)
        kT = bench.alanine_dipeptide("implicit").kT
        for name, fn in fns.items():
            out = fn(positions)
            energies = np.asarray(out[0], dtype=np.float64)
            forces = np.asarray(out[1], dtype=np.float64).reshape(reference_forces.shape)
            if name.startswith(("bridge", "torch")):  # Energy objects: reduced units
                energies, forces = energies * kT, forces * kT
            tolerance = 1e-3 if "float32" in name else 1e-7
            np.testing.assert_allclose(energies, reference, rtol=tolerance, err_msg=name)
            np.testing.assert_allclose(
                forces, reference_forces, atol=1e3 * tolerance, rtol=tolerance, err_msg=name
            )
    finally:
        close()


def test_run_and_table(bench):
    rates, mem = bench.run(("vacuum",), (4, 8), quick=True, memory=False, threads=1)
    assert all(math.isfinite(r) and r > 0 for r in rates.values())
    lines = bench.table(rates, mem, ("vacuum",), (4, 8))
    rows = [line for line in lines if line.startswith("| ")]
    assert len(rows) == 1 + 7 and "naive bridge, 2 workers" in "\n".join(rows)
    assert any("bridge with 2 workers at batch 8" in line for line in lines)
