"""Running per-file parse jobs: a forkserver (or spawn) process pool, or one thread."""

from __future__ import annotations

import math
import multiprocessing
import os
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from itertools import islice

import anyio
import structlog

from pipeline.ingest.chunk import Sizes
from pipeline.ingest.parse import ChunkConfig, FileJob, FileOutcome, process_file
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


# What a pool's forkserver imports once, before it forks the workers: the parsers, warmed up
# (`pool_preload`), and the main module (which spawn would re-import in every worker).
_PRELOAD = ["__main__", "pipeline.ingest.pool_preload"]


def pool_context() -> multiprocessing.context.BaseContext:
    """A forkserver context where there is one (workers are forked from a server that has
    already imported the parsers, instead of each importing them again), else spawn.

    Never plain fork: the caller has threads (the event loop's, aiosqlite's). The server
    is started on first use and lives as long as this process, so later reconciles start
    their workers without paying the imports again.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_PRELOAD)
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
        for done, job in enumerate(jobs, start=1):
            outcome = await anyio.to_thread.run_sync(process_file, job, config)
            await handle(job, outcome)
            if progress is not None:
                progress(done, total)
        return
    # Outcomes cross from the pool thread to the event loop a pool chunk at a time: the
    # chunk's results arrive together, so this adds no latency and saves a thread
    # round trip per file.
    send, receive = anyio.create_memory_object_stream[list[tuple[FileJob, FileOutcome]]](8)
    delivered = 0

    def produce() -> None:
        nonlocal delivered
        context = pool_context()
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            try:
                chunksize = max(1, min(16, total // (workers * 8)))
                results = pool.map(partial(process_file, config=config), jobs, chunksize=chunksize)
                pairs = zip(jobs, results, strict=True)
                while batch := list(islice(pairs, chunksize)):
                    anyio.from_thread.run(send.send, batch)
                    delivered += len(batch)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass  # the consumer stopped (error or cancellation): stop feeding it
            except BrokenProcessPool:
                # A worker died (OOM killer, crash): finish the rest in-process below.
                log.warning("parse_pool_broken", done=delivered, total=total)
            finally:
                pool.shutdown(cancel_futures=True)
                anyio.from_thread.run(send.aclose)

    done = 0
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(anyio.to_thread.run_sync, produce, abandon_on_cancel=False))
        async with receive:
            async for batch in receive:
                for job, outcome in batch:
                    await handle(job, outcome)
                    done += 1
                    if progress is not None:
                        progress(done, total)
    for job in jobs[delivered:]:
        outcome = await anyio.to_thread.run_sync(process_file, job, config)
        await handle(job, outcome)
        done += 1
        if progress is not None:
            progress(done, total)
