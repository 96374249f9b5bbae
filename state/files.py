"""Files, chunks and memberships: what ingestion writes (every SQL statement for them)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiosqlite
import anyio

from state.db import Database, now
from state.meta import read_meta, write_meta
from state.pairs import retire_unserved, revive_served

__all__ = [
    "ApplyResult",
    "FileChange",
    "FileRecord",
    "apply_changes",
    "bulk_write_cache",
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
BULK_CACHE_MIB = 16


@asynccontextmanager
async def bulk_write_cache(db: Database, mib: int = BULK_CACHE_MIB) -> AsyncIterator[None]:
    """A bigger page cache while a reconcile writes, the previous size restored after.

    A cold scan inserts tens of thousands of chunks and memberships in a few transactions;
    with SQLite's default 2 MiB cache the pages of their indexes are evicted and re-read
    between batches (about 20 % of the write CPU on the bench tree).
    """
    previous = await db.scalar("PRAGMA cache_size")
    await db.conn.execute(f"PRAGMA cache_size = -{int(mib) * 1024}")
    try:
        yield
    finally:
        with anyio.CancelScope(shield=True):
            await db.conn.execute(f"PRAGMA cache_size = {int(previous)}")


# (strategy, ordinal, chunk_id, text, start_line, end_line, heading)
ChunkRow = tuple[str, int, str, str, int, int, "str | None"]


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


@dataclass
class FileChange:
    """One path's new state.

    action: 'chunks' (live, membership replaced), 'touch' (live, same content, new stat),
    'skipped' (reason required), 'deleted' (reason optional).
    """

    path: str
    action: str
    kind: str
    language: str | None = None
    size: int | None = None
    mtime_ns: int | None = None
    content_hash: str | None = None
    reason: str | None = None
    flags: list[str] = field(default_factory=list)
    git_commit: str | None = None
    chunks: Sequence[ChunkRow] = ()


@dataclass
class ApplyResult:
    """Counts from one apply_changes transaction."""

    chunks_added: int = 0
    chunks_retired: int = 0
    pairs_retired: int = 0
    pairs_revived: int = 0


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


async def apply_changes(db: Database, repo: str, changes: Sequence[FileChange]) -> ApplyResult:
    """Apply a batch of file changes in ONE transaction, keeping pairs.retired_at in step.

    Memberships of changed/skipped/deleted files are replaced; pairs whose chunk is no
    longer referenced by any live file get retired_at = now, and pairs whose chunk
    became live again get retired_at = NULL.
    """
    result = ApplyResult()
    if not changes:
        return result
    t = now()
    async with db.write() as conn:
        await conn.execute("CREATE TEMP TABLE IF NOT EXISTS ingest_old (chunk_id TEXT PRIMARY KEY)")
        await conn.execute("DELETE FROM temp.ingest_old")
        await _upsert_files(conn, repo, changes, t)
        ids = await _file_ids(conn, repo, [c.path for c in changes])
        replaced = [ids[c.path] for c in changes if c.action != "touch"]
        for i in range(0, len(replaced), _IN_BATCH):
            part = replaced[i : i + _IN_BATCH]
            marks = ",".join("?" * len(part))
            await conn.execute(
                "INSERT OR IGNORE INTO temp.ingest_old SELECT chunk_id FROM memberships"
                f" WHERE file_id IN ({marks})",
                part,
            )
            await conn.execute(f"DELETE FROM memberships WHERE file_id IN ({marks})", part)
        texts: dict[str, str] = {}
        member_rows = []
        for change in changes:
            if change.action != "chunks":
                continue
            file_id = ids[change.path]
            for strategy, ordinal, cid, text, start, end, heading in change.chunks:
                texts.setdefault(cid, text)
                member_rows.append((file_id, strategy, ordinal, cid, start, end, heading))
        # Sorted keys insert into the id index in order: measurably cheaper in bulk.
        chunk_rows = [(cid, texts[cid], len(texts[cid]), t) for cid in sorted(texts)]
        if chunk_rows:
            cursor = await conn.executemany(
                "INSERT OR IGNORE INTO chunks (id, text, n_chars, created_at) VALUES (?, ?, ?, ?)",
                chunk_rows,
            )
            result.chunks_added = max(0, cursor.rowcount)
        if member_rows:
            await conn.executemany(
                "INSERT INTO memberships (file_id, strategy, ordinal, chunk_id, start_line,"
                " end_line, heading) VALUES (?, ?, ?, ?, ?, ?, ?)",
                member_rows,
            )
        live_ids = [ids[c.path] for c in changes if c.action == "chunks"]
        await _retire_and_revive(conn, t, live_ids, result)
    return result


async def _upsert_files(
    conn: aiosqlite.Connection, repo: str, changes: Sequence[FileChange], t: float
) -> None:
    rows = []
    for c in changes:
        status = {"chunks": "live", "touch": "live", "skipped": "skipped", "deleted": "deleted"}[
            c.action
        ]
        rows.append(
            (
                repo,
                c.path,
                c.kind,
                c.language,
                c.size,
                c.mtime_ns,
                c.content_hash,
                status,
                c.reason,
                ",".join(c.flags) or None,
                c.git_commit,
                t,
                t,
            )
        )
    # A deleted file keeps its last known size/hash (COALESCE) for provenance.
    await conn.executemany(
        "INSERT INTO files (repo, path, kind, language, size, mtime_ns, content_hash, status,"
        " reason, flags, git_commit, first_seen_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT(repo, path) DO UPDATE SET kind = excluded.kind,"
        " language = COALESCE(excluded.language, language),"
        " size = COALESCE(excluded.size, size), mtime_ns = COALESCE(excluded.mtime_ns, mtime_ns),"
        " content_hash = COALESCE(excluded.content_hash, content_hash),"
        " status = excluded.status, reason = excluded.reason, flags = excluded.flags,"
        " git_commit = COALESCE(excluded.git_commit, git_commit), updated_at = excluded.updated_at",
        rows,
    )


async def _file_ids(conn: aiosqlite.Connection, repo: str, paths: list[str]) -> dict[str, int]:
    ids: dict[str, int] = {}
    for i in range(0, len(paths), _IN_BATCH):
        part = paths[i : i + _IN_BATCH]
        marks = ",".join("?" * len(part))
        async with conn.execute(
            f"SELECT id, path FROM files WHERE repo = ? AND path IN ({marks})", (repo, *part)
        ) as cur:
            for row in await cur.fetchall():
                ids[row[1]] = row[0]
    return ids


_LIVE = (
    "EXISTS (SELECT 1 FROM memberships m JOIN files f ON f.id = m.file_id"
    " WHERE m.chunk_id = {col} AND f.status = 'live')"
)


async def _retire_and_revive(
    conn: aiosqlite.Connection, t: float, new_file_ids: list[int], result: ApplyResult
) -> None:
    async with conn.execute(
        "SELECT count(*) FROM temp.ingest_old o WHERE NOT " + _LIVE.format(col="o.chunk_id")
    ) as cur:
        row = await cur.fetchone()
        result.chunks_retired = int(row[0]) if row else 0
    # A pair is live while its chunk or a chunk containing it is live (state.pairs).
    result.pairs_retired = await retire_unserved(conn, t, "temp.ingest_old")
    # Revive only when something is retired at all: the common case costs one probe.
    async with conn.execute("SELECT 1 FROM pairs WHERE retired_at IS NOT NULL LIMIT 1") as cur:
        any_retired = await cur.fetchone() is not None
    if not any_retired:
        return
    result.pairs_revived += await revive_served(conn, new_file_ids)


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
