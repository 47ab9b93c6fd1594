"""Toy 2-D densities: shapes, dtypes, reproducibility and the geometry each one promises."""

from __future__ import annotations

import math

import pytest
import torch

from manifoldflows.datasets import (
    TOY_DATASETS,
    checkerboard,
    eight_gaussians,
    pinwheel,
    two_moons,
)


@pytest.mark.parametrize("name", sorted(TOY_DATASETS))
def test_shape_dtype_and_reproducibility(name):
    sampler = TOY_DATASETS[name]
    x = sampler(301, generator=torch.Generator().manual_seed(5))
    assert x.shape == (301, 2)
    assert x.dtype == torch.get_default_dtype()
    assert bool(torch.isfinite(x).all())
    y = sampler(301, generator=torch.Generator().manual_seed(5))
    z = sampler(301, generator=torch.Generator().manual_seed(6))
    assert torch.equal(x, y)
    assert not torch.equal(x, z)
    assert sampler(0).shape == (0, 2)


@pytest.mark.parametrize("name", sorted(TOY_DATASETS))
def test_follows_default_dtype(name):
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        assert TOY_DATASETS[name](3).dtype == torch.float64
    finally:
        torch.set_default_dtype(old)


@pytest.mark.parametrize("name", sorted(TOY_DATASETS))
def test_samples_are_iid_and_centred(name):
    # iid: the mixture components are interleaved, so any half has the same mean (the origin)
    x = TOY_DATASETS[name](20000, generator=torch.Generator().manual_seed(0)).double()
    for half in (x[:10000], x[10000:]):
        assert half.mean(0).abs().max().item() < 0.1
    assert x.abs().max().item() < 5.0


def test_two_moons_lie_on_two_radius_two_half_circles():
    x = two_moons(4000, noise=0.0, generator=torch.Generator().manual_seed(0)).double()
    centre1 = torch.tensor([-1.0, -0.5], dtype=torch.float64)  # 2 * (-1/2, -1/4)
    centre2 = -centre1
    d1 = (x - centre1).norm(dim=-1)
    d2 = (x - centre2).norm(dim=-1)
    on_moon = torch.minimum((d1 - 2).abs(), (d2 - 2).abs())
    assert on_moon.max().item() < 1e-5
    first = (d1 - 2).abs() < 1e-5
    assert bool((x[first, 1] >= centre1[1] - 1e-6).all())  # the upper half of circle 1
    assert 0.45 < first.double().mean().item() < 0.55


def test_eight_gaussians_components():
    x = eight_gaussians(8000, radius=3.0, std=0.1, generator=torch.Generator().manual_seed(0))
    angle = torch.atan2(x[:, 1], x[:, 0])
    k = torch.round(angle / (math.pi / 4)) % 8
    counts = torch.bincount(k.long(), minlength=8)
    assert counts.min().item() > 850 and counts.max().item() < 1150
    assert (x.norm(dim=-1) - 3.0).abs().max().item() < 0.6


def test_checkerboard_only_dark_cells_all_equally_likely():
    x = checkerboard(16000, cells=4, width=8.0, generator=torch.Generator().manual_seed(0))
    assert x.min().item() >= -4.0 and x.max().item() <= 4.0
    cell = torch.floor((x + 4.0) / 2.0).long().clamp(0, 3)
    assert bool(((cell.sum(-1) % 2) == 0).all())
    counts = torch.bincount(cell[:, 0] * 4 + cell[:, 1], minlength=16)
    dark = counts[counts > 0]
    assert dark.numel() == 8 and dark.min().item() > 1700 and dark.max().item() < 2300


def test_pinwheel_without_spread_gives_straight_arms():
    x = pinwheel(600, arms=3, radial_std=0.0, tangential_std=0.0, rate=0.0, radius=1.5)
    angles = torch.atan2(x[:, 1], x[:, 0])
    expected = torch.tensor([0.0, 2 * math.pi / 3, -2 * math.pi / 3])
    dist = (angles[:, None] - expected[None]).abs().min(-1).values
    assert dist.max().item() < 1e-5
    assert torch.allclose(x.norm(dim=-1), torch.full((600,), 1.5), atol=1e-5)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: two_moons(-1), "two_moons: expected a non-negative integer number of samples"),
        (lambda: two_moons(2.5), "two_moons: expected a non-negative integer"),
        (lambda: two_moons(3, noise=-0.1), "two_moons: expected a non-negative finite noise"),
        (lambda: checkerboard(3, cells=0), "checkerboard: expected a positive integer number"),
        (lambda: pinwheel(3, arms=0), "pinwheel: expected a positive integer number of arms"),
        (lambda: eight_gaussians(3, std=math.nan), "eight_gaussians: expected a non-negative"),
    ],
)
def test_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()
