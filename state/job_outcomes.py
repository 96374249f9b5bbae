"""Job outcomes: what happened to each claimed job, written in one token-checked transaction.

The LLM is called outside any transaction; its outcome (pairs + done, a retry, a repair, a
dead letter, or a release that costs no attempt) is written here in one transaction that
first checks the claim token, so a job whose lease was taken over cannot store twice. Every
skip, retry and failure is journalled in `job_events` with its reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import aiosqlite

from state.db import Database, now
from state.pairs import NewPair, insert_pairs

__all__ = ["JobOutcome", "OutcomeKind", "apply_outcomes", "record_job_events"]

OutcomeKind = Literal["done", "retry", "repair", "dead", "release"]


@dataclass(frozen=True)
class JobOutcome:
    """What happened to one claimed job.

    kind: ``done`` (store `pairs`, mark done) · ``retry`` (an attempt is spent; back to pending
    at `next_attempt_at`) · ``repair`` (invalid output; a repair is spent) · ``dead`` (final,
    with `reason`) · ``release`` (outage or stop: back to pending, nothing spent).
    """

    job_id: int
    claim_token: str
    kind: OutcomeKind
    event_kind: str = ""  # job_events.kind: rejected | error | outage | truncated | dead
    reason: str = ""
    detail: str = ""
    next_attempt_at: float = 0.0
    pairs: Sequence[NewPair] = field(default_factory=tuple)


async def apply_outcomes(db: Database, outcomes: Sequence[JobOutcome]) -> list[bool]:
    """Write a batch of outcomes in ONE transaction; False where the claim token was lost.

    The tokens are checked first inside the IMMEDIATE transaction, so no other writer can
    change them between the check and the writes.
    """
    if not outcomes:
        return []
    at = now()
    async with db.write() as conn:
        ids = ",".join(str(int(o.job_id)) for o in outcomes)
        rows = await conn.execute_fetchall(
            f"SELECT id, claim_token FROM jobs WHERE state = 'leased' AND id IN ({ids})"
        )
        tokens = {row[0]: row[1] for row in rows}
        valid = [o for o in outcomes if tokens.get(o.job_id) == o.claim_token]
        await _write_outcomes(conn, valid, at)
    valid_ids = {id(o) for o in valid}
    return [id(o) in valid_ids for o in outcomes]


async def _write_outcomes(
    conn: aiosqlite.Connection, outcomes: Sequence[JobOutcome], at: float
) -> None:
    done = [o for o in outcomes if o.kind == "done"]
    dead = [o for o in outcomes if o.kind == "dead"]
    back = [o for o in outcomes if o.kind in ("retry", "repair", "release")]
    # each statement is a hop to SQLite's thread: skip the empty ones
    if done:
        await conn.executemany(
            "UPDATE jobs SET state = 'done', claim_token = NULL, lease_expires_at = NULL,"
            " updated_at = ? WHERE id = ?",
            [(at, o.job_id) for o in done],
        )
    if dead:
        await conn.executemany(
            "UPDATE jobs SET state = 'dead', claim_token = NULL, lease_expires_at = NULL,"
            " dead_reason = ?, last_error = ?, updated_at = ? WHERE id = ?",
            [(o.reason, _error_text(o), at, o.job_id) for o in dead],
        )
    if back:
        await conn.executemany(
            "UPDATE jobs SET state = 'pending', claim_token = NULL, lease_expires_at = NULL,"
            " attempts = attempts + ?, repairs = repairs + ?, next_attempt_at = ?,"
            " last_error = ?, updated_at = ? WHERE id = ?",
            [
                (int(o.kind == "retry"), int(o.kind == "repair"), o.next_attempt_at,
                 _error_text(o), at, o.job_id)
                for o in back
            ],
        )  # fmt: skip
    await insert_pairs(conn, [(o.job_id, p) for o in done for p in o.pairs], at)
    # the event names the immediate cause ("near_duplicate"); dead_reason keeps the prefix
    events = [(o.job_id, o.event_kind, o.reason.split(":")[-1], o.detail or None)
              for o in outcomes if o.event_kind and o.kind != "done"]  # fmt: skip
    events += [(o.job_id, "dead", o.reason, o.detail or None) for o in dead
               if o.event_kind != "dead"]  # fmt: skip
    await record_job_events(conn, events, at)


def _error_text(o: JobOutcome) -> str:
    return f"{o.reason}: {o.detail}"[:2000] if o.detail else o.reason


async def record_job_events(
    conn: aiosqlite.Connection,
    events: Sequence[tuple[int, str, str, str | None]],
    at: float,
) -> None:
    """Insert (job_id, kind, reason, detail) rows into job_events."""
    if not events:
        return
    await conn.executemany(
        "INSERT INTO job_events (job_id, at, kind, reason, detail) VALUES (?, ?, ?, ?, ?)",
        [(j, at, k, r, None if d is None else d[:2000]) for j, k, r, d in events],
    )
