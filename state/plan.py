"""The generation plan's SQL: passages (chunks the LLM is asked about), the chunks that contain
them, and the sentence hashes that say which passages overlap (DESIGN invariant 7).

The policy (which strategy a file is asked in, how text is cut into sentences) lives in
`pipeline.generate.plan`; this module only stores and queries what it decides.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import aiosqlite

from state.db import Database, now
from state.meta import read_meta, write_meta

__all__ = [
    "PLAN_META_KEY",
    "PlanCounts",
    "containment_candidates",
    "get_plan_watermark",
    "passages_without_pieces",
    "plan_jobs",
    "prior_questions",
    "set_plan_watermark",
    "store_containment",
    "store_pieces",
]

PLAN_META_KEY = "plan.files_at"
_STRATEGY_RE = re.compile(r"^[a-z_]+$")


@dataclass
class PlanCounts:
    """What one planning pass changed."""

    planned: int = 0  # chunks the plan asks about (live)
    jobs_created: int = 0
    jobs_dropped: int = 0  # never-tried pending jobs of chunks the plan no longer asks about
    links_added: int = 0
    pairs_revived: int = 0


def _rank_sql(ask_order: Sequence[str]) -> str:
    for name in ask_order:
        if not _STRATEGY_RE.match(name):
            raise ValueError(f"bad strategy name in the ask order: {name!r}")
    whens = " ".join(f"WHEN '{name}' THEN {i}" for i, name in enumerate(ask_order))
    return f"CASE m.strategy {whens} ELSE {len(ask_order)} END"


async def plan_jobs(
    db: Database, *, ask_order: Sequence[str], prompt_version: str, model: str
) -> PlanCounts:
    """Jobs for the planned chunks of every live file, and nothing else.

    A file is asked in its first strategy of `ask_order` (strategies not listed come last);
    its chunks of that strategy are the plan. Pending jobs that never ran, of chunks the plan no
    longer asks about (a database from before the plan, or re-chunked text), are dropped: they
    have no history to keep. Every chunk with a job is registered in `passages`.
    """
    counts = PlanCounts()
    at = now()
    rank = _rank_sql(ask_order)
    async with db.write() as conn:
        await conn.execute("CREATE TEMP TABLE IF NOT EXISTS plan_set (chunk_id TEXT PRIMARY KEY)")
        await conn.execute("DELETE FROM temp.plan_set")
        await conn.execute(
            "INSERT OR IGNORE INTO temp.plan_set"
            f" WITH ranked AS (SELECT m.file_id, m.chunk_id, {rank} AS r"
            "  FROM memberships m JOIN files f ON f.id = m.file_id WHERE f.status = 'live'),"
            " ask AS (SELECT file_id, MIN(r) AS r FROM ranked GROUP BY file_id)"
            " SELECT ranked.chunk_id FROM ranked JOIN ask"
            " ON ask.file_id = ranked.file_id AND ask.r = ranked.r"
        )
        # pages held out for evaluation ([evaluation] holdout_globs) get no jobs
        await conn.execute(
            "DELETE FROM temp.plan_set WHERE chunk_id IN (SELECT chunk_id FROM eval_holdout_chunks)"
        )
        counts.planned = await _scalar(conn, "SELECT COUNT(*) FROM temp.plan_set")
        cur = await conn.execute(
            "DELETE FROM jobs WHERE prompt_version = ? AND model = ? AND state = 'pending'"
            " AND attempts = 0 AND repairs = 0"
            " AND chunk_id NOT IN (SELECT chunk_id FROM temp.plan_set)"
            " AND NOT EXISTS (SELECT 1 FROM job_events e WHERE e.job_id = jobs.id)"
            " AND NOT EXISTS (SELECT 1 FROM pairs p WHERE p.job_id = jobs.id)",
            (prompt_version, model),
        )
        counts.jobs_dropped = max(0, cur.rowcount)
        cur = await conn.execute(
            "INSERT OR IGNORE INTO jobs (chunk_id, prompt_version, model, state, created_at,"
            " updated_at) SELECT chunk_id, ?, ?, 'pending', ?, ? FROM temp.plan_set",
            (prompt_version, model, at, at),
        )
        counts.jobs_created = max(0, cur.rowcount)
        await conn.execute(
            "INSERT OR IGNORE INTO passages (chunk_id, planned_at)"
            " SELECT DISTINCT chunk_id, ? FROM jobs",
            (at,),
        )
    return counts


async def _scalar(conn: aiosqlite.Connection, sql: str, params: Iterable[object] = ()) -> int:
    async with conn.execute(sql, tuple(params)) as cur:
        row = await cur.fetchone()
    return int(row[0]) if row and row[0] is not None else 0


async def passages_without_pieces(
    db: Database, *, limit: int = 2000
) -> list[tuple[str, str, bool]]:
    """(chunk id, text, whether a doc file holds it) of passages without sentence hashes yet."""
    rows = await db.fetchall(
        "SELECT p.chunk_id, c.text, EXISTS (SELECT 1 FROM memberships m JOIN files f"
        " ON f.id = m.file_id WHERE m.chunk_id = p.chunk_id AND f.kind = 'doc')"
        " FROM passages p JOIN chunks c ON c.id = p.chunk_id"
        " WHERE p.pieces IS NULL ORDER BY p.chunk_id LIMIT ?",
        (limit,),
    )
    return [(r[0], r[1], bool(r[2])) for r in rows]


async def store_pieces(db: Database, pieces: Sequence[tuple[str, Sequence[int]]]) -> None:
    """Store each passage's sentence hashes (and how many it has) in one transaction."""
    if not pieces:
        return
    async with db.write() as conn:
        await conn.executemany(
            "INSERT OR IGNORE INTO passage_pieces (piece, passage_id) VALUES (?, ?)",
            [(h, cid) for cid, hashes in pieces for h in hashes],
        )
        await conn.executemany(
            "UPDATE passages SET pieces = ? WHERE chunk_id = ?",
            [(len(hashes), cid) for cid, hashes in pieces],
        )


async def containment_candidates(db: Database, *, since: float) -> list[tuple[str, str, str, str]]:
    """(chunk id, chunk text, passage id, passage text) not linked yet, where in a live file
    changed since `since` the chunk's line span holds the passage's span."""
    rows = await db.fetchall(
        "SELECT DISTINCT c.chunk_id, cc.text, x.chunk_id, xc.text"
        " FROM files f JOIN memberships c ON c.file_id = f.id"
        " JOIN memberships x ON x.file_id = f.id AND x.chunk_id != c.chunk_id"
        "  AND x.start_line >= c.start_line AND x.end_line <= c.end_line"
        " JOIN passages p ON p.chunk_id = x.chunk_id"
        " JOIN chunks cc ON cc.id = c.chunk_id JOIN chunks xc ON xc.id = x.chunk_id"
        " WHERE f.status = 'live' AND f.updated_at >= ?"
        " AND NOT EXISTS (SELECT 1 FROM chunk_passages cp"
        "  WHERE cp.chunk_id = c.chunk_id AND cp.passage_id = x.chunk_id)",
        (since,),
    )
    return [(r[0], r[1], r[2], r[3]) for r in rows]


_LIVE_CHUNK = (
    "EXISTS (SELECT 1 FROM memberships m JOIN files f ON f.id = m.file_id"
    " WHERE m.chunk_id = {col} AND f.status = 'live')"
)


async def store_containment(db: Database, links: Sequence[tuple[str, str]]) -> tuple[int, int]:
    """Record (chunk id, passage id) links; revive pairs of those passages that a live chunk now
    contains. Returns (links added, pairs revived)."""
    if not links:
        return 0, 0
    async with db.write() as conn:
        before = await _scalar(conn, "SELECT COUNT(*) FROM chunk_passages")
        await conn.executemany(
            "INSERT OR IGNORE INTO chunk_passages (chunk_id, passage_id) VALUES (?, ?)", links
        )
        added = await _scalar(conn, "SELECT COUNT(*) FROM chunk_passages") - before
        revived = 0
        passages = sorted({p for _, p in links})
        for i in range(0, len(passages), 500):
            part = passages[i : i + 500]
            cur = await conn.execute(
                "UPDATE pairs SET retired_at = NULL WHERE retired_at IS NOT NULL"
                f" AND chunk_id IN ({','.join('?' * len(part))})"
                " AND EXISTS (SELECT 1 FROM chunk_passages cp WHERE cp.passage_id = pairs.chunk_id"
                f" AND {_LIVE_CHUNK.format(col='cp.chunk_id')})",
                part,
            )
            revived += max(0, cur.rowcount)
    return added, revived


async def get_plan_watermark(db: Database) -> float | None:
    """Files updated at or after this time have not been planned yet (None: never planned)."""
    value = await read_meta(db, PLAN_META_KEY)
    return None if value is None else float(value)


async def set_plan_watermark(db: Database, at: float) -> None:
    """Record that every file updated before `at` has been planned."""
    await write_meta(db, PLAN_META_KEY, repr(at))


_WORD_RE = re.compile(r"[a-z0-9_]{3,}")


async def prior_questions(
    conn: aiosqlite.Connection, chunks: Sequence[tuple[str, str, str]], *, limit: int
) -> dict[str, tuple[str, ...]]:
    """{chunk id: live questions of its repo already asked about it or about a passage sharing a
    sentence with it}, at most `limit` each. `chunks`: (id, repo, text).

    The questions whose words the chunk's text holds best come first: those are the ones the
    model would otherwise ask again.
    """
    if not chunks or limit <= 0:
        return {}
    ids = sorted({cid for cid, _, _ in chunks})
    marks = ",".join("?" * len(ids))
    rows = await conn.execute_fetchall(
        "SELECT chunk_id, repo, question FROM pairs"
        f" WHERE retired_at IS NULL AND chunk_id IN ({marks})"
        " UNION"
        " SELECT a.passage_id, p.repo, p.question"
        " FROM passage_pieces a JOIN passage_pieces b ON b.piece = a.piece"
        " AND b.passage_id != a.passage_id"
        " JOIN pairs p ON p.chunk_id = b.passage_id AND p.retired_at IS NULL"
        f" WHERE a.passage_id IN ({marks})",
        (*ids, *ids),
    )
    info = {cid: (repo, set(_WORD_RE.findall(text.lower()))) for cid, repo, text in chunks}
    scored: dict[str, list[tuple[float, str]]] = {}
    for chunk_id, repo, question in rows:
        if chunk_id not in info or repo != info[chunk_id][0]:
            continue  # the near-duplicate check is per repository
        words = set(_WORD_RE.findall(question.lower()))
        held = len(words & info[chunk_id][1]) / len(words) if words else 0.0
        scored.setdefault(chunk_id, []).append((-held, question))
    return {cid: tuple(q for _, q in sorted(found)[:limit]) for cid, found in scored.items()}
