r"""Reference data for alanine dipeptide: molecular dynamics, umbrella sampling along phi, basin
definitions, free energies with error bars, and the shipped reference file.

The reference is what Boltzmann generators of :func:`physics.systems.alanine_dipeptide` are
judged against: Cartesian MD frames for maximum-likelihood training and held-out test
likelihoods, phi/psi of every frame for Ramachandran histograms, and the free energies of the
conformational basins (in ``kT``).

**Basins** (radians, phi and psi in ``[-pi, pi)``; defined here once and used everywhere):

* ``phi < 0`` (:func:`phi_negative`) splits into ``alpha_R`` (:func:`basin_alpha_r`:
  ``-120 deg < psi < 50 deg``) and ``beta`` (:func:`basin_beta`: the rest of ``phi < 0``,
  i.e. the C5/C7eq/PII region);
* ``phi >= 0`` (:func:`phi_positive`, "phi > 0": alpha_L, C7ax), the complement of ``phi < 0``.

**Molecular dynamics** (:func:`run_md`): OpenMM ``LangevinMiddleIntegrator`` at the system's
temperature (300 K), time step 1 fs, friction 1/ps, flexible bonds, Reference platform. Each run
first minimises the energy (``LocalEnergyMinimizer``, tolerance 10 kJ/mol/nm), draws velocities
from Maxwell-Boltzmann with the run's seed and equilibrates for 100 ps (discarded), then stores a
frame every 1 ps (float32 positions in nm, the potential energy of the stored float32 frame in
kJ/mol). Plain MD at 300 K hardly ever crosses from ``phi < 0`` to ``phi > 0`` (2 frames of 20000
in the shipped 2 x 10 ns, against an equilibrium population of ~4 %), so the ``phi > 0`` free
energy comes from umbrella sampling instead.

**Umbrella sampling along phi** (:func:`run_umbrella`): ``K = 24`` windows with centres
``c_k = -pi + 2 pi k / K`` around the circle and the bias ``k_s / 2 * d(phi, c_k)^2``
(``k_s = 200`` kJ/mol/rad^2, ``d`` the periodic distance; an OpenMM ``CustomTorsionForce``). One
repeat sweeps the windows in order around the circle, each starting from the end of the previous
one: 20 ps of equilibration and 200 ps of production per window, phi and psi stored every 0.5 ps.
Independent repeats (other seeds) sweep in alternating directions. All windows of all repeats are
combined by MBAR (:mod:`physics.systems.reference_estimators`), with errors from a circular block
bootstrap of each window's time series (blocks of 50 ps).

**Errors of plain MD** come from block averages over blocks of 500 ps (20 blocks per 10 ns run);
the metadata holds the error for other block lengths too, to check the plateau.

**The shipped estimates** (amber99sbildn/implicit, 300 K; ``summary()`` prints them), in ``kT``:

=================================  ======================  =====================================
quantity                           value                   from
=================================  ======================  =====================================
F(alpha_R) - F(beta)               0.32 +- 0.09            2 x 10 ns plain MD (917 switches)
F(alpha_R) - F(beta)               0.74 +- 0.16            umbrella sampling (cross-check)
F(phi > 0) - F(phi < 0)            3.26 +- 0.20            umbrella sampling (repeats: 3.39 +-
                                                           0.25 and 3.13 +- 0.35)
P(alpha_R), P(beta), P(phi > 0)    0.421, 0.579, 0.037     MD, MD, umbrella sampling
=================================  ======================  =====================================

The two single MD runs give 0.26 +- 0.11 and 0.38 +- 0.13. The umbrella-sampling ``F(phi)``
matches the MD histogram of phi within ~0.2 kT wherever MD samples (metadata
``umbrella.cross_check_with_md_by_phi_bin``), but its split of ``phi < 0`` into alpha_R and beta
is off by 2.3 standard errors: within a 200 ps window restrained in phi, psi does not relax fully
(``P(alpha_R | phi)`` comes out below the MD values), so take ``F(alpha_R) - F(beta)`` from MD
(:attr:`MDReference.df_alpha_r_beta`) and ``F(phi > 0) - F(phi < 0)`` from the umbrella sampling
(:attr:`MDReference.df_phi_positive`).

**The shipped file** ``physics/systems/data/alanine_dipeptide_amber99sbildn_implicit_reference.npz``
(amber99sbildn + amber99_obc, 300 K) was generated on 2 CPU cores by::

    nice -n 19 python -m physics.systems.reference --forcefield amber99sbildn \
        --solvent implicit --md-ps 10000 --md-seeds 1 2 --umbrella-seeds 11 12 --processes 2 \
        --output physics/systems/data/alanine_dipeptide_amber99sbildn_implicit_reference.npz

(``python examples/alanine_reference_md.py`` takes the same arguments). The simulations took
34 minutes of wall time on 2 cores shared with other jobs (26 minutes per MD task and 7 per
umbrella task under that load; at the ~17 ps/s of an idle core 10 and 5, about 15 in all), the
analysis about 1 minute. The exact command, the wall
times and the software versions are in its metadata.

A smaller reference of ``forcefield="amber96"`` (implicit, 300 K; the system closest to the
published benchmarks) ships too: 2 x 3 ns of MD (3000 training and 1000 test frames), umbrella
windows of 100 ps (bootstrap blocks of 20 ps); 10 minutes of wall time::

    nice -n 19 python -m physics.systems.reference --forcefield amber96 --solvent implicit \
        --md-ps 3000 --md-seeds 1 2 --umbrella-seeds 11 12 --window-ps 100 \
        --bootstrap-block-ps 20 --train-stride 2 --test-stride 3 --processes 2 \
        --output physics/systems/data/alanine_dipeptide_amber96_implicit_reference.npz

It gives ``F(alpha_R) - F(beta) = 2.06 +- 0.15`` (MD; umbrella sampling 1.55 +- 0.17) and
``F(phi > 0) - F(phi < 0) = 5.21 +- 0.17`` kT. Other variants (vacuum, other temperatures) are
not shipped: :func:`load_reference` tells the command that generates them into the user cache
directory (``$XDG_CACHE_HOME/manifoldflows`` or ``~/.cache/manifoldflows``), where it finds them
afterwards.

References:
    G. M. Torrie, J. P. Valleau, J. Comput. Phys. 23 (1977) 187-199 (umbrella sampling).
    M. R. Shirts, J. D. Chodera, J. Chem. Phys. 129 (2008) 124105, arXiv:0801.1426 (MBAR).
    Z. Zhang, X. Liu, K. Yan, M. E. Tuckerman, J. Liu, "Unified efficient thermostat scheme for
    the canonical ensemble with holonomic or isokinetic constraints via molecular dynamics",
    J. Phys. Chem. A 123 (2019) 6056-6079 (the LangevinMiddleIntegrator).
    F. Noe, S. Olsson, J. Koehler, H. Wu, "Boltzmann generators", Science 365 (2019),
    arXiv:1812.01729.

Example:
    >>> ref = load_reference()
    >>> ref.frames_train.shape[1:], ref.frames_train.dtype
    ((22, 3), dtype('float32'))
    >>> bool(np.all(basin_alpha_r(ref.phi, ref.psi) ^ basin_beta(ref.phi, ref.psi)
    ...             | phi_positive(ref.phi)))
    True
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from multiprocessing import get_context
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import openmm
import openmm.unit as unit
import tqdm
from torch import Tensor

from manifoldflows._checks import positive_float, positive_int
from manifoldflows.errors import InvalidInput
from manifoldflows.estimators import Estimate

from .alanine import FORCE_FIELDS, PHI_ATOMS, PSI_ATOMS, alanine_dipeptide
from .molecular import MolecularSystem, PositionsLike
from .reference_estimators import (
    Reweighting,
    block_free_energy_difference,
    block_population,
    umbrella_mbar,
    wrap_angle,
)

__all__ = [
    "ALPHA_R_PSI",
    "UMBRELLA_FORCE_GROUP",
    "phi_negative",
    "phi_positive",
    "basin_alpha_r",
    "basin_beta",
    "dihedral",
    "backbone_torsions",
    "MDRun",
    "run_md",
    "umbrella_system",
    "UmbrellaRun",
    "window_centers",
    "run_umbrella",
    "MDReference",
    "reference_filename",
    "cache_dir",
    "load_reference",
    "generate_reference",
    "main",
]

Angles = TypeVar("Angles", np.ndarray, Tensor)

#: psi range of alpha_R (radians, open interval): -120 deg < psi < 50 deg (with phi < 0).
ALPHA_R_PSI = (-120.0 * math.pi / 180.0, 50.0 * math.pi / 180.0)
#: Force group of the umbrella bias in :func:`umbrella_system` (the force field uses group 0).
UMBRELLA_FORCE_GROUP = 31
#: Plain-MD free energies are reported only for regions entered at least this many times.
MIN_ENTRIES = 20
#: Block-length scans (metadata) skip lengths that leave fewer blocks than these.
MIN_BLOCKS = 8
MIN_BLOCKS_PER_SERIES = 4
#: Version of the reference file layout.
FORMAT_VERSION = 1
_PACKAGE_DATA = "physics.systems"


# ---------------------------------------------------------------------------- basins
def _angles(values: Angles | float, who: str, what: str) -> Angles:
    """Angles as an array or tensor, refused when they cannot be radians in [-pi, pi]."""
    array = values if isinstance(values, Tensor) else np.asarray(values)
    if array.dtype == bool or not (
        array.is_floating_point()
        if isinstance(array, Tensor)
        else np.issubdtype(array.dtype, np.floating)
    ):
        raise InvalidInput(f"{who}: expected {what} as floating-point radians, got {array.dtype}")
    if array.numel() if isinstance(array, Tensor) else array.size:
        largest = (
            float(array.abs().max()) if isinstance(array, Tensor) else float(np.abs(array).max())
        )
        if not largest <= math.pi + 1e-4:
            raise InvalidInput(
                f"{who}: expected {what} in radians within [-pi, pi], got a value of magnitude "
                f"{largest:.4g} (degrees? wrap angles to [-pi, pi) first)"
            )
    return array


def phi_negative(phi: Angles) -> Angles:
    """``phi < 0``: alpha_R and beta (boolean, same shape and type as ``phi``).

    Example:
        >>> phi_negative(np.array([-1.0, 0.0, 1.0])).tolist()
        [True, False, False]
    """
    return _angles(phi, "phi_negative", "phi") < 0


def phi_positive(phi: Angles) -> Angles:
    """``phi >= 0`` ("phi > 0": alpha_L and C7ax), the complement of :func:`phi_negative`.

    Arguments:
        phi: backbone torsion phi in radians, ``[-pi, pi)``, any shape (array or tensor).

    Returns:
        A boolean array or tensor of the same shape.

    Example:
        >>> phi_positive(np.array([-1.0, 0.0, 1.0])).tolist()
        [False, True, True]
    """
    return ~phi_negative(_angles(phi, "phi_positive", "phi"))


def _alpha_psi(psi: Angles, who: str) -> Angles:
    psi = _angles(psi, who, "psi")
    return (psi > ALPHA_R_PSI[0]) & (psi < ALPHA_R_PSI[1])


def basin_alpha_r(phi: Angles, psi: Angles) -> Angles:
    r"""alpha_R: ``phi < 0`` and ``-120 deg < psi < 50 deg`` (radians, shapes broadcast).

    Arguments:
        phi, psi: backbone torsions in radians, ``[-pi, pi)`` (arrays or tensors).

    Returns:
        A boolean array or tensor.

    Example:
        >>> basin_alpha_r(np.radians([-70.0, -70.0, 60.0]), np.radians([-40.0, 150.0, 30.0]))
        array([ True, False, False])
    """
    return phi_negative(_angles(phi, "basin_alpha_r", "phi")) & _alpha_psi(psi, "basin_alpha_r")


def basin_beta(phi: Angles, psi: Angles) -> Angles:
    r"""beta: the rest of ``phi < 0`` (``psi <= -120 deg`` or ``psi >= 50 deg``).

    ``basin_alpha_r`` and ``basin_beta`` partition ``phi < 0``; arguments and result as for
    :func:`basin_alpha_r`.

    Example:
        >>> basin_beta(np.radians([-70.0, -70.0, 60.0]), np.radians([-40.0, 150.0, 30.0]))
        array([False,  True, False])
    """
    return phi_negative(_angles(phi, "basin_beta", "phi")) & ~_alpha_psi(psi, "basin_beta")


# ---------------------------------------------------------------------------- torsions
def _frames(frames: np.ndarray | Tensor, who: str, n_atoms: int | None = None) -> np.ndarray:
    """Frames ``(n, N, 3)`` (or one ``(N, 3)``) as a float64 array, else a clear error."""
    array = frames.detach().cpu().numpy() if isinstance(frames, Tensor) else np.asarray(frames)
    if array.ndim == 2:
        array = array[None]
    if (
        array.ndim != 3
        or array.shape[-1] != 3
        or (n_atoms is not None and array.shape[1] != n_atoms)
    ):
        atoms = "N" if n_atoms is None else str(n_atoms)
        raise InvalidInput(
            f"{who}: expected frames of shape (n, {atoms}, 3) in nm, got {tuple(np.shape(frames))}"
        )
    if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
        raise InvalidInput(f"{who}: expected finite real coordinates, got NaN/inf or {array.dtype}")
    return array.astype(np.float64)


def dihedral(frames: np.ndarray | Tensor, atoms: Sequence[int]) -> np.ndarray:
    r"""Torsion angle of four atoms in every frame (IUPAC sign convention, as mdtraj).

    With bond vectors ``b_1 = x_1 - x_0``, ``b_2 = x_2 - x_1``, ``b_3 = x_3 - x_2``:

    .. math::

        \theta = \operatorname{atan2}\big(|b_2|\, b_1 \cdot (b_2 \times b_3),\;
        (b_1 \times b_2) \cdot (b_2 \times b_3)\big) \in [-\pi, \pi).

    Arguments:
        frames: ``(n, N, 3)`` or ``(N, 3)`` positions.
        atoms: four 0-based atom indices.

    Returns:
        ``(n,)`` float64 angles in radians.

    Example:
        >>> square = np.array([[1.0, 0, 0], [0, 0, 0], [0, 1, 0], [0, 1, 1]])
        >>> dihedral(square, (0, 1, 2, 3)).round(4).tolist()
        [-1.5708]
    """
    xyz = _frames(frames, "dihedral")
    index = [int(a) for a in atoms]
    if len(index) != 4 or min(index) < 0 or max(index) >= xyz.shape[1]:
        raise InvalidInput(
            f"dihedral: expected 4 atom indices in [0, {xyz.shape[1]}), got {list(atoms)}"
        )
    x0, x1, x2, x3 = (xyz[:, i] for i in index)
    b1, b2, b3 = x1 - x0, x2 - x1, x3 - x2
    n1, n2 = np.cross(b1, b2), np.cross(b2, b3)
    y = np.linalg.norm(b2, axis=-1) * np.einsum("ij,ij->i", b1, n2)
    x = np.einsum("ij,ij->i", n1, n2)
    return wrap_angle(np.arctan2(y, x))


def backbone_torsions(frames: np.ndarray | Tensor) -> tuple[np.ndarray, np.ndarray]:
    """phi and psi of alanine-dipeptide frames (:data:`PHI_ATOMS`, :data:`PSI_ATOMS`).

    Arguments:
        frames: ``(n, 22, 3)`` or ``(22, 3)`` positions (nm).

    Returns:
        ``(phi, psi)``, each ``(n,)`` float64 radians in ``[-pi, pi)``.

    Example:
        >>> from physics.systems import alanine_dipeptide
        >>> phi, psi = backbone_torsions(alanine_dipeptide().positions)
        >>> phi.shape, bool(-np.pi <= phi[0] < np.pi)
        ((1,), True)
    """
    xyz = _frames(frames, "backbone_torsions", n_atoms=22)
    return dihedral(xyz, PHI_ATOMS), dihedral(xyz, PSI_ATOMS)


# ---------------------------------------------------------------------------- simulations
def _steps(duration_ps: float, interval_ps: float, timestep_fs: float, who: str) -> tuple[int, int]:
    """``(n_frames, steps_per_frame)`` for a duration and a frame interval."""
    duration = positive_float(duration_ps, "duration_ps", who, allow_zero=True)
    interval = positive_float(interval_ps, "frame_interval_ps", who)
    dt = positive_float(timestep_fs, "timestep_fs", who)
    steps = interval * 1000.0 / dt
    frames = duration / interval
    if abs(steps - round(steps)) > 1e-9 * steps or abs(frames - round(frames)) > 1e-9 * max(
        frames, 1
    ):
        raise InvalidInput(
            f"{who}: expected the frame interval ({interval} ps) to be a whole number of time "
            f"steps ({dt} fs) and the duration ({duration} ps) a whole number of frame "
            "intervals"
        )
    return int(round(frames)), int(round(steps))


def _langevin_context(
    system: openmm.System,
    positions: np.ndarray,
    temperature: float,
    *,
    seed: int,
    timestep_fs: float,
    friction_per_ps: float,
    minimize: bool,
    platform_name: str,
) -> tuple[openmm.Context, openmm.LangevinMiddleIntegrator]:
    """A context with a seeded LangevinMiddleIntegrator, (minimised,) velocities drawn."""
    integrator = openmm.LangevinMiddleIntegrator(
        temperature * unit.kelvin, friction_per_ps / unit.picosecond, timestep_fs * unit.femtosecond
    )
    integrator.setRandomNumberSeed(seed)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform_name))
    context.setPositions(positions)
    if minimize:
        openmm.LocalEnergyMinimizer.minimize(context, 10.0, 0)
    context.setVelocitiesToTemperature(temperature * unit.kelvin, seed)
    return context, integrator


def _positions(context: openmm.Context) -> np.ndarray:
    state = context.getState(getPositions=True)
    return np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))


def _seed(seed: object, who: str) -> int:
    value = positive_int(seed, "seed", who, minimum=0)
    if value >= 2**31:
        raise InvalidInput(f"{who}: expected a seed below 2**31 (OpenMM's limit), got {value}")
    return value


def _progress(total: int, desc: str, progress: bool, position: int | None) -> tqdm.tqdm:
    return tqdm.tqdm(
        total=total,
        desc=desc,
        unit="ps",
        disable=not progress,
        position=position,
        mininterval=2.0,
        leave=position is None,
    )


@dataclass(frozen=True)
class MDRun:
    """Output of :func:`run_md`.

    Attributes:
        frames: ``(n, N, 3)`` float32 positions in nm, one per ``frame_interval_ps``.
        energies: ``(n,)`` float64 potential energies (kJ/mol) of the stored float32 frames.
        seed: the integrator's and the initial velocities' seed.
        frame_interval_ps, duration_ps, equilibration_ps, timestep_fs, friction_per_ps: the
            protocol.
        wall_time_s: wall time of the run (minimisation and equilibration included).
    """

    frames: np.ndarray
    energies: np.ndarray
    seed: int
    frame_interval_ps: float
    duration_ps: float
    equilibration_ps: float
    timestep_fs: float
    friction_per_ps: float
    wall_time_s: float


def run_md(
    system: MolecularSystem,
    duration_ps: float,
    *,
    seed: int,
    frame_interval_ps: float = 1.0,
    timestep_fs: float = 1.0,
    friction_per_ps: float = 1.0,
    equilibration_ps: float = 100.0,
    minimize: bool = True,
    positions: PositionsLike | None = None,
    platform_name: str = "Reference",
    progress: bool = True,
    progress_position: int | None = None,
) -> MDRun:
    r"""Langevin molecular dynamics of a :class:`MolecularSystem` with OpenMM.

    ``LangevinMiddleIntegrator`` (BAOAB splitting) at ``system.temperature``: minimise the
    energy (tolerance 10 kJ/mol/nm), draw velocities with ``seed``, equilibrate for
    ``equilibration_ps`` (discarded), then run ``duration_ps`` and store a frame every
    ``frame_interval_ps``. The integrator's random numbers use the same seed, so a run is
    reproducible on one platform. Cost on the Reference platform for alanine dipeptide in
    implicit solvent: about 17 ps of MD per second of wall time on one core.

    Arguments:
        system: the molecular system (its ``System``, reference positions and temperature).
        duration_ps: production length in ps (a whole number of frame intervals).
        seed: random seed (``0 <= seed < 2**31``).
        frame_interval_ps: ps between stored frames (a whole number of time steps).
        timestep_fs: integration time step in fs.
        friction_per_ps: Langevin friction in 1/ps.
        equilibration_ps: discarded equilibration after the minimisation.
        minimize: minimise the starting positions first.
        positions: starting positions ``(N, 3)`` in nm (default: the system's reference).
        platform_name: OpenMM platform.
        progress: show a ``tqdm`` progress bar (in ps) on stderr.
        progress_position: line of the progress bar (for runs in parallel processes).

    Returns:
        An :class:`MDRun` with ``frames`` ``(n, N, 3)`` float32 nm and ``energies`` ``(n,)``
        kJ/mol, ``n = duration_ps / frame_interval_ps``.

    Example:
        >>> from physics.systems import alanine_dipeptide
        >>> run = run_md(alanine_dipeptide(), 0.02, seed=1, frame_interval_ps=0.01,
        ...              equilibration_ps=0.01, progress=False)
        >>> run.frames.shape, run.frames.dtype, run.energies.shape
        ((2, 22, 3), dtype('float32'), (2,))
    """
    who = "run_md"
    if not isinstance(system, MolecularSystem):
        raise InvalidInput(f"{who}: expected a MolecularSystem, got {type(system).__name__}")
    seed = _seed(seed, who)
    n_frames, steps = _steps(duration_ps, frame_interval_ps, timestep_fs, who)
    n_eq, _ = _steps(equilibration_ps, frame_interval_ps, timestep_fs, who)
    friction = positive_float(friction_per_ps, "friction_per_ps", who)
    start = (
        system.positions
        if positions is None
        else MolecularSystem(
            system.system, system.topology, positions, system.temperature
        ).positions
    )
    began = time.perf_counter()
    context, integrator = _langevin_context(
        system.system,
        start,
        system.temperature,
        seed=seed,
        timestep_fs=timestep_fs,
        friction_per_ps=friction,
        minimize=minimize,
        platform_name=platform_name,
    )
    evaluator = openmm.Context(
        system.system,
        openmm.VerletIntegrator(0.001),
        openmm.Platform.getPlatformByName(platform_name),
    )
    frames = np.empty((n_frames, system.n_atoms, 3), dtype=np.float32)
    energies = np.empty(n_frames)
    with _progress(n_eq + n_frames, f"MD seed {seed}", progress, progress_position) as bar:
        for _ in range(n_eq):
            integrator.step(steps)
            bar.update(frame_interval_ps)
        for i in range(n_frames):
            integrator.step(steps)
            frames[i] = _positions(context)
            evaluator.setPositions(frames[i].astype(np.float64))
            energies[i] = (
                evaluator.getState(getEnergy=True)
                .getPotentialEnergy()
                .value_in_unit(unit.kilojoule_per_mole)
            )
            bar.update(frame_interval_ps)
    if not (np.isfinite(frames).all() and np.isfinite(energies).all()):
        raise InvalidInput(
            f"{who}: the simulation blew up (NaN positions); use a smaller time step"
        )
    return MDRun(
        frames,
        energies,
        seed,
        float(frame_interval_ps),
        float(duration_ps),
        float(equilibration_ps),
        float(timestep_fs),
        friction,
        time.perf_counter() - began,
    )


def umbrella_system(
    system: openmm.System, atoms: Sequence[int], force_constant: float, center: float = 0.0
) -> openmm.System:
    r"""A copy of ``system`` with a periodic harmonic bias on one torsion.

    Adds a ``CustomTorsionForce`` ``0.5*k*d^2``, ``d = min(|theta - c|, 2*pi - |theta - c|)``,
    with global parameters ``umbrella_k`` (kJ/mol/rad^2) and ``umbrella_center`` (radians), in
    force group :data:`UMBRELLA_FORCE_GROUP`; it equals
    :func:`physics.systems.reference_estimators.umbrella_bias`.

    Arguments:
        system: the unbiased ``openmm.System`` (left unchanged).
        atoms: the torsion's four 0-based atom indices.
        force_constant: ``k`` in kJ/mol/rad^2.
        center: initial centre ``c`` in radians.

    Returns:
        The biased copy.

    Example:
        >>> from physics.systems import alanine_dipeptide
        >>> biased = umbrella_system(alanine_dipeptide().system, PHI_ATOMS, 200.0)
        >>> type(biased.getForce(biased.getNumForces() - 1)).__name__
        'CustomTorsionForce'
    """
    who = "umbrella_system"
    if not isinstance(system, openmm.System):
        raise InvalidInput(f"{who}: expected an openmm.System, got {type(system).__name__}")
    index = [int(a) for a in atoms]
    if len(index) != 4:
        raise InvalidInput(f"{who}: expected 4 atom indices, got {list(atoms)}")
    biased = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    force = openmm.CustomTorsionForce(
        "0.5*umbrella_k*d^2; d = min(a, 2*pi_ - a); a = abs(theta - umbrella_center); "
        f"pi_ = {math.pi!r}"
    )
    force.addGlobalParameter("umbrella_k", positive_float(force_constant, "force_constant", who))
    force.addGlobalParameter("umbrella_center", float(wrap_angle(np.array(center))))
    force.addTorsion(*index, [])
    force.setForceGroup(UMBRELLA_FORCE_GROUP)
    biased.addForce(force)
    return biased


@dataclass(frozen=True)
class UmbrellaRun:
    """Output of :func:`run_umbrella`: the samples of one sweep over all windows.

    Attributes:
        cv: ``(n,)`` the biased torsion (radians) of the stored samples, window by window in
            the order of the sweep.
        phi, psi: ``(n,)`` the backbone torsions of the same samples (alanine dipeptide).
        window: ``(n,)`` window index of each sample.
        centers: ``(K,)`` window centres (radians).
        force_constant: kJ/mol/rad^2.
        seed: random seed of the sweep.
        order: ``(K,)`` the windows in the order they were run.
        production_ps, equilibration_ps, initial_equilibration_ps, frame_interval_ps: protocol.
        wall_time_s: wall time of the sweep.
    """

    cv: np.ndarray
    phi: np.ndarray
    psi: np.ndarray
    window: np.ndarray
    centers: np.ndarray
    force_constant: float
    seed: int
    order: np.ndarray
    production_ps: float
    equilibration_ps: float
    initial_equilibration_ps: float
    frame_interval_ps: float
    wall_time_s: float


def window_centers(n_windows: int) -> np.ndarray:
    """``K`` centres ``-pi + 2 pi k / K`` evenly around the circle (radians).

    Example:
        >>> np.degrees(window_centers(4)).tolist()
        [-180.0, -90.0, 0.0, 90.0]
    """
    k = positive_int(n_windows, "n_windows", "window_centers", minimum=2)
    return -math.pi + 2.0 * math.pi * np.arange(k) / k


def run_umbrella(
    system: MolecularSystem,
    *,
    seed: int,
    n_windows: int = 24,
    force_constant: float = 200.0,
    production_ps: float = 200.0,
    equilibration_ps: float = 20.0,
    initial_equilibration_ps: float = 50.0,
    frame_interval_ps: float = 0.5,
    direction: int = 1,
    atoms: Sequence[int] = PHI_ATOMS,
    timestep_fs: float = 1.0,
    friction_per_ps: float = 1.0,
    platform_name: str = "Reference",
    progress: bool = True,
    progress_position: int | None = None,
) -> UmbrellaRun:
    r"""Umbrella sampling along a torsion: one sweep over ``K`` windows around the circle.

    The system gets the bias of :func:`umbrella_system`. After minimisation the sweep starts in
    the window whose centre is nearest the minimised torsion (``initial_equilibration_ps`` of
    equilibration there) and visits the windows in order (``direction`` +1: increasing centre,
    -1: decreasing), each one continuing from the end of the previous one with
    ``equilibration_ps`` discarded and ``production_ps`` stored every ``frame_interval_ps``.
    Integrator as in :func:`run_md`. Cost: ``K (equilibration + production) + initial``
    ps of MD, about 5.3 ns (5-6 minutes on one core) with the defaults.

    Arguments:
        system: the unbiased molecular system.
        seed: random seed (``0 <= seed < 2**31``).
        n_windows: ``K`` (centres ``-pi + 2 pi k / K``).
        force_constant: ``k_s`` in kJ/mol/rad^2.
        production_ps, equilibration_ps, initial_equilibration_ps: per window / at the start.
        frame_interval_ps: ps between stored samples.
        direction: +1 or -1, the sweep direction.
        atoms: the biased torsion (default phi, :data:`PHI_ATOMS`).
        timestep_fs, friction_per_ps, platform_name: as in :func:`run_md`.
        progress, progress_position: ``tqdm`` progress bar (in ps).

    Returns:
        An :class:`UmbrellaRun` (phi and psi of every sample; for alanine dipeptide).

    References:
        Torrie & Valleau, J. Comput. Phys. 23 (1977) 187-199.

    Example:
        >>> from physics.systems import alanine_dipeptide
        >>> run = run_umbrella(alanine_dipeptide(), seed=3, n_windows=3, production_ps=0.02,
        ...                    equilibration_ps=0.01, initial_equilibration_ps=0.01,
        ...                    frame_interval_ps=0.01, progress=False)
        >>> run.phi.shape, sorted(set(run.window.tolist()))
        ((6,), [0, 1, 2])
    """
    who = "run_umbrella"
    if not isinstance(system, MolecularSystem):
        raise InvalidInput(f"{who}: expected a MolecularSystem, got {type(system).__name__}")
    seed = _seed(seed, who)
    if direction not in (1, -1):
        raise InvalidInput(f"{who}: expected direction +1 or -1, got {direction!r}")
    centers = window_centers(n_windows)
    n_prod, steps = _steps(production_ps, frame_interval_ps, timestep_fs, who)
    n_eq, _ = _steps(equilibration_ps, frame_interval_ps, timestep_fs, who)
    n_init, _ = _steps(initial_equilibration_ps, frame_interval_ps, timestep_fs, who)
    biased = umbrella_system(system.system, atoms, force_constant)
    began = time.perf_counter()
    context, integrator = _langevin_context(
        biased,
        system.positions,
        system.temperature,
        seed=seed,
        timestep_fs=timestep_fs,
        friction_per_ps=positive_float(friction_per_ps, "friction_per_ps", who),
        minimize=False,
        platform_name=platform_name,
    )
    context.setParameter("umbrella_k", 0.0)  # minimise the unbiased energy
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 0)
    context.setParameter("umbrella_k", float(force_constant))
    start = dihedral(_positions(context), atoms)[0]
    first = int(np.argmin(np.abs(wrap_angle(centers - start))))
    order = (first + direction * np.arange(centers.size)) % centers.size
    xyz = np.empty((centers.size * n_prod, system.n_atoms, 3))
    total = (n_init + centers.size * (n_eq + n_prod)) * frame_interval_ps
    with _progress(round(total), f"umbrella seed {seed}", progress, progress_position) as bar:
        for j, k in enumerate(order):
            context.setParameter("umbrella_center", float(centers[k]))
            for _ in range(n_eq + (n_init if j == 0 else 0)):
                integrator.step(steps)
                bar.update(frame_interval_ps)
            for i in range(n_prod):
                integrator.step(steps)
                xyz[j * n_prod + i] = _positions(context)
                bar.update(frame_interval_ps)
    if not np.isfinite(xyz).all():
        raise InvalidInput(f"{who}: the simulation blew up (NaN positions)")
    return UmbrellaRun(
        dihedral(xyz, atoms),
        dihedral(xyz, PHI_ATOMS),
        dihedral(xyz, PSI_ATOMS),
        np.repeat(order, n_prod),
        centers,
        float(force_constant),
        seed,
        order,
        float(production_ps),
        float(equilibration_ps),
        float(initial_equilibration_ps),
        float(frame_interval_ps),
        time.perf_counter() - began,
    )


# ---------------------------------------------------------------------------- the reference file
def reference_filename(
    forcefield: str = "amber99sbildn", solvent: str = "implicit", temperature: float = 300.0
) -> str:
    """File name of a reference: ``alanine_dipeptide_<forcefield>_<solvent>_reference.npz``
    (``..._<T>K_reference.npz`` away from 300 K).

    Example:
        >>> reference_filename("amber96", "implicit", 350)
        'alanine_dipeptide_amber96_implicit_350K_reference.npz'
    """
    who = "reference_filename"
    if (forcefield, solvent) not in FORCE_FIELDS:
        known = sorted({f for f, _ in FORCE_FIELDS}), sorted({s for _, s in FORCE_FIELDS})
        raise InvalidInput(
            f"{who}: expected forcefield among {known[0]} and solvent among {known[1]}, got "
            f"forcefield={forcefield!r}, solvent={solvent!r}"
        )
    temperature = positive_float(temperature, "temperature (K)", who)
    tag = "" if temperature == 300.0 else f"_{temperature:g}K"
    return f"alanine_dipeptide_{forcefield}_{solvent}{tag}_reference.npz"


def cache_dir() -> Path:
    """Where generated references live: ``$XDG_CACHE_HOME/manifoldflows`` or
    ``~/.cache/manifoldflows``.

    Example:
        >>> cache_dir().name
        'manifoldflows'
    """
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "manifoldflows"


def _estimate_json(estimate: Estimate | None) -> dict[str, float] | None:
    if estimate is None:
        return None
    return {"value": float(estimate.value), "stderr": float(estimate.stderr)}


def _estimate_from_json(entry: dict[str, float]) -> Estimate:
    import torch

    return Estimate(
        torch.tensor(entry["value"], dtype=torch.float64),
        torch.tensor(entry["stderr"], dtype=torch.float64),
    )


@dataclass(eq=False)
class MDReference:
    r"""A loaded alanine-dipeptide reference (see :func:`load_reference`).

    Attributes:
        forcefield, solvent, temperature: the system (:func:`alanine_dipeptide` arguments).
        kT: ``k_B T`` in kJ/mol.
        frames_train: ``(n_train, 22, 3)`` float32 positions (nm) for training.
        energies_train: ``(n_train,)`` potential energies (kJ/mol) of those frames.
        frames_test, energies_test: the held-out frames (another, independent MD run).
        phi, psi: ``(n,)`` float32 backbone torsions (radians, ``[-pi, pi)``) of every MD
            frame of every run (for Ramachandran histograms).
        energies: ``(n,)`` potential energies of every MD frame.
        run: ``(n,)`` the MD run (0, 1, ...) of every frame; frames of a run in time order,
            ``frame_interval_ps`` apart.
        train_index, test_index: positions of the train/test frames in ``phi``/``psi``/
            ``energies``.
        umbrella_phi, umbrella_psi: ``(m,)`` torsions of the umbrella-sampling samples.
        umbrella_window, umbrella_series: ``(m,)`` their window and time series (repeat x
            window).
        umbrella_centers: ``(K,)`` window centres (radians).
        umbrella_log_weights: ``(m,)`` MBAR log weights of the umbrella samples for the
            unbiased ensemble (``logsumexp = 0``): reweight any function of phi/psi with them.
        phi_profile: ``(centres, F, stderr)`` free-energy profile ``F(phi)`` in ``kT`` from the
            umbrella sampling (minimum 0; bootstrap errors).
        estimates: named :class:`~manifoldflows.estimators.Estimate` (value, standard error),
            free energies in ``kT``: ``df_alpha_r_beta_md`` (``F(alpha_R) - F(beta)``, the
            reference value) and ``df_alpha_r_beta_umbrella`` (a cross-check, see the module
            docstring), ``df_phi_positive_umbrella`` (``F(phi > 0) - F(phi < 0)``;
            ``df_phi_positive_md`` too when plain MD entered ``phi > 0`` at least
            :data:`MIN_ENTRIES` times); populations ``p_alpha_r_md``, ``p_beta_md`` (and
            ``p_phi_positive_md`` under the same rule) and the same ``..._umbrella``.
        metadata: everything else: protocol, seeds, lengths, block-length scans, per-repeat
            estimates, command, date, git commit, software versions, wall times.
        path: the file it was loaded from.
    """

    forcefield: str
    solvent: str
    temperature: float
    kT: float  # noqa: N815 - the physical symbol
    frames_train: np.ndarray
    energies_train: np.ndarray
    frames_test: np.ndarray
    energies_test: np.ndarray
    phi: np.ndarray
    psi: np.ndarray
    energies: np.ndarray
    run: np.ndarray
    train_index: np.ndarray
    test_index: np.ndarray
    umbrella_phi: np.ndarray
    umbrella_psi: np.ndarray
    umbrella_window: np.ndarray
    umbrella_series: np.ndarray
    umbrella_centers: np.ndarray
    umbrella_log_weights: np.ndarray
    phi_profile: tuple[np.ndarray, np.ndarray, np.ndarray]
    estimates: dict[str, Estimate]
    metadata: dict[str, Any] = field(repr=False)
    path: str = ""

    @property
    def df_alpha_r_beta(self) -> Estimate:
        """``F(alpha_R) - F(beta)`` in ``kT`` from plain MD (block-averaged error)."""
        return self.estimates["df_alpha_r_beta_md"]

    @property
    def df_phi_positive(self) -> Estimate:
        """``F(phi > 0) - F(phi < 0)`` in ``kT`` from umbrella sampling (bootstrap error)."""
        return self.estimates["df_phi_positive_umbrella"]

    @property
    def frame_interval_ps(self) -> float:
        """ps between consecutive MD frames of a run."""
        return float(self.metadata["md"]["frame_interval_ps"])

    def system(self) -> MolecularSystem:
        """The :class:`MolecularSystem` the reference was generated for."""
        return alanine_dipeptide(self.solvent, self.forcefield, self.temperature)

    def summary(self) -> str:
        """A table of the estimates (value ± standard error)."""
        lines = [
            f"alanine dipeptide {self.forcefield}/{self.solvent}, {self.temperature:g} K "
            f"({len(self.phi)} MD frames, {len(self.umbrella_phi)} umbrella samples)"
        ]
        width = max(len(k) for k in self.estimates)
        lines += [f"  {name:<{width}}  {est}" for name, est in self.estimates.items()]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"MDReference({self.forcefield}/{self.solvent}, {self.temperature:g} K, "
            f"train={len(self.frames_train)}, test={len(self.frames_test)}, "
            f"frames={len(self.phi)}, umbrella={len(self.umbrella_phi)})"
        )


def _find_reference(forcefield: str, solvent: str, temperature: float) -> Path | None:
    name = reference_filename(forcefield, solvent, temperature)
    shipped = resources.files(_PACKAGE_DATA) / "data" / name
    if shipped.is_file():
        return Path(str(shipped))
    cached = cache_dir() / name
    return cached if cached.is_file() else None


def load_reference(
    forcefield: str = "amber99sbildn",
    solvent: str = "implicit",
    temperature: float = 300.0,
    *,
    path: str | os.PathLike | None = None,
) -> MDReference:
    r"""Load the MD/umbrella-sampling reference of alanine dipeptide.

    Looks for :func:`reference_filename` in the package data (``physics/systems/data``;
    amber99sbildn/implicit and amber96/implicit at 300 K ship), then in :func:`cache_dir`. A
    variant found in neither is not generated on the fly (it takes ~15-30 minutes on 2 cores):
    the error gives the command that writes it into the cache, where this function then finds
    it.

    Arguments:
        forcefield: ``"amber99sbildn"`` or ``"amber96"`` (see :func:`alanine_dipeptide`).
        solvent: ``"implicit"`` or ``"vacuum"``.
        temperature: kelvin.
        path: load this file instead (any reference written by :func:`generate_reference`).

    Returns:
        An :class:`MDReference`.

    Raises:
        InvalidInput: for an unknown force field or solvent.
        FileNotFoundError: when the reference is neither shipped nor generated (the message
            holds the command that generates it).

    Example:
        >>> ref = load_reference()
        >>> ref.forcefield, ref.temperature, ref.frames_test.shape[1:]
        ('amber99sbildn', 300.0, (22, 3))
        >>> load_reference("amber96", "vacuum", path=None)  # doctest: +SKIP
        Traceback (most recent call last):
        ...
        FileNotFoundError: load_reference: no reference for amber96/vacuum ...
    """
    who = "load_reference"
    name = reference_filename(forcefield, solvent, temperature)
    if path is None:
        found = _find_reference(forcefield, solvent, temperature)
        if found is None:
            command = (
                f"nice -n 19 python -m physics.systems.reference --forcefield {forcefield} "
                f"--solvent {solvent} --temperature {temperature:g}"
            )
            raise FileNotFoundError(
                f"{who}: no reference for {forcefield}/{solvent} at {temperature:g} K: "
                f"{name} is neither shipped with the package nor in {cache_dir()}. Generate it "
                f"(about 25 minutes on 2 cores; --md-ps and --window-ps make it shorter) with\n"
                f"    {command}\nwhich writes {cache_dir() / name}"
            )
        path = found
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{who}: expected a reference file, got {str(path)!r} (no such file)"
        )
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    metadata = json.loads(str(arrays.pop("metadata")))
    if metadata.get("format_version") != FORMAT_VERSION:
        raise InvalidInput(
            f"{who}: {path} has format version {metadata.get('format_version')}, expected "
            f"{FORMAT_VERSION}; regenerate it with python -m physics.systems.reference"
        )
    estimates = {
        key: _estimate_from_json(entry)
        for key, entry in metadata["estimates"].items()
        if entry is not None
    }
    return MDReference(
        forcefield=metadata["forcefield"],
        solvent=metadata["solvent"],
        temperature=float(metadata["temperature_K"]),
        kT=float(metadata["kT_kJ_per_mol"]),
        frames_train=arrays["frames_train"],
        energies_train=arrays["energies"][arrays["train_index"]],
        frames_test=arrays["frames_test"],
        energies_test=arrays["energies"][arrays["test_index"]],
        phi=arrays["phi"],
        psi=arrays["psi"],
        energies=arrays["energies"],
        run=arrays["run"],
        train_index=arrays["train_index"],
        test_index=arrays["test_index"],
        umbrella_phi=arrays["umbrella_phi"],
        umbrella_psi=arrays["umbrella_psi"],
        umbrella_window=arrays["umbrella_window"],
        umbrella_series=arrays["umbrella_series"],
        umbrella_centers=arrays["umbrella_centers"],
        umbrella_log_weights=arrays["umbrella_log_weights"],
        phi_profile=(arrays["profile_phi"], arrays["profile_F"], arrays["profile_stderr"]),
        estimates=estimates,
        metadata=metadata,
        path=str(path),
    )


# ---------------------------------------------------------------------------- generation
def _task_path(workdir: Path, task: dict[str, Any]) -> Path:
    key = hashlib.sha1(json.dumps(task, sort_keys=True).encode()).hexdigest()[:12]
    return workdir / f"{task['kind']}_seed{task['seed']}_{key}.npz"


def _run_task(task: dict[str, Any], path: str, position: int | None, progress: bool) -> str:
    """Run one MD or umbrella task (in a worker process) and save its arrays to ``path``."""
    system = alanine_dipeptide(task["solvent"], task["forcefield"], task["temperature"])
    options = {
        k: v for k, v in task.items() if k not in ("kind", "solvent", "forcefield", "temperature")
    }
    if task["kind"] == "md":
        result: MDRun | UmbrellaRun = run_md(
            system, progress=progress, progress_position=position, **options
        )
    else:
        result = run_umbrella(system, progress=progress, progress_position=position, **options)
    arrays = {k: np.asarray(v) for k, v in vars(result).items()}
    temporary = path + ".part.npz"
    np.savez_compressed(temporary, **arrays)
    os.replace(temporary, path)
    return path


def _load_task(kind: str, path: Path) -> MDRun | UmbrellaRun:
    with np.load(path, allow_pickle=False) as data:
        values = {k: data[k] for k in data.files}
    cls = MDRun if kind == "md" else UmbrellaRun
    return cls(**{k: (v.item() if v.ndim == 0 else v) for k, v in values.items()})


def _git_commit() -> dict[str, Any]:
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(dirty)}


def _versions() -> dict[str, str]:
    import mdtraj
    import scipy
    import torch

    return {
        "openmm": openmm.__version__,
        "mdtraj": mdtraj.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _md_block_scan(
    beta: np.ndarray, alpha: np.ndarray, runs: np.ndarray, lengths: Sequence[int]
) -> dict[str, dict[str, float] | None]:
    scan = {}
    sizes = np.bincount(runs.astype(np.int64))
    for length in lengths:
        if int(np.sum(sizes // length)) < MIN_BLOCKS:
            continue  # too few blocks for a meaningful error
        try:
            estimate = block_free_energy_difference(beta, alpha, runs=runs, block_length=length)
        except InvalidInput:
            continue
        scan[str(length)] = _estimate_json(estimate)
    return scan


def _umbrella_estimates(
    reweighting: Reweighting, phi: np.ndarray, psi: np.ndarray, suffix: str
) -> dict[str, Estimate]:
    alpha, beta = basin_alpha_r(phi, psi), basin_beta(phi, psi)
    negative, positive = phi_negative(phi), phi_positive(phi)
    return {
        f"df_alpha_r_beta_{suffix}": reweighting.free_energy_difference(beta, alpha),
        f"df_phi_positive_{suffix}": reweighting.free_energy_difference(negative, positive),
        f"p_alpha_r_{suffix}": reweighting.population(alpha),
        f"p_beta_{suffix}": reweighting.population(beta),
        f"p_phi_positive_{suffix}": reweighting.population(positive),
    }


def _phi_profile(
    reweighting: Reweighting, phi: np.ndarray, bins: int = 36
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``F(phi)`` (kT, minimum 0) on ``bins`` bins over ``[-pi, pi)`` with bootstrap errors."""
    edges = np.linspace(-math.pi, math.pi, bins + 1)
    index = np.clip(np.digitize(phi, edges) - 1, 0, bins - 1)
    free, stderr = np.empty(bins), np.empty(bins)
    for b in range(bins):
        estimate = reweighting.population(index == b)
        p, se = float(estimate.value), float(estimate.stderr)
        free[b] = -math.log(p / (edges[1] - edges[0])) if p > 0 else math.inf
        stderr[b] = se / p if p > 0 else math.inf
    return 0.5 * (edges[1:] + edges[:-1]), free - free[np.isfinite(free)].min(), stderr


def _assemble(
    md_runs: Sequence[MDRun],
    umbrella_runs: Sequence[UmbrellaRun],
    settings: dict[str, Any],
    kT: float,  # noqa: N803 - the physical symbol
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays and the metadata of a reference file from finished runs."""
    torsions = [backbone_torsions(run.frames) for run in md_runs]
    phi = np.concatenate([t[0] for t in torsions])
    psi = np.concatenate([t[1] for t in torsions])
    runs = np.concatenate(
        [np.full(len(run.energies), i, dtype=np.int8) for i, run in enumerate(md_runs)]
    )
    offsets = np.cumsum([0] + [len(run.energies) for run in md_runs])
    if len(md_runs) >= 2:
        train = np.concatenate(
            [
                np.arange(offsets[i], offsets[i + 1])[:: settings["train_stride"]]
                for i in range(len(md_runs) - 1)
            ]
        )
        test = np.arange(offsets[-2], offsets[-1])[:: settings["test_stride"]]
        split = "train: every run but the last; test: the last run (independent seed)"
    else:
        cut = int(round(0.8 * offsets[-1]))
        train = np.arange(0, cut)[:: settings["train_stride"]]
        test = np.arange(cut, offsets[-1])[:: settings["test_stride"]]
        split = "train: the first 80 % of the run; test: the last 20 %"
    frames = np.concatenate([run.frames for run in md_runs])
    energies = np.concatenate([run.energies for run in md_runs])

    interval = md_runs[0].frame_interval_ps
    block = max(1, int(round(settings["md_block_ps"] / interval)))
    alpha, beta = basin_alpha_r(phi, psi), basin_beta(phi, psi)
    negative, positive = phi_negative(phi), phi_positive(phi)
    # Entries into each region (in any run): a block error needs many independent visits.
    entries = {
        name: int(sum(np.sum(mask[runs == r][1:] & ~mask[runs == r][:-1]) for r in np.unique(runs)))
        for name, mask in (("alpha_r", alpha), ("phi_positive", positive))
    }
    estimates: dict[str, Estimate | None] = {}
    for name, a, b, entered in (
        ("df_alpha_r_beta_md", beta, alpha, entries["alpha_r"]),
        ("df_phi_positive_md", negative, positive, entries["phi_positive"]),
    ):
        try:
            estimate = block_free_energy_difference(a, b, runs=runs, block_length=block)
        except InvalidInput:
            estimate = None
        # fewer than MIN_ENTRIES visits (phi > 0 in plain MD, usually): no trustworthy estimate
        estimates[name] = estimate if entered >= MIN_ENTRIES else None
    for name, mask, entered in (
        ("p_alpha_r_md", alpha, entries["alpha_r"]),
        ("p_beta_md", beta, entries["alpha_r"]),
        ("p_phi_positive_md", positive, entries["phi_positive"]),
    ):
        estimate = block_population(mask, runs=runs, block_length=block)
        estimates[name] = estimate if entered >= MIN_ENTRIES else None

    u_cv = np.concatenate([run.cv for run in umbrella_runs])
    u_phi = np.concatenate([run.phi for run in umbrella_runs])
    u_psi = np.concatenate([run.psi for run in umbrella_runs])
    u_window = np.concatenate([run.window for run in umbrella_runs])
    centers = umbrella_runs[0].centers
    n_windows = centers.size
    u_series = np.concatenate([r * n_windows + run.window for r, run in enumerate(umbrella_runs)])
    u_interval = umbrella_runs[0].frame_interval_ps
    u_block = max(1, int(round(settings["bootstrap_block_ps"] / u_interval)))
    k_s = umbrella_runs[0].force_constant
    mbar_options = {"block_length": u_block, "n_bootstrap": settings["n_bootstrap"]}
    reweighting = umbrella_mbar(u_cv, u_window, centers, k_s, kT, series=u_series, **mbar_options)
    estimates.update(_umbrella_estimates(reweighting, u_phi, u_psi, "umbrella"))
    repeats = []
    for run in umbrella_runs:
        alone = umbrella_mbar(run.cv, run.window, centers, k_s, kT, **mbar_options)
        repeats.append(
            {
                "seed": int(run.seed),
                "order": run.order.tolist(),
                **{
                    k: _estimate_json(v)
                    for k, v in _umbrella_estimates(alone, run.phi, run.psi, "umbrella").items()
                },
            }
        )
    bootstrap_scan = {}
    shortest = int(np.bincount(u_series.astype(np.int64)).min())
    for length_ps in settings["bootstrap_scan_ps"]:
        if length_ps / u_interval * MIN_BLOCKS_PER_SERIES > shortest:
            continue  # a series of too few blocks: the bootstrap cannot see its variance
        scan = umbrella_mbar(
            u_cv,
            u_window,
            centers,
            k_s,
            kT,
            series=u_series,
            block_length=max(1, int(round(length_ps / u_interval))),
            n_bootstrap=max(20, settings["n_bootstrap"] // 4),
            seed=1,
        )
        scan_estimates = _umbrella_estimates(scan, u_phi, u_psi, "umbrella")
        bootstrap_scan[f"{length_ps:g}"] = {
            k: float(v.stderr) for k, v in scan_estimates.items() if k.startswith("df")
        }
    profile = _phi_profile(reweighting, u_phi)
    # Cross-check where plain MD samples well: F(phi) and P(alpha_R | phi) in 10-degree bins.
    edges = np.linspace(-math.pi, math.pi, profile[0].size + 1)
    md_bin = np.clip(np.digitize(phi, edges) - 1, 0, profile[0].size - 1)
    u_bin = np.clip(np.digitize(u_phi, edges) - 1, 0, profile[0].size - 1)
    weights = np.exp(reweighting.log_weights)
    u_alpha = basin_alpha_r(u_phi, u_psi)
    cross_check = []
    for b in range(profile[0].size):
        in_md, in_u = md_bin == b, u_bin == b
        if in_md.sum() >= 100 and in_u.any():
            cross_check.append(
                {
                    "phi_deg": round(math.degrees(profile[0][b]), 1),
                    "frames_md": int(in_md.sum()),
                    "F_md_kT": -math.log(in_md.mean() / (edges[1] - edges[0])),
                    "F_umbrella_kT": float(profile[1][b]),
                    "p_alpha_r_given_phi_md": float(alpha[in_md].mean()),
                    "p_alpha_r_given_phi_umbrella": float(
                        weights[in_u] @ u_alpha[in_u] / weights[in_u].sum()
                    ),
                }
            )
    if cross_check:  # F of the umbrella profile is shifted to minimum 0: align the MD one
        shift = min(entry["F_md_kT"] for entry in cross_check)
        for entry in cross_check:
            entry["F_md_kT"] -= shift

    arrays = {
        "frames_train": frames[train],
        "frames_test": frames[test],
        "phi": phi.astype(np.float32),
        "psi": psi.astype(np.float32),
        "energies": energies,
        "run": runs,
        "train_index": train.astype(np.int32),
        "test_index": test.astype(np.int32),
        "umbrella_phi": u_phi.astype(np.float32),
        "umbrella_psi": u_psi.astype(np.float32),
        "umbrella_window": u_window.astype(np.int16),
        "umbrella_series": u_series.astype(np.int16),
        "umbrella_centers": centers,
        "umbrella_log_weights": reweighting.log_weights,
        "profile_phi": profile[0],
        "profile_F": profile[1],
        "profile_stderr": profile[2],
    }
    md0, u0 = md_runs[0], umbrella_runs[0]
    metadata = {
        "format_version": FORMAT_VERSION,
        "integrator": {
            "name": "LangevinMiddleIntegrator",
            "timestep_fs": md0.timestep_fs,
            "friction_per_ps": md0.friction_per_ps,
            "constraints": None,
            "nonbonded_method": "NoCutoff",
            "platform": "Reference",
            "minimization": "LocalEnergyMinimizer, tolerance 10 kJ/mol/nm, from the shipped PDB",
        },
        "md": {
            "seeds": [int(run.seed) for run in md_runs],
            "duration_ps": [float(run.duration_ps) for run in md_runs],
            "equilibration_ps": md0.equilibration_ps,
            "frame_interval_ps": interval,
            "wall_time_s": [round(float(run.wall_time_s), 1) for run in md_runs],
            "frames_per_run": [int(len(run.energies)) for run in md_runs],
            "energies": "potential energies (kJ/mol) of the stored float32 frames",
            "block_length_ps": block * interval,
            "block_scan_df_alpha_r_beta": _md_block_scan(
                beta, alpha, runs, [10, 50, 100, 250, 500, 1000, 2000]
            ),
            "frames_phi_positive": int(positive.sum()),
            "entries": entries,
            "min_entries_for_an_estimate": MIN_ENTRIES,
        },
        "split": {
            "rule": split,
            "train_stride": settings["train_stride"],
            "test_stride": settings["test_stride"],
            "n_train": int(train.size),
            "n_test": int(test.size),
        },
        "umbrella": {
            "cv": "phi (atoms " + str(list(PHI_ATOMS)) + ")",
            "n_windows": int(n_windows),
            "centers_rad": centers.tolist(),
            "force_constant_kJ_per_mol_rad2": k_s,
            "bias": "0.5*k*d^2, d = periodic distance of phi to the centre",
            "seeds": [int(run.seed) for run in umbrella_runs],
            "directions": [  # +1: increasing centres (the sweep's first step is +1 mod K)
                1 if (run.order[1] - run.order[0]) % n_windows == 1 else -1 for run in umbrella_runs
            ],
            "production_ps_per_window": u0.production_ps,
            "equilibration_ps_per_window": u0.equilibration_ps,
            "initial_equilibration_ps": u0.initial_equilibration_ps,
            "frame_interval_ps": u_interval,
            "wall_time_s": [round(float(run.wall_time_s), 1) for run in umbrella_runs],
            "estimator": "MBAR over all windows of all repeats; circular block bootstrap",
            "bootstrap_block_ps": u_block * u_interval,
            "n_bootstrap": settings["n_bootstrap"],
            "bootstrap_block_scan_stderr": bootstrap_scan,
            "repeats": repeats,
            "cross_check_with_md_by_phi_bin": cross_check,
        },
        "estimates": {k: _estimate_json(v) for k, v in estimates.items()},
        "estimates_help": {
            "df_alpha_r_beta": "F(alpha_R) - F(beta) in kT; alpha_R: phi < 0 and -120 < psi "
            "< 50 deg; beta: the rest of phi < 0",
            "df_phi_positive": "F(phi >= 0) - F(phi < 0) in kT",
            "p_*": "populations (fractions of the whole ensemble)",
            "_md": "plain MD, block-averaged standard errors",
            "_umbrella": "umbrella sampling along phi + MBAR, bootstrap standard errors",
        },
    }
    return arrays, metadata


def generate_reference(
    output: str | os.PathLike | None = None,
    *,
    forcefield: str = "amber99sbildn",
    solvent: str = "implicit",
    temperature: float = 300.0,
    md_ps: float = 10000.0,
    md_seeds: Sequence[int] = (1, 2),
    equilibration_ps: float = 100.0,
    frame_interval_ps: float = 1.0,
    umbrella_seeds: Sequence[int] = (11, 12),
    n_windows: int = 24,
    force_constant: float = 200.0,
    window_ps: float = 200.0,
    window_equilibration_ps: float = 20.0,
    umbrella_interval_ps: float = 0.5,
    umbrella_initial_ps: float = 50.0,
    md_block_ps: float = 500.0,
    bootstrap_block_ps: float = 50.0,
    n_bootstrap: int = 200,
    train_stride: int = 1,
    test_stride: int = 2,
    processes: int = 2,
    workdir: str | os.PathLike | None = None,
    progress: bool = True,
    command: str | None = None,
    note: str = "",
) -> MDReference:
    r"""Run the MD and umbrella sampling of a reference and write the reference file.

    Runs one plain-MD task per seed in ``md_seeds`` (:func:`run_md`, ``md_ps`` each) and one
    umbrella-sampling sweep per seed in ``umbrella_seeds`` (:func:`run_umbrella`, alternating
    directions) in ``processes`` worker processes, saving each finished task in ``workdir`` (a
    rerun with the same settings reuses them), then estimates the free energies and writes
    ``output`` (an ``.npz`` holding the arrays of :class:`MDReference` and a JSON metadata
    string; Cartesian frames only for the train/test split: every ``train_stride``-th frame of
    all runs but the last, every ``test_stride``-th frame of the last run).

    Cost with the defaults (amber99sbildn/implicit): 20 ns of MD and 2 x 5.3 ns of umbrella
    sampling, about 15 minutes of wall time in 2 processes at ~17 ps/s each, plus ~1 minute of
    analysis; the file is about 4 MB.

    Arguments:
        output: the file to write (default: :func:`cache_dir` / :func:`reference_filename`).
        forcefield, solvent, temperature: the system (:func:`alanine_dipeptide`).
        md_ps: length of each plain-MD run (ps), after ``equilibration_ps``.
        md_seeds: one independent run per seed; the last one is the test split.
        frame_interval_ps: ps between stored MD frames.
        umbrella_seeds: one umbrella sweep per seed.
        n_windows, force_constant, window_ps, window_equilibration_ps, umbrella_interval_ps,
            umbrella_initial_ps: umbrella settings (:func:`run_umbrella`: ``n_windows``,
            ``force_constant``, ``production_ps``, ``equilibration_ps``, ``frame_interval_ps``,
            ``initial_equilibration_ps``).
        md_block_ps: block length of the MD error bars.
        bootstrap_block_ps: block length of the umbrella bootstrap (at most a quarter of
            ``window_ps``, or the bootstrap cannot see the variance of a window).
        n_bootstrap: bootstrap replicates.
        train_stride, test_stride: strides of the shipped Cartesian frames.
        processes: worker processes (tasks run in parallel; 1 runs them here).
        workdir: where finished tasks are kept (default ``cache_dir()/runs``).
        progress: ``tqdm`` progress bars.
        command: the command line recorded in the metadata.
        note: free text recorded in the metadata.

    Returns:
        The written reference, loaded (:class:`MDReference`).
    """
    who = "generate_reference"
    name = reference_filename(forcefield, solvent, temperature)
    output = Path(output) if output is not None else cache_dir() / name
    workdir = Path(workdir) if workdir is not None else cache_dir() / "runs"
    seeds = [_seed(s, who) for s in md_seeds]
    u_seeds = [_seed(s, who) for s in umbrella_seeds]
    if not seeds or not u_seeds:
        raise InvalidInput(
            f"{who}: expected at least one MD seed and one umbrella seed, got "
            f"md_seeds={list(md_seeds)}, umbrella_seeds={list(umbrella_seeds)}"
        )
    processes = positive_int(processes, "processes", who)
    if 4 * bootstrap_block_ps > window_ps:
        raise InvalidInput(
            f"{who}: expected bootstrap_block_ps at most a quarter of window_ps ({window_ps}), "
            f"got {bootstrap_block_ps}"
        )
    settings = {
        "md_block_ps": positive_float(md_block_ps, "md_block_ps", who),
        "bootstrap_block_ps": positive_float(bootstrap_block_ps, "bootstrap_block_ps", who),
        "n_bootstrap": positive_int(n_bootstrap, "n_bootstrap", who, minimum=2),
        "train_stride": positive_int(train_stride, "train_stride", who),
        "test_stride": positive_int(test_stride, "test_stride", who),
        "bootstrap_scan_ps": [5.0, 20.0, 50.0, 100.0],
    }
    system = {"forcefield": forcefield, "solvent": solvent, "temperature": float(temperature)}
    tasks = [
        dict(
            kind="md",
            seed=s,
            duration_ps=float(md_ps),
            equilibration_ps=equilibration_ps,
            frame_interval_ps=frame_interval_ps,
            **system,
        )
        for s in seeds
    ]
    tasks += [
        dict(
            kind="umbrella",
            seed=s,
            direction=1 if i % 2 == 0 else -1,
            n_windows=n_windows,
            force_constant=float(force_constant),
            production_ps=float(window_ps),
            equilibration_ps=window_equilibration_ps,
            initial_equilibration_ps=float(umbrella_initial_ps),
            frame_interval_ps=umbrella_interval_ps,
            **system,
        )
        for i, s in enumerate(u_seeds)
    ]
    workdir.mkdir(parents=True, exist_ok=True)
    paths = [_task_path(workdir, task) for task in tasks]
    began = time.perf_counter()
    todo = [(i, task) for i, task in enumerate(tasks) if not paths[i].is_file()]
    if processes == 1 or len(todo) <= 1:
        for i, task in todo:
            _run_task(task, str(paths[i]), None, progress)
    else:
        with ProcessPoolExecutor(
            min(processes, len(todo)), mp_context=get_context("spawn")
        ) as pool:
            futures = [
                pool.submit(_run_task, task, str(paths[i]), j, progress)
                for j, (i, task) in enumerate(todo)
            ]
            for future in futures:
                future.result()
    simulated = time.perf_counter() - began
    results = [_load_task(task["kind"], path) for task, path in zip(tasks, paths)]
    md_runs = [r for r in results if isinstance(r, MDRun)]
    umbrella_runs = [r for r in results if isinstance(r, UmbrellaRun)]
    kT = alanine_dipeptide(solvent, forcefield, temperature).kT  # noqa: N806
    arrays, metadata = _assemble(md_runs, umbrella_runs, settings, kT)
    metadata.update(
        {
            "forcefield": forcefield,
            "solvent": solvent,
            "force_field_files": list(FORCE_FIELDS[(forcefield, solvent)]),
            "temperature_K": float(temperature),
            "kT_kJ_per_mol": kT,
            "command": command,
            "note": note,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "git": _git_commit(),
            "versions": _versions(),
            "wall_time_s": {
                "simulation (this call)": round(simulated, 1),
                "tasks reused from the workdir": len(tasks) - len(todo),
                "analysis": round(time.perf_counter() - began - simulated, 1),
                "processes": processes,
            },
        }
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(output.name + ".part.npz")
    np.savez_compressed(temporary, **arrays, metadata=np.array(json.dumps(metadata, indent=1)))
    os.replace(temporary, output)
    return load_reference(path=output)


# ---------------------------------------------------------------------------- command line
def main(
    argv: Sequence[str] | None = None, prog: str = "python -m physics.systems.reference"
) -> MDReference:
    """Command line of :func:`generate_reference`; prints the table of estimates.

    Arguments:
        argv: the arguments (default ``sys.argv[1:]``).
        prog: the program name recorded with the arguments in the file's metadata.

    Returns:
        The written reference.
    """
    defaults = generate_reference.__kwdefaults__ or {}
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Generate the MD + umbrella-sampling reference of alanine "
        "dipeptide (run it under nice -n 19 on shared machines).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--forcefield", default="amber99sbildn", choices=["amber99sbildn", "amber96"]
    )
    parser.add_argument("--solvent", default="implicit", choices=["implicit", "vacuum"])
    parser.add_argument("--temperature", type=float, default=300.0, help="kelvin")
    parser.add_argument("--md-ps", type=float, default=defaults["md_ps"], help="ps per MD run")
    parser.add_argument("--md-seeds", type=int, nargs="+", default=list(defaults["md_seeds"]))
    parser.add_argument("--equilibration-ps", type=float, default=defaults["equilibration_ps"])
    parser.add_argument("--frame-interval-ps", type=float, default=defaults["frame_interval_ps"])
    parser.add_argument(
        "--umbrella-seeds", type=int, nargs="+", default=list(defaults["umbrella_seeds"])
    )
    parser.add_argument("--windows", type=int, default=defaults["n_windows"])
    parser.add_argument(
        "--force-constant", type=float, default=defaults["force_constant"], help="kJ/mol/rad^2"
    )
    parser.add_argument("--window-ps", type=float, default=defaults["window_ps"])
    parser.add_argument(
        "--window-equilibration-ps", type=float, default=defaults["window_equilibration_ps"]
    )
    parser.add_argument(
        "--umbrella-interval-ps", type=float, default=defaults["umbrella_interval_ps"]
    )
    parser.add_argument(
        "--umbrella-initial-ps", type=float, default=defaults["umbrella_initial_ps"]
    )
    parser.add_argument("--md-block-ps", type=float, default=defaults["md_block_ps"])
    parser.add_argument("--bootstrap-block-ps", type=float, default=defaults["bootstrap_block_ps"])
    parser.add_argument("--n-bootstrap", type=int, default=defaults["n_bootstrap"])
    parser.add_argument("--train-stride", type=int, default=defaults["train_stride"])
    parser.add_argument("--test-stride", type=int, default=defaults["test_stride"])
    parser.add_argument("--processes", type=int, default=defaults["processes"])
    parser.add_argument("--workdir", default=None, help="finished tasks (default: cache/runs)")
    parser.add_argument("--output", default=None, help="default: the cache directory")
    parser.add_argument("--note", default="", help="free text for the metadata")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    reference = generate_reference(
        args.output,
        forcefield=args.forcefield,
        solvent=args.solvent,
        temperature=args.temperature,
        md_ps=args.md_ps,
        md_seeds=args.md_seeds,
        equilibration_ps=args.equilibration_ps,
        frame_interval_ps=args.frame_interval_ps,
        umbrella_seeds=args.umbrella_seeds,
        n_windows=args.windows,
        force_constant=args.force_constant,
        window_ps=args.window_ps,
        window_equilibration_ps=args.window_equilibration_ps,
        umbrella_interval_ps=args.umbrella_interval_ps,
        umbrella_initial_ps=args.umbrella_initial_ps,
        md_block_ps=args.md_block_ps,
        bootstrap_block_ps=args.bootstrap_block_ps,
        n_bootstrap=args.n_bootstrap,
        train_stride=args.train_stride,
        test_stride=args.test_stride,
        processes=args.processes,
        workdir=args.workdir,
        progress=not args.no_progress,
        command=f"{prog} {shlex.join(argv)}".strip(),
        note=args.note,
    )
    print(reference.summary())
    print(f"wrote {reference.path} ({os.path.getsize(reference.path) / 1e6:.2f} MB)")
    return reference


if __name__ == "__main__":  # pragma: no cover
    main()
