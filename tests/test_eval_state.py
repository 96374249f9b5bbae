"""Evaluation state: held-out pages get no jobs and no training pairs; BM25 over chunk text."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pipeline.evaluation.sets import EvalSetError, attach_contexts, load_set
from pipeline.ingest.reconcile import reconcile
from pipeline.settings import EvaluationSettings, PathsSettings, Settings, SourcesSettings
from state import evaluation as ev_store
from state import training as train_store
from state.db import Database, now, open_db
from state.jobs import ensure_jobs

pytestmark = pytest.mark.anyio

FAQ = """# FAQ

## How do I register a Parquet file?

Call register_parquet on the SessionContext with a table name and the file path; the schema
is read from the Parquet footer.
"""
GUIDE = """# Window functions

A window function computes a value for every row over a frame of neighbouring rows, for
example a running total ordered by time within each partition.

# Joins

DataFusion supports hash joins, sort-merge joins and nested loop joins between two inputs.
"""


def _settings(tmp_path: Path, globs: list[str]) -> Settings:
    return Settings(
        paths=PathsSettings(state_dir=tmp_path / "state", models_dir=tmp_path / "models"),
        sources=SourcesSettings(dir=tmp_path / "sources", docs=["docs/**/*.md"], code=[]),
        evaluation=EvaluationSettings(holdout_globs=globs),
    )


@pytest.fixture
async def db(tmp_path: Path) -> Database:
    docs = tmp_path / "sources" / "demo" / "docs"
    docs.mkdir(parents=True)
    (docs / "faq.md").write_text(FAQ)
    (docs / "guide.md").write_text(GUIDE)
    database = await open_db(tmp_path / "state" / "doctune.sqlite3")
    yield database  # type: ignore[misc]
    await database.close()


async def _chunks_of(db: Database, path: str) -> set[str]:
    rows = await db.fetchall(
        "SELECT m.chunk_id FROM memberships m JOIN files f ON f.id = m.file_id WHERE f.path = ?",
        (path,),
    )
    return {r[0] for r in rows}


async def _pair_on(db: Database, chunk_id: str, question: str) -> None:
    async with db.write() as conn:
        cur = await conn.execute(
            "INSERT INTO jobs (chunk_id, prompt_version, model, state, created_at, updated_at)"
            " VALUES (?, 'manual', 'm', 'done', ?, ?)",
            (chunk_id, now(), now()),
        )
        await conn.execute(
            "INSERT INTO pairs (job_id, idx, chunk_id, repo, path, strategy, chunk_preview,"
            " question, answer, model, prompt_version, created_at)"
            " VALUES (?, 0, ?, 'demo', 'docs/x.md', 'heading', 'p', ?, 'an answer.', 'm',"
            " 'manual', ?)",
            (cur.lastrowid, chunk_id, question, now()),
        )


async def test_held_out_pages_get_no_jobs_and_no_training_pairs(
    db: Database, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, ["docs/faq.md"])
    await reconcile(db, settings)
    faq_chunks = await _chunks_of(db, "docs/faq.md")
    assert faq_chunks
    assert await ev_store.holdout_chunk_count(db) == len(faq_chunks)
    await ensure_jobs(db, prompt_version="v1", model="m")
    queued = {r[0] for r in await db.fetchall("SELECT chunk_id FROM jobs")}
    assert queued
    assert not queued & faq_chunks
    guide_chunk = next(iter(await _chunks_of(db, "docs/guide.md")))
    await _pair_on(db, next(iter(faq_chunks)), "held out?")
    await _pair_on(db, guide_chunk, "trained on?")
    assert [p.question for p in await train_store.live_pairs(db)] == ["trained on?"]
    assert await train_store.count_live_pairs(db) == 1
    assert await train_store.count_held_out_pairs(db) == 1

    # The page stops being held out: its chunks get jobs again.
    await reconcile(db, dataclasses.replace(settings, evaluation=EvaluationSettings()))
    await ensure_jobs(db, prompt_version="v1", model="m")
    queued = {r[0] for r in await db.fetchall("SELECT chunk_id FROM jobs")}
    assert faq_chunks <= queued
    assert len(await train_store.live_pairs(db)) == 2


async def test_pending_jobs_of_a_newly_held_out_page_are_stopped_with_a_reason(
    db: Database, tmp_path: Path
) -> None:
    await reconcile(db, _settings(tmp_path, []))
    await ensure_jobs(db, prompt_version="v1", model="m")
    await reconcile(db, _settings(tmp_path, ["**/faq.md"]))
    dead = await db.fetchall(
        "SELECT j.chunk_id, e.reason FROM jobs j JOIN job_events e ON e.job_id = j.id"
        " WHERE j.state = 'dead'"
    )
    assert {r[0] for r in dead} == await _chunks_of(db, "docs/faq.md")
    assert {r[1] for r in dead} == {"eval_holdout"}


async def test_bm25_finds_the_chunk_that_answers(db: Database, tmp_path: Path) -> None:
    await reconcile(db, _settings(tmp_path, []))
    hits = await ev_store.search_chunks(db, "Which joins does DataFusion support?", k=2)
    assert hits
    assert "hash joins" in hits[0].text
    assert hits[0].path == "docs/guide.md"
    assert hits[0].repo == "demo"
    assert await ev_store.search_chunks(db, "?? !!", k=2) == []  # no words: no query
    rows = [{"question": "How do I register a Parquet file?", "answer": "x"}]
    assert await attach_contexts(db, rows, k=1) == 1
    assert "register_parquet" in rows[0]["contexts"][0]["text"]


def test_eval_set_errors_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "set.jsonl"
    path.write_text('{"question": "q?", "answer": "a"}\n{"question": "", "answer": "a"}\n')
    with pytest.raises(EvalSetError, match=r"set.jsonl:2: 'question'"):
        load_set(path)
    path.write_text("not json\n")
    with pytest.raises(EvalSetError, match=r"set.jsonl:1: not a JSON object"):
        load_set(path)
    with pytest.raises(EvalSetError, match="not found"):
        load_set(tmp_path / "missing.jsonl")
    path.write_text('{"question": "q?", "answer": "a", "source": "docs/a.md"}\n')
    loaded = load_set(path)
    assert loaded.name == "set"
    assert loaded.rows[0]["source"] == "docs/a.md"
