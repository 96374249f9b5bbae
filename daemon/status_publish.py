"""What the daemon publishes about itself: /status stats, systemd STATUS= lines, watchdog pings."""

from __future__ import annotations

from typing import Any

import anyio

from daemon.reconciling import Reconciling
from daemon.status_server import process_stats

__all__ = ["StatusPublishing"]


class StatusPublishing(Reconciling):
    """Stats for /status and /metrics, the STATUS= line and the systemd watchdog loop."""

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
            "serve": self._model_server.describe() if self._model_server else None,
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
