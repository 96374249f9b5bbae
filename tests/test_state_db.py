"""The database opens with the right pragmas and migrates from empty, idempotently."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from old_schema import database_at

from state.db import NEW_PAGE_SIZE, open_db

pytestmark = pytest.mark.anyio


async def test_migrations_apply_from_an_empty_database(tmp_path: Path) -> None:
    db = await open_db(tmp_path / "x.sqlite3")
    try:
        tables = {r[0] for r in await db.fetchall("SELECT name FROM sqlite_master")}
        assert {"files", "chunks", "memberships", "jobs", "pairs", "training_runs"} <= tables
        assert await db.scalar("PRAGMA journal_mode") == "wal"
        assert await db.scalar("PRAGMA foreign_keys") == 1
        assert await db.scalar("PRAGMA synchronous") == 1  # NORMAL
    finally:
        await db.close()


async def test_a_new_database_gets_big_pages_and_an_old_one_keeps_its_own(tmp_path: Path) -> None:
    db = await open_db(tmp_path / "new.sqlite3")
    try:
        assert await db.scalar("PRAGMA page_size") == NEW_PAGE_SIZE
    finally:
        await db.close()
    old = tmp_path / "old.sqlite3"
    conn = database_at(old, 6)  # made before the page size changed: SQLite's 4 KiB
    conn.execute("INSERT INTO repos (name, root) VALUES ('r', '/r')")
    conn.commit()
    conn.close()
    db = await open_db(old)
    try:
        assert await db.scalar("PRAGMA page_size") == 4096
        assert await db.scalar("PRAGMA journal_mode") == "wal"
        assert await db.scalar("SELECT root FROM repos WHERE name = 'r'") == "/r"
        async with db.write() as conn_w:  # still writable, and its pages stay 4 KiB
            await conn_w.execute("INSERT INTO repos (name, root) VALUES ('s', '/s')")
    finally:
        await db.close()
    conn = sqlite3.connect(old)
    assert conn.execute("PRAGMA page_size").fetchone()[0] == 4096
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT count(*) FROM repos").fetchone()[0] == 2
    conn.close()


async def test_reopening_applies_nothing_twice(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite3"
    await (await open_db(path)).close()
    db = await open_db(path)
    try:
        versions = [r[0] for r in await db.fetchall("SELECT version FROM schema_migrations")]
        assert versions == sorted(set(versions))
        assert len(versions) >= 1
    finally:
        await db.close()


async def test_write_transaction_rolls_back_on_error(tmp_path: Path) -> None:
    db = await open_db(tmp_path / "x.sqlite3")
    try:
        with pytest.raises(RuntimeError):
            async with db.write() as conn:
                await conn.execute("INSERT INTO meta (key, value, updated_at) VALUES ('k', 'v', 0)")
                raise RuntimeError("boom")
        assert await db.scalar("SELECT count(*) FROM meta") == 0
    finally:
        await db.close()


async def test_meta_holds_one_value_per_key_and_its_owners_share_it(tmp_path: Path) -> None:
    from state import files, generation_status, meta, plan

    db = await open_db(tmp_path / "x.sqlite3")
    try:
        assert await meta.read_meta(db, "k") is None
        await meta.write_meta(db, "k", "one")
        await meta.write_meta(db, "k", "two")  # an upsert, not a second row
        row = await meta.read_meta_row(db, "k")
        assert row is not None
        assert row[0] == "two"
        assert row[1] > 0
        await meta.write_meta_json(db, "j", {"a": [1, 2]})
        assert await meta.read_meta_json(db, "j") == {"a": [1, 2]}
        # the owners of keys write through the same table
        await plan.set_plan_watermark(db, 12.5)
        await files.set_chunker_fingerprint(db, "demo", "fp1")
        await generation_status.set_generator_status(db, {"state": "ok"})
        assert await plan.get_plan_watermark(db) == 12.5
        assert await files.get_chunker_fingerprint(db, "demo") == "fp1"
        status = await generation_status.get_generator_status(db)
        assert status is not None
        assert status["state"] == "ok"
        assert "updated_at" in status
        assert await db.scalar("SELECT count(*) FROM meta") == 5
    finally:
        await db.close()


async def test_imported_pairs_are_live_with_one_job_per_chunk(tmp_path: Path) -> None:
    from state.pair_import import ImportedPair, import_pairs
    from state.training import count_live_pairs, live_pairs

    db = await open_db(tmp_path / "x.sqlite3")
    try:
        rows = [
            ImportedPair("c1", "What is a plan?", "A tree of operators.", "docs/a.md"),
            ImportedPair("c1", "What does a plan hold?", "Operators, as a tree.", "docs/a.md"),
            ImportedPair("c2", "What is a batch?", "Arrow arrays.", "docs/b.md"),
        ]
        ids = await import_pairs(db, rows, repo="demo", root="/", model="x", prompt_version="v")
        gone = [ImportedPair("c3", "Gone?", "Yes, gone.", "docs/c.md")]
        retired = await import_pairs(
            db, gone, repo="demo", root="/", model="x", prompt_version="v", retired=True
        )
        assert len(ids) == 3
        assert retired[0] > ids[-1]
        assert await count_live_pairs(db) == 3
        assert [p.chunk_id for p in await live_pairs(db)] == ["c1", "c1", "c2"]
        jobs = await db.fetchall("SELECT chunk_id, state FROM jobs ORDER BY id")
        assert [tuple(j) for j in jobs] == [("c1", "done"), ("c2", "done"), ("c3", "done")]
        idx = await db.fetchall("SELECT idx FROM pairs WHERE chunk_id = 'c1' ORDER BY id")
        assert [r[0] for r in idx] == [0, 1]
        text = await db.scalar("SELECT text FROM chunks WHERE id = 'c1'")
        assert text == "A tree of operators."  # the first pair's source text
    finally:
        await db.close()


async def test_trim_pending_jobs_keeps_the_first_ones(tmp_path: Path) -> None:
    from state.file_changes import FileChange, apply_changes
    from state.files import ensure_repo
    from state.jobs import ensure_jobs, trim_pending_jobs

    db = await open_db(tmp_path / "x.sqlite3")
    try:
        await ensure_repo(db, "demo", "/src/demo")
        rows = [("paragraph", i, f"c{i}", f"text {i}", i, i, None, None) for i in range(5)]
        await apply_changes(db, "demo", [FileChange("a.md", "chunks", "doc", chunks=rows)])
        assert await ensure_jobs(db, prompt_version="v", model="m") == 5
        first = [r[0] for r in await db.fetchall("SELECT id FROM jobs ORDER BY id LIMIT 2")]
        assert await trim_pending_jobs(db, keep=2) == 3
        assert [r[0] for r in await db.fetchall("SELECT id FROM jobs ORDER BY id")] == first
    finally:
        await db.close()


async def test_memberships_become_without_rowid_keeping_rows_views_and_cascade(
    tmp_path: Path,
) -> None:
    """A database from before migration 0006: its memberships survive the table swap."""
    path = tmp_path / "old.sqlite3"
    conn = database_at(path, 5)
    conn.execute("INSERT INTO repos (name, root) VALUES ('r', '/r')")
    for file_id, status in ((1, "live"), (2, "deleted")):
        conn.execute(
            "INSERT INTO files (id, repo, path, kind, status, first_seen_at, updated_at)"
            " VALUES (?, 'r', ?, 'doc', ?, 0, 0)",
            (file_id, f"f{file_id}.md", status),
        )
    for cid in ("a", "b", "c"):
        conn.execute("INSERT INTO chunks VALUES (?, ?, 1, 0)", (cid, cid))
    rows = [
        (1, "heading", 0, "a", 1, 2, "Intro"),
        (1, "heading", 1, "b", 3, 4, None),
        (1, "fixed", 0, "a", 1, 4, None),
        (2, "heading", 0, "c", 1, 1, None),
    ]
    conn.executemany("INSERT INTO memberships VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    conn.execute("INSERT INTO eval_holdout_files VALUES ('r', 'f1.md')")
    conn.commit()
    conn.close()
    db = await open_db(path)
    try:
        sql = await db.scalar("SELECT sql FROM sqlite_master WHERE name = 'memberships'")
        assert "WITHOUT ROWID" in sql
        kept = await db.fetchall("SELECT * FROM memberships ORDER BY 1, 2, 3")
        assert [tuple(r) for r in kept] == sorted((*r, None) for r in rows)  # 0007: sections
        live = await db.fetchall("SELECT chunk_id FROM live_chunks ORDER BY 1")
        assert [r[0] for r in live] == ["a", "b"]
        held = await db.fetchall("SELECT chunk_id FROM eval_holdout_chunks ORDER BY 1")
        assert [r[0] for r in held] == ["a", "b"]
        plan = await db.fetchall(
            "EXPLAIN QUERY PLAN SELECT * FROM memberships WHERE chunk_id = 'a'"
        )
        assert any("memberships_chunk" in r[3] for r in plan)
        async with db.write() as conn_w:
            await conn_w.execute("DELETE FROM files WHERE id = 1")
        assert await db.scalar("SELECT count(*) FROM memberships") == 1  # ON DELETE CASCADE
    finally:
        await db.close()
