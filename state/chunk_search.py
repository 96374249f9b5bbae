"""BM25 retrieval over chunk text: the FTS5 index `chunks_fts`, brought up to date on demand.

Ingestion never touches the index (per-row triggers made a cold scan ~2.5× as costly);
`search_chunks` first indexes what was added since the last build. Chunks are content-
addressed and doctune never updates or deletes their rows, so "up to date" is "every rowid
up to the newest is indexed". `chunks_fts_stamp` records what the index holds (the highest
rowid, how many rows up to it, and the id of that row); when rows at or below it are gone or
were replaced, the index is rebuilt from scratch instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import aiosqlite

from state.db import Database

__all__ = ["IndexUpdate", "RetrievedChunk", "ensure_search_index", "fts_query", "search_chunks"]

_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class RetrievedChunk:
    """One BM25 hit: a live chunk, where it lives, and its score (lower = better, FTS5)."""

    chunk_id: str
    text: str
    repo: str
    path: str
    score: float


@dataclass(frozen=True)
class IndexUpdate:
    """What `ensure_search_index` did: 'none' (up to date), 'added' or 'rebuilt', and rows."""

    action: str
    rows: int


@dataclass(frozen=True)
class _Stamp:
    upto_rowid: int
    n_chunks: int
    last_id: str | None


async def _read_stamp(conn: aiosqlite.Connection) -> _Stamp:
    async with conn.execute(
        "SELECT upto_rowid, n_chunks, last_id FROM chunks_fts_stamp WHERE one = 1"
    ) as cur:
        row = await cur.fetchone()
    return _Stamp(0, 0, None) if row is None else _Stamp(int(row[0]), int(row[1]), row[2])


async def _current(conn: aiosqlite.Connection, upto_rowid: int | None = None) -> _Stamp:
    """The stamp the chunks table has now (up to `upto_rowid`; None = all of it)."""
    bound = "" if upto_rowid is None else " WHERE rowid <= ?"
    params = () if upto_rowid is None else (upto_rowid,)
    async with conn.execute(
        f"SELECT coalesce(max(rowid), 0), count(*) FROM chunks{bound}", params
    ) as cur:
        top, count = await cur.fetchone()  # type: ignore[misc]
    async with conn.execute("SELECT id FROM chunks WHERE rowid = ?", (top,)) as cur:
        row = await cur.fetchone()
    return _Stamp(int(top), int(count), None if row is None else row[0])


async def _write_stamp(conn: aiosqlite.Connection, stamp: _Stamp) -> None:
    await conn.execute(
        "INSERT INTO chunks_fts_stamp (one, upto_rowid, n_chunks, last_id) VALUES (1, ?, ?, ?)"
        " ON CONFLICT(one) DO UPDATE SET upto_rowid = excluded.upto_rowid,"
        " n_chunks = excluded.n_chunks, last_id = excluded.last_id",
        (stamp.upto_rowid, stamp.n_chunks, stamp.last_id),
    )


async def ensure_search_index(db: Database) -> IndexUpdate:
    """Bring `chunks_fts` up to date with `chunks`: index the rows added since the last
    build, or rebuild it when rows it holds were removed or replaced."""
    # Read-only check first: a search over an up-to-date index takes no write lock.
    if await _current(db.conn) == await _read_stamp(db.conn):
        return IndexUpdate("none", 0)
    async with db.write() as conn:
        stamp = await _read_stamp(conn)
        now_all = await _current(conn)
        if now_all == stamp:
            return IndexUpdate("none", 0)
        kept = await _current(conn, stamp.upto_rowid)
        if kept.n_chunks == stamp.n_chunks and kept.last_id == stamp.last_id:
            cur = await conn.execute(
                "INSERT INTO chunks_fts (rowid, text) SELECT rowid, text FROM chunks"
                " WHERE rowid > ? ORDER BY rowid",
                (stamp.upto_rowid,),
            )
            update = IndexUpdate("added", max(0, cur.rowcount))
        else:
            await conn.execute("INSERT INTO chunks_fts (chunks_fts) VALUES ('rebuild')")
            update = IndexUpdate("rebuilt", now_all.n_chunks)
        await _write_stamp(conn, now_all)
    return update


def fts_query(text: str) -> str:
    """A safe FTS5 query: every word of `text` quoted, OR-ed (BM25 does the weighting)."""
    words = sorted({w.lower() for w in _WORD.findall(text) if len(w) > 1})
    return " OR ".join(f'"{w}"' for w in words)


async def search_chunks(db: Database, text: str, *, k: int) -> list[RetrievedChunk]:
    """The top-k live chunks for `text` by BM25 (empty when no word matches); indexes the
    chunks added since the last search first."""
    query = fts_query(text)
    if not query or k < 1:
        return []
    await ensure_search_index(db)
    rows = await db.fetchall(
        "SELECT c.id, c.text, bm25(chunks_fts) AS score FROM chunks_fts"
        " JOIN chunks c ON c.rowid = chunks_fts.rowid"
        " WHERE chunks_fts MATCH ? AND c.id IN (SELECT chunk_id FROM live_chunks)"
        " ORDER BY score LIMIT ?",
        (query, k),
    )
    if not rows:
        return []
    where = await db.fetchall(
        "SELECT m.chunk_id, f.repo, f.path FROM memberships m JOIN files f ON f.id = m.file_id"
        f" WHERE f.status = 'live' AND m.chunk_id IN ({','.join('?' * len(rows))})"
        " ORDER BY f.repo, f.path",
        [r[0] for r in rows],
    )
    first: dict[str, tuple[str, str]] = {}
    for chunk_id, repo, path in where:
        first.setdefault(chunk_id, (repo, path))
    return [RetrievedChunk(r[0], r[1], *first.get(r[0], ("", "")), score=float(r[2])) for r in rows]
