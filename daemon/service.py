"""The daemon: one anyio task group for watcher, reconciles, generation, training and status."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import anyio
import anyio.lowlevel
import structlog

from daemon.cli import AppContext
from daemon.config import ConfigError, load_config
from daemon.notify import Notifier
from daemon.pidfile import DaemonAlreadyRunning, PidFile, pidfile_path
from daemon.scheduler import RetrainFn, TrainingScheduler
from daemon.status_server import StatusServer, process_stats
from daemon.watcher import RepoChanges, WatchedRepo, watch_repos
from pipeline.settings import GeneratorSettings, Settings
from state.db import Database, open_db

__all__ = ["Components", "Daemon", "real_components", "run_daemon"]

log = structlog.get_logger(__name__)


class GenerationLike(Protocol):
    """The generation team's `GenerationService` as the daemon drives it."""

    async def serve(self) -> None: ...

    def stop_claiming(self) -> None: ...

    def wake(self) -> None: ...

    def stats(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Components:
    """Everything the daemon drives; `real_components()` wires the real ones, tests may swap."""

    discover_repos: Callable[[Settings], Sequence[WatchedRepo]]
    reconcile: Callable[..., Awaitable[Any]]
    ensure_jobs: Callable[[Database, GeneratorSettings], Awaitable[int]]
    generation: Callable[[Database, Settings], GenerationLike]
    snapshot: Callable[[Database], Awaitable[dict[str, Any]]]
    retrain: RetrainFn | None = None


def real_components() -> Components:
    """The production wiring (imported here so importing this module stays cheap)."""
    from pipeline.generate.jobs import ensure_jobs
    from pipeline.generate.service import GenerationService
    from pipeline.ingest.reconcile import reconcile
    from pipeline.ingest.sources import discover_repos
    from state.status import snapshot

    return Components(
        discover_repos=discover_repos,
        reconcile=reconcile,
        ensure_jobs=ensure_jobs,
        generation=GenerationService,
        snapshot=snapshot,
    )


def run_daemon(app: AppContext) -> int:
    """Run the daemon until SIGTERM/SIGINT; returns the process exit code."""
    daemon = Daemon(app, real_components())
    return anyio.run(daemon.run, backend="asyncio")


class Daemon:
    """The long-running process; see README "Running the daemon" for its lifecycle."""

    def __init__(
        self, app: AppContext, components: Components, notifier: Notifier | None = None
    ) -> None:
        self.app = app
        self.components = components
        self.notifier = notifier or Notifier()
        self._settings = app.settings
        self.phase = "starting"
        self._started_mono = time.monotonic()
        self._exit_code = 0
        self._repos: Sequence[WatchedRepo] = []
        self._gen: GenerationLike | None = None
        self._draining = False
        self._gen_restart = False
        self._in_on_changes = False
        self._force_polling: bool | None = None
        self._watch_restart_pending = False
        self._scheduler: TrainingScheduler | None = None
        self._counters: dict[str, Any] = {
            "reconciles": 0,
            "reconcile_errors": 0,
            "watch_batches": 0,
            "watch_paths": 0,
            "watch_rescans": 0,
            "watch_failures": 0,
            "new_jobs": 0,
            "reloads": 0,
            "reload_errors": 0,
        }
        self._last: dict[str, Any] = {}

    @property
    def settings(self) -> Settings:
        """The settings in force (replaced on a successful SIGHUP reload)."""
        return self._settings

    async def run(self) -> int:
        """Hold the pidfile, open the database, run every task, drain on a signal."""
        try:
            with PidFile(pidfile_path(self.settings)):
                return await self._run_locked()
        except DaemonAlreadyRunning as exc:
            log.error("daemon_already_running", error=str(exc))
            return 1
        finally:
            self.notifier.close()

    async def _run_locked(self) -> int:
        # anyio primitives need the running loop, so they are made here, not in __init__.
        self._reconcile_lock = anyio.Lock()
        self._gen_scope = anyio.CancelScope()
        self._gen_done = anyio.Event()
        self._work_scope = anyio.CancelScope()
        self._drain_hurry = anyio.Event()
        self._watch_stop = anyio.Event()
        self._gen_backoff = anyio.CancelScope()  # cancelled by a drain: no point waiting
        db = await open_db(self.settings.paths.db_path)
        # A second connection for status reads: it never sees a half-done write transaction.
        status_db = await open_db(self.settings.paths.db_path)
        self.db = db
        self._scheduler = TrainingScheduler(db, lambda: self._settings, self.components.retrain)
        server = StatusServer(
            self.settings.daemon.status_listen,
            lambda: self.components.snapshot(status_db),
            self.stats,
            self.settings.daemon.allowed_hosts,
        )
        try:
            await server.start()
        except (OSError, ValueError) as exc:
            log.error("status_server_failed", listen=server.listen, error=str(exc))
            await status_db.close()
            await db.close()
            return 1
        log.info("daemon_starting", config=str(self.app.config_path), mode=self.settings.watch.mode)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._handle_signals, tg.cancel_scope)
                tg.start_soon(self._watchdog)
                tg.start_soon(self._generation_loop)
                tg.start_soon(self._work)
        except Exception:
            # A task died unexpectedly: say so in the log and exit 1 so Restart=on-failure acts.
            log.exception("daemon_crashed")
            self.notifier.stopping()
            self._exit_code = 1
        finally:
            with anyio.CancelScope(shield=True):
                await server.stop()
                await status_db.close()
                await db.close()
        log.info("daemon_stopped", exit_code=self._exit_code)
        return self._exit_code

    # --- startup and steady state -------------------------------------------------------

    async def _work(self) -> None:
        with self._work_scope:
            async with anyio.create_task_group() as tg:
                self._repos = list(self.components.discover_repos(self.settings))
                if not self._repos:
                    log.warning(
                        "no_repositories",
                        sources_dir=str(self.settings.sources.dir),
                        hint="add a repository under sources.dir or a [[sources.repo]] entry",
                    )
                tg.start_soon(self._watch_forever)
                # Let the watcher register its inotify watches before the first scan, so an
                # edit made during the scan is still seen.
                for _ in range(3):
                    await anyio.lowlevel.checkpoint()
                await self._reconcile(None, None, reason="startup")
                self.phase = "running"
                self.notifier.ready(self._status_line())
                log.info("daemon_ready", repos=[r.name for r in self._repos])
                assert self._scheduler is not None
                tg.start_soon(self._scheduler.serve)
                tg.start_soon(self._periodic_reconcile)
                tg.start_soon(self._publish_status)

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

    async def _generation_loop(self) -> None:
        # A reload that changes [generator] stops claiming on the old service; the loop
        # then starts a new one with the new settings.
        with self._gen_scope:
            while not self._draining:
                self._gen_restart = False
                self._gen = self.components.generation(self.db, self.settings)
                await self._gen.serve()
                if not (self._draining or self._gen_restart):
                    # serve() gave up on its own (a fatal generator error): retry, slowly.
                    error = self._gen.stats().get("error")
                    log.error("generation_stopped_unexpectedly", error=error, retry_in_s=30)
                    self._last["generation_error"] = error
                    with self._gen_backoff:
                        await anyio.sleep(30)
        self._gen_done.set()

    async def _publish_status(self) -> None:
        while True:
            self.notifier.status(self._status_line())
            await anyio.sleep(self.settings.daemon.status_interval_s)

    async def _watchdog(self) -> None:
        interval_s = self.notifier.watchdog_interval_s()
        if interval_s is None:
            return
        # Pinged from the event loop itself: a wedged loop stops the pings and systemd restarts us.
        while True:
            self.notifier.watchdog()
            await anyio.sleep(interval_s)

    # --- signals ----------------------------------------------------------------------

    async def _handle_signals(self, main_scope: anyio.CancelScope) -> None:
        wanted = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)
        with anyio.open_signal_receiver(*wanted) as signals:
            async with anyio.create_task_group() as tg:
                async for signum in signals:
                    if signum in (signal.SIGTERM, signal.SIGINT):
                        if self._draining:
                            log.warning("drain_hurried", signal=signal.Signals(signum).name)
                            self._drain_hurry.set()
                        else:
                            tg.start_soon(self._drain, main_scope, signal.Signals(signum).name)
                    elif self._draining:
                        log.info(
                            "signal_ignored_while_draining", signal=signal.Signals(signum).name
                        )
                    elif signum == signal.SIGHUP:
                        await self.reload()
                    elif signum == signal.SIGUSR1 and self._scheduler is not None:
                        self._scheduler.request("signal")

    async def _drain(self, main_scope: anyio.CancelScope, reason: str) -> None:
        """Stop claiming, let in-flight generation finish (bounded), stop everything else."""
        self._draining = True
        self.phase = "draining"
        timeout_s = self.settings.daemon.drain_timeout_s
        log.info("drain_started", signal=reason, timeout_s=timeout_s)
        self.notifier.stopping()
        if self._gen is not None:
            self._gen.stop_claiming()
        self._gen_backoff.cancel()
        self._watch_stop.set()
        # Watcher, reconciles, scheduler (cancelling a retrain kills its process group).
        self._work_scope.cancel()
        with anyio.move_on_after(timeout_s) as waited:
            async with anyio.create_task_group() as tg:

                async def hurry() -> None:
                    await self._drain_hurry.wait()
                    tg.cancel_scope.cancel()

                tg.start_soon(hurry)
                await self._gen_done.wait()
                tg.cancel_scope.cancel()
        if not self._gen_done.is_set():
            # Unfinished requests keep their leases; they expire and the jobs are claimed again.
            why = "timeout" if waited.cancelled_caught else "second signal"
            log.warning("drain_cut_short", reason=why, timeout_s=timeout_s)
            self._gen_scope.cancel()
        log.info("drain_finished")
        main_scope.cancel()

    async def reload(self) -> bool:
        """SIGHUP: re-read the config; a broken file keeps the old settings (and says why)."""
        self.notifier.reloading()
        try:
            new, _ = load_config(self.app.config_path)
        except ConfigError as exc:
            self._counters["reload_errors"] += 1
            self._last["reload_error"] = str(exc)
            log.error("config_reload_failed", kept="previous configuration", problems=exc.problems)
            self.notifier.ready(f"config reload failed, running on previous config: {exc}")
            return False
        old = self._settings
        new = _keep_restart_only(old, new)
        self._settings = new
        self._counters["reloads"] += 1
        self._last.pop("reload_error", None)
        changed = [
            f.name
            for f in dataclasses.fields(Settings)
            if getattr(old, f.name) != getattr(new, f.name)
        ]
        log.info("config_reloaded", changed_sections=changed)
        if old.daemon.log_level != new.daemon.log_level and not os.environ.get("DOCTUNE_LOG_LEVEL"):
            logging.getLogger().setLevel(new.daemon.log_level.upper())
        if {"sources", "watch"} & set(changed):
            self._rediscover()
            self._restart_watcher()
        if "generator" in changed and self._gen is not None:
            self._gen_restart = True
            self._gen.stop_claiming()
        if self._scheduler is not None:
            self._scheduler.poke()
        self.notifier.ready(self._status_line())
        return True

    # --- introspection ----------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Live service counters for /status (under "daemon") and /metrics."""
        generation: dict[str, Any] | None = None
        if self._gen is not None:
            try:
                generation = self._gen.stats()
            except Exception as exc:
                generation = {"error": f"{type(exc).__name__}: {exc}"}
        return {
            "phase": self.phase,
            "config": str(self.app.config_path) if self.app.config_path else None,
            "mode": self.settings.watch.mode,
            "repos": [r.name for r in self._repos],
            "counters": dict(self._counters),
            "last": dict(self._last),
            "generation": generation,
            "scheduler": self._scheduler.stats() if self._scheduler else None,
            "process": process_stats(self._started_mono),
        }

    def _status_line(self) -> str:
        c = self._counters
        line = (
            f"{self.phase}: {len(self._repos)} repos, {c['reconciles']} reconciles, "
            f"{c['watch_paths']} changed paths, {c['new_jobs']} new jobs"
        )
        if self._gen is not None:
            try:
                g = self._gen.stats()
            except Exception:  # stats are best effort; never break the status line
                g = {}
            if "pairs_stored" in g:
                line += f"; generator {g.get('state')}: {g.get('in_flight', 0)} in flight"
                line += f", {g['pairs_stored']} pairs stored, {g.get('dead', 0)} dead"
        if self._scheduler is not None and self._scheduler.running:
            line += ", retraining"
        if "reload_error" in self._last:
            line += ", last reload FAILED (old config kept)"
        return line


def _keep_restart_only(old: Settings, new: Settings) -> Settings:
    """Keep settings that need a restart at their running values, with a warning."""
    if old.paths != new.paths:
        log.warning("reload_needs_restart", key="paths", kept=str(old.paths))
        new = dataclasses.replace(new, paths=old.paths)
    if old.daemon.status_listen != new.daemon.status_listen:
        kept = old.daemon.status_listen
        log.warning("reload_needs_restart", key="daemon.status_listen", kept=kept)
        new = dataclasses.replace(
            new, daemon=dataclasses.replace(new.daemon, status_listen=old.daemon.status_listen)
        )
    return new


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
