"""SQLite connection: pragmas, numbered migrations, and IMMEDIATE write transactions."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import aiosqlite
import anyio

__all__ = ["NEW_PAGE_SIZE", "Database", "DatabaseUnusable", "now", "open_db"]

BUSY_TIMEOUT_MS = 10_000
# Page size of a database this module creates (an existing one keeps its own). A cold scan
# writes ~80 MB of chunk text and indexes through the WAL, one write per page: 8 KiB pages
# halve those writes against SQLite's default 4 KiB and save ~0.2 of the ~1.3 CPU-s the bench
# tree's writes take; 16 KiB saved ~0.1 more but slowed the generation benchmark's small
# commits by 5-9 % (bench/RESULTS.md, issue 12 item 9, fifth pass).
NEW_PAGE_SIZE = 8_192


class DatabaseUnusable(Exception):
    """The database file cannot be used: corrupt, not SQLite, another program's, unreadable."""


def now() -> float:
    """Wall-clock seconds since the epoch; the one clock every table uses."""
    return time.time()


class Database:
    """One aiosqlite connection plus a lock that serialises write transactions.

    SQLite allows one writer at a time anyway; serialising our own writers on an
    in-process lock keeps `BEGIN IMMEDIATE` from ever nesting on the shared
    connection, and cross-process contention is handled by `busy_timeout`.
    """

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self._write_lock = anyio.Lock()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[aiosqlite.Connection]:
        """A `BEGIN IMMEDIATE` transaction: committed on success, rolled back on error.

        Never await the network inside it (DESIGN invariant 3).
        """
        async with self._write_lock:
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self.conn.rollback()
                raise
            else:
                with anyio.CancelScope(shield=True):
                    await self.conn.commit()

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[aiosqlite.Row]:
        async with self.conn.execute(sql, tuple(params)) as cur:
            return list(await cur.fetchall())

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> aiosqlite.Row | None:
        async with self.conn.execute(sql, tuple(params)) as cur:
            return await cur.fetchone()

    async def scalar(self, sql: str, params: Iterable[Any] = ()) -> Any:
        row = await self.fetchone(sql, params)
        return None if row is None else row[0]

    async def close(self) -> None:
        await self.conn.close()


def _migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every `NNNN_name.sql` file, in order."""
    found = []
    for entry in resources.files("state.migrations").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), name, entry.read_text(encoding="utf-8")))
    return sorted(found)


async def _migrate(conn: aiosqlite.Connection) -> None:
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
    )
    async with conn.execute("SELECT version FROM schema_migrations") as cur:
        applied = {row[0] for row in await cur.fetchall()}
    for version, name, sql in _migrations():
        if version in applied:
            continue
        # executescript() would COMMIT first; run statements inside one IMMEDIATE transaction.
        await conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _split_sql(sql):
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (version, name, now()),
            )
        except BaseException:
            await conn.rollback()
            raise
        await conn.commit()


def _split_sql(script: str) -> list[str]:
    """Split a migration script into complete statements (handles triggers' inner `;`)."""
    import sqlite3

    statements, buf = [], ""
    for line in script.splitlines(keepends=True):
        if not buf and line.strip().startswith("--"):
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                statements.append(buf.strip())
            buf = ""
    if buf.strip():
        raise ValueError(f"incomplete SQL statement in migration: {buf[:80]!r}")
    return statements


async def open_db(path: Path | str, *, synchronous: str = "NORMAL") -> Database:
    """Open (creating if needed) the database at `path` and apply pending migrations.

    Raises DatabaseUnusable, naming the file and what to do, when it cannot be used.
    """
    import sqlite3

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = await aiosqlite.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        raise DatabaseUnusable(f"cannot open the database {path}: {exc}") from exc
    conn.row_factory = aiosqlite.Row
    try:
        await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # Takes effect only while the file is still empty (before WAL mode writes its
        # header); on an existing database SQLite ignores it.
        await conn.execute(f"PRAGMA page_size = {NEW_PAGE_SIZE}")
        await conn.execute("PRAGMA journal_mode = WAL")
        await conn.execute(f"PRAGMA synchronous = {synchronous}")
        await conn.execute("PRAGMA foreign_keys = ON")
        await _refuse_foreign(conn, path)
        await _migrate(conn)
    except sqlite3.DatabaseError as exc:
        await conn.close()
        if "locked" in str(exc) or "busy" in str(exc):
            raise
        raise DatabaseUnusable(
            f"the database {path} is unusable ({exc}); move it aside to start a new one,"
            " or set paths.state_dir to another directory"
        ) from exc
    except BaseException:
        await conn.close()
        raise
    return Database(conn, path)


async def _refuse_foreign(conn: aiosqlite.Connection, path: Path) -> None:
    """A database with tables but no doctune migrations belongs to someone else: leave it."""
    async with conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        " ORDER BY name"
    ) as cur:
        tables = [row[0] for row in await cur.fetchall()]
    if tables and "schema_migrations" not in tables:
        shown = ", ".join(tables[:5]) + (", …" if len(tables) > 5 else "")
        raise DatabaseUnusable(
            f"{path} is not a doctune database (it has tables {shown}); set paths.state_dir"
            " to a directory of its own"
        )
