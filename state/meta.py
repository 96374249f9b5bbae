"""The `meta` table: a small key-value store (one row per key, with when it was last written).

Owners of keys: the generator's health (`generator`), the plan watermark, chunker
fingerprints (`ingest.chunker.<repo>`), the training scheduler's notes, `serve`. Every
upsert of `meta` goes through `write_meta`.
"""

from __future__ import annotations

import json
from typing import Any

from state.db import Database, now

__all__ = ["read_meta", "read_meta_json", "read_meta_row", "write_meta", "write_meta_json"]


async def write_meta(db: Database, key: str, value: str) -> None:
    """Insert or replace the value stored under `key`, stamping `updated_at`."""
    async with db.write() as conn:
        await conn.execute(
            "INSERT INTO meta (key, value, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
            " updated_at = excluded.updated_at",
            (key, value, now()),
        )


async def read_meta(db: Database, key: str) -> str | None:
    """The value stored under `key`, or None."""
    value = await db.scalar("SELECT value FROM meta WHERE key = ?", (key,))
    return None if value is None else str(value)


async def read_meta_row(db: Database, key: str) -> tuple[str, float] | None:
    """(value, updated_at) stored under `key`, or None."""
    row = await db.fetchone("SELECT value, updated_at FROM meta WHERE key = ?", (key,))
    return None if row is None else (str(row[0]), float(row[1]))


async def write_meta_json(db: Database, key: str, value: dict[str, Any]) -> None:
    """Store a JSON object under `key`."""
    await write_meta(db, key, json.dumps(value, default=str))


async def read_meta_json(db: Database, key: str) -> dict[str, Any] | None:
    """The JSON object stored under `key`, or None."""
    raw = await read_meta(db, key)
    if raw is None:
        return None
    value = json.loads(raw)
    return value if isinstance(value, dict) else {"value": value}
