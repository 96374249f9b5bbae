"""The generation job queue: one job per (chunk, prompt version, model); leases, not locks.

Claims happen in a short `BEGIN IMMEDIATE` transaction that hands out a claim token and a
lease; the LLM is called outside any transaction; the outcome is written by
`state.job_outcomes`, which first checks the token, so a job whose lease was taken over
cannot store twice. Counts for `doctune status` live in `state.generation_status`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import aiosqlite

from state.db import Database, now
from state.job_outcomes import record_job_events
from state.pairs import LIVE_PROVENANCE_SQL
from state.plan import prior_questions

__all__ = [
    "ClaimedJob",
    "claim_jobs",
    "ensure_jobs",
    "next_due_at",
    "release_orphaned_leases",
    "requeue_dead",
    "trim_pending_jobs",
]

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


async def ensure_jobs(db: Database, *, prompt_version: str, model: str) -> int:
    """Create a pending job for every live chunk lacking one for this prompt version + model
    (except chunks of pages held out for evaluation).

    Without the generation plan (`state.plan.plan_jobs`, what doctune runs): text that
    several strategies share gets several jobs. Kept for `bench/bench_plan.py --plan off`.
    """
    at = now()
    async with db.write() as conn:
        cur = await conn.execute(
            "INSERT OR IGNORE INTO jobs (chunk_id, prompt_version, model, state, created_at,"
            " updated_at) SELECT chunk_id, ?, ?, 'pending', ?, ? FROM live_chunks"
            # pages held out for evaluation ([evaluation] holdout_globs) get no jobs
            " WHERE chunk_id NOT IN (SELECT chunk_id FROM eval_holdout_chunks)",
            (prompt_version, model, at, at),
        )
        return cur.rowcount


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
    """The `memberships.sections` JSON as heading paths; () when none (or unreadable)."""
    if not stored:
        return ()
    try:
        paths = json.loads(stored)
    except ValueError:
        return ()
    if not isinstance(paths, list):
        return ()
    return tuple(
        tuple(p) for p in paths if isinstance(p, list) and p and all(isinstance(t, str) for t in p)
    )


async def release_orphaned_leases(db: Database, is_dead_owner: Callable[[str], bool]) -> int:
    """Put back leases whose owner (the token's part before '#') is gone, or that expired.

    A `doctune run --once` killed with SIGKILL leaves its leases behind; a live run calls this
    periodically and frees them within seconds instead of waiting `lease_s`. No attempt is
    spent. The event says which: reason `owner_gone` (detail: the owner) or `lease_expired`.
    The owners are judged outside any transaction (a plain read); the write transaction is
    taken only when something is to be freed, and frees a job only if its token is unchanged.
    """
    at = now()
    leased = await db.fetchall(
        "SELECT id, claim_token, lease_expires_at FROM jobs WHERE state = 'leased'"
    )
    found: list[tuple[int, str, str, str]] = []  # (job id, token, reason, owner)
    verdicts: dict[str, bool] = {}
    for row in leased:
        token = row["claim_token"] or ""
        owner = token.split("#", 1)[0]
        if owner not in verdicts:
            verdicts[owner] = is_dead_owner(owner)
        if verdicts[owner]:
            found.append((row["id"], token, "owner_gone", owner))
        elif row["lease_expires_at"] is not None and row["lease_expires_at"] < at:
            found.append((row["id"], token, "lease_expired", owner))
    if not found:
        return 0
    async with db.write() as conn:
        ids = ",".join(str(int(job_id)) for job_id, *_ in found)
        rows = await conn.execute_fetchall(
            f"SELECT id, claim_token FROM jobs WHERE state = 'leased' AND id IN ({ids})"
        )
        tokens = {row[0]: row[1] for row in rows}
        freed = [f for f in found if tokens.get(f[0]) == f[1]]
        if not freed:
            return 0
        await conn.executemany(
            "UPDATE jobs SET state = 'pending', claim_token = NULL, lease_expires_at = NULL,"
            " next_attempt_at = ?, updated_at = ? WHERE id = ?",
            [(at, at, job_id) for job_id, *_ in freed],
        )
        events = [(job_id, "lease_expired", reason, owner) for job_id, _, reason, owner in freed]
        await record_job_events(conn, events, at)
    return len(freed)


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


async def requeue_dead(db: Database, *, reason: str | None = None, repo: str | None = None) -> int:
    """Dead jobs back to pending with fresh attempts (`doctune requeue`); returns how many.

    `reason` matches a dead_reason exactly, or one part of it: "http_500" matches
    "max_attempts:http_500", "rejected" matches "rejected:not_grounded". `repo` keeps jobs
    whose chunk is in one of that repository's files. Each requeue is a job event.
    """
    where, params = ["state = 'dead'"], []
    if reason:
        where.append("(dead_reason = ? OR dead_reason LIKE ? OR dead_reason LIKE ?)")
        params += [reason, f"{reason}:%", f"%:{reason}"]
    if repo:
        where.append(
            "chunk_id IN (SELECT m.chunk_id FROM memberships m JOIN files f ON f.id = m.file_id"
            " WHERE f.repo = ?)"
        )
        params.append(repo)
    at = now()
    async with db.write() as conn:
        cur = await conn.execute(
            "SELECT id, dead_reason FROM jobs WHERE " + " AND ".join(where), params
        )
        rows = list(await cur.fetchall())
        await conn.executemany(
            "UPDATE jobs SET state = 'pending', attempts = 0, repairs = 0, next_attempt_at = 0,"
            " dead_reason = NULL, last_error = NULL, updated_at = ? WHERE id = ?",
            [(at, row[0]) for row in rows],
        )
        await record_job_events(conn, [(row[0], "requeued", "requeue", row[1]) for row in rows], at)
    return len(rows)


async def trim_pending_jobs(db: Database, *, keep: int) -> int:
    """Delete the pending jobs after the first `keep` (by id), for a drain over a sample of
    the first chunks only (`bench/bench_embedded.py --max-jobs`); how many were deleted."""
    async with db.write() as conn:
        cur = await conn.execute(
            "DELETE FROM jobs WHERE state = 'pending' AND attempts = 0 AND id NOT IN"
            " (SELECT id FROM jobs ORDER BY id LIMIT ?)",
            (keep,),
        )
        return cur.rowcount
