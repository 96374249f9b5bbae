"""The [serve] component: `doctune serve` inside the daemon, following new registrations."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from daemon.counters import DaemonCounters
from pipeline.settings import Settings
from state.db import Database

if TYPE_CHECKING:
    from pipeline.ship.serve import ModelServer

__all__ = ["ServeComponent"]

log = structlog.get_logger(__name__)


class ServeComponent:
    """Runs the model server until cancelled; a failure to serve is logged and noted, and
    the rest of the daemon keeps working."""

    def __init__(
        self, db: Database, settings: Callable[[], Settings], counters: DaemonCounters
    ) -> None:
        self._db = db
        self._settings = settings
        self._counters = counters
        self._server: ModelServer | None = None

    async def run(self) -> None:
        """Serve with the settings in force at start (imported now: the daemon stays light
        when [serve] is off)."""
        from pipeline.ship.serve import ModelServer, ServeError, publish_serve_state

        db = self._db
        self._server = ModelServer(
            self._settings(), publish=lambda info: publish_serve_state(db, info)
        )
        try:
            await self._server.serve()
        except ServeError as exc:
            log.error("serve_failed", error=str(exc))
            self._counters.note("serve_error", str(exc))

    def describe(self) -> dict[str, Any] | None:
        """What is served, for /status (None until the server was made)."""
        return self._server.describe() if self._server is not None else None
