r"""OpenMM as a batched, differentiable energy: :class:`OpenMMEnergy`.

An OpenMM system becomes a Boltzmann target over flat Cartesian coordinates
``x in R^{3N}`` (nm), in reduced units,

.. math::

    u(x) = \frac{U(x)}{k_B T}, \qquad
    -\nabla_x u(x) = \frac{F(x)}{k_B T},

with ``U`` in kJ/mol and ``F = -\nabla U`` in kJ/mol/nm as OpenMM computes them, and
``k_B = 0.00831446261815324`` kJ/mol/K (:data:`physics.energy.BOLTZMANN_CONSTANT`, the same as
OpenMM's ``MOLAR_GAS_CONSTANT_R / 1000``). No other conversion happens: positions go to OpenMM
in nm and energies and forces come back in kJ/mol and kJ/mol/nm, computed in float64.

Gradients come from OpenMM's forces, not from a second evaluation: a
``torch.autograd.Function`` returns ``u``, keeps ``-F / kT`` and multiplies it by the incoming
gradient in ``backward``; :meth:`OpenMMEnergy.energy_and_force` returns both from the same
evaluation.

Where the evaluation runs:

* ``n_workers=0`` (default): in this process, one ``Context``, no pool — the fastest for
  small batches (no transfer, no start-up);
* ``n_workers >= 1``: a local pool of that many worker processes (:mod:`physics.openmm.pool`:
  one chunk per worker through shared memory, started on the first batch, dead or hung
  workers replaced and their chunks re-run); ``n_workers=1`` isolates OpenMM from this
  process without parallelism;
* ``executor=``: any ``concurrent.futures.Executor`` (:mod:`physics.openmm.remote`), e.g.
  ``distributed.Client(cluster).get_executor()`` to use every machine of a Dask cluster.

Throughput on 2 cores (alanine dipeptide, energies and forces per second): see the
:class:`OpenMMEnergy` docstring.

Configurations that OpenMM cannot evaluate (NaN positions, overlapping atoms, overflowing
energies) get ``u = +inf`` and **zero** force, and are counted per batch in
:attr:`OpenMMEnergy.last_batch_stats` (and logged at INFO level) rather than warned about:
wrap the energy in :class:`physics.regularize.LinLogCut` or :class:`physics.regularize.Clip`
to turn them into a finite cap.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import openmm
import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from manifoldflows.errors import InvalidInput
from manifoldflows.spaces import Euclidean

from ..energy import Energy
from ..systems.molecular import DEFAULT_TEMPERATURE, system_temperature
from ._worker import ChunkResult, ContextEvaluator, ContextSpec, evaluate_chunk
from .chunks import Batch, ChunkPolicy, Hook, OpenMMWorkerError, Runner, RunStats
from .platforms import choose_platform, platform_properties
from .pool import WorkerPool
from .remote import ExecutorRunner

__all__ = [
    "OpenMMEnergy",
    "BatchStats",
    "ChunkResult",
    "OpenMMWorkerError",
    "evaluate_chunk",
    "DEFAULT_TEMPERATURE",
    "HasSystem",
]

_log = logging.getLogger("physics.openmm")


@dataclass(frozen=True)
class BatchStats:
    """What happened in the latest batch of an :class:`OpenMMEnergy`.

    Attributes:
        n_evaluated: configurations in the batch.
        n_nonfinite: configurations returned as ``u = +inf`` (OpenMM raised, or its energy or
            forces were not finite).
        n_errors: how many of those made OpenMM raise.
        first_error: the first such OpenMM message (``""`` when none).
        n_chunks: chunks the batch was split into.
        n_retries: chunks run again after a worker died, hung or raised.
        n_restarts: worker processes replaced during the batch.
        seconds: wall time of the evaluation.
        mode: ``"in-process"``, ``"pool"`` or ``"executor"``.
    """

    n_evaluated: int
    n_nonfinite: int
    n_errors: int
    first_error: str
    n_chunks: int
    n_retries: int
    n_restarts: int
    seconds: float
    mode: str


class _InProcess:
    """Evaluation in the calling process with one lazily created ``Context``."""

    def __init__(self, spec: ContextSpec):
        self._evaluator = ContextEvaluator(*spec)
        self._lock = threading.Lock()  # one Context: one batch at a time

    def evaluate(self, batch: Batch, hook: Hook = None) -> RunStats:
        stats = RunStats(n_chunks=1)
        with self._lock:
            stats.add(*self._evaluator.evaluate_into(*batch))
        return stats

    def close(self) -> None:
        pass


class HasSystem(Protocol):
    """What :class:`OpenMMEnergy` reads from a molecular system (``physics.systems``)."""

    system: openmm.System
    temperature: float


class _EnergyAndForce(torch.autograd.Function):
    """``x -> (u, F)`` with ``du/dx = -F`` taken from OpenMM's forces (no re-evaluation)."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, energy: OpenMMEnergy) -> tuple[Tensor, Tensor]:
        u, force = energy._compute(x)
        ctx.save_for_backward(force)
        ctx.mark_non_differentiable(force)
        return u, force

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_u: Tensor, grad_force: Tensor) -> tuple[Tensor, None]:
        (force,) = ctx.saved_tensors
        return -grad_u.unsqueeze(-1) * force, None


class OpenMMEnergy(Energy):
    r"""The reduced energy of an OpenMM system, batched, with forces as gradients.

    .. math::

        u(x) = \frac{U(x)}{k_B T}, \qquad \nabla_x u(x) = -\frac{F(x)}{k_B T},
        \qquad x \in \mathbb{R}^{3N}\ (\mathrm{nm})

    over ``Euclidean(3N)``, with ``U`` and ``F`` from OpenMM (kJ/mol, kJ/mol/nm) and
    ``k_B = 0.00831446261815324`` kJ/mol/K. ``energy(x)`` is differentiable: its backward
    multiplies the incoming gradient by ``-F / kT`` saved from the same evaluation;
    :meth:`energy_and_force` returns ``(u, F / kT)`` from one evaluation (the force is a
    constant of the graph: OpenMM gives no second derivatives, and a double backward raises).
    Positions are used as given: constraints are not applied; virtual sites are recomputed
    from the other particles.

    Evaluation runs in this process (``n_workers=0``), in a pool of worker processes
    (``n_workers >= 1``: the batch is split into one chunk per worker, moved through shared
    memory; see :mod:`physics.openmm.pool`), or on an ``executor``. The pool starts on the
    first batch (or :meth:`start`; 0.22 s for two workers on 2 idle cores) and stays up until
    :meth:`close`, the end of a ``with`` block, garbage collection or interpreter exit. A worker
    that dies is replaced and its chunk run again; one that takes longer than ``timeout``
    seconds on a chunk is killed, replaced and its chunk run again; after ``max_retries``
    failed re-runs :class:`~physics.openmm.chunks.OpenMMWorkerError` names the chunk.
    Scripts using workers need no ``if __name__ == "__main__"`` guard (workers do not import
    ``__main__``).

    ``platform="auto"`` picks Reference for up to 96 atoms (48 with a generalized-Born
    force), above that the fastest platform available (see :mod:`physics.openmm.platforms`);
    in workers the CPU platform runs one thread each.

    Configurations OpenMM cannot evaluate get ``u = +inf`` and zero force; they are counted in
    :attr:`last_batch_stats` and ``total_nonfinite`` (wrap in
    :class:`physics.regularize.LinLogCut` to cap them).

    Measured on the 2-core reference machine, idle (alanine dipeptide, energies and forces per
    second, best of 6, batch 64 / 1024 / 16384):

    ==========================  ====================  ====================
    evaluation                  vacuum                implicit (OBC)
    ==========================  ====================  ====================
    bare OpenMM loop [#]_       22k / 26k / 25k       13k / 14k / 14k
    ``n_workers=0``             45k / 50k / 51k       18k / 19k / 20k
    ``n_workers=2``             55k / 76k / 101k      28k / 37k / 39k
    ==========================  ====================  ====================

    .. [#] ``setPositions`` + ``getState(energy, forces)`` + ``getForces(asNumpy=True)`` in one
       process. In-process is faster because the forces are read into the output without
       OpenMM's unit wrapping (~27 µs per call, more than a vacuum evaluation).

    On a machine busy with other jobs the pool gains only what free cores it gets.

    Arguments:
        system: an ``openmm.System``, or an object with ``.system`` (an ``openmm.System``) and
            ``.temperature`` (kelvin) such as :class:`physics.systems.MolecularSystem`.
        n_workers: ``0``: evaluate in this process; ``k >= 1``: a pool of ``k`` worker
            processes; with ``executor``, the number of chunks per batch (``0``: the executor's
            ``_max_workers`` when it has one, else the number of CPUs).
        platform: ``"auto"`` or an OpenMM platform name (``"Reference"``, ``"CPU"``, ...).
        executor: a ``concurrent.futures.Executor`` to run chunks on (overrides the pool).
        temperature: kelvin (float or OpenMM quantity); default ``system.temperature``, or
            :data:`DEFAULT_TEMPERATURE` (300 K) for a plain ``openmm.System``.
        platform_properties: extra OpenMM platform properties.
        timeout: seconds a chunk may take before its worker is replaced (default: 300 s, or
            50 times the chunk's expected time from earlier chunks when that is longer).
        max_retries: re-runs of a failed chunk before the batch fails (default 2).

    Attributes:
        system_xml: the serialized system (what workers and executors receive).
        n_atoms: ``N``; ``dim = 3N``.
        platform: the platform name in use.
        temperature: kelvin; ``kT`` and ``beta`` as in :class:`~physics.energy.Energy`.
        last_batch_stats: :class:`BatchStats` of the latest batch (``None`` before any).
        total_evaluated, total_nonfinite: counts over the object's life.

    References:
        P. Eastman et al., "OpenMM 8: Molecular dynamics simulation with machine learning
        potentials", J. Phys. Chem. B 128 (2024), arXiv:2310.03121. F. Noe, S. Olsson,
        J. Koehler, H. Wu, "Boltzmann generators", Science 365 (2019), arXiv:1812.01729.

    Example:
        >>> from physics.systems import alanine_dipeptide
        >>> molecule = alanine_dipeptide("vacuum")
        >>> energy = OpenMMEnergy(molecule)  # in-process; Reference platform for 22 atoms
        >>> x = torch.tensor(molecule.positions.reshape(1, 66), requires_grad=True)
        >>> u = energy.energy(x)
        >>> round(u.item() * energy.kT, 1)  # kJ/mol at the PDB geometry
        -55.3
        >>> u.sum().backward()
        >>> torch.equal(x.grad, -energy.force(x.detach()))
        True
        >>> energy.platform, energy.last_batch_stats.n_nonfinite
        ('Reference', 0)
    """

    def __init__(
        self,
        system: openmm.System | HasSystem,
        *,
        n_workers: int = 0,
        platform: str = "auto",
        executor: cf.Executor | None = None,
        temperature: float | openmm.unit.Quantity | None = None,
        platform_properties: dict[str, str] | None = None,
        timeout: float | None = None,
        max_retries: int = 2,
    ):
        who = type(self).__name__
        omm_system = getattr(system, "system", system)
        if not isinstance(omm_system, openmm.System):
            raise InvalidInput(
                f"{who}: expected an openmm.System or an object with .system (a "
                f"MolecularSystem), got {type(system).__name__}"
            )
        n_atoms = omm_system.getNumParticles()
        if n_atoms < 1:
            raise InvalidInput(f"{who}: expected a system with at least one particle, got 0")
        temperature = system_temperature(system, temperature, who)
        super().__init__(Euclidean(3 * n_atoms), temperature=temperature, units="kJ/mol")
        if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 0:
            raise InvalidInput(f"{who}: expected n_workers as an integer >= 0, got {n_workers!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise InvalidInput(
                f"{who}: expected max_retries as an integer >= 0, got {max_retries!r}"
            )
        if timeout is not None and not (
            isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0
        ):
            raise InvalidInput(
                f"{who}: expected timeout as positive seconds or None, got {timeout!r}"
            )
        if executor is not None and not isinstance(executor, cf.Executor):
            raise InvalidInput(
                f"{who}: expected executor as a concurrent.futures.Executor, got "
                f"{type(executor).__name__}"
            )
        if platform_properties is not None and not isinstance(platform_properties, dict):
            raise InvalidInput(
                f"{who}: expected platform_properties as a dict, got "
                f"{type(platform_properties).__name__}"
            )
        self.platform = choose_platform(omm_system, platform, who)
        self.system_xml = openmm.XmlSerializer.serialize(omm_system)
        self.n_atoms = n_atoms
        self.temperature = temperature
        self.name = getattr(system, "name", None)
        self.n_workers = n_workers
        self.executor = executor
        self.platform_properties = dict(platform_properties or {})
        self.timeout = None if timeout is None else float(timeout)
        self.max_retries = max_retries
        self.last_batch_stats: BatchStats | None = None
        self.total_evaluated = 0
        self.total_nonfinite = 0
        self._runner: Runner | None = None
        self._fault_hook: dict[str, Any] | None = None  # tests only: see _worker._apply_hook

    # ------------------------------------------------------------------ lifecycle
    @property
    def mode(self) -> str:
        """``"executor"``, ``"pool"`` or ``"in-process"``: where batches are evaluated."""
        if self.executor is not None:
            return "executor"
        return "pool" if self.n_workers > 0 else "in-process"

    def _runner_for(self) -> Runner:
        if self._runner is not None and getattr(self._runner, "owner", os.getpid()) != os.getpid():
            self._runner = None  # a forked copy: the parent's workers are not ours to use
        if self._runner is None:
            mode = self.mode
            properties = platform_properties(
                self.platform, self.platform_properties, in_worker=mode != "in-process"
            )
            spec = ContextSpec(self.system_xml, self.platform, properties)
            policy = ChunkPolicy(self.timeout, self.max_retries, type(self).__name__)
            if mode == "executor":
                chunks = self.n_workers or getattr(self.executor, "_max_workers", None)
                self._runner = ExecutorRunner(
                    self.executor, spec, chunks or os.cpu_count() or 1, policy
                )
            elif mode == "pool":
                self._runner = WorkerPool(spec, self.dim, self.n_workers, policy)
            else:
                self._runner = _InProcess(spec)
        return self._runner

    def start(self) -> float:
        """Start the worker pool (or the in-process ``Context``) now; the seconds it took."""
        runner = self._runner_for()
        return runner.start() if isinstance(runner, WorkerPool) else 0.0

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the running pool workers (empty without a pool)."""
        return list(getattr(self._runner, "pids", []))

    def close(self) -> None:
        """Stop the worker pool and free its shared memory; a later batch starts a new one."""
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.close()

    def __enter__(self) -> OpenMMEnergy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        # Processes, contexts and executors stay behind; a copy starts its own when used.
        state = self.__dict__.copy()
        state["_runner"] = None
        state["executor"] = None
        return state

    def extra_repr(self) -> str:
        return (
            f"n_atoms={self.n_atoms}, platform={self.platform!r}, "
            f"temperature={self.temperature:g}, mode={self.mode!r}, n_workers={self.n_workers}"
        )

    # ------------------------------------------------------------------ evaluation
    def _check_x(self, x: Tensor) -> None:
        if (
            isinstance(x, Tensor)
            and x.dim() >= 2
            and tuple(x.shape[-2:]) == (self.n_atoms, 3)
            and x.shape[-1] != self.dim
        ):
            raise InvalidInput(
                f"{type(self).__name__}: expected flat positions of shape (*batch, {self.dim}) "
                f"({self.n_atoms} atoms x 3, nm), got shape {tuple(x.shape)}; flatten the last "
                "two dimensions first"
            )
        super()._check_x(x)

    def _compute(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Reduced energies ``(B,)`` and forces ``(B, 3N)`` of flat points ``(B, 3N)``.

        Computed in float64 and cast to ``x``'s dtype and device; rows whose energy or forces
        overflow that dtype are treated like OpenMM's non-finite ones (``+inf``, zero force).
        """
        n = x.shape[0]
        energies, forces = np.empty(n), np.empty((n, self.dim))
        run = RunStats()
        t0 = time.perf_counter()
        if n:
            positions = x.detach().to(device="cpu", dtype=torch.float64).contiguous().numpy()
            run = self._runner_for().evaluate(Batch(positions, energies, forces), self._fault_hook)
        # Scale with NumPy: one thread, in place (torch's intra-op threads only add latency here).
        np.multiply(energies, self.beta, out=energies)
        np.multiply(forces, self.beta, out=forces)
        u = torch.from_numpy(energies).to(x.dtype)
        force = torch.from_numpy(forces).to(x.dtype)
        if x.dtype != torch.float64 and n:
            overflow = torch.isinf(u) | torch.isinf(force).any(-1)
            overflow &= ~torch.from_numpy(np.isinf(energies))  # not already counted
            if bool(overflow.any()):
                u[overflow] = torch.inf
                force[overflow] = 0.0
                run.n_nonfinite += int(overflow.sum())
        self._record(n, run, time.perf_counter() - t0)
        return u.to(x.device), force.to(x.device)

    def _record(self, n: int, run: RunStats, seconds: float) -> None:
        self.last_batch_stats = BatchStats(
            n,
            run.n_nonfinite,
            run.n_errors,
            run.first_error,
            run.n_chunks,
            run.n_retries,
            run.n_restarts,
            seconds,
            self.mode,
        )
        self.total_evaluated += n
        self.total_nonfinite += run.n_nonfinite
        if run.n_nonfinite:
            _log.info(
                "%s: %d of %d configurations gave non-finite energies or forces (u = +inf)%s",
                type(self).__name__,
                run.n_nonfinite,
                n,
                f"; OpenMM: {run.first_error}" if run.first_error else "",
            )

    def _energy_and_force(self, x: Tensor) -> tuple[Tensor, Tensor]:
        flat = x.reshape(-1, self.dim)
        u, force = _EnergyAndForce.apply(flat, self)
        return u.reshape(x.shape[:-1]), force.reshape(x.shape)

    def _reduced(self, x: Tensor) -> Tensor:
        return self._energy_and_force(x)[0]

    def energy_and_force(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Reduced energy ``U/kT`` and force ``F/kT`` from one OpenMM evaluation.

        The energy is differentiable with respect to ``x`` (gradient ``-F/kT``); the force is
        not (OpenMM gives no second derivatives).

        Arguments:
            x: positions in nm, shape ``(*batch, 3N)``.
            context: ignored (the energy is unconditional).

        Returns:
            ``(u, F)`` with shapes ``(*batch,)`` and ``(*batch, 3N)``.
        """
        self._check_x(x)
        return self._energy_and_force(x)
