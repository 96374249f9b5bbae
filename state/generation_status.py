"""Generation's part of the status snapshot: jobs by state, dead letters, throughput, health.

Read by `doctune status`, the daemon's /status and /metrics; the generator's health is the
one thing written here (a `meta` key the generation run publishes).
"""

from __future__ import annotations

import json
from typing import Any

from state.db import Database, now
from state.meta import read_meta_row, write_meta
from state.pairs import pair_counts

__all__ = [
    "dead_letters",
    "get_generator_status",
    "job_counts",
    "job_status",
    "set_generator_status",
]

GENERATOR_META_KEY = "generator"


async def job_counts(
    db: Database, *, prompt_version: str | None = None, model: str | None = None
) -> dict[str, int]:
    """Jobs by state (all four states present), optionally for one prompt version + model."""
    where, params = "", []
    if prompt_version is not None and model is not None:
        where, params = " WHERE prompt_version = ? AND model = ?", [prompt_version, model]
    rows = await db.fetchall(f"SELECT state, COUNT(*) FROM jobs{where} GROUP BY state", params)
    counts = {"pending": 0, "leased": 0, "done": 0, "dead": 0}
    counts.update({r[0]: r[1] for r in rows})
    return counts


async def dead_letters(db: Database, *, limit: int = 20) -> list[dict[str, Any]]:
    """Dead jobs grouped by reason, most frequent first."""
    rows = await db.fetchall(
        "SELECT dead_reason, COUNT(*) FROM jobs WHERE state = 'dead'"
        " GROUP BY dead_reason ORDER BY COUNT(*) DESC LIMIT ?",
        (limit,),
    )
    return [{"reason": r[0], "count": r[1]} for r in rows]


async def set_generator_status(db: Database, status: dict[str, Any]) -> None:
    """Publish the generator's health (ok / model_missing / unreachable / breaker_open ...)."""
    await write_meta(db, GENERATOR_META_KEY, json.dumps(status))


async def get_generator_status(db: Database) -> dict[str, Any] | None:
    """The last published generator status, with its `updated_at`."""
    row = await read_meta_row(db, GENERATOR_META_KEY)
    if row is None:
        return None
    status: dict[str, Any] = json.loads(row[0])
    status["updated_at"] = row[1]
    return status


async def job_status(db: Database) -> dict[str, Any]:
    """The generation keys of `doctune status`: jobs, pairs, dead_letters, throughput, tokens,
    generator."""
    at = now()
    counts = await pair_counts(db)
    recent = await db.fetchone(
        "SELECT COUNT(*) FILTER (WHERE created_at >= ?), COUNT(*) FILTER (WHERE created_at >= ?)"
        " FROM pairs",
        (at - 60, at - 600),
    )
    assert recent is not None
    events = await db.fetchall(
        "SELECT kind, reason, COUNT(*) FROM job_events WHERE at >= ? GROUP BY kind, reason"
        " ORDER BY COUNT(*) DESC LIMIT 20",
        (at - 3600,),
    )
    return {
        "jobs": await job_counts(db),
        "pairs": {
            "live": counts["live"],
            "retired": counts["retired"],
            "by_repo": counts["by_repo"],
        },
        "dead_letters": await dead_letters(db),
        "throughput": {
            "pairs_per_s_1m": round(recent[0] / 60, 3),
            "pairs_per_s_10m": round(recent[1] / 600, 3),
            "events_1h": [{"kind": e[0], "reason": e[1], "count": e[2]} for e in events],
        },
        "tokens": {"prompt": counts["prompt_tokens"], "completion": counts["completion_tokens"]},
        "generator": await get_generator_status(db),
    }
