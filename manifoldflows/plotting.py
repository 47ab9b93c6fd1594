r"""Plots of densities and samples, drawn with matplotlib's object API (no display needed).

Functions return matplotlib ``Axes``; when no ``ax`` is given they create a fresh
:class:`matplotlib.figure.Figure` (not registered with pyplot, so nothing opens a window and no
backend is selected), reachable as ``ax.figure``. :func:`save_figure` writes it to disk.

Densities on manifolds are drawn w.r.t. the Riemannian volume of their space, as everywhere in
the package: per radian of arc length on the circle (:func:`plot_circle_density`), per square
radian of the angle box on the torus (:func:`plot_torus_density`, axes labelled in degrees) and
per unit of surface area on the sphere (:func:`plot_sphere_density`, an equal-area map).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import numpy as np
import torch
from torch import Tensor

from ._checks import reference_tensor
from .spaces import Circle, Sphere, Torus

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .distributions.base import Distribution
    from .spaces import Space

__all__ = [
    "plot_density_2d",
    "plot_samples_2d",
    "plot_circle_density",
    "plot_torus_density",
    "torus_histogram",
    "plot_torus_histogram",
    "plot_sphere_density",
    "save_figure",
    "new_axes",
]

Bounds = Sequence[Sequence[float]]


class HasLogProb(Protocol):
    """An object with ``log_prob(x)`` (or ``log_prob(x, context)``): a distribution, a flow, or a
    target of :mod:`physics.toy_manifold`."""

    def log_prob(self, x: Tensor, /, *args: Any, **kwargs: Any) -> Tensor: ...


#: What the manifold plots accept: an object with ``log_prob`` or a callable ``x -> log p(x)``.
DensityModel: TypeAlias = HasLogProb | Callable[[Tensor], Tensor]


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


def _to_numpy_points(x: Tensor | np.ndarray, who: str) -> np.ndarray:
    arr = x.detach().cpu().double().numpy() if isinstance(x, Tensor) else np.asarray(x, float)
    if arr.ndim != 2 or arr.shape[-1] != 2:
        raise ValueError(f"{who}: expected points of shape (n, 2), got shape {tuple(arr.shape)}")
    return arr


def plot_density_2d(
    model: Distribution,
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
    context = _single_context(context, who, dtype, device)

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


# ---------------------------------------------------------------------------- manifolds


def _check_grid(grid: int, who: str, low: int = 2) -> int:
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < low:
        raise ValueError(f"{who}: expected an integer grid size >= {low}, got {grid!r}")
    return grid


def _density_source(
    model: DensityModel, space: Space, who: str
) -> tuple[
    Callable[[Tensor, Tensor | None], Tensor], torch.nn.Module | None, torch.dtype, torch.device
]:
    """Validate ``model`` (an object with ``log_prob`` or a callable log-density) against the
    space the plot needs; return ``(log_density, module_or_None, dtype, device)``.

    Targets whose ``log_prob`` is unnormalised (``-energy``) but that know their normalising
    constant offer ``normalized_log_prob``; it is preferred, so plots show densities."""
    log_prob = getattr(model, "normalized_log_prob", None) or getattr(model, "log_prob", None)
    if log_prob is None or not callable(log_prob):
        if not callable(model):
            raise TypeError(
                f"{who}: expected a model with log_prob(x) or a callable log-density x -> "
                f"log p(x), got {type(model).__name__}"
            )
        log_prob = None
    model_space = getattr(model, "space", None)
    if model_space is not None and model_space != space:
        raise ValueError(
            f"{who}: expected a model on {space!r} (event shape {tuple(space.event_shape)}), "
            f"got one on {model_space!r}"
        )
    module = model if isinstance(model, torch.nn.Module) else None
    ref = reference_tensor(module) if module is not None else None
    dtype = ref.dtype if ref is not None else torch.get_default_dtype()
    device = ref.device if ref is not None else torch.device("cpu")
    if log_prob is not None:

        def fn(x: Tensor, context: Tensor | None) -> Tensor:
            return log_prob(x, context) if context is not None else log_prob(x)

    else:

        def fn(x: Tensor, context: Tensor | None) -> Tensor:
            if context is not None:
                raise ValueError(f"{who}: a context needs a model with log_prob(x, context)")
            return model(x)

    return fn, module, dtype, device


def _single_context(
    context: Tensor | None, who: str, dtype: torch.dtype, device: torch.device
) -> Tensor | None:
    if context is None:
        return None
    if (
        not isinstance(context, Tensor)
        or context.dim() not in (1, 2)
        or (context.dim() == 2 and context.shape[0] != 1)
    ):
        shape = tuple(context.shape) if isinstance(context, Tensor) else type(context).__name__
        raise ValueError(
            f"{who}: expected one context vector of shape (context_dim,) or (1, context_dim), "
            f"got {shape}"
        )
    return context.reshape(-1).to(dtype=dtype, device=device)


def _evaluate_density(
    model: DensityModel,
    space: Space,
    points: Tensor,
    context: Tensor | None,
    chunk: int,
    who: str,
) -> np.ndarray:
    """``exp(log p)`` at ``points`` (no gradient, eval mode, in chunks) as a float64 array."""
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"{who}: expected a positive integer chunk, got {chunk!r}")
    fn, module, dtype, device = _density_source(model, space, who)
    context = _single_context(context, who, dtype, device)
    points = points.to(dtype=dtype, device=device)
    was_training = getattr(module, "training", False)
    if was_training:
        module.eval()
    try:
        with torch.no_grad():
            parts = []
            for p in points.split(chunk):
                log_p = fn(p, context)
                if not isinstance(log_p, Tensor) or tuple(log_p.shape) != tuple(p.shape[:-1]):
                    got = tuple(log_p.shape) if isinstance(log_p, Tensor) else type(log_p)
                    raise ValueError(
                        f"{who}: expected the log-density to return one value per point, shape "
                        f"{tuple(p.shape[:-1])}, got {got}"
                    )
                parts.append(log_p)
            log_p = torch.cat(parts)
    finally:
        if was_training:
            module.train()
    return torch.exp(log_p).cpu().double().numpy()


def _angles(samples: Tensor | np.ndarray, n: int, who: str) -> np.ndarray:
    """Samples on ``Torus(n)`` as an ``(m, n)`` float64 array of angles wrapped to [-pi, pi)."""
    arr = (
        samples.detach().cpu().double().numpy()
        if isinstance(samples, Tensor)
        else np.asarray(samples, float)
    )
    if n == 1 and arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[-1] != n:
        raise ValueError(
            f"{who}: expected samples of shape (m, {n}) (angles in radians), got shape "
            f"{tuple(arr.shape)}"
        )
    return np.mod(arr + np.pi, 2 * np.pi) - np.pi


def plot_circle_density(
    model: DensityModel,
    ax: Axes | None = None,
    samples: Tensor | np.ndarray | None = None,
    context: Tensor | None = None,
    *,
    grid: int = 512,
    bins: int = 60,
    color: str = "C0",
    chunk: int = 16384,
) -> Axes:
    r"""Density of a model on the circle against the angle in degrees, with a sample histogram.

    The density ``q(theta)`` is w.r.t. arc length (per radian, so that
    ``int_{-pi}^{pi} q(theta) d theta = 1``); it is evaluated at ``grid`` equally spaced angles
    in ``[-pi, pi)`` and drawn as a curve over ``[-180, 180]`` degrees (the ends are the same
    point of the circle). Samples, if given, are shown as a normalised histogram in the same
    units (per radian).

    Arguments:
        model: a distribution or flow on ``Circle()`` (= ``Torus(1)``) with ``log_prob``, or a
            callable ``theta -> log q(theta)`` taking angles of shape ``(m, 1)``.
        ax: axes to draw on (default: a new figure).
        samples: optional angles in radians, shape ``(m,)`` or ``(m, 1)``.
        context: optional single context vector for a conditional model.
        grid: number of evaluation angles.
        bins: histogram bins for the samples.
        color: colour of the density curve.
        chunk: angles per ``log_prob`` call.

    Returns:
        The axes drawn on.

    Raises:
        ValueError: if the model lives on another space, or for bad sizes.

    Example:
        >>> from manifoldflows.distributions import Uniform
        >>> from manifoldflows.spaces import Circle
        >>> ax = plot_circle_density(Uniform(Circle()), grid=16)
        >>> round(float(ax.lines[0].get_ydata().max() * 2 * math.pi), 6)  # 1 / (2 pi)
        1.0
    """
    who = "plot_circle_density"
    grid = _check_grid(grid, who)
    bins = _check_grid(bins, who, low=1)
    space = Circle()
    theta = -math.pi + 2 * math.pi * torch.arange(grid + 1, dtype=torch.float64) / grid
    density = _evaluate_density(model, space, theta[:-1, None], context, chunk, who)
    density = np.append(density, density[0])  # close the curve at +180 degrees
    if ax is None:
        ax = new_axes(1)[0]
        ax.figure.set_size_inches(6.0, 3.5)
    if samples is not None:
        angles = _angles(samples, 1, who)[:, 0]
        values, edges = np.histogram(angles, bins=bins, range=(-np.pi, np.pi), density=True)
        ax.stairs(values, np.degrees(edges), fill=True, color="0.8", label="samples")
    ax.plot(np.degrees(theta.numpy()), density, color=color, lw=1.5, label="density")
    ax.set_xlim(-180.0, 180.0)
    ax.set_xticks([-180, -90, 0, 90, 180])
    ax.set_xlabel("angle (degrees)")
    ax.set_ylabel("density (per radian)")
    ax.set_ylim(bottom=0.0)
    return ax


def plot_torus_density(
    model: DensityModel,
    ax: Axes | None = None,
    samples: Tensor | np.ndarray | None = None,
    context: Tensor | None = None,
    *,
    grid: int = 200,
    labels: Sequence[str] = ("angle 1 (degrees)", "angle 2 (degrees)"),
    cmap: str = "viridis",
    sample_size: float = 1.5,
    chunk: int = 16384,
) -> Axes:
    r"""Heat map of a density on the torus ``T^2`` with periodic axes in degrees (Ramachandran).

    The density ``q(t_1, t_2)`` is w.r.t. the Lebesgue measure on the angle box
    ``[-pi, pi)^2`` (per square radian, so that the pixels sum to 1 after multiplying by the
    cell area ``(2 pi / grid)^2``); it is evaluated at the cell centres of a ``grid x grid``
    lattice. The axes run over ``[-180, 180]`` degrees with ticks every 90 degrees, the first
    angle horizontally, as in a Ramachandran plot of backbone dihedrals ``(phi, psi)``
    (``labels=("phi", "psi")``). Samples, wrapped to ``[-pi, pi)``, are overlaid as white dots.

    Arguments:
        model: a distribution or flow on ``Torus(2)`` with ``log_prob``, or a callable
            ``x -> log q(x)`` taking angles of shape ``(m, 2)`` (radians).
        ax: axes to draw on (default: a new figure).
        samples: optional ``(m, 2)`` angles in radians.
        context: optional single context vector for a conditional model.
        grid: cells per axis.
        labels: axis labels (first and second angle).
        cmap: matplotlib colour map name.
        sample_size: marker area of the samples.
        chunk: grid points per ``log_prob`` call.

    Returns:
        The axes drawn on.

    Raises:
        ValueError: if the model lives on another space, or for bad sizes.

    Example:
        >>> from manifoldflows.distributions import Uniform
        >>> from manifoldflows.spaces import Torus
        >>> ax = plot_torus_density(Uniform(Torus(2)), grid=8, samples=torch.zeros(5, 2))
        >>> [float(v) for v in ax.get_xlim()], len(ax.collections)
        ([-180.0, 180.0], 1)
    """
    who = "plot_torus_density"
    grid = _check_grid(grid, who)
    xlabel, ylabel = _two_labels(labels, who)
    space = Torus(2)
    centres = -math.pi + (torch.arange(grid, dtype=torch.float64) + 0.5) * (2 * math.pi / grid)
    g1, g2 = torch.meshgrid(centres, centres, indexing="xy")  # rows: second angle
    points = torch.stack([g1.reshape(-1), g2.reshape(-1)], dim=-1)
    density = _evaluate_density(model, space, points, context, chunk, who).reshape(grid, grid)
    if ax is None:
        ax = new_axes(1)[0]
    ax.imshow(
        density,
        origin="lower",
        extent=(-180.0, 180.0, -180.0, 180.0),
        cmap=cmap,
        interpolation="nearest",
    )
    if samples is not None:
        pts = np.degrees(_angles(samples, 2, who))
        ax.scatter(pts[:, 0], pts[:, 1], s=sample_size, c="white", alpha=0.4, linewidths=0)
    return _torus_frame(ax, xlabel, ylabel)


def _torus_frame(ax: Axes, xlabel: str, ylabel: str) -> Axes:
    """Square ``[-180, 180]^2`` degree axes with ticks every 90 degrees and the labels."""
    ax.set_xlim(-180.0, 180.0)
    ax.set_ylim(-180.0, 180.0)
    ticks = [-180, -90, 0, 90, 180]
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_aspect("equal")
    return ax


def _two_labels(labels: Sequence[str], who: str) -> tuple[str, str]:
    try:
        first, second = (str(v) for v in labels)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: expected two axis labels, got {labels!r}") from None
    return first, second


def torus_histogram(
    angles: Tensor | np.ndarray,
    weights: Tensor | np.ndarray | None = None,
    *,
    bins: int = 64,
) -> np.ndarray:
    r"""Normalised histogram of points on the torus ``T^2`` over ``[-pi, pi)^2``.

    Angles are wrapped to ``[-pi, pi)`` and counted in ``bins x bins`` equal cells; with
    weights each point counts with its weight. The result sums to 1:

    .. math:: P_{ij} = \frac{\sum_k w_k\, 1[(t_{k1}, t_{k2}) \in \text{cell}_{ij}]}{\sum_k w_k}.

    Arguments:
        angles: ``(m, 2)`` angles in radians (e.g. backbone torsions ``(phi, psi)``).
        weights: optional ``(m,)`` non-negative weights (need not be normalised).
        bins: cells per axis.

    Returns:
        A float64 array ``(bins, bins)``: first index the first angle, second index the second.

    Example:
        >>> P = torus_histogram(np.array([[0.1, 0.1], [-3.0, 3.0]]), np.array([3.0, 1.0]), bins=2)
        >>> P.tolist()
        [[0.0, 0.25], [0.0, 0.75]]
    """
    who = "torus_histogram"
    bins = _check_grid(bins, who, low=1)
    points = _angles(angles, 2, who)
    if weights is not None:
        w = (
            weights.detach().cpu().double().numpy()
            if isinstance(weights, Tensor)
            else np.asarray(weights, dtype=np.float64)
        )
        if w.shape != (len(points),) or not np.isfinite(w).all() or (w < 0).any():
            raise ValueError(
                f"{who}: expected {len(points)} finite non-negative weights, got shape "
                f"{tuple(w.shape)}"
            )
    else:
        w = np.ones(len(points))
    total = w.sum()
    if not total > 0:
        raise ValueError(f"{who}: expected points with positive total weight, got {total}")
    limits = [[-np.pi, np.pi], [-np.pi, np.pi]]
    counts, _, _ = np.histogram2d(points[:, 0], points[:, 1], bins=bins, range=limits, weights=w)
    return counts / total


def plot_torus_histogram(
    angles: Tensor | np.ndarray,
    weights: Tensor | np.ndarray | None = None,
    ax: Axes | None = None,
    *,
    bins: int = 64,
    free_energy: bool = True,
    vmax: float | None = None,
    labels: Sequence[str] = ("angle 1 (degrees)", "angle 2 (degrees)"),
    cmap: str = "viridis",
) -> Axes:
    r"""Heat map of (weighted) samples on the torus ``T^2``: a Ramachandran histogram.

    The samples are binned by :func:`torus_histogram`; the picture shows either the free
    energy ``F_ij = -log P_ij`` shifted to a minimum of 0 (in units of ``kT`` when the samples
    are Boltzmann distributed; ``free_energy=True``, the usual Ramachandran free-energy
    surface) or the probability per square radian ``P_ij / (2 pi / bins)^2``. Empty cells stay
    blank. Axes as :func:`plot_torus_density` (degrees, first angle horizontal); give several
    panels the same ``vmax`` to compare them on one colour scale.

    Arguments:
        angles: ``(m, 2)`` angles in radians.
        weights: optional ``(m,)`` non-negative weights (e.g. importance weights).
        ax: axes to draw on (default: a new figure).
        bins: cells per axis.
        free_energy: draw ``-log P`` (minimum 0) instead of the density.
        vmax: top of the colour scale (default: the largest value drawn).
        labels: axis labels (first and second angle).
        cmap: matplotlib colour map name.

    Returns:
        The axes drawn on (its image is ``ax.images[0]``).

    Example:
        >>> angles = torch.rand(500, 2) * 2 - 1
        >>> ax = plot_torus_histogram(angles, bins=16, vmax=5.0, labels=("phi", "psi"))
        >>> ax.get_xlabel(), ax.images[0].get_clim()[1]
        ('phi', 5.0)
    """
    who = "plot_torus_histogram"
    xlabel, ylabel = _two_labels(labels, who)
    prob = torus_histogram(angles, weights, bins=bins)
    with np.errstate(divide="ignore"):
        values = -np.log(prob) if free_energy else prob / (2 * np.pi / bins) ** 2
    shown = np.where(prob > 0, values, np.nan)
    if free_energy:
        shown = shown - np.nanmin(shown)
    if ax is None:
        ax = new_axes(1)[0]
    ax.imshow(
        shown.T,  # rows: second angle
        origin="lower",
        extent=(-180.0, 180.0, -180.0, 180.0),
        cmap=cmap,
        interpolation="nearest",
        vmin=0.0,
        vmax=vmax,
    )
    return _torus_frame(ax, xlabel, ylabel)


# Matplotlib projections of whole-sphere longitude/latitude maps accepted by
# plot_sphere_density (mollweide and hammer are equal-area).
_SPHERE_PROJECTIONS = ("mollweide", "hammer", "aitoff", "lambert")


def plot_sphere_density(
    model: DensityModel,
    ax: Axes | None = None,
    samples: Tensor | np.ndarray | None = None,
    context: Tensor | None = None,
    *,
    grid: int = 120,
    projection: str = "mollweide",
    cmap: str = "viridis",
    sample_size: float = 1.5,
    chunk: int = 16384,
) -> Axes:
    r"""Map of a density on the sphere ``S^2`` in an equal-area (Mollweide) projection.

    A point ``x = (x_1, x_2, x_3)`` is drawn at longitude ``atan2(x_2, x_1)`` and latitude
    ``asin(x_3)`` (the north pole ``(0, 0, 1)`` at the top). The density ``q`` is w.r.t. the
    surface measure (per steradian, so ``int_{S^2} q dS = 1``); it is evaluated at the cell
    centres of a ``grid x 2 grid`` latitude-longitude lattice and painted cell by cell. The
    Mollweide projection preserves areas, so equal colour areas carry equal probability for a
    uniform colour.

    Arguments:
        model: a distribution or flow on ``Sphere(2)`` with ``log_prob``, or a callable
            ``x -> log q(x)`` taking unit vectors of shape ``(m, 3)``.
        ax: axes to draw on; it must have a geographic projection (create it with
            ``fig.add_subplot(projection="mollweide")``). Default: a new figure.
        samples: optional ``(m, 3)`` points (normalised before drawing).
        context: optional single context vector for a conditional model.
        grid: latitude cells (twice as many longitude cells).
        projection: projection of the new axes when ``ax`` is not given: ``"mollweide"``
            (default) or ``"hammer"`` (equal-area), ``"aitoff"``, ``"lambert"``.
        cmap: matplotlib colour map name.
        sample_size: marker area of the samples.
        chunk: grid points per ``log_prob`` call.

    Returns:
        The axes drawn on.

    Raises:
        ValueError: if the model lives on another space, ``ax`` is not a geographic axes, or
            for bad sizes.

    Example:
        >>> from manifoldflows.distributions import Uniform
        >>> from manifoldflows.spaces import Sphere
        >>> ax = plot_sphere_density(Uniform(Sphere(2)), grid=8)
        >>> ax.name
        'mollweide'
    """
    who = "plot_sphere_density"
    grid = _check_grid(grid, who)
    if ax is None:
        if projection not in _SPHERE_PROJECTIONS:
            raise ValueError(
                f"{who}: expected a projection in {_SPHERE_PROJECTIONS}, got {projection!r}"
            )
    elif getattr(ax, "name", None) not in _SPHERE_PROJECTIONS:
        raise ValueError(
            f"{who}: expected axes with a geographic projection {_SPHERE_PROJECTIONS} (e.g. "
            f"fig.add_subplot(projection='mollweide')), got {getattr(ax, 'name', type(ax))!r}"
        )
    space = Sphere(2)
    lon_edges = np.linspace(-np.pi, np.pi, 2 * grid + 1)
    lat_edges = np.linspace(-np.pi / 2, np.pi / 2, grid + 1)
    lon = torch.from_numpy(0.5 * (lon_edges[1:] + lon_edges[:-1]))
    lat = torch.from_numpy(0.5 * (lat_edges[1:] + lat_edges[:-1]))
    glat, glon = torch.meshgrid(lat, lon, indexing="ij")
    points = torch.stack(
        [glat.cos() * glon.cos(), glat.cos() * glon.sin(), glat.sin()], dim=-1
    ).reshape(-1, 3)
    density = _evaluate_density(model, space, points, context, chunk, who).reshape(grid, 2 * grid)
    if ax is None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6.4, 3.6), layout="constrained")
        ax = fig.add_subplot(projection=projection)
    ax.pcolormesh(lon_edges, lat_edges, density, cmap=cmap, shading="flat", rasterized=True)
    if samples is not None:
        pts = (
            samples.detach().cpu().double().numpy()
            if isinstance(samples, Tensor)
            else np.asarray(samples, float)
        )
        if pts.ndim != 2 or pts.shape[-1] != 3:
            raise ValueError(
                f"{who}: expected samples of shape (m, 3) (points of S^2), got shape "
                f"{tuple(pts.shape)}"
            )
        pts = pts / np.linalg.norm(pts, axis=-1, keepdims=True)
        s_lon = np.arctan2(pts[:, 1], pts[:, 0])
        s_lat = np.arcsin(np.clip(pts[:, 2], -1.0, 1.0))
        ax.scatter(s_lon, s_lat, s=sample_size, c="white", alpha=0.4, linewidths=0)
    ax.grid(True, color="0.6", lw=0.4, alpha=0.6)
    ax.tick_params(labelsize=7)
    return ax
