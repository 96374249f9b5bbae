"""The training scheduler's own notes in `meta`: its last request and last outcome."""

from __future__ import annotations

import json
from typing import Any

from state.db import Database, now

__all__ = ["read_meta_json", "write_meta_json"]


async def write_meta_json(db: Database, key: str, value: dict[str, Any]) -> None:
    """Upsert one `meta` row holding a JSON object."""
    async with db.write() as conn:
        await conn.execute(
            "INSERT INTO meta (key, value, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
            " updated_at = excluded.updated_at",
            (key, json.dumps(value, default=str), now()),
        )


async def read_meta_json(db: Database, key: str) -> dict[str, Any] | None:
    """The JSON object stored under `key`, or None."""
    raw = await db.scalar("SELECT value FROM meta WHERE key = ?", (key,))
    if raw is None:
        return None
    value = json.loads(raw)
    return value if isinstance(value, dict) else {"value": value}
