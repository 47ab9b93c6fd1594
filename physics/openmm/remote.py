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

import numpy as np

from ._worker import ChunkResult, ContextSpec, _apply_hook, evaluate_chunk
from .chunks import Batch, Chunk, ChunkPolicy, Hook, RunStats, split_rows

__all__ = ["ExecutorRunner", "executor_task"]


def executor_task(
    attempt: int,
    hook: Hook,
    index: int,
    spec: ContextSpec,
    positions: np.ndarray,
) -> ChunkResult:
    """The task submitted per chunk: :func:`evaluate_chunk` on one chunk.

    ``attempt`` and ``index`` make every submission distinct (Dask would otherwise hand back
    the cached failure of an identical earlier task); ``hook`` is the tests' fault injection.
    """
    _apply_hook(hook, index, attempt)
    return evaluate_chunk(spec.system_xml, positions, spec.platform, spec.properties)


class ExecutorRunner:
    """Splits batches into chunks, submits them to an executor, retries failed chunks.

    Arguments:
        executor: any ``concurrent.futures.Executor`` whose processes can import ``physics``.
        spec: the system, platform and platform properties the executor's processes use.
        n_chunks: number of chunks per batch (the parallelism asked of the executor).
        policy: time limits (counted from submission) and retries of chunks.
    """

    def __init__(
        self, executor: cf.Executor, spec: ContextSpec, n_chunks: int, policy: ChunkPolicy
    ):
        self.executor = executor
        self.spec = spec
        self.n_chunks = n_chunks
        self._policy = policy

    def evaluate(self, batch: Batch, hook: Hook = None) -> RunStats:
        """Evaluate a batch (see :meth:`physics.openmm.chunks.Runner.evaluate`)."""
        positions, energies, forces = batch
        n = positions.shape[0]
        futures: dict[cf.Future, tuple[Chunk, float, float]] = {}

        def submit(chunk: Chunk) -> None:
            rows = positions[chunk.start : chunk.stop]
            future = self.executor.submit(
                executor_task, chunk.attempt, hook, chunk.index, self.spec, rows
            )
            now = time.monotonic()
            futures[future] = (chunk, now, now + self._policy.limit(chunk.size))

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
                        self._policy.failed(chunk, f"{type(exc).__name__}: {exc}", stats)
                        submit(chunk)
                        continue
                    energies[chunk.start : chunk.stop] = result.energies
                    forces[chunk.start : chunk.stop] = result.forces
                    stats.add(result.n_nonfinite, result.n_errors, result.first_error)
                    self._policy.record(chunk.size, time.monotonic() - submitted)
                now = time.monotonic()
                for future, (chunk, _, deadline) in list(futures.items()):
                    if now >= deadline:
                        future.cancel()
                        del futures[future]
                        limit = self._policy.limit(chunk.size)
                        self._policy.failed(chunk, f"timed out after {limit:g} s", stats)
                        submit(chunk)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        return stats

    def close(self) -> None:
        """Nothing to release: the executor belongs to the caller."""
