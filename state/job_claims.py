"""Claiming generation jobs: a short `BEGIN IMMEDIATE` transaction leases due jobs, each with
its chunk text, one live provenance, the sections inside it and the questions already asked
about overlapping text; the LLM is called outside any transaction (see `state.jobs`).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import aiosqlite

from state.db import Database, now
from state.job_outcomes import record_job_events
from state.pairs import LIVE_PROVENANCE_SQL
from state.plan import prior_questions

__all__ = ["PRIOR_QUESTIONS", "ClaimedJob", "claim_jobs", "new_claim_token", "next_due_at"]

PRIOR_QUESTIONS = 10  # most questions about overlapping text a claimed job carries

_LIVE_EXISTS = (
    "EXISTS (SELECT 1 FROM memberships m JOIN files f ON f.id = m.file_id"
    " WHERE m.chunk_id = j.chunk_id AND f.status = 'live')"
)


@dataclass(frozen=True)
class ClaimedJob:
    """A leased job with everything the prompt needs (chunk text + one live provenance)."""

    id: int
    chunk_id: str
    claim_token: str
    attempts: int
    repairs: int
    last_error: str | None
    text: str
    repo: str
    path: str
    git_commit: str | None
    language: str | None
    kind: str
    strategy: str
    start_line: int | None
    end_line: int | None
    heading: str | None
    # live questions already asked about this text or text overlapping it (invariant 7)
    prior_questions: tuple[str, ...] = ()
    # heading paths of the sections that start inside the text, in order (docs only)
    sections: tuple[tuple[str, ...], ...] = ()


def new_claim_token(owner: str) -> str:
    """`<owner>#<random>`: the owner part lets a restarted runner spot leases of dead owners."""
    return f"{owner}#{uuid.uuid4().hex}"


_CLAIM_SQL = f"""
WITH cand AS (
    SELECT j.id, j.chunk_id, j.state, j.attempts, j.repairs, j.last_error, j.next_attempt_at
    FROM jobs j
    WHERE j.prompt_version = ? AND j.model = ?
      AND ((j.state = 'pending' AND j.next_attempt_at <= ?)
           OR (j.state = 'leased' AND j.lease_expires_at < ?))
      AND {_LIVE_EXISTS}
    ORDER BY j.next_attempt_at, j.id
    LIMIT ?
)
SELECT cand.id, cand.chunk_id, cand.state, cand.attempts, cand.repairs, cand.last_error,
       c.text, p.repo, p.path, p.git_commit, p.language, p.kind, p.strategy, p.start_line,
       p.end_line, p.heading, p.sections
FROM cand
JOIN chunks c ON c.id = cand.chunk_id
JOIN ({LIVE_PROVENANCE_SQL.format(chunks="SELECT chunk_id FROM cand")}) p
  ON p.chunk_id = cand.chunk_id AND p.rn = 1
ORDER BY cand.next_attempt_at, cand.id
"""


async def claim_jobs(
    db: Database,
    *,
    prompt_version: str,
    model: str,
    owner: str,
    limit: int,
    lease_s: float,
    prior_limit: int = PRIOR_QUESTIONS,
) -> list[ClaimedJob]:
    """Lease up to `limit` due jobs of live chunks (pending, or leased with an expired lease).

    One SELECT picks the jobs with their chunk text and one live provenance each; each job
    also carries up to `prior_limit` questions already asked about overlapping text.
    """
    if limit <= 0:
        return []
    at = now()
    async with db.write() as conn:
        # execute_fetchall: one hop to SQLite's thread instead of three
        rows = list(await conn.execute_fetchall(_CLAIM_SQL, (prompt_version, model, at, at, limit)))
        if not rows:
            return []
        prior = await prior_questions(
            conn, [(row["chunk_id"], row["repo"], row["text"]) for row in rows], limit=prior_limit
        )
        claimed = [
            _claimed(row, new_claim_token(owner), prior.get(row["chunk_id"], ())) for row in rows
        ]
        await conn.executemany(
            "UPDATE jobs SET state = 'leased', claim_token = ?, lease_expires_at = ?,"
            " updated_at = ? WHERE id = ?",
            [(job.claim_token, at + lease_s, at, job.id) for job in claimed],
        )
        taken_over = [row["id"] for row in rows if row["state"] == "leased"]
        await record_job_events(
            conn, [(i, "lease_expired", "lease_expired", None) for i in taken_over], at
        )
    return claimed


def _claimed(row: aiosqlite.Row, token: str, prior: tuple[str, ...]) -> ClaimedJob:
    return ClaimedJob(
        id=row["id"],
        chunk_id=row["chunk_id"],
        claim_token=token,
        attempts=row["attempts"],
        repairs=row["repairs"],
        last_error=row["last_error"],
        text=row["text"],
        repo=row["repo"],
        path=row["path"],
        git_commit=row["git_commit"],
        language=row["language"],
        kind=row["kind"],
        strategy=row["strategy"],
        start_line=row["start_line"],
        end_line=row["end_line"],
        heading=row["heading"],
        prior_questions=prior,
        sections=_sections(row["sections"]),
    )


def _sections(stored: str | None) -> tuple[tuple[str, ...], ...]:
    """`memberships.sections` (ingest's JSON list of heading paths) as tuples; () for NULL."""
    return tuple(tuple(path) for path in json.loads(stored)) if stored else ()


async def next_due_at(db: Database, *, prompt_version: str, model: str) -> float | None:
    """Earliest time a job of live chunks becomes claimable; None when nothing is left to do."""
    value = await db.scalar(
        "SELECT MIN(CASE WHEN j.state = 'pending' THEN j.next_attempt_at"
        " ELSE j.lease_expires_at END) FROM jobs j"
        " WHERE j.prompt_version = ? AND j.model = ? AND j.state IN ('pending', 'leased')"
        f" AND {_LIVE_EXISTS}",
        (prompt_version, model),
    )
    return None if value is None else float(value)
