"""Evaluation state: held-out pages get no jobs and no training pairs; BM25 over chunk text."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from old_schema import database_at

from pipeline.evaluation.sets import EvalSetError, attach_contexts, load_set
from pipeline.ingest.reconcile import reconcile
from pipeline.settings import EvaluationSettings, PathsSettings, Settings, SourcesSettings
from state import chunk_search
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
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    docs = tmp_path / "sources" / "demo" / "docs"
    docs.mkdir(parents=True)
    (docs / "faq.md").write_text(FAQ)
    (docs / "guide.md").write_text(GUIDE)
    database = await open_db(tmp_path / "state" / "doctune.sqlite3")
    yield database
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
    hits = await chunk_search.search_chunks(db, "Which joins does DataFusion support?", k=2)
    assert hits
    assert "hash joins" in hits[0].text
    assert hits[0].path == "docs/guide.md"
    assert hits[0].repo == "demo"
    assert await chunk_search.search_chunks(db, "?? !!", k=2) == []  # no words: no query
    rows: list[dict[str, Any]] = [{"question": "How do I register a Parquet file?", "answer": "x"}]
    assert await attach_contexts(db, rows, k=1) == 1
    assert "register_parquet" in rows[0]["contexts"][0]["text"]


async def _index_hits(db: Database, word: str) -> int:
    """Rows the FTS5 index itself matches (no join to chunks, so stale entries count)."""
    return int(
        await db.scalar("SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH ?", (f'"{word}"',))
    )


async def test_a_scan_does_no_search_index_work_and_retrieval_indexes_what_is_new(
    db: Database, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, [])
    await reconcile(db, settings)
    assert await _index_hits(db, "joins") == 0  # the scan left the index alone
    assert await db.scalar("SELECT n_chunks FROM chunks_fts_stamp") == 0
    hits = await chunk_search.search_chunks(db, "Which joins are supported?", k=1)
    assert "hash joins" in hits[0].text
    n_chunks = await db.scalar("SELECT count(*) FROM chunks")
    assert await db.scalar("SELECT n_chunks FROM chunks_fts_stamp") == n_chunks
    assert await chunk_search.ensure_search_index(db) == chunk_search.IndexUpdate("none", 0)

    # A page added after the index was built: the next search finds its chunks.
    page = tmp_path / "sources" / "demo" / "docs" / "udf.md"
    page.write_text("# UDFs\n\nA scalar UDF is registered with create_udf and a volatility.\n")
    await reconcile(db, settings)
    assert await _index_hits(db, "volatility") == 0
    hits = await chunk_search.search_chunks(db, "How is a scalar UDF registered?", k=1)
    assert hits
    assert hits[0].path == "docs/udf.md"
    assert await _index_hits(db, "volatility") == 1
    n_after = await db.scalar("SELECT count(*) FROM chunks")
    assert await db.scalar("SELECT n_chunks FROM chunks_fts_stamp") == n_after > n_chunks

    # The page goes away: its chunks are no longer live and never returned.
    page.unlink()
    await reconcile(db, settings)
    hits = await chunk_search.search_chunks(db, "How is a scalar UDF registered?", k=5)
    assert all(h.path != "docs/udf.md" for h in hits)


async def _add_chunk(db: Database, chunk_id: str, text: str) -> None:
    """A chunk row with a live membership in a file of its own."""
    async with db.write() as conn:
        await conn.execute("INSERT OR IGNORE INTO repos (name, root) VALUES ('demo', '/nowhere')")
        cur = await conn.execute(
            "INSERT INTO files (repo, path, kind, status, first_seen_at, updated_at)"
            " VALUES ('demo', ?, 'doc', 'live', 0, 0)",
            (f"docs/{chunk_id}.md",),
        )
        await conn.execute(
            "INSERT INTO chunks (id, text, n_chars, created_at) VALUES (?, ?, ?, 0)",
            (chunk_id, text, len(text)),
        )
        await conn.execute(
            "INSERT INTO memberships (file_id, strategy, ordinal, chunk_id, start_line, end_line)"
            " VALUES (?, 'heading', 0, ?, 1, 1)",
            (cur.lastrowid, chunk_id),
        )


async def _remove_chunk(db: Database, chunk_id: str) -> None:
    async with db.write() as conn:
        await conn.execute("DELETE FROM memberships WHERE chunk_id = ?", (chunk_id,))
        await conn.execute("DELETE FROM chunks WHERE id = ?", (chunk_id,))


async def test_removed_chunk_rows_make_the_index_rebuild(db: Database) -> None:
    """doctune never deletes chunk rows; if something else does, no stale entry survives,
    also when SQLite hands the deleted row's rowid to the next chunk."""
    await _add_chunk(db, "a", "apples grow on trees")
    await _add_chunk(db, "b", "bananas grow in bunches")
    assert await chunk_search.ensure_search_index(db) == chunk_search.IndexUpdate("added", 2)
    b_rowid = await db.scalar("SELECT rowid FROM chunks WHERE id = 'b'")

    await _remove_chunk(db, "b")
    await _add_chunk(db, "c", "cherries grow in pairs")
    assert await db.scalar("SELECT rowid FROM chunks WHERE id = 'c'") == b_rowid  # reused
    assert (await chunk_search.ensure_search_index(db)).action == "rebuilt"
    assert await _index_hits(db, "bananas") == 0
    assert [h.chunk_id for h in await chunk_search.search_chunks(db, "cherries", k=3)] == ["c"]

    await _remove_chunk(db, "a")
    assert (await chunk_search.ensure_search_index(db)).action == "rebuilt"
    assert await _index_hits(db, "apples") == 0
    assert await chunk_search.search_chunks(db, "apples", k=3) == []
    assert [h.chunk_id for h in await chunk_search.search_chunks(db, "grow", k=3)] == ["c"]


async def test_an_index_kept_by_the_old_triggers_is_taken_as_up_to_date(tmp_path: Path) -> None:
    """A database from before migration 0005: its trigger-kept index is stamped complete."""
    path = tmp_path / "old.sqlite3"
    conn = database_at(path, 4)
    conn.execute("INSERT INTO chunks VALUES ('old', 'durians smell strongly', 22, 0)")
    conn.commit()
    conn.close()
    db = await open_db(path)
    try:
        triggers = await db.fetchall("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        assert not [r for r in triggers if r[0].startswith("chunks_fts")]
        assert await _index_hits(db, "durians") == 1
        assert await chunk_search.ensure_search_index(db) == chunk_search.IndexUpdate("none", 0)
    finally:
        await db.close()


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
