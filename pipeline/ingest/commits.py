"""Commits mode: content from HEAD via git, diffed against the last ingested commit."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import anyio
import structlog

from pipeline.ingest import gitsource
from pipeline.ingest.batch import Batcher, ReconcileSummary, deleted_change, to_change, utf8_name
from pipeline.ingest.parse import FileJob, FileOutcome
from pipeline.ingest.parse_pool import chunk_config, run_jobs
from pipeline.ingest.reader import GitBlobReader
from pipeline.ingest.sources import Repo, language_for
from pipeline.settings import Settings
from state import file_changes
from state import files as files_db
from state.db import Database

__all__ = ["reconcile_commits"]

log = structlog.get_logger(__name__)


async def reconcile_commits(
    db: Database,
    settings: Settings,
    repo: Repo,
    summary: ReconcileSummary,
    progress: Callable[[int, int], None] | None,
    force: bool = False,
) -> str | None:
    """Ingest HEAD's content: a diff against the last ingested commit, else a full tree."""
    head = await anyio.to_thread.run_sync(gitsource.head_commit, repo.root)
    if head is None:
        summary.errors.append(f"{repo.name}: commits mode needs a git repository with a commit")
        log.warning("commits_mode_without_git", repo=repo.name, root=str(repo.root))
        return None
    base = await _diff_base(db, repo, head, force)
    if base == head:
        return head
    entries = await anyio.to_thread.run_sync(gitsource.list_tree, repo.root, head)
    touched, index = await _touched_paths(db, repo, entries, base, head)
    changes, wanted = _classify(repo, touched, index, {e.path: e for e in entries}, head, summary)
    jobs = await anyio.to_thread.run_sync(
        _git_jobs, repo.root, wanted, {} if force else index, settings.sources.max_file_bytes
    )
    batcher = Batcher(db, repo.name, summary)
    await batcher.add(changes)
    await batcher.add(_too_large(jobs, head, summary))

    async def handle(job: FileJob, outcome: FileOutcome) -> None:
        await batcher.add([to_change(job, outcome, index.get(job.rel_path), summary, head)])

    parse = [j for j in jobs if j.data is not None]
    await run_jobs(parse, chunk_config(settings), settings, progress, handle)
    await batcher.flush()
    return head


async def _diff_base(db: Database, repo: Repo, head: str, force: bool) -> str | None:
    """The commit to diff HEAD against, or None to take the whole tree."""
    base = None if force else await files_db.get_ingested_commit(db, repo.name)
    if base is not None and await files_db.has_uncommitted_live_files(db, repo.name):
        return None  # worktree-mode content is in the table: rebuild from the tree once
    if base is None or base == head:
        return base
    known = await anyio.to_thread.run_sync(gitsource.is_ancestor_known, repo.root, base)
    return base if known else None


async def _touched_paths(
    db: Database,
    repo: Repo,
    entries: list[gitsource.TreeEntry],
    base: str | None,
    head: str,
) -> tuple[set[str], dict[str, files_db.FileRecord]]:
    """Paths to look at (the diff, or the tree plus every stored path) and their rows."""
    if base is None:
        index = await files_db.load_file_index(db, repo.name)
        touched = {e.path for e in entries} | {p for p, r in index.items() if r.status != "deleted"}
        return touched, index
    diff = await anyio.to_thread.run_sync(gitsource.changed_paths, repo.root, base, head)
    touched = set(diff)
    return touched, await files_db.load_file_index(db, repo.name, sorted(touched))


def _classify(
    repo: Repo,
    touched: set[str],
    index: Mapping[str, files_db.FileRecord],
    by_path: Mapping[str, gitsource.TreeEntry],
    head: str,
    summary: ReconcileSummary,
) -> tuple[list[file_changes.FileChange], list[tuple[str, str, gitsource.TreeEntry]]]:
    """Split touched paths into changes known without reading (removed, unselected,
    symlinks, non-blobs) and the blobs to read, counting them."""
    changes: list[file_changes.FileChange] = []
    wanted: list[tuple[str, str, gitsource.TreeEntry]] = []
    for path in sorted(touched):
        if not utf8_name(path):
            continue  # not representable in SQLite TEXT (worktree mode records these)
        kind = repo.classify(path)
        record = index.get(path)
        entry = by_path.get(path)
        if kind is None or entry is None:
            if record is not None and record.status != "deleted":
                changes.append(deleted_change(path, record.kind, "removed", head))
                summary.deleted += 1
            continue
        summary.files_seen += 1
        if entry.object_type != "blob" or entry.mode == "120000":
            reason = "symlink" if entry.mode == "120000" else f"not_a_blob:{entry.object_type}"
            changes.append(
                file_changes.FileChange(
                    path, "skipped", kind, language_for(path), reason=reason, git_commit=head
                )
            )
            summary.skipped += 1
            continue
        wanted.append((path, kind, entry))
    return changes, wanted


def _too_large(
    jobs: list[FileJob], head: str, summary: ReconcileSummary
) -> list[file_changes.FileChange]:
    """Blobs over the size cap (not read): recorded as skipped."""
    skipped = [
        file_changes.FileChange(
            job.rel_path,
            "skipped",
            job.kind,
            job.language,
            size=job.size,
            reason="too_large",
            git_commit=head,
        )
        for job in jobs
        if job.data is None
    ]
    summary.skipped += len(skipped)
    return skipped


def _git_jobs(
    root: Path,
    wanted: list[tuple[str, str, gitsource.TreeEntry]],
    index: Mapping[str, files_db.FileRecord],
    max_bytes: int,
) -> list[FileJob]:
    """Read the blobs (bounded by the size cap) through one `git cat-file --batch`."""
    jobs = []
    reader = GitBlobReader(root)
    try:
        for path, kind, entry in wanted:
            data, size, _error = reader.read(entry.object_id, max_bytes)
            record = index.get(path)
            known = record.content_hash if record is not None and record.status == "live" else None
            jobs.append(
                FileJob(
                    str(root),
                    path,
                    kind,
                    language_for(path),
                    max_bytes,
                    known_hash=known,
                    data=data,
                    size=size,
                )
            )
    finally:
        reader.close()
    return jobs
