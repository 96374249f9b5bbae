"""The training scheduler: coalescing, thresholds, failures recorded, cancellation."""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from daemon.training_scheduler import META_OUTCOME, RetrainFn, TrainingScheduler, default_retrain
from pipeline.settings import DaemonSettings, Settings, TrainingSettings
from state import meta as sched_state
from state.db import Database, open_db

pytestmark = pytest.mark.anyio


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await open_db(tmp_path / "doctune.sqlite3")
    yield database
    await database.close()


def _settings(min_new_pairs: int = 1_000_000, min_interval_s: float = 0.0) -> Settings:
    return Settings(
        daemon=DaemonSettings(retrain_coalesce_s=0.3, training_check_interval_s=0.05),
        training=TrainingSettings(min_new_pairs=min_new_pairs, min_interval_s=min_interval_s),
    )


class FakeTrainer:
    """Records calls; each run takes `duration_s` and writes a training_runs row."""

    def __init__(self, duration_s: float = 0.0, fail: bool = False) -> None:
        self.calls: list[str] = []
        self.duration_s = duration_s
        self.fail = fail
        self.cancelled = False

    async def __call__(self, db: Database, settings: Settings, *, trigger: str) -> Any:
        self.calls.append(trigger)
        started = time.time()
        try:
            await anyio.sleep(self.duration_s)
        except anyio.get_cancelled_exc_class():
            self.cancelled = True
            raise
        if self.fail:
            raise RuntimeError("trainer exploded")
        async with db.write() as conn:
            await conn.execute(
                "INSERT INTO training_runs (id, trigger, state, requested_at, started_at,"
                " finished_at) VALUES (?, ?, 'succeeded', ?, ?, ?)",
                (f"run-{len(self.calls)}", trigger, started, started, time.time()),
            )
        return {"run": len(self.calls)}


async def _add_live_pairs(db: Database, n: int) -> None:
    async with db.write() as conn:
        for i in range(n):
            chunk = f"chunk-{time.time_ns()}-{i}"
            await conn.execute(
                "INSERT INTO chunks (id, text, n_chars, created_at) VALUES (?, 'x', 1, 0)", (chunk,)
            )
            cur = await conn.execute(
                "INSERT INTO jobs (chunk_id, prompt_version, model, state, created_at, updated_at)"
                " VALUES (?, 'v1', 'm', 'done', 0, 0)",
                (chunk,),
            )
            await conn.execute(
                "INSERT INTO pairs (job_id, idx, chunk_id, repo, path, strategy, chunk_preview,"
                " question, answer, model, prompt_version, created_at)"
                " VALUES (?, 0, ?, 'r', 'p', 'heading', 'x', 'q', 'a', 'm', 'v1', ?)",
                (cur.lastrowid, chunk, time.time()),
            )


async def _wait_until(predicate: Any, timeout_s: float = 10.0) -> None:
    with anyio.fail_after(timeout_s):
        while not predicate():  # noqa: ASYNC110 - polling plain attributes
            await anyio.sleep(0.02)


async def _outcome_of_one_failed_run(db: Database, retrain: RetrainFn) -> dict[str, Any]:
    """Request one run, wait until it has failed, and return the outcome it recorded."""
    scheduler = TrainingScheduler(db, _settings, retrain)
    async with anyio.create_task_group() as tg:
        tg.start_soon(scheduler.serve)
        scheduler.request("signal")
        await _wait_until(lambda: scheduler.counters.runs_failed == 1)
        tg.cancel_scope.cancel()
    outcome = await sched_state.read_meta_json(db, META_OUTCOME)
    assert outcome is not None
    return outcome


async def test_a_storm_of_requests_starts_one_run(db: Database) -> None:
    trainer = FakeTrainer()
    scheduler = TrainingScheduler(db, _settings, trainer)
    async with anyio.create_task_group() as tg:
        tg.start_soon(scheduler.serve)
        for _ in range(10):
            scheduler.request("signal")
            await anyio.sleep(0.02)
        await _wait_until(lambda: scheduler.counters.runs_ok == 1)
        await anyio.sleep(0.6)  # longer than the coalesce window: nothing else starts
        tg.cancel_scope.cancel()
    assert trainer.calls == ["signal"]


async def test_requests_during_a_run_start_exactly_one_more(db: Database) -> None:
    trainer = FakeTrainer(duration_s=0.5)
    scheduler = TrainingScheduler(db, _settings, trainer)
    async with anyio.create_task_group() as tg:
        tg.start_soon(scheduler.serve)
        scheduler.request("signal")
        await _wait_until(lambda: scheduler.running)
        for _ in range(5):
            scheduler.request("cli")
        await _wait_until(lambda: scheduler.counters.runs_ok == 2)
        await anyio.sleep(0.6)
        tg.cancel_scope.cancel()
    assert trainer.calls == ["signal", "cli"]


async def test_threshold_of_new_live_pairs_triggers_once(db: Database) -> None:
    trainer = FakeTrainer()
    scheduler = TrainingScheduler(db, lambda: _settings(min_new_pairs=3), trainer)
    async with anyio.create_task_group() as tg:
        tg.start_soon(scheduler.serve)
        await _add_live_pairs(db, 2)
        await anyio.sleep(0.3)
        assert trainer.calls == []  # below the threshold
        await _add_live_pairs(db, 1)
        await _wait_until(lambda: trainer.calls == ["threshold"])
        await anyio.sleep(0.3)  # the run consumed those pairs: no second run
        tg.cancel_scope.cancel()
    assert trainer.calls == ["threshold"]


async def test_min_interval_holds_back_the_threshold(db: Database) -> None:
    trainer = FakeTrainer()
    scheduler = TrainingScheduler(db, lambda: _settings(1, min_interval_s=3600), trainer)
    async with db.write() as conn:  # a run was requested a minute ago
        await conn.execute(
            "INSERT INTO training_runs (id, trigger, state, requested_at) VALUES"
            " ('old', 'cli', 'failed', ?)",
            (time.time() - 60,),
        )
    await _add_live_pairs(db, 5)
    async with anyio.create_task_group() as tg:
        tg.start_soon(scheduler.serve)
        await anyio.sleep(0.4)
        tg.cancel_scope.cancel()
    assert trainer.calls == []
    assert scheduler.counters.new_live_pairs == 5


async def test_trainer_failure_is_recorded_and_scheduler_keeps_going(db: Database) -> None:
    trainer = FakeTrainer(fail=True)
    scheduler = TrainingScheduler(db, _settings, trainer)
    async with anyio.create_task_group() as tg:
        tg.start_soon(scheduler.serve)
        scheduler.request("signal")
        await _wait_until(lambda: scheduler.counters.runs_failed == 1)
        scheduler.request("signal")
        await _wait_until(lambda: scheduler.counters.runs_failed == 2)
        tg.cancel_scope.cancel()
    outcome = await sched_state.read_meta_json(db, META_OUTCOME)
    assert outcome is not None
    assert outcome["ok"] is False
    assert "trainer exploded" in outcome["error"]


async def test_missing_trainer_is_recorded_as_not_configured(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pipeline.retrain", None)  # import now fails
    outcome = await _outcome_of_one_failed_run(db, default_retrain)
    assert "no trainer configured" in outcome["error"]


async def test_cancelling_the_scheduler_cancels_the_running_retrain(db: Database) -> None:
    trainer = FakeTrainer(duration_s=60)
    scheduler = TrainingScheduler(db, _settings, trainer)
    async with anyio.create_task_group() as tg:
        tg.start_soon(scheduler.serve)
        scheduler.request("signal")
        await _wait_until(lambda: bool(trainer.calls))  # the trainer is running
        tg.cancel_scope.cancel()
    assert trainer.cancelled
    assert not scheduler.running


async def test_a_run_reported_as_failed_counts_as_failed(db: Database) -> None:
    @dataclasses.dataclass
    class Outcome:
        state: str
        reason: str

    async def trainer(db: Database, settings: Settings, *, trigger: str) -> Outcome:
        return Outcome("failed", "loss was NaN")

    outcome = await _outcome_of_one_failed_run(db, trainer)
    assert (outcome["ok"], outcome["state"]) == (False, "failed")
    assert "loss was NaN" in outcome["error"]
