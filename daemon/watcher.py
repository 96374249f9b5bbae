"""File-system watching: watchfiles events become per-repo reconcile hints (never facts)."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import anyio
import structlog
import watchfiles
from watchfiles import Change

from pipeline.settings import ALWAYS_EXCLUDED_DIRS, Settings

__all__ = ["RepoChanges", "RepoFilter", "WatchedRepo", "watch_repos", "watch_roots"]

log = structlog.get_logger(__name__)

# Paths under .git whose change means HEAD or a branch moved.
_GIT_REF_FILES = (".git/HEAD", ".git/packed-refs")
_GIT_REF_DIRS = (".git/refs/",)
_RESCAN_REASONS = {
    "ref": "git_ref_changed",
    "dir": "directory_changed",
    "ignore": "gitignore_changed",
}
_SKIP_DIR_PARTS = frozenset(d for d in ALWAYS_EXCLUDED_DIRS if d != ".git")


class WatchedRepo(Protocol):
    """What the watcher needs from the ingest team's `Repo`."""

    @property
    def name(self) -> str: ...

    @property
    def root(self) -> Path: ...

    def matches(self, rel_path: str) -> Literal["doc", "code"] | None: ...


@dataclass
class RepoChanges:
    """One repo's share of an event batch: paths to re-check, or a full rescan."""

    repo: str
    paths: set[str] = field(default_factory=set)
    rescan: bool = False
    reason: str | None = None


class RepoFilter:
    """watchfiles filter: keeps source files a repo cares about and git ref moves, nothing else.

    In `commits` mode worktree edits are irrelevant (content comes from HEAD), so only
    ref changes pass. Doctune's own output directories never pass, even inside a repo.
    """

    def __init__(
        self,
        repos: Sequence[WatchedRepo],
        mode: Literal["worktree", "commits"],
        exclude_dirs: Iterable[Path] = (),
        sources_dir: Path | None = None,
    ) -> None:
        self._sources = None if sources_dir is None else str(sources_dir.resolve())
        # Longest root first so a nested repo wins over the repo that contains it.
        self._roots = sorted(
            ((str(r.root.resolve()), r) for r in repos), key=lambda pair: -len(pair[0])
        )
        self._mode = mode
        self._excluded = tuple(str(p.resolve()) + os.sep for p in exclude_dirs)

    def locate(self, path: str) -> tuple[WatchedRepo, str] | None:
        """(repo, POSIX path relative to its root) for an absolute event path."""
        for root, repo in self._roots:
            if path.startswith(root + os.sep):
                return repo, Path(path[len(root) + 1 :]).as_posix()
        return None

    def classify(self, path: str) -> Literal["file", "ref", "dir", "ignore", "new_repo"] | None:
        """Why an event path matters, or None when it does not."""
        if path.startswith(self._excluded) or (path + os.sep).startswith(self._excluded):
            return None
        found = self.locate(path)
        if found is None:
            return "new_repo" if self._is_new_repo(path) else None
        repo, rel = found
        if rel.startswith(".git/") or rel == ".git":
            return "ref" if _is_ref_path(rel) else None
        if self._mode == "commits":
            return None
        if _SKIP_DIR_PARTS.intersection(rel.split("/")):
            return None
        if rel == ".gitignore" or rel.endswith("/.gitignore"):
            return "ignore"  # selection rules changed: every path may be in or out now
        if repo.matches(rel) is not None:
            return "file"
        # A directory appearing (mv, checkout) hides the files moved with it: rescan.
        return "dir" if os.path.isdir(path) else None

    def _is_new_repo(self, path: str) -> bool:
        """A new directory right under `sources.dir` is a repository nobody watches yet."""
        head, name = os.path.split(path)
        return (
            self._sources is not None
            and head == self._sources
            and not name.startswith(".")
            and os.path.isdir(path)
        )

    def __call__(self, change: Change, path: str) -> bool:
        return self.classify(path) is not None

    def group(self, changes: Iterable[tuple[Change, str]], max_batch: int) -> list[RepoChanges]:
        """Split a batch per repo; a ref move, a new directory or too many paths ⇒ rescan."""
        by_repo: dict[str, RepoChanges] = {}
        for _change, path in changes:
            kind = self.classify(path)
            if kind == "new_repo":
                name = os.path.basename(path)
                by_repo[name] = RepoChanges(repo=name, rescan=True, reason="new_repo")
                continue
            found = self.locate(path)
            if kind is None or found is None:
                continue
            repo, rel = found
            entry = by_repo.setdefault(repo.name, RepoChanges(repo=repo.name))
            if kind == "file":
                entry.paths.add(rel)
                continue
            if kind == "ignore":
                forget = getattr(repo, "forget_ignores", None)
                if forget is not None:
                    forget()  # the watcher's own matcher must see the new rules too
            if not entry.rescan:
                entry.rescan = True
                entry.reason = _RESCAN_REASONS[kind]
        for entry in by_repo.values():
            if not entry.rescan and len(entry.paths) > max_batch:
                entry.rescan, entry.reason = True, f"batch_over_{max_batch}"
            if entry.rescan:
                entry.paths.clear()
        return list(by_repo.values())


def _is_ref_path(rel: str) -> bool:
    if rel.endswith(".lock"):
        return False
    return rel in _GIT_REF_FILES or rel.startswith(_GIT_REF_DIRS)


def _sources_dir(settings: Settings) -> Path | None:
    src = settings.sources.dir
    return src if src is not None and src.is_dir() else None


def watch_roots(repos: Sequence[WatchedRepo], settings: Settings) -> list[Path]:
    """`sources.dir` (so new repos are noticed) plus every repo root outside it, deduplicated."""
    roots: list[Path] = []
    src = _sources_dir(settings)
    if src is not None:
        roots.append(src.resolve())
    for repo in repos:
        root = repo.root.resolve()
        if root.is_dir() and not any(root == r or root.is_relative_to(r) for r in roots):
            roots.append(root)
    return roots


def output_dirs(settings: Settings) -> list[Path]:
    """Doctune's own write locations, which must never feed back into ingestion."""
    dirs = [settings.paths.state_dir, settings.paths.models_dir]
    if settings.paths.runtime_dir is not None:
        dirs.append(settings.paths.runtime_dir)
    return dirs


async def watch_repos(
    repos: Sequence[WatchedRepo],
    settings: Settings,
    on_changes: Callable[[list[RepoChanges]], Awaitable[None]],
    *,
    stop_event: anyio.Event | None = None,
    force_polling: bool | None = None,
) -> None:
    """Watch every repo root and hand each batch to `on_changes` until `stop_event` is set
    (prefer it to cancellation: it also ends the watch thread at once).

    Batches that arrive while `on_changes` runs are merged by watchfiles into the next
    one, so a slow reconcile naturally coalesces a burst of saves.
    """
    roots = watch_roots(repos, settings)
    if not roots:
        log.warning("watch_no_roots", repos=[r.name for r in repos])
        if stop_event is None:
            await anyio.sleep_forever()
        else:
            await stop_event.wait()
        return
    watch_filter = RepoFilter(
        repos, settings.watch.mode, output_dirs(settings), sources_dir=_sources_dir(settings)
    )
    log.info("watch_started", roots=[str(r) for r in roots], mode=settings.watch.mode)
    async for batch in watchfiles.awatch(
        *roots,
        watch_filter=watch_filter,
        debounce=max(settings.watch.debounce_ms, 1),
        step=min(50, max(settings.watch.debounce_ms, 1)),
        stop_event=stop_event,
        ignore_permission_denied=True,
        force_polling=force_polling,
    ):
        grouped = watch_filter.group(batch, settings.watch.max_batch)
        if grouped:
            log.debug(
                "watch_batch",
                events=len(batch),
                repos={
                    g.repo: ("rescan:" + str(g.reason)) if g.rescan else len(g.paths)
                    for g in grouped
                },
            )
            await on_changes(grouped)
