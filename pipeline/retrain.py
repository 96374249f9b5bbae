"""Retraining: when it is due, and the one entry point the daemon's scheduler calls.

`retrain` runs the training child (recording `training_runs`); the ship stage extends it with
the evaluation gate and Ollama registration. Torch is never imported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import structlog

from pipeline.settings import Settings
from pipeline.train.runner import ProgressFn, TrainingBusyError, TrainingResult, run_training
from state import training as store
from state.db import Database, now

__all__ = ["RetrainDecision", "RetrainOutcome", "retrain", "retrain_due"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RetrainOutcome:
    """What one retrain call did."""

    run_id: str | None
    state: Literal["succeeded", "failed", "busy"]
    reason: str | None
    training: TrainingResult | None


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
    return RetrainOutcome(result.run_id, result.state, result.error, result)
