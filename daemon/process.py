"""The daemon process: one object that owns its parts, wires them here, runs them in one loop.

The parts, each in its own module with a narrow interface:

- `Reconciler` (reconciler.py): watcher hints and periodic reconciles, then queued jobs;
- `GenerationSupervisor` (generation.py): the generation service, restarted and drained;
- `TrainingScheduler` (training_scheduler.py): retrains on threshold or request, coalesced;
- `StatusPublisher` (status_publisher.py): /status stats and systemd STATUS= lines;
- `SignalRouter` (signal_router.py): which signal means drain, hurry, reload or retrain;
- `Watchdog` (watchdog.py): systemd WATCHDOG=1 pings from the event loop;
- `ServeComponent` (serve_component.py): the [serve] endpoint, when enabled.

Each part gets only what it needs: the database, the settings provider (`LiveSettings`),
the counters it records into, and callbacks for what it tells the others. Only this module
knows every part; the drain and the reload, which involve several, are written here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.lowlevel
import structlog

from daemon.components import Components, real_components
from daemon.config import ConfigError
from daemon.context import AppContext
from daemon.counters import DaemonCounters
from daemon.generation import GenerationSupervisor
from daemon.live_settings import LiveSettings
from daemon.pidfile import DaemonAlreadyRunning, PidFile, pidfile_path
from daemon.reconciler import Reconciler
from daemon.serve_component import ServeComponent
from daemon.signal_router import SignalRouter
from daemon.status_publisher import StatusPublisher
from daemon.status_server import StatusServer
from daemon.systemd_notify import Notifier
from daemon.training_scheduler import TrainingScheduler
from daemon.watchdog import Watchdog
from pipeline.settings import Settings
from state.db import Database, open_db

__all__ = ["Daemon", "run_daemon"]

log = structlog.get_logger(__name__)


def run_daemon(app: AppContext) -> int:
    """Run the daemon until SIGTERM/SIGINT; returns the process exit code."""
    daemon = Daemon(app.settings, app.config_path, real_components())
    return anyio.run(daemon.run, backend="asyncio")


@dataclass(frozen=True)
class Parts:
    """Everything the daemon runs, built by `Daemon._wire` once the event loop runs."""

    reconciler: Reconciler
    generation: GenerationSupervisor
    scheduler: TrainingScheduler
    publisher: StatusPublisher
    signals: SignalRouter
    watchdog: Watchdog
    serve: ServeComponent | None


class Daemon:
    """The long-running process; see README "Running the daemon" for its lifecycle."""

    # Made in `_run_locked`: the parts and scopes hold anyio primitives (they need the loop).
    _parts: Parts
    _main_scope: anyio.CancelScope
    _work_scope: anyio.CancelScope

    def __init__(
        self,
        settings: Settings,
        config_path: Path | None,
        components: Components,
        notifier: Notifier | None = None,
    ) -> None:
        self.settings = LiveSettings(settings, config_path)
        self.components = components
        self.notifier = notifier or Notifier()
        self.counters = DaemonCounters()
        self.phase = "starting"
        self._started_mono = time.monotonic()
        self._exit_code = 0

    async def run(self) -> int:
        """Hold the pidfile, open the database, run every part, drain on a signal."""
        settings = self.settings()
        try:
            with PidFile(pidfile_path(settings), pointer_dir=settings.paths.state_dir):
                return await self._run_locked()
        except DaemonAlreadyRunning as exc:
            log.error("daemon_already_running", error=str(exc))
            return 1
        finally:
            self.notifier.close()

    async def _run_locked(self) -> int:
        settings = self.settings()
        db = await open_db(settings.paths.db_path)
        # A second connection for status reads: it never sees a half-done write transaction.
        status_db = await open_db(settings.paths.db_path)
        self._parts = self._wire(db)
        server = StatusServer(
            settings.daemon.status_listen,
            lambda: self.components.snapshot(status_db),
            self._parts.publisher.stats,
            settings.daemon.allowed_hosts,
        )
        try:
            await server.start()
        except (OSError, ValueError) as exc:
            log.error("status_server_failed", listen=server.listen, error=str(exc))
            await status_db.close()
            await db.close()
            return 1
        log.info("daemon_starting", config=str(self.settings.config_path), mode=settings.watch.mode)
        try:
            await self._run_parts()
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

    def _wire(self, db: Database) -> Parts:
        """Build every part and connect them: the one place that knows them all."""
        c = self.components
        generation = GenerationSupervisor(db, self.settings, c.generation, self.counters)
        scheduler = TrainingScheduler(db, self.settings, c.retrain)

        def reconciled(new_jobs: int) -> None:
            if new_jobs:
                generation.wake()
            scheduler.poke()

        reconciler = Reconciler(
            db,
            self.settings,
            self.counters,
            discover_repos=c.discover_repos,
            reconcile=c.reconcile,
            ensure_jobs=c.ensure_jobs,
            on_reconciled=reconciled,
        )
        serve = None
        if self.settings().serve.enabled:
            serve = ServeComponent(db, self.settings, self.counters)
        publisher = StatusPublisher(
            self.notifier,
            self.settings,
            self.counters,
            config_path=self.settings.config_path,
            phase=lambda: self.phase,
            repos=lambda: reconciler.repos,
            generation=generation,
            scheduler=scheduler,
            serve=serve,
            started_mono=self._started_mono,
        )
        signals = SignalRouter(
            drain=self._drain,
            hurry=generation.hurry,
            reload=self._reload,
            retrain=lambda: scheduler.request("signal"),
        )
        watchdog = Watchdog(self.notifier)
        return Parts(reconciler, generation, scheduler, publisher, signals, watchdog, serve)

    async def _run_parts(self) -> None:
        p = self._parts
        self._work_scope = anyio.CancelScope()
        async with anyio.create_task_group() as tg:
            self._main_scope = tg.cancel_scope
            tg.start_soon(p.signals.run)
            tg.start_soon(p.watchdog.run)
            tg.start_soon(p.generation.run)
            tg.start_soon(self._work)
            if p.serve is not None:
                tg.start_soon(p.serve.run)

    async def _work(self) -> None:
        """Startup (first reconcile, READY=1), then the steady state; cancelled by a drain."""
        p = self._parts
        with self._work_scope:
            async with anyio.create_task_group() as tg:
                p.reconciler.discover()
                tg.start_soon(p.reconciler.watch_forever)
                # Let the watcher register its inotify watches before the first scan, so an
                # edit made during the scan is still seen.
                for _ in range(3):
                    await anyio.lowlevel.checkpoint()
                await p.reconciler.reconcile(None, None, reason="startup")
                self.phase = "running"
                self.notifier.ready(p.publisher.status_line())
                log.info("daemon_ready", repos=p.reconciler.repos)
                tg.start_soon(p.scheduler.serve)
                tg.start_soon(p.reconciler.reconcile_periodically)
                tg.start_soon(p.publisher.publish_forever)

    async def _drain(self, signal_name: str) -> None:
        """Stop claiming, let in-flight generation finish (bounded), stop everything else."""
        p = self._parts
        self.phase = "draining"
        timeout_s = self.settings().daemon.drain_timeout_s
        log.info("drain_started", signal=signal_name, timeout_s=timeout_s)
        self.notifier.stopping()
        p.generation.stop_claiming()
        p.reconciler.stop_watching()
        # Watcher, reconciles, scheduler (cancelling a retrain kills its process group).
        self._work_scope.cancel()
        await p.generation.finish(timeout_s)
        log.info("drain_finished")
        self._main_scope.cancel()

    async def _reload(self) -> bool:
        """SIGHUP: re-read the config; a broken file keeps the old settings (and says why)."""
        p = self._parts
        self.notifier.reloading()
        try:
            changed = self.settings.reload()
        except ConfigError as exc:
            self.counters.add("reload_errors")
            self.counters.note("reload_error", str(exc))
            log.error("config_reload_failed", kept="previous configuration", problems=exc.problems)
            self.notifier.ready(f"config reload failed, running on previous config: {exc}")
            return False
        self.counters.add("reloads")
        self.counters.forget("reload_error")
        if {"sources", "watch"} & set(changed):
            p.reconciler.sources_changed()
        if "generator" in changed:
            p.generation.restart()
        p.scheduler.poke()
        self.notifier.ready(p.publisher.status_line())
        return True
