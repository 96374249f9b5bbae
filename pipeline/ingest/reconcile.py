"""Reconcile: bring files/chunks/memberships in line with the sources (the ingest entry point).

Cheap when nothing changed: a path whose size and mtime match the stored row is not
read; a path whose content hash matches is not parsed. Parsing fans out to a
forkserver process pool when there is enough of it (`parse_pool`); writes go in batched
transactions that each also keep `pairs.retired_at` in step (`batch`). Modes:
`worktree` (files as saved) and `commits` (HEAD via git).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Literal

import anyio
import structlog

from pipeline.evaluation.holdout import sync_holdout
from pipeline.ingest import gitsource
from pipeline.ingest.batch import Batcher, ReconcileSummary, deleted_change
from pipeline.ingest.commits import reconcile_commits
from pipeline.ingest.parse_pool import chunk_config
from pipeline.ingest.sources import discover_repos
from pipeline.ingest.worktree import reconcile_worktree
from pipeline.settings import Settings
from state import file_changes
from state import files as files_db
from state.db import Database

__all__ = [
    "CHUNKER_VERSION",
    "ReconcileSummary",
    "chunk_config",
    "chunker_fingerprint",
    "reconcile",
]

log = structlog.get_logger(__name__)

# Bump when cleaning or chunking output changes for the same input: files re-chunk once.
# 2026-12-02.1: Rust block bodies the AST walk never enters are not parsed (code_skip), so a
# syntax error inside one no longer changes the items around it; valid code chunks as before.
# 2026-12-02.2: memberships record the sections that start inside a chunk (same chunks).
CHUNKER_VERSION = "2026-12-02.2"

_locks: weakref.WeakKeyDictionary[Database, anyio.Lock] = weakref.WeakKeyDictionary()


def chunker_fingerprint(settings: Settings) -> str:
    """Identifies chunker code + settings; a change re-chunks every file once."""
    c = settings.chunking
    return (
        f"{CHUNKER_VERSION}:{','.join(c.strategies)}:{c.min_chars}:{c.max_chars}:"
        f"{c.overlap_chars}:{c.code_min_chars}:{c.code_max_chars}:{c.code_overlap_chars}:"
        f"{settings.sources.max_file_bytes}"
    )


async def reconcile(
    db: Database,
    settings: Settings,
    *,
    repos: Iterable[str] | None = None,
    paths: Mapping[str, Iterable[str]] | None = None,
    mode: Literal["worktree", "commits"] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ReconcileSummary:
    """One pass over the selected repositories (all by default); see module docstring.

    `paths` limits work to those repo-relative paths (watcher hints); a hinted path that
    is gone is marked deleted. In "commits" mode content comes from HEAD, diffed against
    the last ingested commit, and uncommitted edits are ignored.
    """
    started = time.perf_counter()
    effective_mode = mode or settings.watch.mode
    found = discover_repos(settings)
    wanted = set(repos) if repos is not None else None
    if paths is not None:
        wanted = (wanted or set()) | set(paths) if wanted is not None else set(paths)
    if wanted is not None:
        unknown = wanted - {r.name for r in found}
        if unknown:
            raise ValueError(f"unknown repository: {', '.join(sorted(unknown))}")
        found = [r for r in found if r.name in wanted]
    summary = ReconcileSummary()
    lock = _locks.setdefault(db, anyio.Lock())
    async with lock, file_changes.bulk_write_cache(db):
        fingerprint = chunker_fingerprint(settings)
        for repo in found:
            repo_started = time.perf_counter()
            if not repo.root.is_dir():
                summary.errors.append(f"{repo.name}: root {repo.root} is not a directory")
                log.warning("repo_missing", repo=repo.name, root=str(repo.root))
                continue
            await files_db.ensure_repo(db, repo.name, str(repo.root))
            # New chunker code or settings: every file is re-chunked once (no fast paths).
            force = await files_db.get_chunker_fingerprint(db, repo.name) != fingerprint
            if force:
                log.info("rechunking_repo", repo=repo.name, fingerprint=fingerprint)
            hints = list(paths[repo.name]) if paths is not None and repo.name in paths else None
            if effective_mode == "commits":
                commit = await reconcile_commits(db, settings, repo, summary, progress, force)
            else:
                commit = await anyio.to_thread.run_sync(gitsource.head_commit, repo.root)
                await reconcile_worktree(
                    db, settings, repo, None if force else hints, summary, progress, force
                )
            summary.commits[repo.name] = commit
            if force:
                await files_db.set_chunker_fingerprint(db, repo.name, fingerprint)
            await files_db.mark_scanned(
                db,
                repo.name,
                duration_ms=(time.perf_counter() - repo_started) * 1000,
                commit=commit,
            )
        if wanted is None:
            await _forget_removed_repos(db, {r.name for r in found}, summary)
        # Pages held out for evaluation: before ensure_jobs runs, so they never get jobs.
        await sync_holdout(db, settings)
    summary.duration_s = time.perf_counter() - started
    log.info(
        "reconciled",
        mode=effective_mode,
        **{k: v for k, v in summary.__dict__.items() if k not in ("commits", "errors")},
    )
    return summary


async def _forget_removed_repos(db: Database, present: set[str], summary: ReconcileSummary) -> None:
    """Repositories gone from the configuration: their files stop being live."""
    for name in await files_db.known_repos(db):
        if name in present:
            continue
        index = await files_db.load_file_index(db, name)
        gone = [
            deleted_change(path, record.kind, "repo_removed")
            for path, record in index.items()
            if record.status != "deleted"
        ]
        if gone:
            batcher = Batcher(db, name, summary)
            await batcher.add(gone)
            await batcher.flush()
            summary.deleted += len(gone)
            log.info("repo_removed", repo=name, files=len(gone))
