"""Log lines the generation service writes while handling a job name the job."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog
from gen_helpers import corpus_paragraphs, gen_settings, seed_chunks
from ollama_fake import FakeOllama
from structlog.testing import LogCapture

from pipeline.generate.jobs import ensure_jobs
from pipeline.generate.service import GenerationService
from state.db import open_db


@pytest.mark.anyio
async def test_every_job_log_line_carries_job_chunk_and_attempt(
    tmp_path: Path, ollama_fake: FakeOllama
) -> None:
    capture = LogCapture()
    # the same context merge the CLI's logging uses (daemon/logsetup.py), then capture
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, capture])
    db = await open_db(tmp_path / "data" / "doctune.sqlite3")
    try:
        await seed_chunks(db, corpus_paragraphs(4))
        settings = gen_settings(tmp_path, ollama_fake.url)
        await ensure_jobs(db, settings.generator)
        await GenerationService(db, settings).run_once()
        ids = {row[0]: row[1] for row in await db.fetchall("SELECT id, chunk_id FROM jobs")}
    finally:
        await db.close()
    job_lines = [e for e in capture.entries if e["event"] == "generation.job"]
    assert len(job_lines) == 4
    for entry in job_lines:
        assert entry["chunk_hash"] == ids[entry["job_id"]][:16]
        assert entry["attempt"] == 1
