"""Pairs made outside the generator (an extractive baseline, fixtures), stored like generated ones.

Each pair gets the rows its foreign keys need: its repo, a chunk holding its source text, and
one `done` job per chunk (the pairs of a chunk are that job's `idx` 0, 1, ...). Such chunks
belong to no file, so the pairs stay live until retired explicitly; the training split (by
chunk id) treats them like any other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from state.db import Database, now

__all__ = ["ImportedPair", "import_pairs"]


@dataclass(frozen=True)
class ImportedPair:
    """One question/answer about `chunk_text` (default: the answer) at `path` in the repo."""

    chunk_id: str
    question: str
    answer: str
    path: str
    chunk_text: str | None = None
    strategy: str = "heading"


async def import_pairs(
    db: Database,
    pairs: Sequence[ImportedPair],
    *,
    repo: str,
    root: str,
    model: str,
    prompt_version: str,
    retired: bool = False,
) -> list[int]:
    """Store `pairs` in one transaction (live, or already retired); their ids, in order."""
    at = now()
    ids: list[int] = []
    async with db.write() as conn:
        await conn.execute("INSERT OR IGNORE INTO repos (name, root) VALUES (?, ?)", (repo, root))
        for p in pairs:
            text = p.answer if p.chunk_text is None else p.chunk_text
            await conn.execute(
                "INSERT OR IGNORE INTO chunks (id, text, n_chars, created_at) VALUES (?, ?, ?, ?)",
                (p.chunk_id, text, len(text), at),
            )
            await conn.execute(
                "INSERT OR IGNORE INTO jobs (chunk_id, prompt_version, model, state, created_at,"
                " updated_at) VALUES (?, ?, ?, 'done', ?, ?)",
                (p.chunk_id, prompt_version, model, at, at),
            )
            cur = await conn.execute(
                "SELECT j.id, (SELECT COALESCE(MAX(idx) + 1, 0) FROM pairs WHERE job_id = j.id)"
                " FROM jobs j WHERE j.chunk_id = ? AND j.prompt_version = ? AND j.model = ?",
                (p.chunk_id, prompt_version, model),
            )
            job_id, idx = await cur.fetchone() or (0, 0)
            cur = await conn.execute(
                "INSERT INTO pairs (job_id, idx, chunk_id, repo, path, strategy, chunk_preview,"
                " question, answer, model, prompt_version, created_at, retired_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, idx, p.chunk_id, repo, p.path, p.strategy, p.answer[:80], p.question,
                 p.answer, model, prompt_version, at, at if retired else None),
            )  # fmt: skip
            ids.append(int(cur.lastrowid or 0))
    return ids
