"""What the daemon says about itself: the /status and /metrics stats, systemd STATUS= lines."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from daemon.counters import DaemonCounters
from daemon.generation import GenerationSupervisor
from daemon.serve_component import ServeComponent
from daemon.status_server import process_stats
from daemon.systemd_notify import Notifier
from daemon.training_scheduler import TrainingScheduler
from pipeline.settings import Settings

__all__ = ["StatusPublisher"]


class StatusPublisher:
    """Reads the daemon's parts (never changes them) into one stats dict and one line.

    `stats()` is the "daemon" section of /status (and what /metrics exports);
    `status_line()` is what `systemctl status` shows, sent every `daemon.status_interval_s`
    by `publish_forever()`.
    """

    def __init__(
        self,
        notifier: Notifier,
        settings: Callable[[], Settings],
        counters: DaemonCounters,
        *,
        config_path: Path | None,
        phase: Callable[[], str],
        repos: Callable[[], list[str]],
        generation: GenerationSupervisor,
        scheduler: TrainingScheduler,
        serve: ServeComponent | None,
        started_mono: float,
    ) -> None:
        self._notifier = notifier
        self._settings = settings
        self._counters = counters
        self._config_path = config_path
        self._phase = phase
        self._repos = repos
        self._generation = generation
        self._scheduler = scheduler
        self._serve = serve
        self._started_mono = started_mono  # time.monotonic() when the process began

    async def publish_forever(self) -> None:
        """Send the STATUS= line every `daemon.status_interval_s` until cancelled."""
        while True:
            self._notifier.status(self.status_line())
            await anyio.sleep(self._settings().daemon.status_interval_s)

    def stats(self) -> dict[str, Any]:
        """Live service counters for /status (under "daemon") and /metrics."""
        return {
            "phase": self._phase(),
            "config": str(self._config_path) if self._config_path else None,
            "mode": self._settings().watch.mode,
            "repos": self._repos(),
            "counters": self._counters.counts(),
            "last": self._counters.last(),
            "generation": self._generation.stats(),
            "scheduler": self._scheduler.stats(),
            "serve": self._serve.describe() if self._serve else None,
            "process": process_stats(self._started_mono),
        }

    def status_line(self) -> str:
        """One line: phase, repos, reconciles, generation progress, retraining, reload trouble."""
        c = self._counters.counts()
        line = (
            f"{self._phase()}: {len(self._repos())} repos, {c['reconciles']} reconciles, "
            f"{c['watch_paths']} changed paths, {c['new_jobs']} new jobs"
        )
        g = self._generation.stats() or {}
        if "pairs_stored" in g:
            line += f"; generator {g.get('state')}: {g.get('in_flight', 0)} in flight"
            line += f", {g['pairs_stored']} pairs stored, {g.get('dead', 0)} dead"
        if self._scheduler.running:
            line += ", retraining"
        if self._counters.noted("reload_error"):
            line += ", last reload FAILED (old config kept)"
        return line
