r"""Evaluate batches on any ``concurrent.futures.Executor`` (a process pool, a Dask cluster).

Each chunk of a batch is one future running :func:`physics.openmm._worker.evaluate_chunk` in
whichever process the executor picks; that process creates the OpenMM ``Context`` on its first
chunk and keeps it (cached by a hash of the serialized system, platform and properties). With
``distributed.Client(...).get_executor()`` the evaluation spreads over every machine of a Dask
cluster. A chunk that raises or exceeds its time limit is submitted again (the limit cannot
stop a remote task, so a late one is cancelled and its result ignored), up to ``max_retries``
times; restarting crashed processes is the executor's business (a ``ProcessPoolExecutor``
whose process died is broken for good, Dask replaces lost workers).
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from ._worker import ChunkResult, _apply_hook, evaluate_chunk
from .chunks import Chunk, ChunkTimer, RunStats, split_rows

__all__ = ["ExecutorRunner", "executor_task"]


def executor_task(
    attempt: int,
    hook: Mapping[str, Any] | None,
    index: int,
    system_xml: str,
    positions: np.ndarray,
    platform: str,
    properties: Mapping[str, str],
) -> ChunkResult:
    """The task submitted per chunk: :func:`evaluate_chunk` on one chunk.

    ``attempt`` and ``index`` make every submission distinct (Dask would otherwise hand back
    the cached failure of an identical earlier task); ``hook`` is the tests' fault injection.
    """
    _apply_hook(hook, index, attempt)
    return evaluate_chunk(system_xml, positions, platform, properties)


class ExecutorRunner:
    """Splits batches into chunks, submits them to an executor, retries failed chunks.

    Arguments:
        executor: any ``concurrent.futures.Executor`` whose processes can import ``physics``.
        system_xml: ``openmm.XmlSerializer.serialize(system)``.
        n_chunks: number of chunks per batch (the parallelism asked of the executor).
        platform: OpenMM platform name used in the executor's processes.
        properties: platform properties.
        timeout: seconds per chunk (``None``: the default of
            :class:`~physics.openmm.chunks.ChunkTimer`), counted from submission.
        max_retries: how often a failed chunk is submitted again before the batch fails.
        who: name used in errors and log messages.
    """

    def __init__(
        self,
        executor: cf.Executor,
        system_xml: str,
        n_chunks: int,
        platform: str,
        properties: Mapping[str, str],
        *,
        timeout: float | None = None,
        max_retries: int = 2,
        who: str = "ExecutorRunner",
    ):
        self.executor = executor
        self.n_chunks = n_chunks
        self.max_retries = max_retries
        self.who = who
        self._args = (system_xml, platform, dict(properties))
        self._timer = ChunkTimer(timeout)

    def evaluate(
        self,
        positions: np.ndarray,
        energies: np.ndarray,
        forces: np.ndarray,
        hook: Mapping[str, Any] | None = None,
    ) -> RunStats:
        """Evaluate a batch (see :meth:`physics.openmm.chunks.Runner.evaluate`)."""
        n = positions.shape[0]
        xml, platform, properties = self._args
        futures: dict[cf.Future, tuple[Chunk, float, float]] = {}

        def submit(chunk: Chunk) -> None:
            rows = positions[chunk.start : chunk.stop]
            future = self.executor.submit(
                executor_task, chunk.attempt, hook, chunk.index, xml, rows, platform, properties
            )
            now = time.monotonic()
            futures[future] = (chunk, now, now + self._timer.limit(chunk.size))

        stats = RunStats()
        for index, (start, stop) in enumerate(split_rows(n, self.n_chunks)):
            submit(Chunk(index, start, stop, n))
            stats.n_chunks += 1
        try:
            while futures:
                left = min(deadline for _, _, deadline in futures.values()) - time.monotonic()
                done, _ = cf.wait(list(futures), max(0.0, left), cf.FIRST_COMPLETED)
                for future in done:
                    chunk, submitted, _ = futures.pop(future)
                    try:
                        result = future.result()
                    except Exception as exc:
                        chunk.failed(
                            f"{type(exc).__name__}: {exc}", self.max_retries, self.who, stats
                        )
                        submit(chunk)
                        continue
                    energies[chunk.start : chunk.stop] = result.energies
                    forces[chunk.start : chunk.stop] = result.forces
                    stats.add(result.n_nonfinite, result.n_errors, result.first_error)
                    self._timer.record(chunk.size, time.monotonic() - submitted)
                now = time.monotonic()
                for future, (chunk, _, deadline) in list(futures.items()):
                    if now >= deadline:
                        future.cancel()
                        del futures[future]
                        limit = self._timer.limit(chunk.size)
                        chunk.failed(
                            f"timed out after {limit:g} s", self.max_retries, self.who, stats
                        )
                        submit(chunk)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        return stats

    def close(self) -> None:
        """Nothing to release: the executor belongs to the caller."""
