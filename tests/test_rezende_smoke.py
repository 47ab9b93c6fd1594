"""The Rezende et al. (2020) tori-and-spheres benchmark runs end to end on a tiny budget."""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "rezende2020.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("rezende2020", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    # One-time imports (torch.optim pulls in torch._dynamo: seconds on a cold interpreter;
    # matplotlib) are paid here, so that the tests time the benchmark code only.
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    importlib.import_module("matplotlib.figure")
    return module


def test_every_config_builds_a_flow_on_its_targets_space(bench):
    from physics.toy_manifold import rezende2020_targets

    targets = rezende2020_targets()
    assert {c.target for c in bench.CONFIGS} == set(targets)
    for config in bench.CONFIGS:
        flow = bench.build_flow(config)
        assert flow.base.space == targets[config.target].space, config


def test_core_runs_on_a_tiny_budget(bench, tmp_path):
    tiny = [
        bench.Config("torus_correlated", "spline", "TorusNSF", {"layers": 1, "bins": 4}, steps=3),
        bench.Config(
            "sphere_mixture", "recursive", "SphereFlow", {"layers": 1, "bins": 4}, steps=3
        ),
    ]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: extra threads only add synchronisation
    try:
        runs = bench.run(tiny, n_eval=500, log=None)
    finally:
        torch.set_num_threads(threads)
    for result, flow in runs:
        numbers = [result.kl, result.kl_se, result.ess, result.log_z_error, result.wall_time]
        assert all(math.isfinite(v) for v in numbers), result
        assert 0.0 < result.ess <= 1.0 and result.kl_se > 0
        # KL >= 0 up to Monte-Carlo noise; an almost untrained flow is far from the target.
        assert result.kl > -4 * result.kl_se
        assert result.parameters == sum(p.numel() for p in flow.parameters())
    lines = bench.table_lines([r for r, _ in runs])
    assert len(lines) == 2 + len(tiny) and "T^2 correlated" in lines[2]
    paths = bench.plot_results(runs, out_dir=tmp_path, n_samples=50, grid=8)
    assert sorted(p.name for p in paths) == [
        "rezende2020_sphere_mixture.png",
        "rezende2020_torus_correlated.png",
    ]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in paths)


def test_evaluation_of_an_exact_model_gives_zero_kl_and_full_ess(bench):
    # A uniform "flow" on the torus against a flat target (tiny concentration): log w is
    # constant up to the target's variation, so KL ~ 0 and ESS ~ 1.
    from manifoldflows.distributions import VonMises
    from physics.toy_manifold import TorusUnimodal

    target = TorusUnimodal(loc=(0.5, -1.0), concentration=2.0)
    exact = VonMises(2, loc=torch.tensor([0.5, -1.0]), concentration=2.0)
    scores = bench.evaluate(exact, target, 2000, torch.Generator().manual_seed(0))
    assert abs(scores["kl"]) < 1e-5 and scores["ess"] > 1 - 1e-6
    assert abs(scores["log_z_error"]) < 1e-5
