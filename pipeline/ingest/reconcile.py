"""Reconcile: bring files/chunks/memberships in line with the sources (the ingest entry point).

Cheap when nothing changed: a path whose size and mtime match the stored row is not
read; a path whose content hash matches is not parsed. Parsing fans out to a
spawn-safe process pool when there is enough of it; writes go in batched
transactions that each also keep `pairs.retired_at` in step.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import stat
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Literal

import anyio
import structlog

from pipeline.ingest import gitsource
from pipeline.ingest.chunk import Sizes
from pipeline.ingest.parse import ChunkConfig, FileJob, FileOutcome, process_file
from pipeline.ingest.reader import GitBlobReader
from pipeline.ingest.sources import Candidate, Repo, discover_repos, language_for, walk_repo
from pipeline.settings import Settings
from state import files as files_db
from state.db import Database

__all__ = ["ReconcileSummary", "chunk_config", "reconcile"]

log = structlog.get_logger(__name__)

POOL_MIN_FILES = 24  # below this many files to parse, a pool's start-up costs more than it saves
FLUSH_FILES = 256  # files per write transaction
FLUSH_CHARS = 8_000_000  # chunk text per write transaction
# Skip reasons worth retrying even when size and mtime did not change.
_TRANSIENT_REASONS = ("changed_during_read", "read_error", "open_error", "stat_error", "vanished")

_locks: weakref.WeakKeyDictionary[Database, anyio.Lock] = weakref.WeakKeyDictionary()


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


def chunk_config(settings: Settings) -> ChunkConfig:
    """The picklable chunker configuration derived from settings."""
    c = settings.chunking
    return ChunkConfig(
        tuple(c.strategies),
        Sizes(c.min_chars, c.max_chars, c.overlap_chars),
        Sizes(c.code_min_chars, c.code_max_chars, c.code_overlap_chars),
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
    async with lock:
        for repo in found:
            repo_started = time.perf_counter()
            if not repo.root.is_dir():
                summary.errors.append(f"{repo.name}: root {repo.root} is not a directory")
                log.warning("repo_missing", repo=repo.name, root=str(repo.root))
                continue
            await files_db.ensure_repo(db, repo.name, str(repo.root))
            hints = list(paths[repo.name]) if paths is not None and repo.name in paths else None
            if effective_mode == "commits":
                commit = await _reconcile_commits(db, settings, repo, summary, progress)
            else:
                commit = await anyio.to_thread.run_sync(gitsource.head_commit, repo.root)
                await _reconcile_worktree(db, settings, repo, hints, summary, progress)
            summary.commits[repo.name] = commit
            await files_db.mark_scanned(
                db,
                repo.name,
                duration_ms=(time.perf_counter() - repo_started) * 1000,
                commit=commit,
            )
        if wanted is None:
            await _forget_removed_repos(db, {r.name for r in found}, summary)
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
            _deleted(path, record.kind, "repo_removed")
            for path, record in index.items()
            if record.status != "deleted"
        ]
        if gone:
            batcher = _Batcher(db, name, summary)
            await batcher.add(gone)
            await batcher.flush()
            summary.deleted += len(gone)
            log.info("repo_removed", repo=name, files=len(gone))


# ---------------------------------------------------------------- worktree mode


def _fingerprint(root: Path, rel: str, st: os.stat_result | None) -> os.stat_result | None:
    """lstat for most paths; the target's stat for an in-repo symlink (its edits count)."""
    if st is not None and stat.S_ISLNK(st.st_mode):
        try:
            return os.stat(root / rel)
        except OSError:
            return st
    return st


def _clean_hint(raw: str) -> str | None:
    rel = PurePosixPath(raw).as_posix().lstrip("/")
    if not rel or rel == "." or ".." in rel.split("/"):
        return None
    return rel


async def _hinted_candidates(
    db: Database, repo: Repo, hints: list[str]
) -> tuple[list[Candidate], set[str]]:
    """Candidates for watcher hints, plus hinted paths that are no longer selected.

    A hinted directory is walked (a directory moved in arrives as one event); a hinted
    path that is gone also covers every known file below it (a directory removed).
    """
    found: dict[str, Candidate] = {}
    unselected: set[str] = set()
    for raw in hints:
        rel = _clean_hint(raw)
        if rel is None:
            continue
        try:
            st: os.stat_result | None = os.lstat(repo.root / rel)
        except OSError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode):
            if repo.may_contain(rel) and not repo.is_ignored(rel, is_dir=True):
                walked = await anyio.to_thread.run_sync(_walk_list, repo, rel)
                found.update((c.rel_path, c) for c in walked)
            continue
        kind = repo.matches(rel)
        if kind is not None:
            found[rel] = Candidate(rel, kind, st)
        else:
            unselected.add(rel)
        if st is None:
            for child in await files_db.paths_under(db, repo.name, rel):
                child_kind = repo.classify(child)
                if child_kind is not None:
                    found.setdefault(child, Candidate(child, child_kind, _lstat(repo.root / child)))
                else:
                    unselected.add(child)
    return list(found.values()), unselected


def _walk_list(repo: Repo, start: str) -> list[Candidate]:
    return list(walk_repo(repo, start))


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except OSError:
        return None


def _unchanged(record: files_db.FileRecord | None, kind: str, st: os.stat_result) -> bool:
    """The stat-only fast path: same size and mtime as stored, and not worth a retry."""
    if record is None or record.kind != kind:
        return False
    if record.size != st.st_size or record.mtime_ns != st.st_mtime_ns:
        return False
    if record.status == "live":
        return True
    return record.status == "skipped" and not (record.reason or "").startswith(_TRANSIENT_REASONS)


def _deleted(path: str, kind: str, reason: str, commit: str | None = None) -> files_db.FileChange:
    return files_db.FileChange(path, "deleted", kind, reason=reason, git_commit=commit)


async def _reconcile_worktree(
    db: Database,
    settings: Settings,
    repo: Repo,
    hints: list[str] | None,
    summary: ReconcileSummary,
    progress: Callable[[int, int], None] | None,
) -> None:
    if hints is not None and any(
        (_clean_hint(h) or "").split("/")[-1] == ".gitignore" for h in hints
    ):
        # Selection rules changed: every path may be in or out now.
        repo.forget_ignores()
        hints = None
    if hints is None:
        candidates = await anyio.to_thread.run_sync(lambda: list(walk_repo(repo)))
        unselected: set[str] = set()
        index = await files_db.load_file_index(db, repo.name)
    else:
        candidates, unselected = await _hinted_candidates(db, repo, hints)
        index = await files_db.load_file_index(
            db, repo.name, [c.rel_path for c in candidates] + sorted(unselected)
        )
    changes: list[files_db.FileChange] = []
    jobs: list[FileJob] = []
    seen: set[str] = set()
    max_bytes = settings.sources.max_file_bytes
    for cand in candidates:
        seen.add(cand.rel_path)
        record = index.get(cand.rel_path)
        st = _fingerprint(repo.root, cand.rel_path, cand.st)
        if st is None:
            if record is not None and record.status != "deleted":
                changes.append(_deleted(cand.rel_path, record.kind, "vanished"))
                summary.deleted += 1
            continue
        summary.files_seen += 1
        if _unchanged(record, cand.kind, st):
            summary.unchanged += 1
            continue
        known = record.content_hash if record is not None and record.status == "live" else None
        jobs.append(
            FileJob(
                str(repo.root),
                cand.rel_path,
                cand.kind,
                language_for(cand.rel_path),
                max_bytes,
                known_hash=known,
                size=st.st_size,
                mtime_ns=st.st_mtime_ns,
            )
        )
    if hints is None:
        gone = [p for p, r in index.items() if r.status != "deleted" and p not in seen]
    else:
        gone = [p for p in unselected if p in index and index[p].status != "deleted"]
    for path in gone:
        changes.append(_deleted(path, index[path].kind, "removed"))
        summary.deleted += 1
    batcher = _Batcher(db, repo.name, summary)
    await batcher.add(changes)

    async def handle(job: FileJob, outcome: FileOutcome) -> None:
        await batcher.add([_to_change(job, outcome, index.get(job.rel_path), summary, None)])

    await _run_jobs(jobs, chunk_config(settings), settings, progress, handle)
    await batcher.flush()


# ---------------------------------------------------------------- commits mode


async def _reconcile_commits(
    db: Database,
    settings: Settings,
    repo: Repo,
    summary: ReconcileSummary,
    progress: Callable[[int, int], None] | None,
) -> str | None:
    """Ingest HEAD's content: a diff against the last ingested commit, else a full tree."""
    head = await anyio.to_thread.run_sync(gitsource.head_commit, repo.root)
    if head is None:
        summary.errors.append(f"{repo.name}: commits mode needs a git repository with a commit")
        log.warning("commits_mode_without_git", repo=repo.name, root=str(repo.root))
        return None
    base = await files_db.get_ingested_commit(db, repo.name)
    if base is not None and await files_db.has_uncommitted_live_files(db, repo.name):
        base = None  # worktree-mode content is in the table: rebuild from the tree once
    if base == head:
        return head
    if base is not None and not await anyio.to_thread.run_sync(
        gitsource.is_ancestor_known, repo.root, base
    ):
        base = None
    entries = await anyio.to_thread.run_sync(gitsource.list_tree, repo.root, head)
    by_path = {e.path: e for e in entries}
    if base is None:
        touched = {e.path for e in entries}
        index = await files_db.load_file_index(db, repo.name)
        touched |= {p for p, r in index.items() if r.status != "deleted"}
    else:
        diff = await anyio.to_thread.run_sync(gitsource.changed_paths, repo.root, base, head)
        touched = set(diff)
        index = await files_db.load_file_index(db, repo.name, sorted(touched))
    changes: list[files_db.FileChange] = []
    wanted: list[tuple[str, str, gitsource.TreeEntry]] = []
    for path in sorted(touched):
        kind = repo.classify(path)
        record = index.get(path)
        entry = by_path.get(path)
        if kind is None:
            if record is not None and record.status != "deleted":
                changes.append(_deleted(path, record.kind, "removed", head))
                summary.deleted += 1
            continue
        if entry is None:
            if record is not None and record.status != "deleted":
                changes.append(_deleted(path, record.kind, "removed", head))
                summary.deleted += 1
            continue
        summary.files_seen += 1
        if entry.object_type != "blob" or entry.mode == "120000":
            reason = "symlink" if entry.mode == "120000" else f"not_a_blob:{entry.object_type}"
            changes.append(
                files_db.FileChange(
                    path, "skipped", kind, language_for(path), reason=reason, git_commit=head
                )
            )
            summary.skipped += 1
            continue
        wanted.append((path, kind, entry))
    jobs = await anyio.to_thread.run_sync(
        _git_jobs, repo.root, wanted, index, settings.sources.max_file_bytes
    )
    batcher = _Batcher(db, repo.name, summary)
    await batcher.add(changes)
    for job in [j for j in jobs if j.data is None]:
        # Over the size cap: recorded without reading the blob.
        await batcher.add(
            [
                files_db.FileChange(
                    job.rel_path,
                    "skipped",
                    job.kind,
                    job.language,
                    size=job.size,
                    reason="too_large",
                    git_commit=head,
                )
            ]
        )
        summary.skipped += 1
    parse = [j for j in jobs if j.data is not None]

    async def handle(job: FileJob, outcome: FileOutcome) -> None:
        await batcher.add([_to_change(job, outcome, index.get(job.rel_path), summary, head)])

    await _run_jobs(parse, chunk_config(settings), settings, progress, handle)
    await batcher.flush()
    return head


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


# ---------------------------------------------------------------- shared


def _to_change(
    job: FileJob,
    outcome: FileOutcome,
    record: files_db.FileRecord | None,
    summary: ReconcileSummary,
    commit: str | None,
) -> files_db.FileChange:
    """Map a worker's outcome onto a state change and count it."""
    size = outcome.size if outcome.size is not None else job.size
    mtime = outcome.mtime_ns if outcome.mtime_ns is not None else job.mtime_ns
    base = files_db.FileChange(
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


class _Batcher:
    """Accumulates changes and writes them in bounded transactions."""

    def __init__(self, db: Database, repo: str, summary: ReconcileSummary) -> None:
        self.db, self.repo, self.summary = db, repo, summary
        self.changes: list[files_db.FileChange] = []
        self.chars = 0

    async def add(self, changes: list[files_db.FileChange]) -> None:
        for change in changes:
            self.changes.append(change)
            self.chars += sum(len(c[3]) for c in change.chunks)
        if len(self.changes) >= FLUSH_FILES or self.chars >= FLUSH_CHARS:
            await self.flush()

    async def flush(self) -> None:
        if not self.changes:
            return
        result = await files_db.apply_changes(self.db, self.repo, self.changes)
        self.summary.chunks_added += result.chunks_added
        self.summary.chunks_retired += result.chunks_retired
        self.summary.pairs_retired += result.pairs_retired
        self.changes, self.chars = [], 0


def _worker_count(settings: Settings, n_jobs: int) -> int:
    configured = settings.chunking.workers or os.cpu_count() or 1
    return max(1, min(configured, math.ceil(n_jobs / 8)))


async def _run_jobs(
    jobs: list[FileJob],
    config: ChunkConfig,
    settings: Settings,
    progress: Callable[[int, int], None] | None,
    handle: Callable[[FileJob, FileOutcome], Awaitable[None]],
) -> None:
    """Process jobs in a spawn pool (or a worker thread for small batches), handing each
    outcome to `handle` on the event loop as it arrives (DB writes overlap parsing)."""
    total = len(jobs)
    if progress is not None:
        progress(0, total)
    if not jobs:
        return
    workers = _worker_count(settings, total)
    if total < POOL_MIN_FILES or workers == 1:
        for done, job in enumerate(jobs, start=1):
            outcome = await anyio.to_thread.run_sync(process_file, job, config)
            await handle(job, outcome)
            if progress is not None:
                progress(done, total)
        return
    send, receive = anyio.create_memory_object_stream[tuple[FileJob, FileOutcome]](64)
    delivered = 0

    def produce() -> None:
        nonlocal delivered
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            try:
                chunksize = max(1, min(16, total // (workers * 8)))
                results = pool.map(partial(process_file, config=config), jobs, chunksize=chunksize)
                for job, outcome in zip(jobs, results, strict=True):
                    anyio.from_thread.run(send.send, (job, outcome))
                    delivered += 1
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass  # the consumer stopped (error or cancellation): stop feeding it
            except BrokenProcessPool:
                # A worker died (OOM killer, crash): finish the rest in-process below.
                log.warning("parse_pool_broken", done=delivered, total=total)
            finally:
                pool.shutdown(cancel_futures=True)
                anyio.from_thread.run(send.aclose)

    done = 0
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(anyio.to_thread.run_sync, produce, abandon_on_cancel=False))
        async with receive:
            async for job, outcome in receive:
                await handle(job, outcome)
                done += 1
                if progress is not None:
                    progress(done, total)
    for job in jobs[delivered:]:
        outcome = await anyio.to_thread.run_sync(process_file, job, config)
        await handle(job, outcome)
        done += 1
        if progress is not None:
            progress(done, total)
