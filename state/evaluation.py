"""Evaluation state: pages held out for evaluation (no jobs, no training pairs)."""

from __future__ import annotations

from collections.abc import Sequence

from state.db import Database, now

__all__ = ["holdout_chunk_count", "live_doc_files", "set_holdout_files"]

HOLDOUT_REASON = "eval_holdout"


async def live_doc_files(db: Database) -> list[tuple[str, str]]:
    """(repo, path) of every live documentation file."""
    rows = await db.fetchall(
        "SELECT repo, path FROM files WHERE status = 'live' AND kind = 'doc' ORDER BY repo, path"
    )
    return [(r[0], r[1]) for r in rows]


async def set_holdout_files(db: Database, files: Sequence[tuple[str, str]]) -> int:
    """Replace the held-out page list; pending jobs of their chunks die with reason
    `eval_holdout` (recorded in job_events), and jobs stopped that way whose page is no
    longer held out are pending again. Returns how many jobs were stopped."""
    at = now()
    async with db.write() as conn:
        await conn.execute("DELETE FROM eval_holdout_files")
        await conn.executemany(
            "INSERT OR IGNORE INTO eval_holdout_files (repo, path) VALUES (?, ?)", list(files)
        )
        cur = await conn.execute(
            "SELECT id FROM jobs WHERE state = 'pending'"
            " AND chunk_id IN (SELECT chunk_id FROM eval_holdout_chunks)"
        )
        ids = [r[0] for r in await cur.fetchall()]
        if ids:
            await conn.executemany(
                "UPDATE jobs SET state = 'dead', dead_reason = ?, updated_at = ? WHERE id = ?",
                [(HOLDOUT_REASON, at, i) for i in ids],
            )
            await conn.executemany(
                "INSERT INTO job_events (job_id, at, kind, reason, detail)"
                " VALUES (?, ?, 'dead', ?, ?)",
                [
                    (i, at, HOLDOUT_REASON, "chunk is in a page matched by holdout_globs")
                    for i in ids
                ],
            )
        # Pages no longer held out: their stopped jobs go back to the queue.
        await conn.execute(
            "UPDATE jobs SET state = 'pending', dead_reason = NULL, next_attempt_at = 0,"
            " updated_at = ? WHERE state = 'dead' AND dead_reason = ?"
            " AND chunk_id NOT IN (SELECT chunk_id FROM eval_holdout_chunks)",
            (at, HOLDOUT_REASON),
        )
    return len(ids)


async def holdout_chunk_count(db: Database) -> int:
    """How many live chunks sit in held-out pages."""
    return int(await db.scalar("SELECT count(*) FROM eval_holdout_chunks"))
