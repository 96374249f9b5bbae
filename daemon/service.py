"""The daemon: one anyio task group for watcher, reconciles, generation, training and status."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import structlog

from daemon.components import Components, GenerationLike, real_components
from daemon.context import AppContext
from daemon.pidfile import DaemonAlreadyRunning, PidFile, pidfile_path
from daemon.scheduler import TrainingScheduler
from daemon.signals import SignalHandling
from daemon.status_server import StatusServer
from state.db import open_db

__all__ = ["Components", "Daemon", "GenerationLike", "real_components", "run_daemon"]

log = structlog.get_logger(__name__)


def run_daemon(app: AppContext) -> int:
    """Run the daemon until SIGTERM/SIGINT; returns the process exit code."""
    daemon = Daemon(app, real_components())
    return anyio.run(daemon.run, backend="asyncio")


class Daemon(SignalHandling):
    """The long-running process; see README "Running the daemon" for its lifecycle.

    The layers it builds on, each its own module: `DaemonState` (daemon_state.py),
    `Reconciling` (reconciling.py), `StatusPublishing` (status_publish.py) and
    `SignalHandling` (signals.py); this class assembles them in one task group.
    """

    async def run(self) -> int:
        """Hold the pidfile, open the database, run every task, drain on a signal."""
        try:
            pidfile = PidFile(
                pidfile_path(self.settings), pointer_dir=self.settings.paths.state_dir
            )
            with pidfile:
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
                if self.settings.serve.enabled:
                    tg.start_soon(self._serve_model)
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

    async def _serve_model(self) -> None:
        """The [serve] component: `doctune serve` inside the daemon, following registrations."""
        from pipeline.ship.serve import ModelServer, ServeError, publish_serve_state

        db = self.db
        self._model_server = ModelServer(
            self.settings, publish=lambda info: publish_serve_state(db, info)
        )
        try:
            await self._model_server.serve()
        except ServeError as exc:
            # The rest of the daemon keeps working; status and the log say why nothing serves.
            log.error("serve_failed", error=str(exc))
            self._last["serve_error"] = str(exc)

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
