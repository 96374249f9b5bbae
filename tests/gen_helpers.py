"""Test helpers for generation: seed files/chunks/memberships straight into the DB.

The ingest stage normally writes these rows; seeding them with SQL lets the queue, workers and
service be tested on their own, on real DataFusion text.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

from pipeline.settings import GeneratorSettings, PathsSettings, Settings
from state.db import Database, now

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "datafusion"


def corpus_paragraphs(count: int, *, min_chars: int = 200) -> list[str]:
    """`count` distinct prose paragraphs (≥ min_chars) from the DataFusion docs, in file order."""
    found: list[str] = []
    seen: set[str] = set()
    for path in sorted(CORPUS.rglob("*.md")):
        for block in re.split(r"\n\s*\n", path.read_text(encoding="utf-8")):
            text = block.strip()
            if len(text) < min_chars or text.startswith(("```", "|", "<!--", "#")):
                continue
            if "licen" in text.lower() or text in seen:
                continue
            seen.add(text)
            found.append(text)
            if len(found) == count:
                return found
    raise AssertionError(f"corpus has only {len(found)} paragraphs of >= {min_chars} chars")


def chunk_id(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


async def seed_chunks(
    db: Database,
    texts: list[str],
    *,
    repo: str = "datafusion",
    path: str = "docs/guide.md",
    strategy: str = "paragraph",
) -> list[str]:
    """One live file `path` made of `texts` (one chunk each); returns the chunk ids."""
    at = now()
    ids = [chunk_id(t) for t in texts]
    async with db.write() as conn:
        await conn.execute(
            "INSERT OR IGNORE INTO repos (name, root) VALUES (?, ?)", (repo, f"/src/{repo}")
        )
        cur = await conn.execute(
            "INSERT INTO files (repo, path, kind, language, status, git_commit, first_seen_at,"
            " updated_at) VALUES (?, ?, 'doc', 'markdown', 'live', 'abc123', ?, ?)"
            " ON CONFLICT (repo, path) DO UPDATE SET status = 'live',"
            " updated_at = excluded.updated_at"
            " RETURNING id",
            (repo, path, at, at),
        )
        row = await cur.fetchone()
        assert row is not None
        file_id = row[0]
        await conn.execute("DELETE FROM memberships WHERE file_id = ?", (file_id,))
        line = 1
        for ordinal, (cid, text) in enumerate(zip(ids, texts, strict=True)):
            await conn.execute(
                "INSERT OR IGNORE INTO chunks (id, text, n_chars, created_at) VALUES (?, ?, ?, ?)",
                (cid, text, len(text), at),
            )
            n_lines = text.count("\n") + 1
            await conn.execute(
                "INSERT INTO memberships (file_id, strategy, ordinal, chunk_id, start_line,"
                " end_line, heading) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (file_id, strategy, ordinal, cid, line, line + n_lines - 1, "Guide"),
            )
            line += n_lines + 1
    return ids


async def delete_file(
    db: Database, *, repo: str = "datafusion", path: str = "docs/guide.md"
) -> None:
    """Mark a file deleted the way ingest does, retiring pairs of chunks no longer live."""
    at = now()
    async with db.write() as conn:
        await conn.execute(
            "UPDATE files SET status = 'deleted', updated_at = ? WHERE repo = ? AND path = ?",
            (at, repo, path),
        )
        await conn.execute(
            "DELETE FROM memberships WHERE file_id IN"
            " (SELECT id FROM files WHERE repo = ? AND path = ?)",
            (repo, path),
        )
        await conn.execute(
            "UPDATE pairs SET retired_at = ? WHERE retired_at IS NULL"
            " AND chunk_id NOT IN (SELECT chunk_id FROM live_chunks)",
            (at,),
        )


def gen_settings(tmp_path: Path, url: str, **generator: object) -> Settings:
    """Settings with the state dir in tmp_path and a fast-failing generator at `url`."""
    defaults: dict[str, object] = {
        "backend": "ollama",  # the stand-in; `auto` would start the embedded engine at a dead url
        "mode": "qa",
        "url": url,
        "concurrency": 4,
        "timeout_s": 10.0,
        "lease_s": 30.0,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
        "breaker_probe_s": 0.05,
        "outage_give_up_s": 20.0,
        "export_interval_s": 0.2,
    }
    defaults.update(generator)
    return Settings(
        paths=PathsSettings(state_dir=tmp_path / "data", models_dir=tmp_path / "models"),
        generator=dataclasses.replace(GeneratorSettings(), **defaults),  # type: ignore[arg-type]
    )


async def eventually(check: Callable[[], Awaitable[bool] | bool], timeout_s: float = 20.0) -> None:
    """Poll `check` (sync or async) until it is true; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    for _ in itertools.count():
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await anyio.sleep(0.02)
