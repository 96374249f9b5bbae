"""The generation plan (invariant 7): shared text is asked once, its pairs serve every chunk that
contains it, retirement follows membership, and the first prompt lists questions already asked."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from gen_helpers import corpus_paragraphs, gen_settings
from ollama_fake import FakeOllama

from pipeline.generate.export import repo_jsonl_path
from pipeline.generate.plan import contains, ensure_jobs, sentence_pieces
from pipeline.generate.prompt import ASKED_HEADER, build_messages, prompt_version_for
from pipeline.generate.service import GenerationService
from pipeline.ingest.chunk import chunk_id
from pipeline.settings import Settings
from state.db import Database, open_db
from state.file_changes import FileChange, apply_changes
from state.job_claims import claim_jobs
from state.jobs import ensure_jobs as state_ensure_jobs
from state.pairs import pair_sources

pytestmark = pytest.mark.anyio
REPO = "datafusion"


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await open_db(tmp_path / "data" / "doctune.sqlite3")
    async with database.write() as conn:
        await conn.execute("INSERT INTO repos (name, root) VALUES (?, '/src')", (REPO,))
    yield database
    await database.close()


def _rows(
    *chunks: tuple[str, str, int, int],
) -> list[tuple[str, int, str, str, int, int, None, None]]:
    """(strategy, text, start, end) → membership rows with ordinals per strategy."""
    ordinals: dict[str, int] = {}
    rows = []
    for strategy, text, start, end in chunks:
        ordinal = ordinals[strategy] = ordinals.get(strategy, -1) + 1
        rows.append((strategy, ordinal, chunk_id(text), text, start, end, None, None))
    return rows


async def _write(db: Database, path: str, *chunks: tuple[str, str, int, int]) -> None:
    change = FileChange(path, "chunks", "doc", "markdown", chunks=_rows(*chunks))
    await apply_changes(db, REPO, [change])


def _texts() -> tuple[str, str, str, str]:
    """Two paragraphs, the section holding both, a fixed window from P1's last sentence on."""
    p1, p2 = corpus_paragraphs(2, min_chars=250)
    section = f"{p1}\n\n{p2}"
    tail = re.split(r"(?<=\.)\s+", p1)[-1]
    assert tail != p1
    window = f"{tail}\n\n{p2}"
    return p1, p2, section, window


async def _generate(db: Database, settings: Settings) -> GenerationService:
    await ensure_jobs(db, settings.generator)
    service = GenerationService(db, settings)
    await service.run_once()
    return service


async def _live(db: Database) -> dict[str, int]:
    rows = await db.fetchall(
        "SELECT chunk_id, COUNT(*) FROM pairs WHERE retired_at IS NULL GROUP BY chunk_id"
    )
    return {r[0]: r[1] for r in rows}


async def test_shared_text_is_asked_once_and_its_pairs_serve_each_containing_chunk(
    db: Database, tmp_path: Path, ollama_fake: FakeOllama
) -> None:
    p1, p2, section, window = _texts()
    await _write(
        db,
        "docs/guide.md",
        ("paragraph", p1, 1, 3),
        ("paragraph", p2, 5, 7),
        ("heading", section, 1, 7),
        ("fixed", window, 3, 7),
    )
    settings = gen_settings(tmp_path, ollama_fake.url)
    service = await _generate(db, settings)
    # four chunks, two pieces of text: two calls
    asked = {r[0] for r in await db.fetchall("SELECT chunk_id FROM jobs")}
    assert asked == {chunk_id(p1), chunk_id(p2)}
    assert len(ollama_fake.generation_calls()) == service.summary.calls == 2
    pairs = await db.fetchall("SELECT id, chunk_id FROM pairs")
    sources = await pair_sources(db, [r[0] for r in pairs])
    served = {r[1]: {(s["chunk_id"], s["strategy"]) for s in sources[r[0]]} for r in pairs}
    assert served[chunk_id(p1)] == {(chunk_id(p1), "paragraph"), (chunk_id(section), "heading")}
    assert served[chunk_id(p2)] == {
        (chunk_id(p2), "paragraph"),
        (chunk_id(section), "heading"),
        (chunk_id(window), "fixed"),  # the window holds all of P2, only the end of P1
    }
    exported = [
        json.loads(line)
        for line in repo_jsonl_path(settings.paths.state_dir, REPO).read_text().splitlines()
    ]
    assert {row["chunk_id"]: len(row["sources"]) for row in exported} == {
        chunk_id(p1): 2,
        chunk_id(p2): 3,
    }
    # nothing new: the next plan asks nothing
    assert await ensure_jobs(db, settings.generator) == 0


async def test_a_pair_stays_live_while_a_chunk_containing_its_text_is_live(
    db: Database, tmp_path: Path, ollama_fake: FakeOllama
) -> None:
    p1, p2, section, _ = _texts()
    original = (("paragraph", p1, 1, 3), ("paragraph", p2, 5, 7), ("heading", section, 1, 7))
    await _write(db, "docs/guide.md", *original)
    settings = gen_settings(tmp_path, ollama_fake.url)
    await _generate(db, settings)
    assert await _live(db) == {chunk_id(p1): 1, chunk_id(p2): 1}
    # The two paragraphs merge into one paragraph chunk (the section's text): P1 and P2 are no
    # chunk any more, but their text is, inside the section.
    await _write(db, "docs/guide.md", ("paragraph", section, 1, 7), ("heading", section, 1, 7))
    assert await _live(db) == {chunk_id(p1): 1, chunk_id(p2): 1}
    # The file is gone: nothing serves the pairs.
    await apply_changes(db, REPO, [FileChange("docs/guide.md", "deleted", "doc")])
    assert await _live(db) == {}
    # It comes back: so do they.
    await _write(db, "docs/guide.md", *original)
    assert await _live(db) == {chunk_id(p1): 1, chunk_id(p2): 1}


async def test_first_prompt_lists_the_questions_already_asked_about_overlapping_text(
    db: Database, tmp_path: Path, ollama_fake: FakeOllama
) -> None:
    p1, p2, section, _ = _texts()
    await _write(db, "docs/guide.md", ("paragraph", p1, 1, 3), ("paragraph", p2, 5, 7))
    settings = gen_settings(tmp_path, ollama_fake.url)
    await _generate(db, settings)
    asked = {r[0] for r in await db.fetchall("SELECT question FROM pairs")}
    # Another page holds both paragraphs as one: new text, overlapping what was asked.
    await _write(db, "docs/copy.md", ("paragraph", section, 1, 7))
    assert await ensure_jobs(db, settings.generator) == 1
    gen = settings.generator
    [job] = await claim_jobs(
        db,
        prompt_version=prompt_version_for(gen),
        model=gen.model,
        owner="test",
        limit=5,
        lease_s=60,
    )
    assert job.chunk_id == chunk_id(section)
    assert job.repairs == 0
    assert set(job.prior_questions) == asked
    prompt = build_messages(job, gen.pairs_per_chunk)[1]["content"]
    assert ASKED_HEADER in prompt
    assert all(f"- {q}" in prompt for q in asked)
    # a model that reads the list asks about something else the first time
    async with db.write() as conn:
        await conn.execute(
            "UPDATE jobs SET state = 'pending', claim_token = NULL WHERE state = 'leased'"
        )
    ollama_fake.reset_stats()
    await _generate(db, settings)
    assert len(ollama_fake.generation_calls()) == 1
    assert await db.scalar("SELECT SUM(repairs) FROM jobs") == 0
    assert len(await db.fetchall("SELECT DISTINCT question FROM pairs")) == 3


async def test_jobs_of_chunks_the_plan_does_not_ask_about_are_dropped_unless_they_ran(
    db: Database, tmp_path: Path
) -> None:
    p1, p2, section, _ = _texts()
    await _write(
        db,
        "docs/guide.md",
        ("paragraph", p1, 1, 3),
        ("paragraph", p2, 5, 7),
        ("heading", section, 1, 7),
    )
    gen = gen_settings(tmp_path, "http://127.0.0.1:9").generator
    version = prompt_version_for(gen)
    # a database from before the plan: one job per live chunk, the section's already tried
    assert await state_ensure_jobs(db, prompt_version=version, model=gen.model) == 3
    async with db.write() as conn:
        await conn.execute("UPDATE jobs SET attempts = 1 WHERE chunk_id = ?", (chunk_id(section),))
    assert await ensure_jobs(db, gen) == 0
    kept = {r[0] for r in await db.fetchall("SELECT chunk_id FROM jobs")}
    assert kept == {chunk_id(p1), chunk_id(p2), chunk_id(section)}
    async with db.write() as conn:
        await conn.execute("UPDATE jobs SET attempts = 0")
    await ensure_jobs(db, gen)
    kept = {r[0] for r in await db.fetchall("SELECT chunk_id FROM jobs")}
    assert kept == {chunk_id(p1), chunk_id(p2)}


def test_sentence_pieces_ignore_layout_numbers_and_short_sentences() -> None:
    text = "DataFusion reads Parquet files quickly.\nSee below.\n\nIt also  reads CSV files fine."
    rewrapped = (
        "DataFusion reads Parquet\nfiles quickly. See below.\n\nIt also reads CSV files fine."
    )
    # both sentences are shared pieces, whatever the line breaks
    assert len(set(sentence_pieces(text)) & set(sentence_pieces(rewrapped))) >= 2
    assert sentence_pieces("Elapsed 0.060 seconds total.") == sentence_pieces(
        "Elapsed 0.720 seconds total."
    )
    assert sentence_pieces("See below.") == []
    assert contains("a b\n c d", "b c")
    assert not contains("a b c", "c d")
