"""Per-job log context: every log line emitted while a job is handled names the job."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import structlog

__all__ = ["job_context"]


@contextmanager
def job_context(job_id: int, chunk_hash: str, attempt: int) -> Iterator[None]:
    """Bind job id, chunk hash (16 hex) and attempt to every log line inside the block."""
    with structlog.contextvars.bound_contextvars(
        job_id=job_id, chunk_hash=chunk_hash[:16], attempt=attempt
    ):
        yield
