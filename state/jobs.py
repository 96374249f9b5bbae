"""The generation job queue: one job per (chunk, prompt version, model); leases, not locks.

Claims happen in a short `BEGIN IMMEDIATE` transaction that hands out a claim token and a
lease (`state.job_claims`); the LLM is called outside any transaction; the outcome is written
by `state.job_outcomes`, which first checks the token, so a job whose lease was taken over
cannot store twice. Counts for `doctune status` live in `state.generation_status`.
"""

from __future__ import annotations

from collections.abc import Callable

from state.db import Database, now
from state.job_outcomes import record_job_events

__all__ = [
    "ensure_jobs",
    "release_orphaned_leases",
    "requeue_dead",
    "trim_pending_jobs",
]


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
