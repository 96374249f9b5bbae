"""Applying file changes: files, chunks and memberships rows written in one transaction each,
with `pairs.retired_at` kept in step (every write statement ingestion makes)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from operator import itemgetter

import aiosqlite
import anyio

from state.db import Database, now
from state.pairs import retire_unserved, revive_served

__all__ = [
    "BULK_CACHE_MIB",
    "ApplyResult",
    "ChunkRow",
    "FileChange",
    "apply_changes",
    "bulk_write_cache",
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


# (strategy, ordinal, chunk_id, text, start_line, end_line, heading, sections JSON)
ChunkRow = tuple[str, int, str, str, int, int, "str | None", "str | None"]


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
            for strategy, ordinal, cid, text, start, end, heading, sections in change.chunks:
                texts.setdefault(cid, text)
                member_rows.append((file_id, strategy, ordinal, cid, start, end, heading, sections))
        # Sorted keys insert into the id index in order: measurably cheaper in bulk.
        chunk_rows = [(cid, texts[cid], len(texts[cid]), t) for cid in sorted(texts)]
        if chunk_rows:
            cursor = await conn.executemany(
                "INSERT OR IGNORE INTO chunks (id, text, n_chars, created_at) VALUES (?, ?, ?, ?)",
                chunk_rows,
            )
            result.chunks_added = max(0, cursor.rowcount)
        if member_rows:
            # In chunk-id order: the memberships_chunk index is then filled in key order
            # (chunk ids are hashes, so file order scatters them over the whole index).
            member_rows.sort(key=itemgetter(3))
            await conn.executemany(
                "INSERT INTO memberships (file_id, strategy, ordinal, chunk_id, start_line,"
                " end_line, heading, sections) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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
