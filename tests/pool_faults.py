"""Pool tasks with faults, for parse-pool tests (top level, so pool workers can import them)."""

from __future__ import annotations

import os
import time

from pipeline.ingest.parse import ChunkConfig, FileJob, FileOutcome, process_files


def process_files_late(jobs: list[FileJob], config: ChunkConfig) -> list[FileOutcome]:
    """`process_files` after a pause: a pool that is slow to answer."""
    time.sleep(1.5)
    return process_files(jobs, config)


def process_files_or_die(jobs: list[FileJob], config: ChunkConfig) -> list[FileOutcome]:
    """The worker process dies as if killed (the pool breaks)."""
    os._exit(1)
