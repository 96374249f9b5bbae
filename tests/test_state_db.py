"""The database opens with the right pragmas and migrates from empty, idempotently."""

from __future__ import annotations

from pathlib import Path

import pytest

from state.db import open_db

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
