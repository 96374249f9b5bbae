"""The training scheduler: threshold or signal in, at most one retrain running, storms coalesced."""

from __future__ import annotations

import importlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import structlog

from pipeline.retrain import retrain_due
from pipeline.settings import Settings
from state import meta as sched_state
from state.db import Database, now

__all__ = ["NoTrainerConfigured", "RetrainFn", "TrainingScheduler", "default_retrain"]

log = structlog.get_logger(__name__)

META_REQUEST = "scheduler.last_request"
META_OUTCOME = "scheduler.last_outcome"


class RetrainFn(Protocol):
    """The trainer entry point: `pipeline.retrain.retrain(db, settings, trigger=...)`."""

    def __call__(self, db: Database, settings: Settings, *, trigger: str) -> Awaitable[Any]: ...


class NoTrainerConfigured(RuntimeError):
    """`pipeline.retrain` is not installed in this build."""


async def default_retrain(db: Database, settings: Settings, *, trigger: str) -> Any:
    """Call `daemon.retrain_entrypoint` (default `pipeline.retrain:retrain`), imported only
    now so the daemon process stays torch-free until (and unless) the trainer needs it."""
    entrypoint = settings.daemon.retrain_entrypoint
    module_name, _, attr = entrypoint.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise NoTrainerConfigured(f"no trainer configured ({module_name} is missing)") from exc
        raise
    retrain = getattr(module, attr or "retrain", None)
    if retrain is None:
        raise NoTrainerConfigured(f"no trainer configured ({entrypoint} does not exist)")
    return await retrain(db, settings, trigger=trigger)


@dataclass
class _Counters:
    requests: int = 0
    runs_started: int = 0
    runs_ok: int = 0
    runs_failed: int = 0
    last_trigger: str | None = None
    last_started_at: float | None = None
    last_finished_at: float | None = None
    last_error: str | None = None
    last_outcome: str | None = None
    new_live_pairs: int | None = None


class TrainingScheduler:
    """Decides when to retrain and runs the trainer, never more than one at a time.

    A request (SIGUSR1, `doctune retrain`) waits until requests have been quiet for
    `daemon.retrain_coalesce_s`, so a storm of signals becomes one run; requests that
    arrive while a run is going collapse into exactly one follow-up run. Without a
    request, a run starts when `training.min_new_pairs` live pairs were created since the
    last completed run and `training.min_interval_s` passed since the last attempt.
    """

    def __init__(
        self,
        db: Database,
        settings: Callable[[], Settings],
        retrain: RetrainFn | None = None,
    ) -> None:
        self._db = db
        self._settings = settings
        self._retrain: RetrainFn = retrain or default_retrain
        self._wake = anyio.Event()
        self._pending_trigger: str | None = None
        self._last_request_mono = 0.0
        self._running = False
        self._last_attempt_mono: float | None = None
        self._next_check_at: float | None = None
        self.counters = _Counters()

    def request(self, trigger: str = "signal") -> None:
        """Ask for a retrain (safe to call any number of times; they coalesce)."""
        self.counters.requests += 1
        self._pending_trigger = trigger
        self._last_request_mono = time.monotonic()
        log.info("retrain_requested", trigger=trigger, running=self._running)
        self._wake.set()

    def poke(self) -> None:
        """Re-check the pair threshold now (e.g. after new pairs were stored)."""
        self._wake.set()

    @property
    def running(self) -> bool:
        """Whether a retrain is in progress."""
        return self._running

    def stats(self) -> dict[str, Any]:
        """Live counters for /status and /metrics."""
        c = self.counters
        return {
            "running": self._running,
            "pending_request": self._pending_trigger,
            "requests": c.requests,
            "runs_started": c.runs_started,
            "runs_ok": c.runs_ok,
            "runs_failed": c.runs_failed,
            "last_trigger": c.last_trigger,
            "last_started_at": c.last_started_at,
            "last_finished_at": c.last_finished_at,
            "last_outcome": c.last_outcome,
            "last_error": c.last_error,
            "new_live_pairs": c.new_live_pairs,
            "min_new_pairs": self._settings().training.min_new_pairs,
            "next_check_at": self._next_check_at,
        }

    async def serve(self) -> None:
        """Run until cancelled; cancellation also cancels a running retrain (it kills its child)."""
        while True:
            settings = self._settings()
            self._next_check_at = now() + settings.daemon.training_check_interval_s
            with anyio.move_on_after(settings.daemon.training_check_interval_s):
                await self._wake.wait()
            self._wake = anyio.Event()
            trigger = await self._next_trigger()
            if trigger is not None:
                await self._run(trigger)

    async def _next_trigger(self) -> str | None:
        if self._pending_trigger is not None:
            await self._wait_for_quiet()
            trigger, self._pending_trigger = self._pending_trigger, None
            return trigger
        return "threshold" if await self._threshold_reached() else None

    async def _wait_for_quiet(self) -> None:
        """Let a burst of requests finish arriving so it becomes one run."""
        while True:
            coalesce_s = self._settings().daemon.retrain_coalesce_s
            remaining_s = self._last_request_mono + coalesce_s - time.monotonic()
            if remaining_s <= 0:
                return
            await anyio.sleep(remaining_s)

    async def _threshold_reached(self) -> bool:
        # The one tested definition (pipeline.retrain.retrain_due), as `doctune status` shows;
        # the monotonic clock also spaces attempts whose rows a wall-clock jump hides.
        decision = await retrain_due(self._db, self._settings())
        self.counters.new_live_pairs = decision.new_pairs
        if not decision.due:
            return False
        mono_last = self._last_attempt_mono
        interval_s = self._settings().training.min_interval_s
        return mono_last is None or time.monotonic() - mono_last >= interval_s

    async def _run(self, trigger: str) -> None:
        c = self.counters
        c.runs_started += 1
        c.last_trigger = trigger
        c.last_started_at = now()
        self._last_attempt_mono = time.monotonic()
        self._running = True
        try:
            await sched_state.write_meta_json(
                self._db, META_REQUEST, {"trigger": trigger, "at": c.last_started_at}
            )
            log.info("retrain_started", trigger=trigger, new_live_pairs=c.new_live_pairs)
            outcome = await self._call_trainer(trigger)
            outcome.update(trigger=trigger, started_at=c.last_started_at, finished_at=now())
            # Counters move only after the outcome is on record, so whoever sees them
            # change can also read the outcome.
            await sched_state.write_meta_json(self._db, META_OUTCOME, outcome)
        finally:
            self._running = False
            c.last_finished_at = now()
        if outcome["ok"]:
            c.runs_ok += 1
            c.last_error = None
            c.last_outcome = outcome.get("outcome")
        else:
            c.runs_failed += 1
            c.last_error = outcome.get("error")
        if self._pending_trigger is not None:
            self._wake.set()  # a request arrived during the run: one more run

    async def _call_trainer(self, trigger: str) -> dict[str, Any]:
        """Await the trainer; failures become data (`ok`, `error`), never exceptions."""
        try:
            result = await self._retrain(self._db, self._settings(), trigger=trigger)
        except NoTrainerConfigured as exc:
            log.warning("retrain_not_configured", trigger=trigger, reason=str(exc))
            return {"ok": False, "error": str(exc)}
        except Exception as exc:
            log.exception("retrain_failed", trigger=trigger)
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        # pipeline.retrain reports a failed or busy run in its result instead of raising.
        state = getattr(result, "state", None)
        described = _describe(result)
        if state in ("failed", "busy"):
            reason = getattr(result, "reason", None)
            log.warning("retrain_unsuccessful", trigger=trigger, state=state, reason=reason)
            return {
                "ok": False,
                "state": state,
                "error": f"{state}: {reason}",
                "outcome": described,
            }
        log.info("retrain_finished", trigger=trigger, state=state, outcome=described)
        return {"ok": True, "state": state, "outcome": described}


def _describe(result: Any) -> str:
    text = repr(result)
    return text if len(text) <= 500 else text[:497] + "..."
