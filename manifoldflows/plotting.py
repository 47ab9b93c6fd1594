r"""Plots of densities and samples, drawn with matplotlib's object API (no display needed).

Functions return matplotlib ``Axes``; when no ``ax`` is given they create a fresh
:class:`matplotlib.figure.Figure` (not registered with pyplot, so nothing opens a window and no
backend is selected), reachable as ``ax.figure``. :func:`save_figure` writes it to disk.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from ._checks import reference_tensor

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_density_2d", "plot_samples_2d", "save_figure", "new_axes"]

Bounds = Sequence[Sequence[float]]


def new_axes(ncols: int = 1, *, size: float = 4.0) -> list[Axes]:
    """A new figure with ``ncols`` side-by-side axes (object API, no pyplot).

    Arguments:
        ncols: number of panels.
        size: height (and width of each panel) in inches.

    Returns:
        A list of ``ncols`` axes; their common figure is ``axes[0].figure``.

    Example:
        >>> axes = new_axes(2)
        >>> len(axes), axes[0].figure is axes[1].figure
        (2, True)
    """
    from matplotlib.figure import Figure

    if isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"new_axes: expected a positive integer number of panels, got {ncols!r}")
    fig = Figure(figsize=(size * ncols, size), layout="constrained")
    return list(np.atleast_1d(fig.subplots(1, ncols)))


def _check_bounds(bounds: Bounds, who: str) -> tuple[tuple[float, float], tuple[float, float]]:
    try:
        (x0, x1), (y0, y1) = ((float(a), float(b)) for a, b in bounds)
    except (TypeError, ValueError):
        raise ValueError(
            f"{who}: expected bounds ((xmin, xmax), (ymin, ymax)), got {bounds!r}"
        ) from None
    if not (x0 < x1 and y0 < y1) or not all(np.isfinite([x0, x1, y0, y1])):
        raise ValueError(f"{who}: expected finite bounds with min < max, got {bounds!r}")
    return (x0, x1), (y0, y1)


def _to_numpy_points(x: Any, who: str) -> np.ndarray:
    arr = x.detach().cpu().double().numpy() if isinstance(x, Tensor) else np.asarray(x, float)
    if arr.ndim != 2 or arr.shape[-1] != 2:
        raise ValueError(f"{who}: expected points of shape (n, 2), got shape {tuple(arr.shape)}")
    return arr


def plot_density_2d(
    model,
    ax: Axes | None = None,
    bounds: Bounds = ((-4.0, 4.0), (-4.0, 4.0)),
    grid: int = 200,
    samples: Tensor | np.ndarray | None = None,
    context: Tensor | None = None,
    *,
    cmap: str = "viridis",
    chunk: int = 16384,
) -> Axes:
    r"""Heat map of a 2-D model's density ``exp(log q(x))`` on a regular grid.

    The density is evaluated at the centres of a ``grid x grid`` lattice covering ``bounds``,
    in batches of ``chunk`` points, without gradient, in the dtype and on the device of the
    model's parameters. The integral of the shown density over the window,
    ``sum(q) * cell_area``, is a quick check that the window holds the model's mass.

    Arguments:
        model: a distribution or flow on ``R^2`` with ``log_prob(x, context)``.
        ax: axes to draw on (default: a new figure).
        bounds: ``((xmin, xmax), (ymin, ymax))`` of the window.
        grid: number of grid points per axis.
        samples: optional ``(n, 2)`` points scattered on top (tensor or array).
        context: optional single context vector ``(context_dim,)`` (or ``(1, context_dim)``)
            for a conditional model.
        cmap: matplotlib colour map name.
        chunk: grid points per ``log_prob`` call (bounds memory).

    Returns:
        The axes drawn on.

    Example:
        >>> from manifoldflows.distributions import StandardNormal
        >>> ax = plot_density_2d(StandardNormal(2), grid=20)
        >>> [float(v) for v in ax.get_xlim()]
        [-4.0, 4.0]
    """
    who = "plot_density_2d"
    (x0, x1), (y0, y1) = _check_bounds(bounds, who)
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 2:
        raise ValueError(f"{who}: expected an integer grid size >= 2, got {grid!r}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"{who}: expected a positive integer chunk, got {chunk!r}")
    space = getattr(model, "space", None)
    if space is not None and tuple(space.event_shape) != (2,):
        raise ValueError(
            f"{who}: expected a model of 2-D points, got one on {space!r} "
            f"(event shape {tuple(space.event_shape)})"
        )
    ref = reference_tensor(model)
    dtype = ref.dtype if ref is not None else torch.get_default_dtype()
    device = ref.device if ref is not None else torch.device("cpu")
    if context is not None:
        if (
            not isinstance(context, Tensor)
            or context.dim() not in (1, 2)
            or (context.dim() == 2 and context.shape[0] != 1)
        ):
            shape = tuple(context.shape) if isinstance(context, Tensor) else type(context).__name__
            raise ValueError(
                f"{who}: expected one context vector of shape (context_dim,) or "
                f"(1, context_dim), got {shape}"
            )
        context = context.reshape(-1).to(dtype=dtype, device=device)

    dx, dy = (x1 - x0) / grid, (y1 - y0) / grid
    xs = torch.linspace(x0 + dx / 2, x1 - dx / 2, grid, dtype=dtype, device=device)
    ys = torch.linspace(y0 + dy / 2, y1 - dy / 2, grid, dtype=dtype, device=device)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    points = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=-1)
    was_training = getattr(model, "training", False)
    if was_training:
        model.eval()
    try:
        with torch.no_grad():
            log_q = torch.cat([model.log_prob(p, context) for p in points.split(chunk)])
    finally:
        if was_training:
            model.train()
    density = torch.exp(log_q).reshape(grid, grid).cpu().double().numpy()

    if ax is None:
        ax = new_axes(1)[0]
    ax.imshow(
        density,
        origin="lower",
        extent=(x0, x1, y0, y1),
        cmap=cmap,
        aspect="auto",
        interpolation="nearest",
    )
    if samples is not None:
        pts = _to_numpy_points(samples, who)
        ax.scatter(pts[:, 0], pts[:, 1], s=1.5, c="white", alpha=0.4, linewidths=0)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal")
    return ax


def plot_samples_2d(
    x: Tensor | np.ndarray,
    ax: Axes | None = None,
    *,
    bounds: Bounds | None = None,
    size: float = 2.0,
    alpha: float = 0.5,
    color: str = "C0",
) -> Axes:
    """Scatter plot of 2-D points.

    Arguments:
        x: ``(n, 2)`` points (tensor on any device, or array).
        ax: axes to draw on (default: a new figure).
        bounds: optional ``((xmin, xmax), (ymin, ymax))`` window (default: matplotlib's).
        size: marker area in points^2.
        alpha: marker opacity.
        color: marker colour.

    Returns:
        The axes drawn on.

    Example:
        >>> import torch
        >>> ax = plot_samples_2d(torch.zeros(10, 2), bounds=((-1, 1), (-2, 2)))
        >>> [float(v) for v in ax.get_ylim()]
        [-2.0, 2.0]
    """
    who = "plot_samples_2d"
    pts = _to_numpy_points(x, who)
    if ax is None:
        ax = new_axes(1)[0]
    ax.scatter(pts[:, 0], pts[:, 1], s=size, alpha=alpha, c=color, linewidths=0)
    if bounds is not None:
        (x0, x1), (y0, y1) = _check_bounds(bounds, who)
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
    ax.set_aspect("equal")
    return ax


def save_figure(fig: Figure | Axes, path: str | os.PathLike, *, dpi: int = 120) -> Path:
    """Write a figure (or the figure of an axes) to ``path``, creating parent folders.

    The format follows the file extension (``.png``, ``.pdf``, ``.svg``, ...).

    Arguments:
        fig: a matplotlib figure, or axes whose figure is saved.
        path: destination file.
        dpi: resolution for raster formats.

    Returns:
        The path written, as a :class:`pathlib.Path`.

    Example:
        >>> import tempfile, os
        >>> ax = plot_samples_2d(torch.randn(50, 2))
        >>> with tempfile.TemporaryDirectory() as d:
        ...     out = save_figure(ax, os.path.join(d, "sub", "x.png"))
        ...     out.stat().st_size > 0
        True
    """
    figure = getattr(fig, "figure", None) if not hasattr(fig, "savefig") else fig
    if figure is None or not hasattr(figure, "savefig"):
        raise TypeError(
            f"save_figure: expected a matplotlib Figure or Axes, got {type(fig).__name__}"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    return path
