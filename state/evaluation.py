"""Evaluation state: pages held out for evaluation, and BM25 retrieval over chunk text (FTS5)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from state.db import Database, now

__all__ = [
    "RetrievedChunk",
    "holdout_chunk_count",
    "live_doc_files",
    "search_chunks",
    "set_holdout_files",
]

_WORD = re.compile(r"\w+", re.UNICODE)
HOLDOUT_REASON = "eval_holdout"


@dataclass(frozen=True)
class RetrievedChunk:
    """One BM25 hit: a live chunk, where it lives, and its score (lower = better, FTS5)."""

    chunk_id: str
    text: str
    repo: str
    path: str
    score: float


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


def fts_query(text: str) -> str:
    """A safe FTS5 query: every word of `text` quoted, OR-ed (BM25 does the weighting)."""
    words = sorted({w.lower() for w in _WORD.findall(text) if len(w) > 1})
    return " OR ".join(f'"{w}"' for w in words)


async def search_chunks(db: Database, text: str, *, k: int) -> list[RetrievedChunk]:
    """The top-k live chunks for `text` by BM25 (empty when no word matches)."""
    query = fts_query(text)
    if not query or k < 1:
        return []
    rows = await db.fetchall(
        "SELECT c.id, c.text, bm25(chunks_fts) AS score FROM chunks_fts"
        " JOIN chunks c ON c.rowid = chunks_fts.rowid"
        " WHERE chunks_fts MATCH ? AND c.id IN (SELECT chunk_id FROM live_chunks)"
        " ORDER BY score LIMIT ?",
        (query, k),
    )
    if not rows:
        return []
    where = await db.fetchall(
        "SELECT m.chunk_id, f.repo, f.path FROM memberships m JOIN files f ON f.id = m.file_id"
        f" WHERE f.status = 'live' AND m.chunk_id IN ({','.join('?' * len(rows))})"
        " ORDER BY f.repo, f.path",
        [r[0] for r in rows],
    )
    first: dict[str, tuple[str, str]] = {}
    for chunk_id, repo, path in where:
        first.setdefault(chunk_id, (repo, path))
    return [RetrievedChunk(r[0], r[1], *first.get(r[0], ("", "")), score=float(r[2])) for r in rows]
