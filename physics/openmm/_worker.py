r"""OpenMM evaluation kernel and the worker process of :mod:`physics.openmm.bridge`.

One module, used three ways:

* in the calling process (``OpenMMEnergy(..., n_workers=0)`` and :func:`evaluate_chunk`):
  :class:`ContextEvaluator` evaluates a chunk of configurations with one OpenMM ``Context``;
* in the processes of a ``concurrent.futures`` executor (a ``ProcessPoolExecutor``, a Dask
  cluster): :func:`evaluate_chunk` is module level, hence picklable by reference, and keeps
  one ``Context`` per process (and thread) and system (a small cache keyed by a hash of the
  serialized system, the platform and its properties);
* as the **worker script** of the local pool (:mod:`physics.openmm.pool`), run as
  ``python _worker.py CONN_FD BUFFER_FD PARENT_PID``: executed as a file, not imported as
  ``physics.openmm._worker``, so a worker imports the standard library, NumPy and OpenMM only —
  not ``torch`` or ``physics`` (about 3 s of imports on the reference machine) — and not the
  user's ``__main__`` either. This module therefore never imports from ``physics``.

For each configuration the kernel does ``context.setPositions(x)`` with a NumPy ``(N, 3)`` view
in nm (no unit wrapper: 1.5 µs against 11 µs for a list of lists) and
``context.getState(energy, forces)``, then reads the potential energy in kJ/mol and writes the
forces (kJ/mol/nm) straight into the output row with ``State._getVectorAsNumpy`` (22 µs per
alanine-dipeptide evaluation against 50 µs through ``getForces(asNumpy=True)``, whose unit
wrapping costs more than the evaluation; the public call is the fallback when the private one
is missing). OpenMM's native units are nm, kJ/mol and kJ/mol/nm, so no conversion happens here.

Configurations that OpenMM cannot evaluate (it raises, e.g. "Particle coordinate is NaN" on the
CPU platform) or whose energy or forces are not finite get energy ``+inf`` and zero forces and
are counted.
"""

from __future__ import annotations

import hashlib
import inspect
import mmap
import os
import signal
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import openmm

__all__ = [
    "ChunkResult",
    "ContextSpec",
    "ContextEvaluator",
    "buffer_arrays",
    "buffer_bytes",
    "evaluate_chunk",
    "system_key",
]

_STATE_KWARGS = (
    {"energy": True, "forces": True}
    if "energy" in inspect.signature(openmm.Context.getState).parameters
    else {"getEnergy": True, "getForces": True}
)
_FAST_FORCES = hasattr(openmm.State, "_getVectorAsNumpy")
_FORCE_UNIT = openmm.unit.kilojoule_per_mole / openmm.unit.nanometer
_CACHE_SIZE = 4


class ContextSpec(NamedTuple):
    """What a process needs to build an OpenMM ``Context``: serialized system and platform.

    Attributes:
        system_xml: ``openmm.XmlSerializer.serialize(system)``.
        platform: an OpenMM platform name (``"Reference"``, ``"CPU"``, ...).
        properties: platform properties (e.g. ``{"Threads": "1"}``).
    """

    system_xml: str
    platform: str
    properties: Mapping[str, str]


class ChunkResult(NamedTuple):
    """Energies and forces of a chunk of configurations, in OpenMM's units.

    Attributes:
        energies: potential energies in kJ/mol, shape ``(n,)``; ``+inf`` where OpenMM raised or
            returned a non-finite energy or force.
        forces: forces in kJ/mol/nm, shape ``(n, 3N)``; zero on the rows with energy ``+inf``.
        n_nonfinite: how many rows got ``+inf`` (errors included).
        n_errors: how many of them made OpenMM raise.
        first_error: the message of the first such exception (``""`` when none).
    """

    energies: np.ndarray
    forces: np.ndarray
    n_nonfinite: int
    n_errors: int
    first_error: str


class ContextEvaluator:
    r"""One OpenMM ``Context`` that evaluates chunks of flat configurations.

    Arguments:
        system_xml: the system, serialized with ``openmm.XmlSerializer.serialize``.
        platform: an OpenMM platform name (``"Reference"``, ``"CPU"``, ...).
        properties: platform properties (e.g. ``{"Threads": "1"}``).

    Attributes:
        n_atoms: number of particles ``N``.
        platform: the platform name.
        context: the OpenMM ``Context`` (its integrator is never stepped).

    Example:
        >>> import openmm
        >>> system = openmm.System()
        >>> _ = system.addParticle(1.0)
        >>> field = openmm.CustomExternalForce("50 * x^2")  # U = 50 x^2 kJ/mol, x in nm
        >>> _ = field.addParticle(0, [])
        >>> _ = system.addForce(field)
        >>> evaluator = ContextEvaluator(openmm.XmlSerializer.serialize(system), "Reference")
        >>> energies, forces = np.empty(2), np.empty((2, 3))
        >>> evaluator.evaluate_into(np.array([[0.1, 0, 0], [np.nan, 0, 0]]), energies, forces)
        (1, 0, '')
        >>> energies.round(6).tolist(), forces.round(6).tolist()
        ([0.5, inf], [[-10.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    """

    def __init__(self, system_xml: str, platform: str, properties: Mapping[str, str] | None = None):
        system = openmm.XmlSerializer.deserialize(system_xml)
        self.n_atoms = system.getNumParticles()
        self.platform = platform
        self._virtual_sites = any(system.isVirtualSite(i) for i in range(self.n_atoms))
        self._integrator = openmm.VerletIntegrator(0.001)
        self.context = openmm.Context(
            system,
            self._integrator,
            openmm.Platform.getPlatformByName(platform),
            dict(properties or {}),
        )

    def evaluate_into(
        self, positions: np.ndarray, energies: np.ndarray, forces: np.ndarray
    ) -> tuple[int, int, str]:
        """Evaluate configurations and write energies and forces into the given arrays.

        Arguments:
            positions: C-contiguous float64 positions in nm, shape ``(n, 3N)``.
            energies: output, float64 of shape ``(n,)``, kJ/mol (``+inf`` where non-finite).
            forces: output, C-contiguous float64 of shape ``(n, 3N)``, kJ/mol/nm (zero where
                the energy is ``+inf``).

        Returns:
            ``(n_nonfinite, n_errors, first_error)`` (see :class:`ChunkResult`).
        """
        n = positions.shape[0]
        if not (forces.flags.c_contiguous and forces.dtype == np.float64):
            raise ValueError("evaluate_into: expected C-contiguous float64 forces to write into")
        pos = positions.reshape(n, self.n_atoms, 3)
        out = forces.reshape(n, self.n_atoms, 3)
        set_positions = self.context.setPositions
        get_state = self.context.getState
        virtual = self.context.computeVirtualSites if self._virtual_sites else None
        which = openmm.State.Forces
        n_errors, first_error = 0, ""
        for i in range(n):
            try:
                set_positions(pos[i])
                if virtual is not None:
                    virtual()
                state = get_state(**_STATE_KWARGS)
                energies[i] = state.getPotentialEnergy()._value  # kJ/mol by construction
                if _FAST_FORCES:
                    state._getVectorAsNumpy(which, out[i])
                else:
                    out[i] = state.getForces(asNumpy=True).value_in_unit(_FORCE_UNIT)
            except Exception as exc:  # OpenMM refuses the configuration (NaN coordinates, ...)
                energies[i] = np.nan
                if not n_errors:
                    first_error = f"{type(exc).__name__}: {exc}".strip()
                n_errors += 1
        bad = ~(np.isfinite(energies) & np.isfinite(forces).all(axis=1))
        n_bad = int(bad.sum())
        if n_bad:
            energies[bad] = np.inf
            forces[bad] = 0.0
        return n_bad, n_errors, first_error


def system_key(system_xml: str, platform: str, properties: Mapping[str, str] | None) -> str:
    """Hash identifying a (system, platform, properties) triple: the context cache key."""
    digest = hashlib.sha256(system_xml.encode())
    digest.update(repr((platform, sorted((properties or {}).items()))).encode())
    return digest.hexdigest()


_per_thread = threading.local()  # an OpenMM Context must not be shared between threads


def _cached_evaluator(
    system_xml: str, platform: str, properties: Mapping[str, str] | None
) -> ContextEvaluator:
    """This thread's evaluator for a system (created on first use, least recently used out)."""
    cache: OrderedDict[str, ContextEvaluator] | None = getattr(_per_thread, "contexts", None)
    if cache is None:
        cache = _per_thread.contexts = OrderedDict()
    key = system_key(system_xml, platform, properties)
    evaluator = cache.get(key)
    if evaluator is None:
        evaluator = cache[key] = ContextEvaluator(system_xml, platform, properties)
        while len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)
    else:
        cache.move_to_end(key)
    return evaluator


def evaluate_chunk(
    system_xml: str,
    positions: np.ndarray,
    platform: str = "Reference",
    properties: Mapping[str, str] | None = None,
) -> ChunkResult:
    r"""Energies and forces of a chunk of configurations, evaluated in the current process.

    The ``Context`` is created on the first call in a process (per thread: a ``Context`` is not
    thread-safe) and reused afterwards (a cache of the last four (system, platform, properties)
    combinations, keyed by a SHA-256 hash of the serialized system, the platform and its
    properties), so this is the task that
    ``OpenMMEnergy(..., executor=...)`` submits to any ``concurrent.futures.Executor``, and a
    cheap way to evaluate positions without torch.

    .. math:: E_i = U(x_i)\ [\mathrm{kJ/mol}], \qquad F_i = -\nabla U(x_i)\ [\mathrm{kJ/mol/nm}]

    Arguments:
        system_xml: ``openmm.XmlSerializer.serialize(system)``.
        positions: positions in nm, shape ``(n, 3N)`` (or ``(n, N, 3)``), any float dtype.
        platform: OpenMM platform name (default ``"Reference"``).
        properties: platform properties, e.g. ``{"Threads": "1"}`` for the CPU platform.

    Returns:
        A :class:`ChunkResult` (energies ``(n,)`` kJ/mol, forces ``(n, 3N)`` kJ/mol/nm, counts
        of non-finite rows).

    Example:
        >>> import openmm
        >>> system = openmm.System()
        >>> for _ in range(2):
        ...     _ = system.addParticle(1.0)
        >>> bond = openmm.HarmonicBondForce()
        >>> _ = bond.addBond(0, 1, 0.1, 1000.0)
        >>> _ = system.addForce(bond)
        >>> xml = openmm.XmlSerializer.serialize(system)
        >>> out = evaluate_chunk(xml, np.array([[0.0, 0, 0, 0.2, 0, 0], [0.0, 0, 0, 0, 0.1, 0]]))
        >>> out.energies.round(6).tolist(), out.forces[:, 3].round(6).tolist(), out.n_nonfinite
        ([5.0, 0.0], [-100.0, 0.0], 0)
    """
    evaluator = _cached_evaluator(system_xml, platform, properties)
    flat = np.ascontiguousarray(positions, dtype=np.float64).reshape(len(positions), -1)
    if flat.shape[1] != 3 * evaluator.n_atoms:
        raise ValueError(
            f"evaluate_chunk: expected positions of shape (n, {3 * evaluator.n_atoms}) or "
            f"(n, {evaluator.n_atoms}, 3), got {np.shape(positions)}"
        )
    energies = np.empty(flat.shape[0])
    forces = np.empty_like(flat)
    n_bad, n_errors, first_error = evaluator.evaluate_into(flat, energies, forces)
    return ChunkResult(energies, forces, n_bad, n_errors, first_error)


def buffer_bytes(capacity: int, dim: int) -> int:
    """Size of the shared buffer for ``capacity`` configurations of length ``dim``."""
    return 8 * capacity * (2 * dim + 1)


def buffer_arrays(
    buffer: mmap.mmap | bytearray, capacity: int, dim: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views ``(positions (cap, dim), energies (cap,), forces (cap, dim))`` of a buffer.

    The layout shared by the pool and its workers: positions, then energies, then forces, all
    float64 and C-contiguous.
    """
    flat = np.frombuffer(buffer, dtype=np.float64, count=capacity * (2 * dim + 1))
    positions = flat[: capacity * dim].reshape(capacity, dim)
    energies = flat[capacity * dim : capacity * (dim + 1)]
    forces = flat[capacity * (dim + 1) :].reshape(capacity, dim)
    return positions, energies, forces


# ---------------------------------------------------------------------------- worker process
def _watch_parent(parent_pid: int) -> None:
    """Exit when the parent process is gone (orphaned workers must not linger)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.2)
        os._exit(0)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


def _apply_hook(hook: Mapping[str, Any] | None, chunk: int, attempt: int) -> None:
    """Fault injection for the tests: kill, hang or fail on a given chunk and attempt."""
    if not hook or hook.get("chunk") != chunk or attempt >= hook.get("attempts", 1):
        return
    action = hook["action"]
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "sleep":
        time.sleep(float(hook["seconds"]))
    elif action == "raise":
        raise RuntimeError(f"fault injected on chunk {chunk}, attempt {attempt}")


class _SharedArrays:
    """The worker's mapping of the shared buffer, remapped when the pool grows it."""

    def __init__(self, fd: int, dim: int):
        self.fd, self.dim, self.capacity = fd, dim, 0
        self.arrays: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def get(self, capacity: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if capacity != self.capacity or self.arrays is None:
            self.arrays = None  # drop the old views before the old mapping goes
            mapping = mmap.mmap(self.fd, buffer_bytes(capacity, self.dim))
            self.arrays = buffer_arrays(mapping, capacity, self.dim)
            self.capacity = capacity
        return self.arrays


def _serve(conn_fd: int, buffer_fd: int, parent_pid: int) -> None:
    """The worker's loop: one context, one chunk per message, results in the shared buffer.

    Messages from the parent: ``(system_xml, platform, properties)`` once, then
    ``("eval", tag, start, stop, capacity, hook)`` with ``tag = (batch, chunk, attempt)``, or
    ``("exit",)``. Replies: ``("ready", pid, seconds)`` or ``("init_failed", traceback)`` once,
    then per chunk ``("done", tag, n_nonfinite, n_errors, first_error, seconds)`` or
    ``("failed", tag, traceback)``. End of file on the connection also ends the worker.
    """
    from multiprocessing.connection import Connection

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    if os.getppid() != parent_pid:
        return
    _watch_parent(parent_pid)
    conn = Connection(conn_fd)
    try:
        system_xml, platform, properties = conn.recv()  # a ContextSpec as a plain tuple
        t0 = time.perf_counter()
        evaluator = ContextEvaluator(system_xml, platform, properties)
    except EOFError:
        return
    except Exception:
        conn.send(("init_failed", traceback.format_exc()))
        return
    conn.send(("ready", os.getpid(), time.perf_counter() - t0))
    shared = _SharedArrays(buffer_fd, 3 * evaluator.n_atoms)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message[0] != "eval":
            return
        _, tag, start, stop, capacity, hook = message
        try:
            _apply_hook(hook, tag[1], tag[2])
            positions, energies, forces = shared.get(capacity)
            t0 = time.perf_counter()
            counts = evaluator.evaluate_into(
                positions[start:stop], energies[start:stop], forces[start:stop]
            )
            reply = ("done", tag, *counts, time.perf_counter() - t0)
        except Exception:
            reply = ("failed", tag, traceback.format_exc())
        try:
            conn.send(reply)
        except OSError:
            return


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
    os._exit(0)  # nothing to flush: skip interpreter teardown (~0.3 s with OpenMM loaded)
