"""Circle, torus and sphere plots: real PNGs, the right density in the right place, clear errors
for models on the wrong space."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from manifoldflows.distributions import Uniform, VonMises, VonMisesFisher
from manifoldflows.plotting import (
    plot_circle_density,
    plot_sphere_density,
    plot_torus_density,
    save_figure,
)
from manifoldflows.presets import TorusNSF
from manifoldflows.spaces import Circle, Sphere, Torus
from physics.toy_manifold import SphereMixture, TorusUnimodal

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000


def test_circle_density_curve_and_png(tmp_path, dtype):
    model = VonMises(1, loc=2.0, concentration=4.0).to(dtype)
    samples = model.sample((500,), generator=torch.Generator().manual_seed(0))
    ax = plot_circle_density(model, samples=samples, grid=400)
    x, y = (np.asarray(v, float) for v in ax.lines[0].get_data())
    assert x[0] == -180.0 and x[-1] == 180.0 and y[0] == y[-1]  # closed around the circle
    assert abs(np.trapezoid(y, np.radians(x)) - 1.0) < 1e-6  # per radian of arc length
    assert abs(x[np.argmax(y)] - math.degrees(2.0)) < 1.0
    assert len(ax.patches) == 1  # the sample histogram
    out = save_figure(ax, tmp_path / "circle.png")
    assert_png(out)


def test_circle_density_of_a_callable_and_of_a_flow(tmp_path):
    ax = plot_circle_density(lambda x: torch.full(x.shape[:-1], -math.log(2 * math.pi)), grid=8)
    assert np.allclose(ax.lines[0].get_ydata(), 1 / (2 * math.pi))
    flow = TorusNSF(1, layers=1, bins=4, hidden=(8,))
    flow.train()
    plot_circle_density(flow, samples=torch.zeros(10), grid=16)
    assert flow.training  # mode restored


def test_torus_heat_map(tmp_path):
    target = TorusUnimodal()
    samples = torch.tensor([[4.18, 5.96], [-1.0, 0.5]]) - 2 * math.pi * torch.tensor([[1.0, 1.0]])
    ax = plot_torus_density(target, samples=samples, grid=90, labels=("phi", "psi"))
    image = np.asarray(ax.images[0].get_array())
    assert image.shape == (90, 90)
    assert abs(image.sum() * (2 * math.pi / 90) ** 2 - 1.0) < 1e-6  # per square radian
    row, col = np.unravel_index(np.argmax(image), image.shape)
    centres = -180 + (np.arange(90) + 0.5) * 4.0
    mode = np.degrees((np.array([4.18, 5.96]) + np.pi) % (2 * np.pi) - np.pi)
    assert abs(centres[col] - mode[0]) <= 2.0 and abs(centres[row] - mode[1]) <= 2.0
    offsets = ax.collections[0].get_offsets()
    assert np.all(np.abs(offsets) <= 180.0)  # samples wrapped into the box
    assert ax.get_xlabel() == "phi" and ax.get_ylabel() == "psi"
    out = save_figure(ax, tmp_path / "torus.png")
    assert_png(out)


def test_torus_heat_map_of_a_flow_with_context():
    flow = TorusNSF(2, layers=1, bins=4, hidden=(8,), context_dim=1)
    ax = plot_torus_density(flow, grid=20, context=torch.zeros(1))
    image = np.asarray(ax.images[0].get_array())
    assert abs(image.sum() * (2 * math.pi / 20) ** 2 - 1.0) < 1e-3
    with pytest.raises(ValueError, match="plot_torus_density: expected one context vector"):
        plot_torus_density(flow, grid=4, context=torch.zeros(2, 1))
    with pytest.raises(ValueError, match="a context needs a model with log_prob"):
        plot_torus_density(lambda x: x[..., 0], grid=4, context=torch.zeros(1))


def test_sphere_map(tmp_path):
    target = SphereMixture()
    samples = torch.tensor(target.centres) * 2.0  # normalised before drawing
    grid = 90
    ax = plot_sphere_density(target, samples=samples, grid=grid)
    assert ax.name == "mollweide"
    mesh = ax.collections[0]
    density = np.asarray(mesh.get_array()).reshape(grid, 2 * grid)
    lat = -np.pi / 2 + (np.arange(grid) + 0.5) * np.pi / grid
    cell = (np.pi / grid) * (np.pi / grid) * np.cos(lat)[:, None]  # surface element
    assert abs((density * cell).sum() - 1.0) < 2e-3
    lon_s, lat_s = ax.collections[1].get_offsets().T
    mu = np.asarray(target.centres)
    assert np.allclose(lon_s, np.arctan2(mu[:, 1], mu[:, 0]))
    assert np.allclose(lat_s, np.arcsin(mu[:, 2]))
    out = save_figure(ax, tmp_path / "sphere.png")
    assert_png(out)


def test_sphere_map_mode_and_projections():
    north = VonMisesFisher(2, loc=torch.tensor([0.0, 0.0, 1.0]), concentration=20.0)
    ax = plot_sphere_density(north, grid=30, projection="hammer")
    assert ax.name == "hammer"
    density = np.asarray(ax.collections[0].get_array()).reshape(30, 60)
    assert np.unravel_index(np.argmax(density), density.shape)[0] == 29  # top latitude row
    from matplotlib.figure import Figure

    geo = Figure().add_subplot(projection="mollweide")
    assert plot_sphere_density(Uniform(Sphere(2)), ax=geo, grid=4) is geo


@pytest.mark.parametrize(
    "plot, model, expected",
    [
        (plot_circle_density, Uniform(Torus(2)), "expected a model on Circle()"),
        (plot_circle_density, Uniform(Sphere(1)), "expected a model on Circle()"),
        (plot_torus_density, Uniform(Circle()), r"expected a model on Torus\(2\)"),
        (plot_torus_density, SphereMixture(), r"expected a model on Torus\(2\)"),
        (plot_sphere_density, Uniform(Torus(2)), r"expected a model on Sphere\(2\)"),
        (plot_sphere_density, Uniform(Sphere(3)), r"expected a model on Sphere\(2\)"),
    ],
)
def test_wrong_space_is_refused(plot, model, expected):
    with pytest.raises(ValueError, match=f"{plot.__name__}: {expected}"):
        plot(model, grid=4)


def test_bad_arguments():
    with pytest.raises(TypeError, match="plot_torus_density: expected a model with log_prob"):
        plot_torus_density("not a model", grid=4)
    with pytest.raises(ValueError, match="plot_torus_density: expected an integer grid size"):
        plot_torus_density(Uniform(Torus(2)), grid=1)
    with pytest.raises(ValueError, match=r"expected samples of shape \(m, 2\)"):
        plot_torus_density(Uniform(Torus(2)), grid=4, samples=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="one value per point"):
        plot_circle_density(lambda x: x, grid=4)
    with pytest.raises(ValueError, match="plot_sphere_density: expected axes with a geographic"):
        from matplotlib.figure import Figure

        plot_sphere_density(Uniform(Sphere(2)), ax=Figure().add_subplot(), grid=4)
    with pytest.raises(ValueError, match="plot_sphere_density: expected a projection"):
        plot_sphere_density(Uniform(Sphere(2)), grid=4, projection="polar")
    with pytest.raises(ValueError, match=r"expected samples of shape \(m, 3\)"):
        plot_sphere_density(Uniform(Sphere(2)), grid=4, samples=torch.zeros(3, 2))
