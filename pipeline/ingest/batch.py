"""Turning parse outcomes into state changes, written in bounded transactions."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.ingest.parse import FileJob, FileOutcome
from state import file_changes
from state import files as files_db
from state.db import Database

__all__ = ["Batcher", "ReconcileSummary", "deleted_change", "to_change", "utf8_name"]

FLUSH_FILES = 256  # files per write transaction
FLUSH_CHARS = 8_000_000  # chunk text per write transaction


@dataclass
class ReconcileSummary:
    """What one reconcile pass did."""

    files_seen: int = 0
    unchanged: int = 0
    changed: int = 0
    new: int = 0
    deleted: int = 0
    skipped: int = 0
    chunks_added: int = 0
    chunks_retired: int = 0
    pairs_retired: int = 0
    parsed_files: int = 0
    duration_s: float = 0.0
    commits: dict[str, str | None] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def deleted_change(
    path: str, kind: str, reason: str, commit: str | None = None
) -> file_changes.FileChange:
    """A change marking `path` deleted with a reason."""
    return file_changes.FileChange(path, "deleted", kind, reason=reason, git_commit=commit)


def utf8_name(rel_path: str) -> bool:
    """Whether a path can be stored as SQLite TEXT (no undecodable bytes)."""
    try:
        rel_path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def to_change(
    job: FileJob,
    outcome: FileOutcome,
    record: files_db.FileRecord | None,
    summary: ReconcileSummary,
    commit: str | None,
) -> file_changes.FileChange:
    """Map a worker's outcome onto a state change and count it."""
    size = outcome.size if outcome.size is not None else job.size
    mtime = outcome.mtime_ns if outcome.mtime_ns is not None else job.mtime_ns
    base = file_changes.FileChange(
        job.rel_path,
        "chunks",
        job.kind,
        job.language,
        size,
        mtime,
        outcome.content_hash,
        flags=outcome.flags,
        git_commit=commit,
    )
    if not outcome.ok:
        if outcome.reason == "vanished":
            base.action, base.reason = (
                "deleted",
                ("vanished" if record is not None else "vanished_during_scan"),
            )
            summary.deleted += 1
        else:
            # Store the pre-read stat so an unchanged skipped file is not re-read.
            base.action, base.reason = "skipped", outcome.reason
            base.size, base.mtime_ns = job.size, job.mtime_ns
            summary.skipped += 1
        return base
    if outcome.same_content:
        base.action = "touch"
        summary.unchanged += 1
        return base
    summary.parsed_files += 1
    if record is None or record.status == "deleted":
        summary.new += 1
    else:
        summary.changed += 1
    base.chunks = outcome.chunks
    return base


class Batcher:
    """Accumulates changes and writes them in bounded transactions."""

    def __init__(self, db: Database, repo: str, summary: ReconcileSummary) -> None:
        self.db, self.repo, self.summary = db, repo, summary
        self.changes: list[file_changes.FileChange] = []
        self.chars = 0

    async def add(self, changes: list[file_changes.FileChange]) -> None:
        """Queue changes; flush when the batch is big enough."""
        for change in changes:
            self.changes.append(change)
            self.chars += sum(len(c[3]) for c in change.chunks)
        if len(self.changes) >= FLUSH_FILES or self.chars >= FLUSH_CHARS:
            await self.flush()

    async def flush(self) -> None:
        """Write the queued changes in one transaction."""
        if not self.changes:
            return
        result = await file_changes.apply_changes(self.db, self.repo, self.changes)
        self.summary.chunks_added += result.chunks_added
        self.summary.chunks_retired += result.chunks_retired
        self.summary.pairs_retired += result.pairs_retired
        self.changes, self.chars = [], 0
