"""`generator.keep_alive` reaches Ollama in the type it accepts: numbers as numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
from gen_helpers import corpus_paragraphs, gen_settings, seed_chunks
from ollama_fake import FakeOllama

from pipeline.clients.ollama import keep_alive_value
from pipeline.generate.plan import ensure_jobs
from pipeline.generate.service import GenerationService
from state.db import open_db


def test_numeric_keep_alive_is_a_number_and_durations_stay_strings() -> None:
    assert keep_alive_value("-1") == -1
    assert isinstance(keep_alive_value("-1"), int)
    assert keep_alive_value("300") == 300
    assert keep_alive_value("1.5") == 1.5
    assert keep_alive_value("30m") == "30m"
    assert keep_alive_value("1h30m") == "1h30m"


@pytest.mark.anyio
@pytest.mark.parametrize("keep_alive", ["-1", "600", "30m"])
async def test_run_once_with_keep_alive_is_accepted_by_the_server(
    tmp_path: Path, ollama_fake: FakeOllama, keep_alive: str
) -> None:
    db = await open_db(tmp_path / "data" / "doctune.sqlite3")
    try:
        await seed_chunks(db, corpus_paragraphs(3))
        settings = gen_settings(tmp_path, ollama_fake.url, keep_alive=keep_alive)
        await ensure_jobs(db, settings.generator)
        summary = await GenerationService(db, settings).run_once()
    finally:
        await db.close()
    assert summary.pairs_stored == 3
    assert not [c for c in ollama_fake.calls if c.status == 400]
