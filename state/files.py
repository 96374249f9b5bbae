"""Files and repositories as ingestion left them: stored file rows, repo rows, the chunker
fingerprint, and the live chunks of files (what reconcile compares against, what `chunks` lists)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from state.db import Database, now
from state.meta import read_meta, write_meta

__all__ = [
    "FileRecord",
    "ensure_repo",
    "file_chunks",
    "get_chunker_fingerprint",
    "get_ingested_commit",
    "has_uncommitted_live_files",
    "known_repos",
    "load_file_index",
    "mark_scanned",
    "paths_under",
    "set_chunker_fingerprint",
]

_IN_BATCH = 500  # keeps IN (...) lists under SQLite's variable limit


@dataclass(frozen=True)
class FileRecord:
    """The stored state of one path (what the fast path compares against)."""

    id: int
    kind: str
    size: int | None
    mtime_ns: int | None
    content_hash: str | None
    status: str
    git_commit: str | None
    reason: str | None = None


async def ensure_repo(db: Database, name: str, root: str) -> None:
    """Create or update the repos row."""
    async with db.write() as conn:
        await conn.execute(
            "INSERT INTO repos (name, root) VALUES (?, ?)"
            " ON CONFLICT(name) DO UPDATE SET root = excluded.root",
            (name, root),
        )


_FINGERPRINT_KEY = "ingest.chunker"


async def get_chunker_fingerprint(db: Database, repo: str) -> str | None:
    """The chunker fingerprint a repo's chunks were made with (None: never set)."""
    return await read_meta(db, f"{_FINGERPRINT_KEY}.{repo}")


async def set_chunker_fingerprint(db: Database, repo: str, fingerprint: str) -> None:
    """Record that every file of a repo was chunked with this fingerprint."""
    await write_meta(db, f"{_FINGERPRINT_KEY}.{repo}", fingerprint)


async def known_repos(db: Database) -> list[str]:
    """Names of every repository with a repos row."""
    return [r[0] for r in await db.fetchall("SELECT name FROM repos ORDER BY name")]


async def get_ingested_commit(db: Database, repo: str) -> str | None:
    """The last commit whose content was ingested for this repo (None if never)."""
    value = await db.scalar("SELECT ingested_commit FROM repos WHERE name = ?", (repo,))
    return None if value is None else str(value)


async def has_uncommitted_live_files(db: Database, repo: str) -> bool:
    """Whether live rows came from the worktree (no commit): commits mode must not diff."""
    value = await db.scalar(
        "SELECT 1 FROM files WHERE repo = ? AND status = 'live' AND git_commit IS NULL LIMIT 1",
        (repo,),
    )
    return value is not None


async def mark_scanned(db: Database, repo: str, *, duration_ms: float, commit: str | None) -> None:
    """Record a finished scan (and the commit it reflects, when known)."""
    async with db.write() as conn:
        await conn.execute(
            "UPDATE repos SET last_scan_at = ?, last_scan_ms = ?,"
            " ingested_commit = COALESCE(?, ingested_commit) WHERE name = ?",
            (now(), duration_ms, commit, repo),
        )


async def load_file_index(
    db: Database, repo: str, paths: Iterable[str] | None = None
) -> dict[str, FileRecord]:
    """Stored state of every path in a repo (or of the given paths only)."""
    sql = (
        "SELECT id, path, kind, size, mtime_ns, content_hash, status, git_commit, reason"
        " FROM files WHERE repo = ?"
    )
    rows: list[Any] = []
    if paths is None:
        rows = await db.fetchall(sql, (repo,))
    else:
        wanted = list(paths)
        for i in range(0, len(wanted), _IN_BATCH):
            part = wanted[i : i + _IN_BATCH]
            marks = ",".join("?" * len(part))
            rows += await db.fetchall(f"{sql} AND path IN ({marks})", (repo, *part))
    return {
        r["path"]: FileRecord(
            r["id"],
            r["kind"],
            r["size"],
            r["mtime_ns"],
            r["content_hash"],
            r["status"],
            r["git_commit"],
            r["reason"],
        )
        for r in rows
    }


async def paths_under(db: Database, repo: str, rel_dir: str) -> list[str]:
    """Known (not deleted) paths below a directory: what a vanished directory held."""
    prefix = rel_dir.rstrip("/") + "/"
    rows = await db.fetchall(
        "SELECT path FROM files WHERE repo = ? AND status != 'deleted' AND substr(path, 1, ?) = ?",
        (repo, len(prefix), prefix),
    )
    return [r[0] for r in rows]


async def file_chunks(
    db: Database,
    *,
    repo: str | None = None,
    path: str | None = None,
    strategy: str | None = None,
) -> list[dict[str, Any]]:
    """Live chunks with provenance, in file/strategy/ordinal order (for `doctune chunks`)."""
    where = ["f.status = 'live'"]
    params: list[Any] = []
    if repo is not None:
        where.append("f.repo = ?")
        params.append(repo)
    if path is not None:
        where.append("f.path = ?")
        params.append(path)
    if strategy is not None:
        where.append("m.strategy = ?")
        params.append(strategy)
    rows = await db.fetchall(
        "SELECT f.repo, f.path, m.strategy, m.ordinal, m.chunk_id, m.start_line, m.end_line,"
        " m.heading, c.text FROM memberships m JOIN files f ON f.id = m.file_id"
        " JOIN chunks c ON c.id = m.chunk_id WHERE "
        + " AND ".join(where)
        + " ORDER BY f.repo, f.path, m.strategy, m.ordinal",
        params,
    )
    return [
        {
            "repo": r["repo"],
            "path": r["path"],
            "strategy": r["strategy"],
            "ordinal": r["ordinal"],
            "hash": r["chunk_id"],
            "start_line": r["start_line"],
            "end_line": r["end_line"],
            "heading": r["heading"],
            "text": r["text"],
        }
        for r in rows
    ]
