"""The reconciler: keeps the database in step with the repositories, on change and on a timer."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import structlog

from daemon.counters import DaemonCounters
from daemon.watcher import RepoChanges, WatchedRepo, watch_repos
from pipeline.settings import GeneratorSettings, Settings
from state.db import Database

__all__ = ["Reconciler"]

log = structlog.get_logger(__name__)


class Reconciler:
    """Watches the repositories and reconciles (then queues jobs) on change and on a timer.

    Watcher batches are hints: each becomes a reconcile of the repos (or paths) it names.
    Reconciles are serialised; after each, `on_reconciled(new_jobs)` lets the daemon wake
    its workers. Made inside the running event loop (it holds anyio primitives).
    """

    def __init__(
        self,
        db: Database,
        settings: Callable[[], Settings],
        counters: DaemonCounters,
        *,
        discover_repos: Callable[[Settings], Sequence[WatchedRepo]],
        reconcile: Callable[..., Awaitable[Any]],
        ensure_jobs: Callable[[Database, GeneratorSettings], Awaitable[int]],
        on_reconciled: Callable[[int], None],
    ) -> None:
        self._db = db
        self._settings = settings
        self._counters = counters
        self._discover_repos = discover_repos
        self._reconcile_fn = reconcile
        self._ensure_jobs = ensure_jobs
        self._on_reconciled = on_reconciled
        self._repos: Sequence[WatchedRepo] = []
        self._lock = anyio.Lock()
        self._watch_stop = anyio.Event()
        self._stopped = False
        self._force_polling: bool | None = None
        self._in_on_changes = False
        self._watch_restart_pending = False

    @property
    def repos(self) -> list[str]:
        """Names of the repositories being watched."""
        return [r.name for r in self._repos]

    def discover(self) -> None:
        """Find the repositories at startup (a warning when there are none)."""
        self._repos = list(self._discover_repos(self._settings()))
        if not self._repos:
            log.warning(
                "no_repositories",
                sources_dir=str(self._settings().sources.dir),
                hint="add a repository under sources.dir or a [[sources.repo]] entry",
            )

    def sources_changed(self) -> None:
        """[sources] or [watch] were reloaded: look for repos again and restart the watcher."""
        self._rediscover()
        self._restart_watcher()

    def stop_watching(self) -> None:
        """The drain: let the watcher return (its thread too) and not start again."""
        self._stopped = True
        self._watch_stop.set()

    async def watch_forever(self) -> None:
        """Run the watcher until `stop_watching()`; restart it when the repos change."""
        while not self._stopped:
            # Stopping through watchfiles' stop event (not cancellation) returns its worker
            # thread at once; a cancelled thread would linger until the notify timeout.
            self._watch_stop = anyio.Event()
            try:
                await watch_repos(
                    self._repos,
                    self._settings(),
                    self._on_changes,
                    stop_event=self._watch_stop,
                    force_polling=self._force_polling,
                )
            except Exception:
                # Typically inotify limits (fs.inotify.max_user_watches): polling still works.
                log.exception("watcher_failed", retry_in_s=5, next_try="polling")
                self._force_polling = True
                self._counters.add("watch_failures")
                with anyio.move_on_after(5):
                    await self._watch_stop.wait()

    async def reconcile_periodically(self) -> None:
        """Every `watch.reconcile_interval_s`: look for repos, reconcile all of them."""
        while True:
            await anyio.sleep(self._settings().watch.reconcile_interval_s)
            self._rediscover()
            await self.reconcile(None, None, reason="periodic")

    async def reconcile(
        self, repos: list[str] | None, paths: dict[str, list[str]] | None, *, reason: str
    ) -> None:
        """Reconcile (serialised), then queue jobs for new chunks; failures are noted."""
        async with self._lock:
            started = time.monotonic()
            try:
                summary = await self._reconcile_fn(
                    self._db, self._settings(), repos=repos, paths=paths
                )
                new_jobs = await self._ensure_jobs(self._db, self._settings().generator)
            except Exception as exc:
                self._counters.add("reconcile_errors")
                self._counters.note("reconcile_error", f"{type(exc).__name__}: {exc}")
                log.exception("reconcile_failed", reason=reason, repos=repos)
                return
        duration_s = time.monotonic() - started
        self._counters.add("reconciles")
        self._counters.add("new_jobs", new_jobs)
        self._counters.note(
            "reconcile",
            {
                "reason": reason,
                "repos": repos,
                "at": time.time(),
                "duration_s": round(duration_s, 4),
                "summary": _jsonable(summary),
            },
        )
        log.info(
            "reconcile_finished",
            reason=reason,
            repos=repos,
            paths=sum(len(p) for p in paths.values()) if paths else None,
            new_jobs=new_jobs,
            duration_ms=round(duration_s * 1000, 1),
        )
        self._on_reconciled(new_jobs)

    def _restart_watcher(self) -> None:
        # Restarting from inside the watcher's own callback would cut the batch short; then
        # the restart waits until the batch is handled.
        if self._in_on_changes:
            self._watch_restart_pending = True
        else:
            self._watch_stop.set()

    async def _on_changes(self, batch: list[RepoChanges]) -> None:
        self._counters.add("watch_batches")
        self._counters.note("change_at", time.time())
        self._in_on_changes = True
        try:
            await self._handle_batch(batch)
        finally:
            self._in_on_changes = False
        if self._watch_restart_pending:
            self._watch_restart_pending = False
            self._restart_watcher()

    async def _handle_batch(self, batch: list[RepoChanges]) -> None:
        for change in batch:
            roots = {r.name: r.root for r in self._repos}
            if change.repo not in roots or not roots[change.repo].is_dir():
                self._rediscover()  # a repo appeared or went away
                if change.repo not in self.repos:
                    log.info("repo_gone", repo=change.repo)
                    continue
                await self.reconcile([change.repo], None, reason=change.reason or "new_repo")
            elif change.rescan:
                self._counters.add("watch_rescans")
                await self.reconcile([change.repo], None, reason=change.reason or "rescan")
            else:
                self._counters.add("watch_paths", len(change.paths))
                paths = {change.repo: sorted(change.paths)}
                await self.reconcile([change.repo], paths, reason="watch")

    def _rediscover(self) -> None:
        repos = list(self._discover_repos(self._settings()))
        if [(r.name, r.root) for r in repos] != [(r.name, r.root) for r in self._repos]:
            log.info("repos_changed", repos=[r.name for r in repos])
            self._repos = repos
            self._restart_watcher()


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
