"""Retraining: when it is due, and the one entry point the daemon's scheduler calls.

`retrain` runs the training child (recording `training_runs`), then ships a successful run:
evaluation gate → GGUF/safetensors → Ollama create → smoke test → alias (`pipeline.ship`),
so threshold/SIGUSR1 → train → gate → register runs unattended. Torch is never imported
here (the export streams numpy; the served-version evaluation is a child process).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import structlog

from pipeline.settings import Settings
from pipeline.ship.register import GateRejected, RegistrationError, register_run
from pipeline.train.runs import ProgressFn, TrainingBusyError, TrainingResult, run_training
from state import training as store
from state.db import Database, now

__all__ = ["RetrainDecision", "RetrainOutcome", "retrain", "retrain_due"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RetrainOutcome:
    """What one retrain call did."""

    run_id: str | None
    # succeeded = trained, not shipped (registry.auto_register off); registered = served now;
    # rejected = the gate refused it; failed = training or registration failed
    state: Literal["succeeded", "failed", "busy", "rejected", "registered"]
    reason: str | None
    training: TrainingResult | None
    model_tag: str | None = None


@dataclass(frozen=True)
class RetrainDecision:
    """Whether the threshold trigger should fire now, and why (for logs and `status`)."""

    due: bool
    reason: str
    new_pairs: int
    seconds_since_last: float | None


async def retrain_due(db: Database, settings: Settings) -> RetrainDecision:
    """Due when ≥ `min_new_pairs` live pairs arrived since the last good run and the last run
    (of any outcome) was requested ≥ `min_interval_s` ago — so a failing run is not retried
    in a tight loop."""
    t = settings.training
    new = await store.new_pairs_since_last_run(db)
    latest = await store.list_runs(db, limit=1)
    since = None if not latest else now() - latest[0].requested_at
    if new < t.min_new_pairs:
        return RetrainDecision(
            False, f"{new} new pairs < min_new_pairs {t.min_new_pairs}", new, since
        )
    if since is not None and since < t.min_interval_s:
        return RetrainDecision(False, f"last run {since:.0f} s ago < min_interval_s", new, since)
    return RetrainDecision(True, f"{new} new pairs", new, since)


async def retrain(
    db: Database, settings: Settings, *, trigger: str, progress: ProgressFn | None = None
) -> RetrainOutcome:
    """Train a new run now. Never raises for a failed run (it is recorded); cancellation
    kills the child's process group and marks the run failed before propagating."""
    try:
        result = await run_training(db, settings, trigger=trigger, progress=progress)
    except TrainingBusyError as exc:
        log.info("retrain.busy", trigger=trigger, reason=str(exc))
        return RetrainOutcome(None, "busy", str(exc), None)
    if result.state != "succeeded" or not settings.registry.auto_register:
        return RetrainOutcome(result.run_id, result.state, result.error, result)
    return await _ship(db, settings, result)


async def _ship(db: Database, settings: Settings, result: TrainingResult) -> RetrainOutcome:
    """Gate and register a freshly trained run; the outcome says what happened."""
    try:
        reg = await register_run(db, settings, result.run_id)
    except GateRejected as exc:
        log.info("retrain.rejected", run_id=result.run_id, reason=str(exc))
        return RetrainOutcome(result.run_id, "rejected", str(exc), result)
    except RegistrationError as exc:
        log.error("retrain.registration_failed", run_id=result.run_id, error=str(exc))
        return RetrainOutcome(result.run_id, "failed", f"registration: {exc}", result)
    return RetrainOutcome(result.run_id, "registered", None, result, model_tag=reg.model_tag)
