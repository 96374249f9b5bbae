"""A database as an older doctune left it: the project's migrations applied up to a version."""

from __future__ import annotations

import sqlite3
from pathlib import Path

MIGRATIONS = Path(__file__).resolve().parents[1] / "state" / "migrations"


def database_at(path: Path, last_version: int) -> sqlite3.Connection:
    """A new database at `path` with migrations 1..`last_version` applied and recorded."""
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
    )
    for sql in sorted(MIGRATIONS.glob("[0-9][0-9][0-9][0-9]_*.sql")):
        if int(sql.name[:4]) > last_version:
            break
        conn.executescript(sql.read_text())
        conn.execute(
            "INSERT INTO schema_migrations VALUES (?, ?, 0)", (int(sql.name[:4]), sql.name)
        )
    return conn
