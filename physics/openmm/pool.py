r"""A pool of OpenMM worker processes that share one memory buffer with the caller.

Design:

* **Processes.** Each worker is a fresh interpreter running ``physics/openmm/_worker.py`` as a
  script (``subprocess.Popen``; the equivalent of multiprocessing's ``spawn``, never ``fork``,
  which is unsafe with torch's threads). It imports NumPy and OpenMM only, creates its own
  ``Context`` from the serialized system (contexts cannot be pickled) and needs no
  ``if __name__ == "__main__"`` guard in the user's script. Start-up of two workers for
  alanine dipeptide, measured on 2 idle cores: 0.22 s (0.45-1.0 s when the cores are busy),
  against 2.3 s (10-11 s busy) for a ``ProcessPoolExecutor`` with ``multiprocessing``'s
  ``spawn`` or ``forkserver`` method, whose children import ``physics`` and hence torch to
  unpickle their target. The pool starts on the
  first batch (or :meth:`WorkerPool.start`) and is reused afterwards.
* **Transport.** One anonymous shared-memory file (``memfd_create``; an unlinked temporary
  file where that is missing) holds positions, energies and forces of the whole batch as
  float64 arrays. The caller copies the batch in once; each worker gets one small message per
  chunk (``start``, ``stop``), reads its rows, and writes energies and forces straight into
  the buffer. The file has no name, so nothing leaks when a process is killed, and no
  resource tracker is involved.
* **Faults.** A worker that dies (end of file on its connection) or exceeds the chunk's time
  limit (it is killed) is replaced, and its chunk runs again, up to ``max_retries`` times;
  then :class:`~physics.openmm.chunks.OpenMMWorkerError` names the chunk. Any exception in the
  caller during a batch (``KeyboardInterrupt`` included) kills the busy workers before it
  propagates; they are replaced on the next batch.
* **Shutdown.** :meth:`WorkerPool.close`, or a ``weakref.finalize`` that also runs at
  interpreter exit, asks the workers to exit, closes their connections and kills whatever
  has not exited within a second. Workers ignore ``SIGINT`` (the caller decides), exit at end
  of file on their connection, and a watchdog thread in each exits when the parent process
  is gone (``os.getppid()`` changes), so a killed parent leaves no orphans. A forked copy of
  the caller lets go of the parent's workers (``os.register_at_fork``) and starts its own pool
  when it evaluates.

POSIX only (file descriptors are passed to the workers); elsewhere use ``executor=``.
"""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from multiprocessing import Pipe
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import numpy as np

from ._worker import ContextSpec, buffer_arrays, buffer_bytes
from .chunks import Batch, Chunk, ChunkPolicy, Hook, OpenMMWorkerError, RunStats, split_rows

__all__ = ["STARTUP_TIMEOUT", "SharedBuffer", "WorkerPool"]

_WORKER_SCRIPT = str(Path(__file__).with_name("_worker.py"))
_EXIT_GRACE = 1.0
#: Seconds a worker may take to start (import OpenMM, build its Context) before it counts as hung.
STARTUP_TIMEOUT = 120.0


def _anonymous_file() -> int:
    """A file descriptor of an unnamed, memory-backed file (freed when the last fd closes)."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create("physics-openmm-batch")
    with tempfile.TemporaryFile() as handle:
        return os.dup(handle.fileno())


class SharedBuffer:
    """Positions, energies and forces of a batch in one anonymous shared-memory file.

    Arguments:
        dim: length of a configuration (``3N``).

    Example:
        >>> buf = SharedBuffer(6)
        >>> positions, energies, forces = buf.reserve(3)
        >>> positions.shape, energies.shape, forces.shape, buf.capacity
        ((3, 6), (3,), (3, 6), 3)
        >>> buf.close()
    """

    def __init__(self, dim: int):
        self.fd = _anonymous_file()
        self.dim = dim
        self.capacity = 0
        self._arrays: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def reserve(self, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Views ``(positions, energies, forces)`` with room for at least ``rows`` rows."""
        if rows > self.capacity or self._arrays is None:
            capacity = max(rows, 2 * self.capacity, 1)
            size = buffer_bytes(capacity, self.dim)
            os.ftruncate(self.fd, size)
            self._arrays = None  # the old mapping goes with its views
            self._arrays = buffer_arrays(mmap.mmap(self.fd, size), capacity, self.dim)
            self.capacity = capacity
        return self._arrays

    def close(self) -> None:
        """Release the mapping and the file (idempotent)."""
        self._arrays = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass
class _Worker:
    proc: subprocess.Popen
    conn: Connection
    ready: bool = False


def _stop(worker: _Worker) -> int:
    """Kill a worker (if still running), reap it, close its connection; its exit code."""
    if worker.proc.poll() is None:
        worker.proc.kill()
    code = worker.proc.wait()
    worker.conn.close()
    return code


def _shutdown(workers: list[_Worker | None], buffer: SharedBuffer, owner: int) -> None:
    """Ask every worker to exit, kill stragglers after a grace period, free the buffer.

    Only in the process that started the workers: a forked copy of the pool must leave them be.
    """
    if os.getpid() != owner:
        return
    live = [w for w in workers if w is not None]
    workers[:] = [None] * len(workers)
    for worker in live:
        try:
            worker.conn.send(("exit",))
        except OSError:
            pass
    deadline = time.monotonic() + _EXIT_GRACE
    for worker in live:
        try:
            worker.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        _stop(worker)
    buffer.close()


_live_pools: weakref.WeakSet[WorkerPool] = weakref.WeakSet()


def _forget_after_fork() -> None:
    for pool in list(_live_pools):
        pool._forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


class WorkerPool:
    r"""Worker processes, each with its own OpenMM ``Context``, evaluating chunks of a batch.

    A batch of ``B`` configurations is split into ``min(n_workers, B)`` contiguous chunks, one
    per worker (see the module docstring for processes, transport and faults).

    Arguments:
        spec: the system, platform and platform properties the workers build contexts from.
        dim: length of a configuration, ``3N``.
        n_workers: number of worker processes (``>= 1``).
        policy: time limits and retries of chunks.

    Attributes:
        restarts: number of workers replaced since the pool was created.
        owner: process id of the process that owns the workers (a forked child does not).
    """

    def __init__(self, spec: ContextSpec, dim: int, n_workers: int, policy: ChunkPolicy):
        who = policy.who
        if os.name != "posix":
            raise OpenMMWorkerError(f"{who}: the local worker pool needs POSIX; use executor=")
        self._spec = (spec.system_xml, spec.platform, dict(spec.properties))  # plain, picklable
        self.n_workers = n_workers
        self.who = who
        self.restarts = 0
        self._policy = policy
        self._workers: list[_Worker | None] = [None] * n_workers
        self._ever_started = [False] * n_workers
        self._buffer = SharedBuffer(dim)
        self._lock = threading.Lock()
        self._batch = 0
        self._closed = False
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self._env = env
        self.owner = os.getpid()
        self._finalizer = weakref.finalize(self, _shutdown, self._workers, self._buffer, self.owner)
        _live_pools.add(self)

    # ------------------------------------------------------------------ lifecycle
    @property
    def pids(self) -> list[int]:
        """Process ids of the running workers."""
        return [w.proc.pid for w in self._workers if w is not None]

    def start(self) -> float:
        """Start every missing worker and wait until its ``Context`` exists; the seconds taken."""
        with self._lock:
            t0 = time.perf_counter()
            self._start_missing()
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while True:
                waiting = {w.conn: w for w in self._workers if w is not None and not w.ready}
                if not waiting:
                    return time.perf_counter() - t0
                left = deadline - time.monotonic()
                if left <= 0:
                    raise OpenMMWorkerError(f"{self.who}: workers did not start in time")
                for conn in wait(list(waiting), left):
                    self._handle_startup(waiting[conn], self._receive(waiting[conn]))

    def close(self) -> None:
        """Stop the workers and free the shared buffer (idempotent)."""
        self._closed = True
        self._finalizer()

    def _forget(self) -> None:
        """In a forked child: let go of the parent's workers without stopping them."""
        self._closed = True
        self._finalizer.detach()
        for worker in self._workers:
            if worker is not None:
                worker.proc.returncode = 0  # not this process's child: nothing to reap
                worker.conn.close()  # this process's copy of the descriptor only
        self._workers[:] = [None] * len(self._workers)
        self._buffer.close()

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, batch: Batch, hook: Hook = None) -> RunStats:
        """Evaluate a batch (see :meth:`physics.openmm.chunks.Runner.evaluate`)."""
        with self._lock:
            if self._closed or os.getpid() != self.owner:
                raise OpenMMWorkerError(
                    f"{self.who}: the worker pool is closed or belongs to process {self.owner}"
                )
            n = batch.positions.shape[0]
            pos, out_e, out_f = self._buffer.reserve(n)
            np.copyto(pos[:n], batch.positions)
            self._batch += 1
            restarts = self.restarts
            stats = RunStats()
            pending = deque(
                Chunk(i, a, b, n) for i, (a, b) in enumerate(split_rows(n, self.n_workers))
            )
            stats.n_chunks = len(pending)
            busy: dict[int, tuple[Chunk, float]] = {}
            idle = deque(range(self.n_workers))
            self._start_missing()
            try:
                while pending or busy:
                    while pending and idle:
                        slot, chunk = idle.popleft(), pending.popleft()
                        self._send(slot, chunk, hook)
                        busy[slot] = (chunk, self._deadline(slot, chunk))
                    self._collect(busy, idle, pending, stats)
            except BaseException:
                for slot in busy:
                    self._replace(slot)
                raise
            np.copyto(batch.energies, out_e[:n])
            np.copyto(batch.forces, out_f[:n])
            stats.n_restarts = self.restarts - restarts
            return stats

    # ------------------------------------------------------------------ internals
    def _tag(self, chunk: Chunk) -> tuple[int, int, int]:
        return (self._batch, chunk.index, chunk.attempt)

    def _start_missing(self) -> None:
        if self._closed:
            raise OpenMMWorkerError(f"{self.who}: the worker pool is closed")
        slots = [s for s, w in enumerate(self._workers) if w is None or w.proc.poll() is not None]
        fresh = [self._spawn(slot) for slot in slots]  # all processes first: imports overlap
        for worker in fresh:
            worker.conn.send(self._spec)

    def _spawn(self, slot: int) -> _Worker:
        old = self._workers[slot]
        if old is not None:
            _stop(old)
        if self._ever_started[slot]:
            self.restarts += 1
        self._ever_started[slot] = True
        self._workers[slot] = None
        ours, theirs = Pipe()
        try:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    _WORKER_SCRIPT,
                    str(theirs.fileno()),
                    str(self._buffer.fd),
                    str(os.getpid()),
                ],
                pass_fds=(theirs.fileno(), self._buffer.fd),
                stdin=subprocess.DEVNULL,
                env=self._env,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        worker = self._workers[slot] = _Worker(proc, ours)
        return worker

    def _deadline(self, slot: int, chunk: Chunk) -> float:
        """When the chunk in ``slot`` times out; a starting worker first gets time to start."""
        limit = self._policy.limit(chunk.size)
        if not self._workers[slot].ready:
            limit = max(limit, STARTUP_TIMEOUT)
        return time.monotonic() + limit

    def _replace(self, slot: int) -> str:
        """Kill the worker in ``slot`` (it is replaced when next needed); how it ended."""
        worker = self._workers[slot]
        if worker is None:
            return "worker gone"
        self._workers[slot] = None
        code = _stop(worker)
        return f"worker process {worker.proc.pid} exited with code {code}"

    def _send(self, slot: int, chunk: Chunk, hook: Hook) -> None:
        message = ("eval", self._tag(chunk), chunk.start, chunk.stop, self._buffer.capacity, hook)
        for _ in range(2):
            worker = self._workers[slot]
            if worker is None or worker.proc.poll() is not None:
                self._start_missing()
                worker = self._workers[slot]
            try:
                worker.conn.send(message)
                return
            except OSError:  # it died while idle: replace it and send again
                self._replace(slot)
        raise OpenMMWorkerError(f"{self.who}: could not send chunk {chunk.index} to a worker")

    def _receive(self, worker: _Worker) -> tuple[Any, ...] | None:
        try:
            return worker.conn.recv()
        except (EOFError, OSError):
            return None

    def _handle_startup(self, worker: _Worker, message: tuple[Any, ...] | None) -> None:
        if message is None:
            raise OpenMMWorkerError(
                f"{self.who}: a worker exited during start-up (code {worker.proc.wait()})"
            )
        if message[0] == "init_failed":
            raise OpenMMWorkerError(
                f"{self.who}: a worker could not create its OpenMM Context on platform "
                f"{self._spec[1]!r}:\n{message[1]}"
            )
        worker.ready = True

    def _collect(
        self,
        busy: dict[int, tuple[Chunk, float]],
        idle: deque[int],
        pending: deque[Chunk],
        stats: RunStats,
    ) -> None:
        """Wait for replies or the nearest time limit; handle results, deaths and hangs."""
        conns = {self._workers[slot].conn: slot for slot in busy}
        left = min(deadline for _, deadline in busy.values()) - time.monotonic()
        for conn in wait(list(conns), max(0.0, left)):
            slot = conns[conn]
            chunk = busy[slot][0]
            message = self._receive(self._workers[slot])
            if message is None:
                reason = self._replace(slot) + " during the chunk"
            elif message[0] in ("ready", "init_failed"):
                self._handle_startup(self._workers[slot], message)
                busy[slot] = (chunk, self._deadline(slot, chunk))  # the chunk's clock starts now
                continue
            elif message[1] != self._tag(chunk):
                continue  # a reply from before an interruption
            elif message[0] == "done":
                del busy[slot]
                idle.append(slot)
                stats.add(*message[2:5])
                self._policy.record(chunk.size, message[5])
                continue
            else:
                reason = f"raised in the worker:\n{message[2]}"
            del busy[slot]
            idle.append(slot)
            self._retry(chunk, reason, pending, stats)
        now = time.monotonic()
        for slot, (chunk, deadline) in list(busy.items()):
            if now >= deadline:
                if self._workers[slot].ready:
                    reason = f"timed out after {self._policy.limit(chunk.size):g} s"
                else:
                    reason = f"its worker did not start within {STARTUP_TIMEOUT:g} s"
                self._replace(slot)
                del busy[slot]
                idle.append(slot)
                self._retry(chunk, reason + " (worker replaced)", pending, stats)

    def _retry(self, chunk: Chunk, reason: str, pending: deque[Chunk], stats: RunStats) -> None:
        self._policy.failed(chunk, reason, stats)
        pending.append(chunk)
        self._start_missing()  # replacements boot while the batch goes on
