"""The daemon's shared state: settings in force, counters, tasks' handles and loop primitives."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import anyio

from daemon.components import Components, GenerationLike
from daemon.context import AppContext
from daemon.notify import Notifier
from daemon.scheduler import TrainingScheduler
from daemon.watcher import WatchedRepo
from pipeline.settings import Settings
from state.db import Database

__all__ = ["DaemonState"]


class DaemonState:
    """State every part of the daemon reads; the parts are layered on it as subclasses."""

    # Made in `Daemon._run_locked`: anyio primitives need the running loop.
    db: Database
    _reconcile_lock: anyio.Lock
    _gen_scope: anyio.CancelScope
    _gen_done: anyio.Event
    _work_scope: anyio.CancelScope
    _drain_hurry: anyio.Event
    _watch_stop: anyio.Event
    _gen_backoff: anyio.CancelScope

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
        self._model_server: Any = None  # pipeline.ship.serve.ModelServer when [serve] enabled
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
