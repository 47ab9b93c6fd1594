"""The density-estimation benchmark runs end to end, and its exact reference densities are right."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "density_estimation.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("density_estimation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def test_benchmark_core_runs_and_gives_finite_numbers(bench, tmp_path):
    config = bench.Config(
        steps=3, steps_high_dim=3, batch_size=32, n_train=64, n_test=64, size="tiny"
    )
    results = bench.run(["two_moons", "gmm16"], bench.MODELS, config, log=None)
    assert [(r.dataset, r.model) for r in results] == [
        (d, m) for d in ("two_moons", "gmm16") for m in bench.MODELS
    ]
    for r in results:
        numbers = [r.entropy, r.entropy_se, r.nll, r.nll_se, r.gap, r.gap_se, r.train_seconds]
        assert all(math.isfinite(v) for v in numbers), r
        assert r.steps == 3 and r.parameters > 0
        # the gap is NLL - H on the same test points
        assert r.gap == pytest.approx(r.nll - r.entropy, abs=1e-9)
    path = bench.plot_densities(results, tmp_path / "grid.png", grid=12)
    assert path.read_bytes().startswith(b"\x89PNG")


def test_benchmark_command_line_quick_mode(bench, capsys):
    argv = ["--quick", "--datasets", "checkerboard", "--models", "MAF", "--steps", "2"]
    bench.main([*argv, "--n-train", "32", "--n-test", "32", "--size", "tiny"])
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    assert len(table) == 3 and "checkerboard" in table[2] and "MAF" in table[2]


@pytest.mark.parametrize("name", ["two_moons", "eight_gaussians", "checkerboard", "pinwheel"])
def test_toy_reference_density_matches_its_sampler(bench, name):
    data = bench._datasets()[name]
    # the exact density integrates to one (midpoint rule on a 0.1 grid over [-5, 5]^2) ...
    n, h = 100, 0.1
    centres = -5 + h * (torch.arange(n, dtype=torch.float64) + 0.5)
    gx, gy = torch.meshgrid(centres, centres, indexing="xy")
    density = data.log_prob(torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)).exp()
    assert float(density.sum()) * h * h == pytest.approx(1.0, abs=2e-3)
    # ... and gives the sampler's bin frequencies (10 x 10 bins of 1 x 1; 5 standard deviations)
    x = data.sample(20_000, torch.Generator().manual_seed(0)).double()
    assert bool(torch.isfinite(data.log_prob(x)).all())
    expected = density.reshape(10, 10, 10, 10).sum((1, 3)) * h * h * x.shape[0]  # (row, col)
    col, row = (torch.floor(x + 5).clamp(0, 9).long()).unbind(-1)
    observed = torch.zeros(10, 10, dtype=torch.float64).index_put_(
        (row, col), torch.ones(x.shape[0], dtype=torch.float64), accumulate=True
    )
    assert bool(((observed - expected).abs() <= 5 * expected.sqrt() + 5).all())


def test_gaussian_mixture_samples_have_the_mixture_moments(bench):
    gmm = bench.GaussianMixture16()
    x = gmm.sample(40_000, torch.Generator().manual_seed(0)).double()
    w = gmm.log_weights.exp()
    mean = (w[:, None] * gmm.means).sum(0)
    second = (w[:, None, None] * (gmm.cov + gmm.means[:, :, None] * gmm.means[:, None, :])).sum(0)
    cov = second - mean[:, None] * mean[None, :]
    se = (cov.diagonal() / x.shape[0]).sqrt()
    assert bool(((x.mean(0) - mean).abs() < 5 * se).all())
    torch.testing.assert_close(torch.cov(x.T), cov, atol=0.1, rtol=0.05)
    # the exact log-density is finite and normalised where it matters: log p of its own samples
    log_p = gmm.log_prob(x)
    assert bool(torch.isfinite(log_p).all())
