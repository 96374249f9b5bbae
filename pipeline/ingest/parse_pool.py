"""Running per-file parse jobs: a forkserver (or spawn) process pool, or one thread.

While the pool starts (its server imports the parsers before forking workers: ~0.7 s the
first time), this process parses too, from the other end of the job list.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial

import anyio
import structlog
from anyio.streams.memory import MemoryObjectSendStream

from pipeline.ingest import pool_main
from pipeline.ingest.chunk import Sizes
from pipeline.ingest.parse import ChunkConfig, FileJob, FileOutcome, process_file, process_files
from pipeline.settings import Settings

__all__ = ["POOL_MIN_BYTES", "POOL_MIN_FILES", "chunk_config", "run_jobs"]

log = structlog.get_logger(__name__)

# Below this much work a pool's start-up (~0.3 s the first time, importing the parsers)
# costs more than it saves: parse in one worker thread instead.
POOL_MIN_BYTES = 3_000_000
POOL_MIN_FILES = 400


def chunk_config(settings: Settings) -> ChunkConfig:
    """The picklable chunker configuration derived from settings."""
    c = settings.chunking
    return ChunkConfig(
        tuple(c.strategies),
        Sizes(c.min_chars, c.max_chars, c.overlap_chars),
        Sizes(c.code_min_chars, c.code_max_chars, c.code_overlap_chars),
    )


# What a pool's forkserver imports once, before it forks the workers: the main module (which
# every worker would otherwise run again; `pool_main` does it where Python's own preload of
# "__main__" is broken) and the parsers, warmed up (`pool_preload`).
_PRELOAD = ["__main__", "pipeline.ingest.pool_main", "pipeline.ingest.pool_preload"]


def pool_context() -> multiprocessing.context.BaseContext:
    """A forkserver context where there is one (workers are forked from a server that has
    already imported the main module and the parsers, instead of each importing them
    again), else spawn.

    Never plain fork: the caller has threads (the event loop's, aiosqlite's). The server
    is started on first use and lives as long as this process, so later reconciles start
    their workers without paying the imports again.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_PRELOAD)
    pool_main.share_main_path()
    return context


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def worker_count(settings: Settings, n_jobs: int) -> int:
    """Pool size: `chunking.workers` (0 = the CPUs this process may run on), at most one
    per 8 files."""
    configured = settings.chunking.workers or usable_cpus()
    return max(1, min(configured, math.ceil(n_jobs / 8)))


async def run_jobs(
    jobs: list[FileJob],
    config: ChunkConfig,
    settings: Settings,
    progress: Callable[[int, int], None] | None,
    handle: Callable[[FileJob, FileOutcome], Awaitable[None]],
) -> None:
    """Process jobs in a process pool (or a worker thread for small batches), handing each
    outcome to `handle` on the event loop as it arrives (DB writes overlap parsing)."""
    total = len(jobs)
    if progress is not None:
        progress(0, total)
    if not jobs:
        return
    workers = worker_count(settings, total)
    # Files over the size cap are never read: they do not count as work.
    work_bytes = sum(min(job.size or 0, job.max_bytes) for job in jobs)
    if (total < POOL_MIN_FILES and work_bytes < POOL_MIN_BYTES) or workers == 1:
        await _in_thread(jobs, config, handle, progress, 0, total)
        return
    queue = _JobQueue(jobs)
    answered = threading.Event()  # the pool has delivered its first outcomes
    leftover: list[FileJob] = []  # jobs a broken pool did not finish
    # Outcomes cross from the threads to the event loop a pool chunk at a time: the
    # chunk's results arrive together, so this adds no latency and saves a thread
    # round trip per file.
    send, receive = anyio.create_memory_object_stream[list[tuple[FileJob, FileOutcome]]](8)
    pool_send = send.clone()
    chunksize = max(1, min(16, total // (workers * 8)))
    # Here, not in the feeding thread: it may set an environment variable for the server.
    context = pool_context()

    def produce() -> None:
        try:
            _feed_pool(queue, config, context, workers, chunksize, pool_send, answered, leftover)
        finally:
            answered.set()  # the helper stops whatever happened here
            anyio.from_thread.run(pool_send.aclose)

    def help_while_the_pool_starts() -> None:
        # Until the pool answers (its server and workers may still be importing the
        # parsers), this process parses too, from the other end of the queue, on the
        # core that would otherwise sit idle.
        try:
            while not answered.is_set() and (job := queue.back()) is not None:
                outcome = process_file(job, config)
                anyio.from_thread.run(send.send, [(job, outcome)])
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        finally:
            anyio.from_thread.run(send.aclose)

    done = 0
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(anyio.to_thread.run_sync, produce, abandon_on_cancel=False))
        tg.start_soon(
            partial(anyio.to_thread.run_sync, help_while_the_pool_starts, abandon_on_cancel=False)
        )
        async with receive:
            async for batch in receive:
                for job, outcome in batch:
                    await handle(job, outcome)
                    done += 1
                    if progress is not None:
                        progress(done, total)
    await _in_thread(leftover, config, handle, progress, done, total)


async def _in_thread(
    jobs: list[FileJob],
    config: ChunkConfig,
    handle: Callable[[FileJob, FileOutcome], Awaitable[None]],
    progress: Callable[[int, int], None] | None,
    done: int,
    total: int,
) -> None:
    """Process jobs one by one in a worker thread of this process."""
    for job in jobs:
        outcome = await anyio.to_thread.run_sync(process_file, job, config)
        await handle(job, outcome)
        done += 1
        if progress is not None:
            progress(done, total)


class _JobQueue:
    """Jobs shared by the pool (from the front, a chunk at a time) and this process's
    helper (from the back, one at a time)."""

    def __init__(self, jobs: list[FileJob]) -> None:
        self._jobs = deque(jobs)
        self._lock = threading.Lock()

    def front(self, n: int) -> list[FileJob]:
        with self._lock:
            return [self._jobs.popleft() for _ in range(min(n, len(self._jobs)))]

    def back(self) -> FileJob | None:
        with self._lock:
            return self._jobs.pop() if self._jobs else None

    def drain(self) -> list[FileJob]:
        with self._lock:
            rest = list(self._jobs)
            self._jobs.clear()
            return rest


def _feed_pool(
    queue: _JobQueue,
    config: ChunkConfig,
    context: multiprocessing.context.BaseContext,
    workers: int,
    chunksize: int,
    send: MemoryObjectSendStream[list[tuple[FileJob, FileOutcome]]],
    answered: threading.Event,
    leftover: list[FileJob],
) -> None:
    """Keep the pool a few chunks ahead, taking them from the queue's front, and send
    each chunk's outcomes on in submission order (runs in a thread)."""
    in_flight: deque[tuple[list[FileJob], Future[list[FileOutcome]]]] = deque()
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        try:
            while True:
                while len(in_flight) < 4 * workers and (chunk := queue.front(chunksize)):
                    try:
                        future = pool.submit(process_files, chunk, config)
                    except BrokenProcessPool:
                        leftover.extend(chunk)  # taken from the queue, never submitted
                        raise
                    in_flight.append((chunk, future))
                if not in_flight:
                    return
                chunk, future = in_flight[0]
                outcomes = future.result()
                in_flight.popleft()
                answered.set()
                anyio.from_thread.run(send.send, list(zip(chunk, outcomes, strict=True)))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # the consumer stopped (error or cancellation): stop feeding it
        except BrokenProcessPool:
            # A worker died (OOM killer, crash): the rest is done in-process afterwards.
            leftover.extend(job for chunk, _ in in_flight for job in chunk)
            leftover.extend(queue.drain())
            log.warning("parse_pool_broken", left=len(leftover))
        finally:
            pool.shutdown(cancel_futures=True)
