"""Worktree mode: stat-only fast path, content-hash second chance, watcher hints."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import anyio

from pipeline.ingest.batch import Batcher, ReconcileSummary, deleted_change, to_change, utf8_name
from pipeline.ingest.parse import FileJob, FileOutcome
from pipeline.ingest.parse_pool import chunk_config, run_jobs
from pipeline.ingest.sources import Candidate, Repo, language_for, walk_repo
from pipeline.settings import Settings
from state import file_changes
from state import files as files_db
from state.db import Database

__all__ = ["clean_hint", "reconcile_worktree"]

# Skip reasons worth retrying even when size and mtime did not change.
_TRANSIENT_REASONS = ("changed_during_read", "read_error", "open_error", "stat_error", "vanished")


def _fingerprint(root: Path, rel: str, st: os.stat_result | None) -> os.stat_result | None:
    """lstat for most paths; the target's stat for an in-repo symlink (its edits count)."""
    if st is not None and stat.S_ISLNK(st.st_mode):
        try:
            return os.stat(root / rel)
        except OSError:
            return st
    return st


def clean_hint(raw: str) -> str | None:
    """A repo-relative POSIX path from a watcher hint, or None when unusable."""
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
        rel = clean_hint(raw)
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


async def reconcile_worktree(
    db: Database,
    settings: Settings,
    repo: Repo,
    hints: list[str] | None,
    summary: ReconcileSummary,
    progress: Callable[[int, int], None] | None,
    force: bool = False,
) -> None:
    """Reconcile one repo from its working tree (all paths, or only `hints`)."""
    if hints is not None and any(
        (clean_hint(h) or "").split("/")[-1] == ".gitignore" for h in hints
    ):
        # Selection rules changed: every path may be in or out now.
        repo.forget_ignores()
        hints = None
    candidates, unselected, index = await _candidates(db, repo, hints)
    changes, jobs, seen = _plan(repo, candidates, index, settings, summary, force)
    if hints is None:
        gone = [p for p, r in index.items() if r.status != "deleted" and p not in seen]
    else:
        gone = [p for p in unselected if p in index and index[p].status != "deleted"]
    changes += [deleted_change(path, index[path].kind, "removed") for path in gone]
    summary.deleted += len(gone)
    batcher = Batcher(db, repo.name, summary)
    await batcher.add(changes)

    async def handle(job: FileJob, outcome: FileOutcome) -> None:
        await batcher.add([to_change(job, outcome, index.get(job.rel_path), summary, None)])

    await run_jobs(jobs, chunk_config(settings), settings, progress, handle)
    await batcher.flush()


async def _candidates(
    db: Database, repo: Repo, hints: list[str] | None
) -> tuple[list[Candidate], set[str], dict[str, files_db.FileRecord]]:
    """Selected paths (the whole tree, or the hinted ones), hinted paths no longer
    selected, and the stored rows of both."""
    if hints is None:
        candidates = await anyio.to_thread.run_sync(lambda: list(walk_repo(repo)))
        return candidates, set(), await files_db.load_file_index(db, repo.name)
    candidates, unselected = await _hinted_candidates(db, repo, hints)
    index = await files_db.load_file_index(
        db, repo.name, [c.rel_path for c in candidates] + sorted(unselected)
    )
    return candidates, unselected, index


def _plan(
    repo: Repo,
    candidates: list[Candidate],
    index: dict[str, files_db.FileRecord],
    settings: Settings,
    summary: ReconcileSummary,
    force: bool,
) -> tuple[list[file_changes.FileChange], list[FileJob], set[str]]:
    """What each candidate needs: a change known from its stat alone, a file job (read,
    and parse unless its hash is unchanged), or nothing; plus every path seen."""
    changes: list[file_changes.FileChange] = []
    jobs: list[FileJob] = []
    seen: set[str] = set()
    for cand in candidates:
        if not utf8_name(cand.rel_path):
            seen.add(_undecodable(cand, index, changes, summary))
            continue
        seen.add(cand.rel_path)
        record = index.get(cand.rel_path)
        st = _fingerprint(repo.root, cand.rel_path, cand.st)
        if st is None:
            if record is not None and record.status != "deleted":
                changes.append(deleted_change(cand.rel_path, record.kind, "vanished"))
                summary.deleted += 1
            continue
        summary.files_seen += 1
        if not force and _unchanged(record, cand.kind, st):
            summary.unchanged += 1
            continue
        live = record is not None and record.status == "live" and not force
        jobs.append(
            FileJob(
                str(repo.root),
                cand.rel_path,
                cand.kind,
                language_for(cand.rel_path),
                settings.sources.max_file_bytes,
                known_hash=record.content_hash if live and record is not None else None,
                size=st.st_size,
                mtime_ns=st.st_mtime_ns,
            )
        )
    return changes, jobs, seen


def _undecodable(
    cand: Candidate,
    index: dict[str, files_db.FileRecord],
    changes: list[file_changes.FileChange],
    summary: ReconcileSummary,
) -> str:
    """A name SQLite TEXT cannot hold: recorded in an escaped form, the file never read.
    Returns the escaped name."""
    shown = cand.rel_path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if shown not in index or index[shown].status != "skipped":
        changes.append(
            file_changes.FileChange(shown, "skipped", cand.kind, reason="undecodable_file_name")
        )
        summary.skipped += 1
    return shown
