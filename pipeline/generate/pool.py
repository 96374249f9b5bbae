"""The endpoints of a generation run: free slots, breakers and their probes, call health.

What a failed call means is decided here (`record_failure`): a refused request stops the run
with one message, a missing model stops `run --once` or waits in the daemon, connection
errors and 5xx open the endpoint's breaker, which a probe closes again.
"""

from __future__ import annotations

from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup

from pipeline.clients.errors import (
    ConfigurationError,
    GeneratorError,
    GeneratorUnavailable,
    ModelMissingError,
    OutageError,
)
from pipeline.generate.control import RunControl
from pipeline.generate.endpoints import Endpoint
from pipeline.generate.health import CallHealth
from pipeline.generate.status import StatusPublisher

__all__ = ["EndpointPool"]

log = structlog.get_logger(__name__)


class EndpointPool:
    """The run's endpoints (set once the session is open) and what their calls taught us."""

    def __init__(self, control: RunControl, status: StatusPublisher, probe_s: float) -> None:
        self.control = control
        self.status = status
        self.probe_s = probe_s
        self.endpoints: list[Endpoint] = []
        self.health = CallHealth()

    @property
    def in_flight(self) -> int:
        return sum(ep.in_flight for ep in self.endpoints)

    @property
    def capacity(self) -> int:
        return sum(ep.concurrency for ep in self.endpoints)

    @property
    def usable(self) -> int:
        """Slots of endpoints whose breaker is closed."""
        return sum(ep.concurrency for ep in self.endpoints if not ep.breaker.is_open)

    @property
    def free(self) -> int:
        return sum(ep.free for ep in self.endpoints)

    def all_down(self) -> bool:
        return all(ep.breaker.is_open for ep in self.endpoints)

    def free_endpoint(self) -> Endpoint | None:
        """The endpoint with the most free slots (None when none has one)."""
        best = max(self.endpoints, key=lambda e: e.free)
        return best if best.free > 0 else None

    def describe(self) -> list[dict[str, Any]]:
        return [ep.describe() for ep in self.endpoints]

    async def warm_up(self, *, wait_for_server: bool) -> None:
        """Load the model on every endpoint; one that cannot be reached starts with its
        breaker open. Without `wait_for_server` (`run --once`) a missing model raises, and so
        does every endpoint being down (GeneratorUnavailable)."""
        failures: list[GeneratorError] = []
        for ep in self.endpoints:
            try:
                await ep.client.warm_up()
            except ModelMissingError as exc:
                await self.status.publish("model_missing", str(exc))
                if not wait_for_server:
                    raise
                ep.breaker.trip(str(exc))
                failures.append(exc)
            except OutageError as exc:
                ep.breaker.trip(str(exc))
                failures.append(exc)
        if failures and len(failures) == len(self.endpoints) and not wait_for_server:
            message = "; ".join(str(f) for f in failures)
            await self.status.publish("unreachable", message)
            raise GeneratorUnavailable(f"generator unreachable: {message}")

    # ------------------------------------------------------------------ call results

    async def record_success(self, ep: Endpoint) -> None:
        self.health.record_success()
        ep.breaker.record_success()
        if self.status.shows_trouble:
            await self.publish_health()

    async def record_failure(self, ep: Endpoint, exc: GeneratorError) -> None:
        """Count a failed call and act on what it means (see the module docstring)."""
        ep.failures[exc.reason] = ep.failures.get(exc.reason, 0) + 1
        self.health.record_failure(str(exc))
        if isinstance(exc, ConfigurationError):
            # the same for every job: stop with this one message instead of dead-lettering
            if self.control.fail(exc):
                log.error("generation.configuration_error", url=ep.url, error=str(exc))
                await self.status.publish("failing", str(exc))
            self.control.wake()
            return
        if isinstance(exc, ModelMissingError):
            await self.status.publish("model_missing", str(exc))
            log.error("generation.model_missing", url=ep.url, error=str(exc))
            if self.control.once:
                self.control.fail(exc)
            else:  # the daemon waits: the probe re-checks until the model has been pulled
                ep.breaker.trip(str(exc))
                self.control.wake()
            return
        if exc.trips_breaker and ep.breaker.record_failure(str(exc)):
            log.warning("generation.breaker_open", url=ep.url, error=str(exc))
            self.control.wake()
        await self.publish_health()

    # ------------------------------------------------------------------ probes

    def probe_open(self, tg: TaskGroup) -> None:
        """Start a probe for every open breaker that has none."""
        for ep in self.endpoints:
            if ep.breaker.is_open and not ep.probing:
                ep.probing = True
                tg.start_soon(self._probe, ep)

    async def _probe(self, ep: Endpoint) -> None:
        """While the breaker is open: probe every `probe_s`; close it on success."""
        try:
            while ep.breaker.is_open and not self.control.stopping:
                await anyio.sleep(self.probe_s)
                try:
                    await ep.client.probe()
                    await ep.client.warm_up()
                except ModelMissingError as exc:
                    await self.status.publish("model_missing", str(exc))
                    continue
                except GeneratorError as exc:
                    ep.breaker.last_error = str(exc)
                    continue
                ep.breaker.close()
                log.info("generation.breaker_closed", url=ep.url)
                await self.publish_health()
        finally:
            ep.probing = False
            self.control.wake()

    async def publish_health(self) -> None:
        """`ok`/`degraded`/`failing` from recent calls, or which endpoints are down."""
        if self.control.fatal is not None:
            return  # "failing" with the fatal error stays until a new service starts
        down = [ep for ep in self.endpoints if ep.breaker.is_open]
        if not down:
            state = self.health.state()
            await self.status.publish(state, self.health.last_error if state != "ok" else "")
        elif len(down) == len(self.endpoints):
            errors = "; ".join(ep.breaker.last_error for ep in down)
            await self.status.publish("breaker_open", f"generator unreachable, probing: {errors}")
        else:
            await self.status.publish("degraded", ", ".join(ep.url for ep in down) + " unreachable")
