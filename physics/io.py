r"""Samples <-> mdtraj trajectories: flow samples as files that MD tools read.

A Boltzmann generator for a molecule draws flat Cartesian configurations ``(n, 3 N)`` in nm
(atom-major, the convention of :mod:`physics.systems`), each with a log importance weight
``log w = -u(x) - log q(x)`` (up to a constant). This module turns them into
``mdtraj.Trajectory`` objects and writes them as a directory that VMD, PyMOL, mdtraj or OpenMM
open directly:

=====================  ======================================================================
``topology.pdb``        the topology with the first frame's coordinates
``samples.dcd``         every frame (or ``samples.xtc``; see :func:`save_samples`)
``log_weights.npy``     ``(n,)`` float64 log importance weights, one per frame, up to a constant
=====================  ======================================================================

Reweighted averages over the frames are ``sum_i w_i f(x_i) / sum_i w_i`` with
``w_i = exp(log_weights[i] - max(log_weights))``. DCD stores single-precision Angstrom (a
round trip is exact to about ``1e-5`` nm), XTC compresses to ``1e-3`` nm.

References:
    R. T. McGibbon et al., "MDTraj: a modern open library for the analysis of molecular
    dynamics trajectories", Biophys. J. 109 (2015) 1528-1532.
    F. Noe, S. Olsson, J. Koehler, H. Wu, "Boltzmann generators", Science 365 (2019),
    arXiv:1812.01729.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeAlias

import mdtraj
import numpy as np
import openmm.app as app
import torch
from torch import Tensor

from manifoldflows.errors import InvalidInput

__all__ = [
    "TRAJECTORY_FORMATS",
    "SavedSamples",
    "as_topology",
    "configurations_array",
    "to_trajectory",
    "save_samples",
    "load_samples",
]

#: Trajectory formats :func:`save_samples` writes (file ``samples.<format>``).
TRAJECTORY_FORMATS = ("dcd", "xtc")
TOPOLOGY_FILE = "topology.pdb"
LOG_WEIGHTS_FILE = "log_weights.npy"


#: What names a molecule's atoms: a :class:`~physics.systems.MolecularSystem` (anything with
#: ``mdtraj_topology``), an ``mdtraj.Topology`` or an ``openmm.app.Topology``.
class HasTopology(Protocol):
    """A molecular system: anything with an ``mdtraj_topology``."""

    @property
    def mdtraj_topology(self) -> mdtraj.Topology: ...


SystemLike: TypeAlias = HasTopology | mdtraj.Topology | app.Topology


def as_topology(system: SystemLike, who: str = "as_topology") -> mdtraj.Topology:
    """The ``mdtraj.Topology`` of a molecular system or topology.

    Example:
        >>> from physics.systems import alanine_dipeptide
        >>> as_topology(alanine_dipeptide("vacuum")).n_atoms
        22
    """
    if isinstance(system, mdtraj.Topology):
        return system
    if isinstance(system, app.Topology):
        return mdtraj.Topology.from_openmm(system)
    topology = getattr(system, "mdtraj_topology", None)
    if isinstance(topology, mdtraj.Topology):
        return topology
    raise InvalidInput(
        f"{who}: expected a MolecularSystem, an mdtraj.Topology or an openmm.app.Topology, got "
        f"{type(system).__name__}"
    )


def configurations_array(
    x: Tensor | np.ndarray, n_atoms: int, who: str = "configurations_array"
) -> np.ndarray:
    """Configurations as a float32 array ``(n, N, 3)`` in nm.

    Accepts one configuration ``(3N,)`` / ``(N, 3)`` or a batch ``(n, 3N)`` / ``(n, N, 3)``
    (tensor or array); refuses another atom count, naming the expected and received shapes.

    Example:
        >>> configurations_array(np.zeros((2, 6)), 2).shape
        (2, 2, 3)
    """
    array = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise InvalidInput(f"{who}: expected real coordinates in nm, got dtype {array.dtype}")
    dim = 3 * n_atoms
    if array.ndim >= 2 and array.shape[-2:] == (n_atoms, 3):
        array = array.reshape(*array.shape[:-2], dim)
    if array.ndim not in (1, 2) or array.shape[-1] != dim:
        raise InvalidInput(
            f"{who}: expected configurations of {n_atoms} atoms, shape ({dim},), ({n_atoms}, 3) "
            f"or a batch (n, {dim}) / (n, {n_atoms}, 3) in nm, got shape {tuple(array.shape)}"
        )
    array = array.reshape(-1, n_atoms, 3).astype(np.float32)
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).any(axis=(1, 2)).sum())
        raise InvalidInput(
            f"{who}: expected finite coordinates, got NaN/inf in {bad} of {len(array)} "
            "configuration(s)"
        )
    return array


def to_trajectory(x: Tensor | np.ndarray, system: SystemLike) -> mdtraj.Trajectory:
    """Flat configurations in nm as an ``mdtraj.Trajectory`` of the system's topology.

    Arguments:
        x: ``(n, 3N)``, ``(n, N, 3)``, ``(3N,)`` or ``(N, 3)`` positions in nm (tensor or
            array; float32 in the trajectory).
        system: a :class:`~physics.systems.MolecularSystem` or a topology (mdtraj or OpenMM).

    Returns:
        An ``mdtraj.Trajectory`` with ``n`` frames (no unit cell).

    Raises:
        InvalidInput: when the configurations do not have the topology's atom count.

    Example:
        >>> from physics.systems import alanine_dipeptide
        >>> ala2 = alanine_dipeptide("vacuum")
        >>> traj = to_trajectory(torch.stack([ala2.configuration()] * 3), ala2)
        >>> traj.n_frames, traj.n_atoms
        (3, 22)
    """
    who = "to_trajectory"
    topology = as_topology(system, who)
    return mdtraj.Trajectory(configurations_array(x, topology.n_atoms, who), topology)


def _log_weights_array(log_weights: Tensor | np.ndarray | None, n: int, who: str) -> np.ndarray:
    if log_weights is None:
        return np.zeros(n)
    lw = (
        log_weights.detach().cpu().double().numpy()
        if isinstance(log_weights, Tensor)
        else np.asarray(log_weights, dtype=np.float64)
    )
    if lw.shape != (n,):
        raise InvalidInput(
            f"{who}: expected one log weight per frame, shape ({n},), got {tuple(lw.shape)}"
        )
    if np.isnan(lw).any() or (lw == np.inf).any():
        raise InvalidInput(f"{who}: expected log weights without NaN or +inf")
    return lw


def save_samples(
    directory: str | os.PathLike,
    x: Tensor | np.ndarray,
    log_weights: Tensor | np.ndarray | None,
    system: SystemLike,
    *,
    fmt: str = "dcd",
) -> Path:
    r"""Write samples as ``topology.pdb``, ``samples.<fmt>`` and ``log_weights.npy``.

    The directory is created if needed; files of an earlier call are overwritten (a trajectory
    of another format there is removed, so :func:`load_samples` finds exactly one).

    Arguments:
        directory: where to write.
        x: ``(n, 3N)`` or ``(n, N, 3)`` configurations in nm.
        log_weights: ``(n,)`` log importance weights (up to a constant; ``-inf`` is a zero
            weight), or ``None`` for equal weights (zeros are written).
        system: a :class:`~physics.systems.MolecularSystem` or a topology.
        fmt: trajectory format, one of :data:`TRAJECTORY_FORMATS` (``"dcd"``: single-precision
            Angstrom, read by every MD program).

    Returns:
        The directory as a :class:`pathlib.Path`.

    Raises:
        InvalidInput: for another atom count, a log weight per frame missing, or an unknown
            format.

    Example:
        >>> import tempfile
        >>> from physics.systems import alanine_dipeptide
        >>> ala2 = alanine_dipeptide("vacuum")
        >>> x = torch.stack([ala2.configuration()] * 2)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     out = save_samples(d, x, torch.tensor([0.0, -1.0]), ala2)
        ...     sorted(p.name for p in out.iterdir())
        ['log_weights.npy', 'samples.dcd', 'topology.pdb']
    """
    who = "save_samples"
    if fmt not in TRAJECTORY_FORMATS:
        raise InvalidInput(f"{who}: expected fmt among {TRAJECTORY_FORMATS}, got {fmt!r}")
    trajectory = to_trajectory(x, system)
    if trajectory.n_frames == 0:
        raise InvalidInput(f"{who}: expected at least one configuration, got none")
    lw = _log_weights_array(log_weights, trajectory.n_frames, who)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    for other in TRAJECTORY_FORMATS:
        (out / f"samples.{other}").unlink(missing_ok=True)
    trajectory[0].save_pdb(str(out / TOPOLOGY_FILE))
    trajectory.save(str(out / f"samples.{fmt}"))
    np.save(out / LOG_WEIGHTS_FILE, lw)
    return out


@dataclass(frozen=True, eq=False)
class SavedSamples:
    """Samples read by :func:`load_samples`; unpacks as ``trajectory, log_weights = ...``.

    Attributes:
        trajectory: the frames as an ``mdtraj.Trajectory`` (positions in nm).
        log_weights: ``(n,)`` float64 log importance weights.
        path: the directory they were read from.
    """

    trajectory: mdtraj.Trajectory
    log_weights: np.ndarray
    path: Path

    def __iter__(self) -> Iterator[Any]:
        return iter((self.trajectory, self.log_weights))

    def __len__(self) -> int:
        return int(self.trajectory.n_frames)

    def configurations(
        self, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> Tensor:
        """Flat configurations ``(n, 3N)`` in nm as a tensor (default: torch's default dtype),
        ready for ``flow.log_prob`` or an energy."""
        xyz = self.trajectory.xyz.reshape(self.trajectory.n_frames, -1)
        return torch.as_tensor(xyz, dtype=dtype or torch.get_default_dtype(), device=device)


def load_samples(directory: str | os.PathLike) -> SavedSamples:
    """Read samples written by :func:`save_samples`.

    Arguments:
        directory: the directory holding ``topology.pdb``, one ``samples.<fmt>`` and
            ``log_weights.npy``.

    Returns:
        :class:`SavedSamples` (``trajectory``, ``log_weights``, ``path``).

    Raises:
        FileNotFoundError: naming the missing file(s).
        InvalidInput: when the number of log weights differs from the number of frames.

    Example:
        >>> import tempfile
        >>> from physics.systems import alanine_dipeptide
        >>> ala2 = alanine_dipeptide("vacuum")
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = save_samples(d, ala2.positions, None, ala2)
        ...     traj, log_w = load_samples(d)
        >>> traj.n_frames, log_w.tolist()
        (1, [0.0])
    """
    who = "load_samples"
    path = Path(directory)
    trajectories = [path / f"samples.{fmt}" for fmt in TRAJECTORY_FORMATS]
    found = [p for p in trajectories if p.is_file()]
    missing = [str(path / name) for name in (TOPOLOGY_FILE, LOG_WEIGHTS_FILE)]
    missing = [m for m in missing if not Path(m).is_file()]
    if not found:
        missing.append(str(path / ("samples.{" + ",".join(TRAJECTORY_FORMATS) + "}")))
    if missing:
        raise FileNotFoundError(
            f"{who}: expected samples written by save_samples in {str(path)!r}; missing "
            + ", ".join(missing)
        )
    if len(found) > 1:
        raise InvalidInput(
            f"{who}: expected one trajectory in {str(path)!r}, found {[p.name for p in found]}"
        )
    trajectory = mdtraj.load(str(found[0]), top=str(path / TOPOLOGY_FILE))
    log_weights = np.load(path / LOG_WEIGHTS_FILE)
    if log_weights.shape != (trajectory.n_frames,):
        raise InvalidInput(
            f"{who}: {LOG_WEIGHTS_FILE} holds {log_weights.shape} log weights but the "
            f"trajectory has {trajectory.n_frames} frames"
        )
    return SavedSamples(trajectory, log_weights.astype(np.float64), path)
