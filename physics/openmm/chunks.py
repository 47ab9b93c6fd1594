r"""Chunks of a batch, their retries and time limits, and per-batch counts.

A batch of ``B`` configurations is split into contiguous chunks, one per worker; a chunk that
fails (its worker died, hung past the time limit, or raised) is run again, up to
``max_retries`` times, after which :class:`OpenMMWorkerError` names it (:class:`ChunkPolicy`).
Shared by the local pool (:mod:`physics.openmm.pool`) and the executor path
(:mod:`physics.openmm.remote`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np

from manifoldflows.errors import ManifoldFlowsError

__all__ = [
    "DEFAULT_TIMEOUT",
    "Batch",
    "Hook",
    "Chunk",
    "ChunkPolicy",
    "OpenMMWorkerError",
    "Runner",
    "RunStats",
    "split_rows",
]

#: Seconds a chunk may take when no ``timeout`` is given, before the measured rate says more.
DEFAULT_TIMEOUT = 300.0
#: With the default time limit, a chunk may take this many times its expected duration.
_SLACK = 50.0
_log = logging.getLogger("physics.openmm")


class OpenMMWorkerError(ManifoldFlowsError, RuntimeError):
    """A chunk of a batch could not be evaluated after all retries (or a worker cannot start)."""


def split_rows(n: int, parts: int) -> list[tuple[int, int]]:
    """Split ``range(n)`` into at most ``parts`` contiguous, nearly equal, non-empty pieces.

    Example:
        >>> split_rows(10, 3)
        [(0, 4), (4, 7), (7, 10)]
        >>> split_rows(2, 4)
        [(0, 1), (1, 2)]
    """
    parts = max(1, min(parts, n))
    size, extra = divmod(n, parts)
    bounds, start = [], 0
    for k in range(parts):
        stop = start + size + (k < extra)
        bounds.append((start, stop))
        start = stop
    return bounds


@dataclass
class Chunk:
    """Rows ``start:stop`` of a batch of ``n_rows``; ``attempt`` counts failed runs so far."""

    index: int
    start: int
    stop: int
    n_rows: int
    attempt: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return self.stop - self.start


class ChunkPolicy:
    """Time limits and retries of chunks, shared by the pool and the executor path.

    The time limit is the user's ``timeout``, or by default
    ``max(DEFAULT_TIMEOUT, 50 x rows x slowest seconds per row seen so far)``, so a slow
    system's long chunks are not mistaken for hung ones.

    Arguments:
        timeout: seconds per chunk, or ``None`` for the default above.
        max_retries: how often a failed chunk is run again before the batch fails.
        who: name used in errors and log messages.
    """

    def __init__(self, timeout: float | None = None, max_retries: int = 2, who: str = "OpenMM"):
        self.timeout = timeout
        self.max_retries = max_retries
        self.who = who
        self.seconds_per_row = 0.0

    def record(self, rows: int, seconds: float) -> None:
        """Remember the rate of a finished chunk (the slowest one counts)."""
        if rows > 0:
            self.seconds_per_row = max(self.seconds_per_row, seconds / rows)

    def limit(self, rows: int) -> float:
        """Seconds a chunk of ``rows`` configurations may take."""
        if self.timeout is not None:
            return self.timeout
        return max(DEFAULT_TIMEOUT, _SLACK * rows * self.seconds_per_row)

    def failed(self, chunk: Chunk, reason: str, stats: RunStats) -> None:
        """Record a failed run to be retried; raise :class:`OpenMMWorkerError` when none is left.

        Arguments:
            chunk: the chunk that failed.
            reason: what went wrong (kept for the error message).
            stats: the batch's counts (``n_retries`` goes up by one).
        """
        chunk.failures.append(reason)
        chunk.attempt += 1
        if chunk.attempt > self.max_retries:
            history = "\n".join(f"  attempt {i}: {r}" for i, r in enumerate(chunk.failures))
            raise OpenMMWorkerError(
                f"{self.who}: chunk {chunk.index} (rows {chunk.start}:{chunk.stop} of a batch "
                f"of {chunk.n_rows}) failed {chunk.attempt} times "
                f"(max_retries={self.max_retries}):\n{history}"
            )
        stats.n_retries += 1
        _log.warning("%s: chunk %d failed (%s); running it again", self.who, chunk.index, reason)


@dataclass
class RunStats:
    """Counts of one batch run by a pool, an executor or in-process."""

    n_chunks: int = 0
    n_retries: int = 0
    n_restarts: int = 0
    n_nonfinite: int = 0
    n_errors: int = 0
    first_error: str = ""

    def add(self, n_nonfinite: int, n_errors: int, first_error: str) -> None:
        """Add a chunk's non-finite and error counts."""
        self.n_nonfinite += n_nonfinite
        self.n_errors += n_errors
        self.first_error = self.first_error or first_error


#: Fault injection for the tests (see ``physics.openmm._worker._apply_hook``), or ``None``.
Hook = Mapping[str, Any] | None


class Batch(NamedTuple):
    """A batch's positions and the arrays its results are written into.

    Attributes:
        positions: float64 positions in nm, shape ``(B, 3N)``.
        energies: output, shape ``(B,)``: energies in kJ/mol.
        forces: output, shape ``(B, 3N)``: forces in kJ/mol/nm.
    """

    positions: np.ndarray
    energies: np.ndarray
    forces: np.ndarray


class Runner(Protocol):
    """Where batches are evaluated: in-process, a local worker pool, or an executor."""

    def evaluate(self, batch: Batch, hook: Hook = None) -> RunStats:
        """Evaluate ``batch.positions``; write into ``batch.energies`` and ``batch.forces``.

        Returns:
            The batch's :class:`RunStats`.
        """
        ...

    def close(self) -> None:
        """Release processes and memory (idempotent)."""
        ...
