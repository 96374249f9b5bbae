"""Question/answer pairs: insertion with provenance, listings, export rows, change signatures."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite

from state.db import Database

__all__ = [
    "LIVE_PROVENANCE_SQL",
    "NewPair",
    "insert_pairs",
    "list_pairs",
    "live_provenance",
    "pair_counts",
    "pair_repos",
    "pair_sources",
    "repo_questions",
    "repo_signatures",
    "retire_unserved",
    "revive_served",
]

PAIR_COLUMNS = (
    "id, job_id, idx, chunk_id, repo, path, git_commit, strategy, start_line, end_line, "
    "chunk_preview, question, answer, model, prompt_version, prompt_tokens, completion_tokens, "
    "latency_ms, created_at, retired_at"
)

# Live memberships of some chunks, ranked: rn = 1 is the one a pair records (deterministic,
# files in name order). The commit is the file's (commits mode) or the repo's HEAD when it
# was last ingested (worktree mode). `{chunks}` is a subquery or a list of chunk ids.
LIVE_PROVENANCE_SQL = """
SELECT m.chunk_id, f.repo, f.path, COALESCE(f.git_commit, r.ingested_commit) AS git_commit,
       f.language, f.kind, m.strategy, m.start_line, m.end_line, m.heading, m.sections,
       ROW_NUMBER() OVER (PARTITION BY m.chunk_id
                          ORDER BY f.repo, f.path, m.strategy, m.ordinal) AS rn
FROM memberships m JOIN files f ON f.id = m.file_id LEFT JOIN repos r ON r.name = f.repo
WHERE f.status = 'live' AND m.chunk_id IN ({chunks})
"""


@dataclass(frozen=True)
class NewPair:
    """A validated pair ready to store; provenance is re-checked when it is written."""

    idx: int
    chunk_id: str
    repo: str
    path: str
    git_commit: str | None
    strategy: str
    start_line: int | None
    end_line: int | None
    chunk_preview: str
    question: str
    answer: str
    model: str
    prompt_version: str
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_ms: float | None


async def live_provenance(
    conn: aiosqlite.Connection, chunk_ids: Sequence[str]
) -> dict[str, aiosqlite.Row]:
    """{chunk id: its first live (repo, path, strategy, lines, heading, commit)}."""
    if not chunk_ids:
        return {}
    unique = sorted(set(chunk_ids))
    sql = LIVE_PROVENANCE_SQL.format(chunks=",".join("?" * len(unique)))
    rows = await conn.execute_fetchall(f"SELECT * FROM ({sql}) WHERE rn = 1", unique)
    return {row["chunk_id"]: row for row in rows}


async def insert_pairs(
    conn: aiosqlite.Connection, pairs: Sequence[tuple[int, NewPair]], at: float
) -> None:
    """Insert (job_id, pair) rows inside the caller's write transaction.

    Provenance is taken from the chunk's current live membership; when the chunk stopped
    being live while the LLM was answering, the pair is stored already retired (invariant 2).
    """
    if not pairs:
        return
    current = await live_provenance(conn, [p.chunk_id for _, p in pairs])
    served = await _served_by_live_chunk(conn, {p.chunk_id for _, p in pairs} - set(current))
    rows = []
    for job_id, p in pairs:
        prov = current.get(p.chunk_id)
        if prov is not None:
            repo, path, commit = prov["repo"], prov["path"], prov["git_commit"]
            strategy, start, end = prov["strategy"], prov["start_line"], prov["end_line"]
            retired_at = None
        else:  # a live chunk that contains the passage keeps the pair live (invariant 7)
            repo, path, commit = p.repo, p.path, p.git_commit
            strategy, start, end = p.strategy, p.start_line, p.end_line
            retired_at = None if p.chunk_id in served else at
        rows.append(
            (job_id, p.idx, p.chunk_id, repo, path, commit, strategy, start, end,
             p.chunk_preview, p.question, p.answer, p.model, p.prompt_version,
             p.prompt_tokens, p.completion_tokens, p.latency_ms, at, retired_at)
        )  # fmt: skip
    await conn.executemany(
        "INSERT INTO pairs (job_id, idx, chunk_id, repo, path, git_commit, strategy, start_line,"
        " end_line, chunk_preview, question, answer, model, prompt_version, prompt_tokens,"
        " completion_tokens, latency_ms, created_at, retired_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )


_LIVE_CHUNK = (
    "EXISTS (SELECT 1 FROM memberships m JOIN files f ON f.id = m.file_id"
    " WHERE m.chunk_id = {col} AND f.status = 'live')"
)
# A pair is live while its passage (pairs.chunk_id) or a chunk containing it is live.
_SERVED = (
    f"({_LIVE_CHUNK.format(col='pairs.chunk_id')} OR EXISTS (SELECT 1 FROM chunk_passages cp"
    f" WHERE cp.passage_id = pairs.chunk_id AND {_LIVE_CHUNK.format(col='cp.chunk_id')}))"
)


async def _served_by_live_chunk(conn: aiosqlite.Connection, passage_ids: set[str]) -> set[str]:
    if not passage_ids:
        return set()
    ids = sorted(passage_ids)
    rows = await conn.execute_fetchall(
        "SELECT DISTINCT cp.passage_id FROM chunk_passages cp"
        f" WHERE cp.passage_id IN ({','.join('?' * len(ids))})"
        f" AND {_LIVE_CHUNK.format(col='cp.chunk_id')}",
        ids,
    )
    return {r[0] for r in rows}


async def retire_unserved(conn: aiosqlite.Connection, at: float, old_chunks: str) -> int:
    """Retire live pairs touched by the chunks in table `old_chunks` (its passage, or a chunk
    containing it) that no live chunk serves any more; inside the caller's transaction."""
    cur = await conn.execute(
        "UPDATE pairs SET retired_at = ? WHERE retired_at IS NULL AND chunk_id IN"
        f" (SELECT chunk_id FROM {old_chunks} UNION SELECT cp.passage_id FROM chunk_passages cp"
        f" JOIN {old_chunks} o ON o.chunk_id = cp.chunk_id) AND NOT {_SERVED}",
        (at,),
    )
    return max(0, cur.rowcount)


async def revive_served(conn: aiosqlite.Connection, file_ids: Sequence[int]) -> int:
    """Un-retire pairs whose passage, or a chunk containing it, is a member of these (live)
    files; inside the caller's transaction."""
    revived = 0
    for i in range(0, len(file_ids), 500):
        part = list(file_ids[i : i + 500])
        marks = ",".join("?" * len(part))
        cur = await conn.execute(
            "UPDATE pairs SET retired_at = NULL WHERE retired_at IS NOT NULL AND chunk_id IN"
            f" (SELECT chunk_id FROM memberships WHERE file_id IN ({marks})"
            " UNION SELECT cp.passage_id FROM chunk_passages cp JOIN memberships m"
            f" ON m.chunk_id = cp.chunk_id WHERE m.file_id IN ({marks}))",
            (*part, *part),
        )
        revived += max(0, cur.rowcount)
    return revived


async def pair_sources(db: Database, pair_ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
    """{pair id: every live chunk it serves (its passage and the chunks containing it), as
    (chunk_id, file, strategy, start_line, end_line) dicts in file order}."""
    found: dict[int, list[dict[str, Any]]] = {}
    for i in range(0, len(pair_ids), 500):
        part = list(pair_ids[i : i + 500])
        rows = await db.fetchall(
            "WITH served AS (SELECT id AS pair_id, chunk_id FROM pairs"
            f" WHERE id IN ({','.join('?' * len(part))})"
            " UNION SELECT s.id, cp.chunk_id FROM pairs s JOIN chunk_passages cp"
            f" ON cp.passage_id = s.chunk_id WHERE s.id IN ({','.join('?' * len(part))}))"
            " SELECT s.pair_id, m.chunk_id, f.path, m.strategy, m.start_line, m.end_line"
            " FROM served s JOIN memberships m ON m.chunk_id = s.chunk_id"
            " JOIN files f ON f.id = m.file_id WHERE f.status = 'live'"
            " ORDER BY s.pair_id, f.path, m.start_line, m.strategy",
            (*part, *part),
        )
        for r in rows:
            found.setdefault(r[0], []).append(
                {"chunk_id": r[1], "file": r[2], "strategy": r[3], "start_line": r[4],
                 "end_line": r[5]}
            )  # fmt: skip
    return found


async def list_pairs(
    db: Database,
    *,
    repo: str | None = None,
    include_retired: bool = False,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Pairs in id order, live only unless `include_retired`, as plain dicts."""
    where, params = _filter(repo, include_retired)
    sql = f"SELECT {PAIR_COLUMNS} FROM pairs{where} ORDER BY id"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return [dict(row) for row in await db.fetchall(sql, params)]


async def repo_questions(db: Database) -> list[tuple[str, str]]:
    """(repo, question) of every live pair, for the near-duplicate index."""
    rows = await db.fetchall("SELECT repo, question FROM pairs WHERE retired_at IS NULL")
    return [(r[0], r[1]) for r in rows]


async def pair_repos(db: Database) -> list[str]:
    """Every repo that has pairs, live or retired."""
    return [r[0] for r in await db.fetchall("SELECT DISTINCT repo FROM pairs ORDER BY repo")]


async def repo_signatures(db: Database) -> dict[str, tuple[int, int, int]]:
    """{repo: (live count, sum of live ids, links)} — changes whenever a repo's live set
    changes, or a live pair comes to serve another chunk."""
    rows = await db.fetchall(
        "SELECT repo, COUNT(*), COALESCE(SUM(id), 0),"
        " COALESCE(SUM((SELECT COUNT(*) FROM chunk_passages cp"
        " WHERE cp.passage_id = pairs.chunk_id)), 0)"
        " FROM pairs WHERE retired_at IS NULL GROUP BY repo"
    )
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


async def pair_counts(db: Database) -> dict[str, Any]:
    """Live/retired totals, per repo, and token totals."""
    row = await db.fetchone(
        "SELECT COUNT(*) FILTER (WHERE retired_at IS NULL),"
        " COUNT(*) FILTER (WHERE retired_at IS NOT NULL),"
        " COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0) FROM pairs"
    )
    assert row is not None
    per_repo = await db.fetchall(
        "SELECT repo, COUNT(*) FILTER (WHERE retired_at IS NULL),"
        " COUNT(*) FILTER (WHERE retired_at IS NOT NULL) FROM pairs GROUP BY repo ORDER BY repo"
    )
    return {
        "live": row[0],
        "retired": row[1],
        "by_repo": {r[0]: {"live": r[1], "retired": r[2]} for r in per_repo},
        "prompt_tokens": row[2],
        "completion_tokens": row[3],
    }


def _filter(repo: str | None, include_retired: bool) -> tuple[str, list[Any]]:
    clauses, params = [], []
    if repo is not None:
        clauses.append("repo = ?")
        params.append(repo)
    if not include_retired:
        clauses.append("retired_at IS NULL")
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params
