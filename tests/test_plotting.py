"""Plots: files are real PNGs, the density heat map shows the model's density."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from manifoldflows.distributions import DiagNormal, StandardNormal
from manifoldflows.plotting import new_axes, plot_density_2d, plot_samples_2d, save_figure

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_density_heat_map_integrates_to_one_and_png_is_written(tmp_path, dtype, device):
    model = DiagNormal(2, loc=torch.tensor([0.5, -0.5]), scale=0.8).to(dtype=dtype, device=device)
    samples = model.sample((100,))
    ax = plot_density_2d(model, grid=100, samples=samples)
    image = np.asarray(ax.images[0].get_array())
    assert image.shape == (100, 100)
    cell = (8.0 / 100) ** 2
    assert abs(image.sum() * cell - 1.0) < 1e-3  # all the mass lies inside [-4, 4]^2
    # origin="lower": row index is y. The mode (0.5, -0.5) sits right of and below the centre.
    row, col = np.unravel_index(np.argmax(image), image.shape)
    assert col > 50 and row < 50
    assert len(ax.collections) == 1  # the scatter of samples
    out = save_figure(ax.figure, tmp_path / "nested" / "density.png")
    data = out.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000


def test_density_of_conditional_model_uses_the_context():
    model = DiagNormal(2, context_dim=1)
    with torch.no_grad():
        model.context_offsets.net[-1].bias.copy_(torch.tensor([2.0, 0.0, 0.0, 0.0]))  # x += 2
    img0 = np.asarray(plot_density_2d(model, grid=40, context=torch.zeros(1)).images[0].get_array())
    ref = np.asarray(plot_density_2d(StandardNormal(2), grid=40).images[0].get_array())
    assert not np.allclose(img0, ref)  # the bias acts even at context 0
    assert np.allclose(np.roll(ref, 10, axis=1)[:, 10:], img0[:, 10:], rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="plot_density_2d: expected one context vector"):
        plot_density_2d(model, grid=10, context=torch.zeros(3, 1))


def test_density_rejects_bad_arguments():
    with pytest.raises(ValueError, match="plot_density_2d: expected finite bounds"):
        plot_density_2d(StandardNormal(2), bounds=((1, -1), (0, 1)))
    with pytest.raises(ValueError, match="plot_density_2d: expected a model of 2-D points"):
        plot_density_2d(StandardNormal(3))
    with pytest.raises(ValueError, match="grid size >= 2"):
        plot_density_2d(StandardNormal(2), grid=1)


def test_model_mode_is_restored():
    model = StandardNormal(2)
    model.train()
    plot_density_2d(model, grid=4)
    assert model.training


def test_samples_scatter_and_panels(tmp_path):
    left, right = new_axes(2)
    plot_samples_2d(torch.randn(200, 2), ax=left, bounds=((-3, 3), (-2, 2)))
    plot_samples_2d(np.zeros((5, 2)), ax=right)
    offsets = left.collections[0].get_offsets()
    assert offsets.shape == (200, 2)
    assert tuple(float(v) for v in left.get_xlim()) == (-3.0, 3.0)
    out = save_figure(right, tmp_path / "s.png")  # axes are accepted too
    assert out.read_bytes().startswith(PNG_SIGNATURE)
    with pytest.raises(ValueError, match=r"plot_samples_2d: expected points of shape \(n, 2\)"):
        plot_samples_2d(torch.zeros(4, 3))
    with pytest.raises(TypeError, match="save_figure: expected a matplotlib Figure or Axes"):
        save_figure("not a figure", tmp_path / "x.png")
