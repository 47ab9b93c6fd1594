r"""Trained flows inside OpenMM simulation scripts: load, draw positions, and flow-proposal
Metropolis-Hastings moves interleaved with the simulation's own integrator steps.

=================================  =============================================================
:func:`load_flow`                   a trained generator from a checkpoint, in one call
:func:`draw_positions`              configurations as an ``openmm.unit.Quantity`` (nm)
:class:`FlowMetropolisSampler`      independence Metropolis-Hastings with the flow as proposal,
                                    on a real ``openmm.app.Simulation``, between Langevin steps
=================================  =============================================================

**The move.** Between integrator steps the sampler proposes ``x' ~ q`` (the flow) independently
of the current state ``x`` and accepts with

.. math::

    \alpha = \min\left(1,\ \exp\big(-u(x') + u(x)
             + \log \tilde q(x) - \log \tilde q(x')\big)\right), \qquad u = U / k_B T,

where ``U`` is the potential energy from the simulation's own ``Context`` (so the target is
exactly the simulated system) and ``q~`` is the flow's density as a density over Cartesian
space. A flow over :class:`~physics.coordinates.FixedFrameCartesian` (internal coordinates)
has a density over the canonical frame, with rigid motions removed; the proposal keeps the
current state's rotation and translation (``x' = R^T c' + o`` with ``(o, R)`` the current
frame, :func:`~physics.coordinates.rigid_frame`), which makes it symmetric in those
coordinates, and

.. math:: \log \tilde q(x) = \log q(x) - \log J(x)

with the rigid-motion volume ``J`` of :func:`physics.coordinates.frame_log_jacobian`. For an
energy invariant under rigid motions (no external field, no periodic box) the move then
satisfies detailed balance for ``exp(-u(x))`` on ``R^{3N}`` exactly. A flow over plain
``Euclidean(3N)`` is used as it is. After an accepted move the velocities are redrawn from
Maxwell-Boltzmann (``context.setVelocitiesToTemperature``); after a rejected one the positions
are restored and the velocities were never touched. Since velocities are independent of
positions at equilibrium either way, the joint ``(x, v)`` distribution stays invariant and the
Langevin steps in between keep it too (up to their time-step error).

**Chirality.** A flow in internal coordinates can propose the mirror image (D form) of an
amino acid, which has the same energy but is another molecule. Proposals whose chirality
(:func:`~physics.coordinates.is_l_form`) differs from the current state's are rejected: the
target is the Boltzmann distribution restricted to the current enantiomer, which molecular
dynamics never leaves either.

**Cost.** A move costs one flow sample (drawn ``proposal_batch`` at a time), one energy
evaluation through the ``Context``, and, after integrator steps or an accepted move, one flow
density of the current state. The sampler counts each (:meth:`FlowMetropolisSampler.statistics`).

References:
    F. Noe, S. Olsson, J. Koehler, H. Wu, "Boltzmann generators: sampling equilibrium states of
    many-body systems with deep learning", Science 365 (2019), arXiv:1812.01729.
    L. Tierney, "Markov chains for exploring posterior distributions", Ann. Statist. 22 (1994)
    1701-1728 (independence Metropolis-Hastings).
    M. Gabrie, G. M. Rotskoff, E. Vanden-Eijnden, "Adaptive Monte Carlo augmented with
    normalizing flows", PNAS 119 (2022), arXiv:2105.12603 (flow moves between local moves).
    P. Eastman et al., "OpenMM 8", J. Phys. Chem. B 128 (2024), arXiv:2310.03121.
"""

from __future__ import annotations

import math
import os
import pickle
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import torch
from torch import Tensor

from manifoldflows._checks import positive_int, reference_tensor
from manifoldflows.errors import InvalidInput

from .coordinates import chiral_centers, frame_log_jacobian, is_l_form, rigid_frame
from .coordinates.zmatrix import TopologyLike
from .evaluation import flow_frame
from .systems.molecular import kelvin

if TYPE_CHECKING:  # pragma: no cover
    from manifoldflows.distributions import Distribution

__all__ = ["load_flow", "draw_positions", "FlowMetropolisSampler", "SamplerRun"]


# ---------------------------------------------------------------------------- loading
def _as_flow(obj: object, who: str) -> Distribution:
    """The flow in a loaded object: the object itself or its ``.flow``."""
    for candidate in (obj, getattr(obj, "flow", None)):
        if hasattr(candidate, "sample_and_log_prob") and hasattr(candidate, "log_prob"):
            return candidate
    raise InvalidInput(
        f"{who}: expected a checkpoint holding a flow (an object with sample_and_log_prob and "
        f"log_prob, or with such a .flow), got {type(obj).__name__}"
    )


def load_flow(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> Distribution:
    """Load a trained generator from a checkpoint, in one call, ready to draw and score.

    A Boltzmann-generator file (:func:`physics.generator.save_generator`, or a checkpoint of
    :func:`manifoldflows.training.fit`) is rebuilt by :func:`physics.generator.load_generator`
    (weights only, nothing unpickled). Any other file is read with ``torch.load`` as a whole
    pickled module (``torch.save(flow, path)``); pickles run code: load only files you trust.
    The result, or its ``.flow``, must have ``sample_and_log_prob`` and ``log_prob``; it is
    returned in ``eval`` mode.

    Arguments:
        path: the checkpoint file.
        map_location: device to load tensors onto (``torch.load``).

    Returns:
        The flow (the loaded object, or its ``.flow`` when the builder returns a wrapper).

    Raises:
        FileNotFoundError: when the file does not exist.
        InvalidInput: when the checkpoint holds no flow.

    Example:
        >>> import tempfile, os
        >>> from manifoldflows.distributions import StandardNormal
        >>> with tempfile.TemporaryDirectory() as d:
        ...     torch.save(StandardNormal(3), os.path.join(d, "flow.pt"))
        ...     flow = load_flow(os.path.join(d, "flow.pt"))
        >>> flow.sample((2,)).shape
        torch.Size([2, 3])
    """
    who = "load_flow"
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{who}: no checkpoint file {str(path)!r}")
    from .generator import load_generator  # the builder's checkpoint format

    try:
        obj = load_generator(path)  # weights only: no code is unpickled
    except (InvalidInput, pickle.UnpicklingError):
        obj = torch.load(path, map_location=map_location, weights_only=False)
    flow = _as_flow(obj, who)
    if isinstance(flow, torch.nn.Module):
        flow.eval()
    return flow


# ---------------------------------------------------------------------------- positions
def _flow_atoms(flow: Distribution, who: str) -> int:
    """Number of atoms of a flow over flat configurations ``(3N,)``."""
    event = tuple(getattr(getattr(flow, "space", None), "event_shape", ()))
    if len(event) != 1 or event[0] % 3 or event[0] < 3:
        raise InvalidInput(
            f"{who}: expected a flow over flat configurations (3N,) in nm, got event shape {event}"
        )
    return event[0] // 3


def _flow_dtype(flow: Distribution) -> tuple[torch.dtype, torch.device]:
    ref = reference_tensor(flow) if isinstance(flow, torch.nn.Module) else None
    if ref is None:
        return torch.get_default_dtype(), torch.device("cpu")
    return ref.dtype, ref.device


def draw_positions(
    flow: Distribution,
    n: int,
    *,
    generator: torch.Generator | None = None,
    topology: TopologyLike | None = None,
    max_tries: int = 100,
) -> unit.Quantity:
    """Draw ``n`` configurations from a flow as OpenMM positions (nm, with units).

    Arguments:
        flow: a flow (or distribution) over flat configurations ``(3N,)`` in nm.
        n: number of configurations.
        generator: optional random generator (on the flow's device).
        topology: optional topology (mdtraj, OpenMM or a
            :class:`~physics.systems.MolecularSystem`): then only L-form configurations are
            returned (D-form draws are replaced by new ones), see
            :func:`~physics.coordinates.is_l_form`.
        max_tries: batches drawn at most when filtering.

    Returns:
        An ``openmm.unit.Quantity`` wrapping a float64 array ``(n, N, 3)`` in nanometers;
        ``positions[i]`` is ready for ``simulation.context.setPositions``.

    Raises:
        InvalidInput: for a flow that does not sample configurations, or when ``max_tries``
            batches give fewer than ``n`` L-form configurations.

    Example:
        >>> from manifoldflows.distributions import StandardNormal
        >>> pos = draw_positions(StandardNormal(6), 4, generator=torch.Generator().manual_seed(0))
        >>> pos.unit == unit.nanometer, pos.value_in_unit(unit.angstrom).shape
        (True, (4, 2, 3))
    """
    who = "draw_positions"
    n = positive_int(n, "n", who)
    n_atoms = _flow_atoms(flow, who)
    centers = chiral_centers(topology) if topology is not None else ()
    kept: list[Tensor] = []
    have = 0
    for _ in range(positive_int(max_tries, "max_tries", who)):
        with torch.no_grad():
            x = flow.sample((n - have,), generator=generator).detach()
        if centers:
            x = x[is_l_form(x, centers)]
        kept.append(x)
        have += len(x)
        if have >= n:
            break
    if have < n:
        raise InvalidInput(
            f"{who}: {max_tries} batches gave only {have} of {n} L-form configurations"
        )
    xyz = torch.cat(kept)[:n].cpu().double().numpy().reshape(n, n_atoms, 3)
    return unit.Quantity(xyz, unit.nanometer)


# ---------------------------------------------------------------------------- the sampler
@dataclass(frozen=True, eq=False)
class SamplerRun:
    """Output of :meth:`FlowMetropolisSampler.run`.

    Attributes:
        accepted: ``(n_cycles,)`` accepted flow moves per cycle.
        positions: ``(n_cycles, N, 3)`` float32 positions (nm) after each cycle, when recorded
            (else ``None``).
        seconds: wall time of the run.
    """

    accepted: np.ndarray
    positions: np.ndarray | None
    seconds: float


def _kelvin(
    integrator: openmm.Integrator, temperature: float | unit.Quantity | None, who: str
) -> float:
    if temperature is None:
        getter = getattr(integrator, "getTemperature", None)
        if getter is None:
            raise InvalidInput(
                f"{who}: the integrator {type(integrator).__name__} has no temperature; pass "
                "temperature= (kelvin)"
            )
        temperature = getter()
    return kelvin(temperature, who)


class FlowMetropolisSampler:
    r"""Flow-proposal Metropolis-Hastings moves between the steps of an OpenMM simulation.

    Wraps a real ``openmm.app.Simulation`` (its ``Context`` gives the energies, its
    integrator the Langevin steps, its reporters keep reporting) and a flow over the
    simulation's configurations. :meth:`move` makes independence Metropolis-Hastings moves with
    the acceptance of the module docstring; :meth:`run` alternates ``md_steps`` integrator
    steps with ``moves_per_cycle`` moves. Counters: :attr:`n_proposed`, :attr:`n_accepted`,
    :attr:`acceptance_rate`, :attr:`n_chirality_rejected`, and :meth:`statistics`.

    Arguments:
        simulation: an ``openmm.app.Simulation`` (or any object with ``context``,
            ``integrator`` and ``topology``).
        flow: a flow over flat configurations ``(3N,)`` in nm for the simulation's ``N``
            particles, with ``sample_and_log_prob`` and ``log_prob`` (e.g. from
            :func:`load_flow`).
        temperature: kelvin (default: the integrator's temperature).
        proposal_batch: proposals drawn from the flow per call.
        generator: random generator for proposals, acceptance tests and velocity seeds (on the
            flow's device); default: torch's global generator.
        check_chirality: reject proposals of the other enantiomer (when the topology has
            alpha-carbon chiral centres).

    Raises:
        InvalidInput: for a flow over another number of atoms (naming both), or an integrator
            without a temperature and none given.

    References:
        Noe et al., Science 2019, arXiv:1812.01729. Tierney, Ann. Statist. 1994. Gabrie,
        Rotskoff & Vanden-Eijnden, PNAS 2022, arXiv:2105.12603.

    Example:
        >>> import openmm, openmm.app as app, openmm.unit as unit
        >>> from manifoldflows.distributions import DiagNormal
        >>> top = app.Topology()
        >>> res = top.addResidue("X", top.addChain())
        >>> for _ in range(2):
        ...     _ = top.addAtom("C", app.Element.getBySymbol("C"), res)
        >>> system = openmm.System()
        >>> for _ in range(2):
        ...     _ = system.addParticle(12.0)
        >>> bond = openmm.HarmonicBondForce()
        >>> _ = bond.addBond(0, 1, 0.15, 5000.0)
        >>> _ = system.addForce(bond)
        >>> integrator = openmm.LangevinMiddleIntegrator(300, 1.0, 0.001)
        >>> sim = app.Simulation(top, system, integrator,
        ...                      openmm.Platform.getPlatformByName("Reference"))
        >>> sim.context.setPositions([[0, 0, 0], [0.15, 0, 0]] * unit.nanometer)
        >>> flow = DiagNormal(6, torch.tensor([0, 0, 0, 0.15, 0, 0]), 0.03)
        >>> sampler = FlowMetropolisSampler(sim, flow, generator=torch.Generator().manual_seed(0))
        >>> result = sampler.run(20, md_steps=5)
        >>> sampler.n_proposed, 0.0 <= sampler.acceptance_rate <= 1.0
        (20, True)
    """

    def __init__(
        self,
        simulation: app.Simulation,
        flow: Distribution,
        *,
        temperature: float | unit.Quantity | None = None,
        proposal_batch: int = 256,
        generator: torch.Generator | None = None,
        check_chirality: bool = True,
    ):
        who = type(self).__name__
        context = getattr(simulation, "context", None)
        if not isinstance(context, openmm.Context):
            raise InvalidInput(
                f"{who}: expected an openmm.app.Simulation (with a context), got "
                f"{type(simulation).__name__}"
            )
        if not (hasattr(flow, "sample_and_log_prob") and hasattr(flow, "log_prob")):
            raise InvalidInput(
                f"{who}: expected a flow with sample_and_log_prob and log_prob, got "
                f"{type(flow).__name__}"
            )
        n_particles = context.getSystem().getNumParticles()
        n_atoms = _flow_atoms(flow, who)
        if n_atoms != n_particles:
            raise InvalidInput(
                f"{who}: the flow samples configurations of {n_atoms} atoms (event shape "
                f"({3 * n_atoms},)) but the simulation has {n_particles} particles (expected a "
                f"flow with event shape ({3 * n_particles},))"
            )
        self.simulation = simulation
        self.context = context
        self.flow = flow
        self.n_atoms = n_particles
        self.temperature = _kelvin(simulation.integrator, temperature, who)
        self.kT = (unit.MOLAR_GAS_CONSTANT_R * self.temperature * unit.kelvin).value_in_unit(
            unit.kilojoule_per_mole
        )
        self.proposal_batch = positive_int(proposal_batch, "proposal_batch", who)
        self.generator = generator
        self.frame = flow_frame(flow)
        topology = getattr(simulation, "topology", None)
        centers = chiral_centers(topology) if check_chirality and topology is not None else ()
        self.centers = centers or None
        self._dtype, self._device = _flow_dtype(flow)
        # Proposal buffer: canonical configurations, log q~ and chirality.
        self._buffer: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._next = 0
        # Current state cache: (positions, u, log q~, L form), valid until the next MD step.
        self._current: tuple[np.ndarray, float, float, bool] | None = None
        self.n_proposed = 0
        self.n_accepted = 0
        self.n_chirality_rejected = 0
        self.n_energy_evaluations = 0
        self.n_density_evaluations = 0
        self.n_flow_samples = 0
        self.n_md_steps = 0
        self.seconds = {"md": 0.0, "flow": 0.0, "energy": 0.0}

    # ------------------------------------------------------------------ pieces
    def _log_q_tilde(self, x: Tensor, log_q: Tensor) -> Tensor:
        """``log q - log J``: the flow's density as a density over Cartesian space."""
        if self.frame is None:
            return log_q
        return log_q - frame_log_jacobian(x, self.frame)

    def _l_form(self, x: Tensor) -> np.ndarray:
        if self.centers is None:
            return np.ones(x.shape[0], dtype=bool)
        return is_l_form(x, self.centers).cpu().numpy()

    def _refill(self) -> None:
        began = time.perf_counter()
        with torch.no_grad():
            x, log_q = self.flow.sample_and_log_prob(
                (self.proposal_batch,), generator=self.generator
            )
            x = x.detach()
            log_qt = self._log_q_tilde(x, log_q.detach())
        self._buffer = (
            x.cpu().double().numpy().reshape(-1, self.n_atoms, 3),
            log_qt.cpu().double().numpy(),
            self._l_form(x),
        )
        self._next = 0
        self.n_flow_samples += self.proposal_batch
        self.seconds["flow"] += time.perf_counter() - began

    def _proposal(self) -> tuple[np.ndarray, float, bool]:
        if self._buffer is None or self._next >= self.proposal_batch:
            self._refill()
        c, log_qt, l_form = self._buffer  # type: ignore[misc]
        i = self._next
        self._next += 1
        return c[i], float(log_qt[i]), bool(l_form[i])

    def _energy(self) -> float:
        """Reduced potential energy of the context's positions (``+inf`` when not finite)."""
        began = time.perf_counter()
        try:
            state = self.context.getState(getEnergy=True)
            energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        except openmm.OpenMMException:
            energy = math.inf
        self.n_energy_evaluations += 1
        self.seconds["energy"] += time.perf_counter() - began
        return energy / self.kT if math.isfinite(energy) else math.inf

    def _current_state(self) -> tuple[np.ndarray, float, float, bool]:
        if self._current is None:
            began = time.perf_counter()
            state = self.context.getState(getPositions=True, getEnergy=True)
            positions = np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
            u = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / self.kT
            self.n_energy_evaluations += 1
            self.seconds["energy"] += time.perf_counter() - began
            began = time.perf_counter()
            x = torch.as_tensor(positions.reshape(1, -1), dtype=self._dtype, device=self._device)
            with torch.no_grad():
                log_qt = float(self._log_q_tilde(x, self.flow.log_prob(x))[0])
            self.n_density_evaluations += 1
            l_form = bool(self._l_form(x)[0])
            self.seconds["flow"] += time.perf_counter() - began
            self._current = (positions, u, log_qt, l_form)
        return self._current

    def _uniform(self) -> float:
        return float(
            torch.rand((), generator=self.generator, dtype=torch.float64, device=self._device)
        )

    def _seed(self) -> int:
        return int(torch.randint(1, 2**31 - 1, (), generator=self.generator, device=self._device))

    # ------------------------------------------------------------------ moves
    def move(self, n_moves: int = 1) -> int:
        """Make ``n_moves`` flow Metropolis-Hastings moves; returns how many were accepted."""
        n_moves = positive_int(n_moves, "n_moves", f"{type(self).__name__}.move")
        accepted = 0
        for _ in range(n_moves):
            positions, u, log_qt, l_form = self._current_state()
            c, log_qt_new, l_form_new = self._proposal()
            self.n_proposed += 1
            if l_form_new != l_form:
                self.n_chirality_rejected += 1
                continue
            if self.frame is None:
                proposal = c
            else:  # the current rotation and translation, the proposal's canonical shape
                origin, rotation = rigid_frame(torch.as_tensor(positions), self.frame)
                proposal = c @ rotation.numpy() + origin.numpy()
            self.context.setPositions(unit.Quantity(proposal, unit.nanometer))
            u_new = self._energy()
            log_alpha = -u_new + u + log_qt - log_qt_new
            if math.isfinite(u_new) and math.log(self._uniform()) < log_alpha:
                self.context.setVelocitiesToTemperature(self.temperature, self._seed())
                self._current = (proposal, u_new, log_qt_new, l_form_new)
                self.n_accepted += 1
                accepted += 1
            else:
                self.context.setPositions(unit.Quantity(positions, unit.nanometer))
        return accepted

    def step(self, md_steps: int) -> None:
        """Run ``md_steps`` steps of the simulation's integrator (reporters included)."""
        md_steps = positive_int(md_steps, "md_steps", f"{type(self).__name__}.step", minimum=0)
        if md_steps == 0:
            return
        began = time.perf_counter()
        stepper = getattr(self.simulation, "step", None) or self.simulation.integrator.step
        stepper(md_steps)
        self.n_md_steps += md_steps
        self._current = None
        self.seconds["md"] += time.perf_counter() - began

    def run(
        self,
        n_cycles: int,
        md_steps: int,
        *,
        moves_per_cycle: int = 1,
        record: bool = False,
    ) -> SamplerRun:
        """``n_cycles`` cycles of ``md_steps`` integrator steps and ``moves_per_cycle`` moves.

        Arguments:
            n_cycles: number of cycles.
            md_steps: integrator steps per cycle (``0``: flow moves only).
            moves_per_cycle: flow moves per cycle.
            record: keep the positions after every cycle.

        Returns:
            A :class:`SamplerRun` (accepted moves per cycle, positions when recorded).
        """
        who = f"{type(self).__name__}.run"
        n_cycles = positive_int(n_cycles, "n_cycles", who)
        md_steps = positive_int(md_steps, "md_steps", who, minimum=0)
        moves_per_cycle = positive_int(moves_per_cycle, "moves_per_cycle", who, minimum=0)
        began = time.perf_counter()
        accepted = np.zeros(n_cycles, dtype=np.int64)
        positions = np.empty((n_cycles, self.n_atoms, 3), dtype=np.float32) if record else None
        for i in range(n_cycles):
            self.step(md_steps)
            if moves_per_cycle:
                accepted[i] = self.move(moves_per_cycle)
            if positions is not None:
                positions[i] = self.positions()
        return SamplerRun(accepted, positions, time.perf_counter() - began)

    def positions(self) -> np.ndarray:
        """The current positions, a float64 array ``(N, 3)`` in nm."""
        if self._current is not None:
            return self._current[0]
        state = self.context.getState(getPositions=True)
        return np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))

    # ------------------------------------------------------------------ reporting
    @property
    def acceptance_rate(self) -> float:
        """Accepted / proposed flow moves (0 before any move)."""
        return self.n_accepted / self.n_proposed if self.n_proposed else 0.0

    def statistics(self) -> dict[str, Any]:
        """Counters and wall times (JSON-serialisable)."""
        return {
            "temperature_K": self.temperature,
            "n_proposed": self.n_proposed,
            "n_accepted": self.n_accepted,
            "acceptance_rate": self.acceptance_rate,
            "n_chirality_rejected": self.n_chirality_rejected,
            "n_md_steps": self.n_md_steps,
            "n_energy_evaluations": self.n_energy_evaluations,
            "n_density_evaluations": self.n_density_evaluations,
            "n_flow_samples": self.n_flow_samples,
            "seconds": dict(self.seconds),
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(atoms={self.n_atoms}, T={self.temperature:g} K, "
            f"proposed={self.n_proposed}, accepted={self.n_accepted}, "
            f"acceptance={self.acceptance_rate:.3f}, md_steps={self.n_md_steps})"
        )
