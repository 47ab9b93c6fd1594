"""The Boltzmann-sampling benchmark's core functions run end to end and give finite numbers."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "boltzmann.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("boltzmann_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny(bench):
    return dataclasses.replace(
        bench.QUICK,
        a_steps=5,
        a_samples=500,
        a_repeats=2,
        a_proposal=2000,
        b_steps=5,
        b_refine_steps=3,
        b_refine_batch=32,
        b_layers=1,
        b_ais_levels=2,
        b_ais_mh_steps=2,
        b_repeats=2,
        b_samples=100,
        c_steps=3,
        c_samples=300,
        c_exact=100,
        d_budget=4000,
        batch=32,
        layers=1,
        c_layers=1,
    )


def _finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


def test_counting_energy_counts_configurations(bench):
    counted = bench.CountingEnergy(lambda x: (x**2).sum(-1))
    counted(torch.zeros(3, 4, 2))
    counted.energy(torch.zeros(5, 2))
    assert counted.count == 17


def test_scaled_energy_keeps_log_z(bench):
    # N(0, I) in 2-D: log Z = log(2 pi) in any coordinates
    scaled = bench.ScaledEnergy(lambda x: 0.5 * (x**2).sum(-1), 3.0, 2)
    grid = torch.linspace(-4.0, 4.0, 401, dtype=torch.float64)
    y = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
    h = float(grid[1] - grid[0])
    log_z = torch.logsumexp(-scaled(y), 0) + 2 * math.log(h)
    assert float(log_z) == pytest.approx(math.log(2 * math.pi), abs=1e-6)


def test_sections_give_finite_numbers(bench, tiny):
    torch.manual_seed(0)
    rows_a = bench.section_a(tiny)
    assert [r["kind"] for r in rows_a] == ["plain", "stratified"] * 2
    for row in rows_a:
        assert _finite(row["mae"], row["max_error"], row["stderr"], row["ess"], *row["errors"])
        assert len(row["errors"]) == tiny.a_repeats
        assert row["mae"] <= row["max_error"]
        # both estimators get exactly the same number of energy evaluations per estimate
        assert row["evaluations"] == tiny.a_samples
        assert row["budget"].evaluations >= tiny.a_steps * tiny.batch
    b = bench.section_b(tiny)
    assert len(b["rows"]) == 4
    for row in b["rows"]:
        assert _finite(row["mae"], row["mae_se"], row["ess"]) and 0 <= row["mae"]
        assert row["mae"] <= row["max_error"]
    plain, _, ais, ais_qmc = b["rows"]
    assert plain["evaluations"] == tiny.b_samples  # one energy per IS sample
    # AIS: the initial energy plus one per Metropolis step per level per chain
    assert ais["evaluations"] == tiny.b_samples * (1 + tiny.b_ais_levels)
    steps = tiny.b_ais_levels * tiny.b_ais_mh_steps
    assert ais_qmc["evaluations"] == tiny.b_samples * (1 + steps)
    assert b["rows"][1]["budget"].evaluations > plain["budget"].evaluations
    c = bench.section_c(tiny)
    assert _finite(c["estimate"], c["stderr"], c["kl"], c["kl_se"])
    rows = bench.section_d(tiny)
    assert len(rows) == 3
    for row in rows:
        assert _finite(row["ess"], row["ess_per_eval"], row["error"])
        # equal budgets: nobody overspends
        assert 0 < row["evaluations"] <= tiny.d_budget
        assert 1.0 <= row["ess"] <= row["samples"]
    lines = bench.report_a(rows_a, tiny) + bench.report_b(b)
    lines += bench.report_c(c) + bench.report_d(rows, tiny)
    assert any(line.startswith("| DoubleWell") for line in lines)
