"""Keeping the database in step with the repositories: watcher batches and periodic reconciles."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import anyio
import structlog

from daemon.daemon_state import DaemonState
from daemon.watcher import RepoChanges, watch_repos

__all__ = ["Reconciling"]

log = structlog.get_logger(__name__)


class Reconciling(DaemonState):
    """Watches the repositories and reconciles (then queues jobs) on change and on a timer."""

    async def _watch_forever(self) -> None:
        while not self._draining:
            # Stopping through watchfiles' stop event (not cancellation) returns its worker
            # thread at once; a cancelled thread would linger until the notify timeout.
            self._watch_stop = anyio.Event()
            try:
                await watch_repos(
                    self._repos,
                    self.settings,
                    self._on_changes,
                    stop_event=self._watch_stop,
                    force_polling=self._force_polling,
                )
            except Exception:
                # Typically inotify limits (fs.inotify.max_user_watches): polling still works.
                log.exception("watcher_failed", retry_in_s=5, next_try="polling")
                self._force_polling = True
                self._counters["watch_failures"] += 1
                with anyio.move_on_after(5):
                    await self._watch_stop.wait()

    def _restart_watcher(self) -> None:
        # Restarting from inside the watcher's own callback would cut the batch short; then
        # the restart waits until the batch is handled.
        if self._in_on_changes:
            self._watch_restart_pending = True
        else:
            self._watch_stop.set()

    async def _on_changes(self, batch: list[RepoChanges]) -> None:
        self._counters["watch_batches"] += 1
        self._last["change_at"] = time.time()
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
                if change.repo not in {r.name for r in self._repos}:
                    log.info("repo_gone", repo=change.repo)
                    continue
                await self._reconcile([change.repo], None, reason=change.reason or "new_repo")
            elif change.rescan:
                self._counters["watch_rescans"] += 1
                await self._reconcile([change.repo], None, reason=change.reason or "rescan")
            else:
                self._counters["watch_paths"] += len(change.paths)
                paths = {change.repo: sorted(change.paths)}
                await self._reconcile([change.repo], paths, reason="watch")

    async def _periodic_reconcile(self) -> None:
        while True:
            await anyio.sleep(self.settings.watch.reconcile_interval_s)
            self._rediscover()
            await self._reconcile(None, None, reason="periodic")

    def _rediscover(self) -> None:
        repos = list(self.components.discover_repos(self.settings))
        if [(r.name, r.root) for r in repos] != [(r.name, r.root) for r in self._repos]:
            log.info("repos_changed", repos=[r.name for r in repos])
            self._repos = repos
            self._restart_watcher()

    async def _reconcile(
        self, repos: list[str] | None, paths: dict[str, list[str]] | None, *, reason: str
    ) -> None:
        """Reconcile (serialised), then queue jobs for new chunks and wake the workers."""
        async with self._reconcile_lock:
            started = time.monotonic()
            try:
                summary = await self.components.reconcile(
                    self.db, self.settings, repos=repos, paths=paths
                )
                new_jobs = await self.components.ensure_jobs(self.db, self.settings.generator)
            except Exception as exc:
                self._counters["reconcile_errors"] += 1
                self._last["reconcile_error"] = f"{type(exc).__name__}: {exc}"
                log.exception("reconcile_failed", reason=reason, repos=repos)
                return
        self._counters["reconciles"] += 1
        self._counters["new_jobs"] += new_jobs
        self._last["reconcile"] = {
            "reason": reason,
            "repos": repos,
            "at": time.time(),
            "duration_s": round(time.monotonic() - started, 4),
            "summary": _jsonable(summary),
        }
        log.info(
            "reconcile_finished",
            reason=reason,
            repos=repos,
            paths=sum(len(p) for p in paths.values()) if paths else None,
            new_jobs=new_jobs,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )
        if new_jobs and self._gen is not None:
            self._gen.wake()
        if self._scheduler is not None:
            self._scheduler.poke()


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
