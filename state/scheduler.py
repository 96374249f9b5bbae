"""Facts the training scheduler needs: new live pairs since the last run, and its own notes."""

from __future__ import annotations

import json
from typing import Any

from state.db import Database, now

__all__ = [
    "COMPLETED_RUN_STATES",
    "last_completed_training_at",
    "last_training_requested_at",
    "live_pairs_since",
    "read_meta_json",
    "write_meta_json",
]

# A rejected run trained fine but failed the gate; its pairs were used, so they are not "new".
COMPLETED_RUN_STATES = ("succeeded", "registered", "rejected")


async def last_completed_training_at(db: Database) -> float | None:
    """When the last training run that finished training (succeeded/registered/rejected) ended."""
    marks = ",".join("?" for _ in COMPLETED_RUN_STATES)
    value = await db.scalar(
        f"SELECT MAX(COALESCE(finished_at, started_at, requested_at)) FROM training_runs"
        f" WHERE state IN ({marks})",
        COMPLETED_RUN_STATES,
    )
    return None if value is None else float(value)


async def last_training_requested_at(db: Database) -> float | None:
    """When any training run (whatever its outcome) was last requested."""
    value = await db.scalar("SELECT MAX(requested_at) FROM training_runs")
    return None if value is None else float(value)


async def live_pairs_since(db: Database, since: float | None) -> int:
    """Live (not retired) pairs created after `since` (all live pairs when None)."""
    if since is None:
        value = await db.scalar("SELECT COUNT(*) FROM pairs WHERE retired_at IS NULL")
    else:
        value = await db.scalar(
            "SELECT COUNT(*) FROM pairs WHERE retired_at IS NULL AND created_at > ?", (since,)
        )
    return int(value or 0)


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
