"""The generation supervisor: keeps one generation service running, restarts it, drains it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import structlog

from daemon.components import GenerationLike
from daemon.counters import DaemonCounters
from pipeline.settings import Settings
from state.db import Database

__all__ = ["GenerationSupervisor"]

log = structlog.get_logger(__name__)

GenerationFactory = Callable[[Database, Settings], GenerationLike]


class GenerationSupervisor:
    """Runs the generation service (`run()`), with the settings in force at each start.

    - `restart()` (a reload changed [generator]) stops claiming on the current service; the
      loop then starts a new one with the new settings.
    - A service whose `serve()` gives up on its own (a fatal generator error) is started
      again after `retry_s`, and the error is noted.
    - `stop_claiming()` then `finish(timeout_s)` is the drain: in-flight requests may finish
      for at most `timeout_s` (or until `hurry()`), then they are cancelled; their leases
      expire and the jobs are claimed again.

    Made inside the running event loop (it holds anyio primitives).
    """

    def __init__(
        self,
        db: Database,
        settings: Callable[[], Settings],
        factory: GenerationFactory,
        counters: DaemonCounters,
        *,
        retry_s: float = 30.0,
    ) -> None:
        self._db = db
        self._settings = settings
        self._factory = factory
        self._counters = counters
        self._retry_s = retry_s
        self._service: GenerationLike | None = None
        self._stopping = False
        self._restart = False
        self._scope = anyio.CancelScope()
        self._backoff = anyio.CancelScope()  # cancelled by a drain: no point waiting
        self._done = anyio.Event()
        self._hurry = anyio.Event()

    async def run(self) -> None:
        """Serve until stopped; returns once the last service has finished (or was cut off)."""
        with self._scope:
            while not self._stopping:
                self._restart = False
                self._service = self._factory(self._db, self._settings())
                await self._service.serve()
                if not (self._stopping or self._restart):
                    error = self._service.stats().get("error")
                    retry_s = self._retry_s
                    log.error("generation_stopped_unexpectedly", error=error, retry_in_s=retry_s)
                    self._counters.note("generation_error", error)
                    with self._backoff:
                        await anyio.sleep(self._retry_s)
        self._done.set()

    def wake(self) -> None:
        """New jobs were queued: let idle workers claim them now."""
        if self._service is not None:
            self._service.wake()

    def restart(self) -> None:
        """Start a new service with the settings now in force (after a reload)."""
        if self._service is not None:
            self._restart = True
            self._service.stop_claiming()

    def stop_claiming(self) -> None:
        """The drain's first step: claim nothing more, and stop waiting to retry."""
        self._stopping = True
        if self._service is not None:
            self._service.stop_claiming()
        self._backoff.cancel()

    def hurry(self) -> None:
        """A second stop signal: cut the drain's wait short now."""
        self._hurry.set()

    async def finish(self, timeout_s: float) -> None:
        """Wait for in-flight work (at most `timeout_s`, or until `hurry()`), then cancel it."""
        with anyio.move_on_after(timeout_s) as waited:
            async with anyio.create_task_group() as tg:

                async def hurried() -> None:
                    await self._hurry.wait()
                    tg.cancel_scope.cancel()

                tg.start_soon(hurried)
                await self._done.wait()
                tg.cancel_scope.cancel()
        if not self._done.is_set():
            why = "timeout" if waited.cancelled_caught else "second signal"
            log.warning("drain_cut_short", reason=why, timeout_s=timeout_s)
            self._scope.cancel()

    def stats(self) -> dict[str, Any] | None:
        """The running service's stats (None before the first start; an error, never raises)."""
        if self._service is None:
            return None
        try:
            return self._service.stats()
        except Exception as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}
