"""Training runs end to end: the child process, its run directory, and the training_runs row."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner
from train_support import build_tiny_model, insert_pairs, qa_pairs

from daemon.cli import main
from pipeline.child_process import child_env
from pipeline.retrain import retrain, retrain_due
from pipeline.settings import PathsSettings, Settings, TrainingSettings
from pipeline.train.runs import TrainingBusyError, run_training
from state import training as store
from state.db import open_db

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.getbasetemp())


def _settings(tmp_path: Path, base_model: str, **training: Any) -> Settings:
    knobs: dict[str, Any] = {
        "base_model": base_model,
        "max_steps": 3,
        "batch_size": 4,
        "lr": 5e-3,
        "holdout_fraction": 0.25,
        "eval_max_examples": 8,
        "eval_generate_examples": 2,
        "eval_max_new_tokens": 4,
        "min_new_pairs": 10,
        **training,
    }
    return Settings(
        paths=PathsSettings(state_dir=tmp_path / "data", models_dir=tmp_path / "models"),
        training=TrainingSettings(**knobs),
    )


async def _seeded_db(settings: Settings, n: int = 40) -> Any:
    db = await open_db(settings.paths.db_path)
    await insert_pairs(db, qa_pairs(n))
    return db


def _runs_dir(settings: Settings) -> Path:
    return settings.paths.models_dir / "runs"


def _toml(settings: Settings, path: Path) -> Path:
    t = settings.training
    lines = [
        "[paths]",
        f'state_dir = "{settings.paths.state_dir}"',
        f'models_dir = "{settings.paths.models_dir}"',
        "[training]",
    ]
    for f in dataclasses.fields(t):
        value = getattr(t, f.name)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            lines.append(f"{f.name} = {json.dumps(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_train_leaves_adapter_merged_model_and_metrics(tmp_path: Path, tiny_dir: Path) -> None:
    settings = _settings(tmp_path, str(tiny_dir))
    config = _toml(settings, tmp_path / "doctune.toml")
    # A two-trial sweep: both are trained, the lower holdout NLL wins.
    config.write_text(config.read_text() + "sweep = { lr = [1e-3, 2e-2] }\n")

    async def seed() -> None:
        await (await _seeded_db(settings)).close()

    anyio.run(seed)
    result = CliRunner().invoke(main, ["--config", str(config), "train"])
    assert result.exit_code == 0, result.output
    (run_dir,) = [p for p in _runs_dir(settings).iterdir() if p.is_dir()]
    assert not run_dir.name.endswith(".tmp")
    for name in (
        "spec.json",
        "dataset/train.jsonl",
        "dataset/holdout.jsonl",
        "adapter/adapter_model.safetensors",
        "adapter/adapter_config.json",
        "merged/model.safetensors",
        "merged/config.json",
        "merged/tokenizer.json",
        "merged/chat_template.jinja",
        "merged/doctune_prompt.json",
        "metrics.json",
        "loss.png",
        "train_log.jsonl",
    ):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 3
    trials = metrics["train"]["trials"]
    assert [t["overrides"] for t in trials] == [{"lr": 1e-3}, {"lr": 2e-2}]
    best = min(trials, key=lambda t: t["validation_nll"])
    assert metrics["train"]["trial"] == best["trial"]
    assert metrics["train"]["selected_by"] == "validation_nll"
    assert metrics["eval"]["tuned"]["answer_tokens"] > 0
    assert metrics["prompt"]["stop_tokens"] == ["<|im_end|>"]
    merged_config = json.loads((run_dir / "merged" / "config.json").read_text())
    assert "quantization_config" not in merged_config
    assert json.loads((run_dir / "merged" / "doctune_prompt.json").read_text())["chat_template"]
    assert len((run_dir / "train_log.jsonl").read_text().splitlines()) == 6  # 3 per trial

    listed = CliRunner().invoke(main, ["--config", str(config), "runs", "--json"])
    (row,) = [json.loads(line) for line in listed.output.splitlines()]
    assert row["state"] == "succeeded"
    assert row["trigger"] == "cli"
    assert row["live_pairs"] == 40
    assert row["n_train"] + row["n_holdout"] + metrics["dataset"]["n_validation"] == 40
    assert row["metrics"]["run_id"] == run_dir.name
    table = CliRunner().invoke(main, ["--config", str(config), "runs"])
    assert run_dir.name in table.output
    _assert_rerun_skips_finished_steps(run_dir)


def _assert_rerun_skips_finished_steps(done: Path) -> None:
    """A child that died after merging resumes: train/evaluate/merge are not redone."""
    resumed = done.parent / "resumed.tmp"
    shutil.copytree(done, resumed)
    (resumed / "metrics.json").unlink()
    spec = json.loads((resumed / "spec.json").read_text())
    (resumed / "spec.json").write_text(json.dumps({**spec, "run_id": "resumed"}))
    adapter = resumed / "adapter" / "adapter_model.safetensors"
    adapter_mtime = adapter.stat().st_mtime_ns

    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.train.recipe", str(resumed / "spec.json")],
        env=child_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert {e["step"] for e in events if e["event"] == "skip"} == {"train", "evaluate", "merge"}
    final = done.parent / "resumed"
    assert (final / "metrics.json").is_file()
    assert (final / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns == adapter_mtime


async def test_cancelling_kills_the_trainer_group_and_leaves_no_run_dir(
    tmp_path: Path, tiny_dir: Path
) -> None:
    settings = _settings(tmp_path, str(tiny_dir), max_steps=100_000)
    db = await _seeded_db(settings)
    try:
        stepping = anyio.Event()

        def progress(event: dict[str, Any]) -> None:
            if event.get("event") == "step":
                stepping.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: run_training(db, settings, trigger="signal", progress=progress))
            with anyio.fail_after(120):
                await stepping.wait()  # the child is mid-training
            (run,) = await store.list_runs(db)
            assert run.state == "running"
            assert run.pid is not None
            tg.cancel_scope.cancel()

        ended = await store.get_run(db, run.id)
        assert ended is not None
        run = ended
        assert run.state == "failed"
        assert run.error is not None
        assert run.error.startswith("cancelled")
        assert run.run_dir == str(_runs_dir(settings) / f"{run.id}.tmp")
        with pytest.raises(ProcessLookupError):
            os.killpg(run.pid or 0, 0)  # the whole process group is gone
        visible = [p.name for p in _runs_dir(settings).iterdir() if not p.name.startswith(".")]
        assert visible == [f"{run.id}.tmp"]  # incomplete: never renamed into place
    finally:
        await db.close()


async def test_a_killed_trainer_is_recorded_failed_and_the_caller_keeps_going(
    tmp_path: Path, tiny_dir: Path
) -> None:
    settings = _settings(tmp_path, str(tiny_dir), max_steps=100_000)
    db = await _seeded_db(settings)
    try:
        stepping = anyio.Event()

        def progress(event: dict[str, Any]) -> None:
            if event.get("event") == "step":
                stepping.set()

        async def kill_when_running() -> None:
            with anyio.fail_after(120):
                await stepping.wait()
            (run,) = await store.list_runs(db)
            os.kill(run.pid or 0, signal.SIGKILL)  # what the kernel's OOM killer does

        async with anyio.create_task_group() as tg:
            tg.start_soon(kill_when_running)
            result = await run_training(db, settings, trigger="threshold", progress=progress)
        assert result.state == "failed"
        assert result.error is not None
        assert "SIGKILL" in result.error
        assert "out of memory" in result.error
        (run,) = await store.list_runs(db)
        assert run.state == "failed"
        assert not (_runs_dir(settings) / run.id).exists()
    finally:
        await db.close()


async def test_a_crashing_trainer_records_its_stderr_tail(tmp_path: Path) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "no-such-architecture"}')
    settings = _settings(tmp_path, str(broken))
    db = await _seeded_db(settings)
    try:
        outcome = await retrain(db, settings, trigger="manual")
        assert outcome.state == "failed"
        (run,) = await store.list_runs(db)
        assert run.state == "failed"
        assert run.error is not None
        assert "exited with status" in run.error
        assert "stderr tail" in run.error
        assert "Traceback" in run.error or "Error" in run.error
    finally:
        await db.close()


async def test_too_few_pairs_fail_before_any_child_starts(tmp_path: Path, tiny_dir: Path) -> None:
    settings = _settings(tmp_path, str(tiny_dir))
    db = await _seeded_db(settings, n=1)
    try:
        result = await run_training(db, settings, trigger="manual")
        assert result.state == "failed"
        assert result.error is not None
        assert "not enough pairs" in result.error
        (run,) = await store.list_runs(db)
        assert run.pid is None
    finally:
        await db.close()


async def test_an_empty_holdout_trains_and_tests_on_the_validation_part(
    tmp_path: Path, tiny_dir: Path
) -> None:
    """No live pair's chunk hashes to the holdout (the quickstart's two-page cut-down with
    bt-v4: its one holdout chunk's job died, and `doctune quickstart` failed): a run that
    sweeps nothing tests on the validation part instead; a sweep still needs both."""
    settings = _settings(tmp_path, str(tiny_dir), holdout_fraction=0.001, validation_fraction=0.3)
    db = await _seeded_db(settings)
    try:
        result = await run_training(db, settings, trigger="manual")
        assert result.state == "succeeded", result.error
        assert result.run_dir is not None
        summary = json.loads((result.run_dir / "dataset" / "summary.json").read_text())
        assert summary["holdout_from"] == "validation"
        assert summary["n_validation"] == 0
        assert result.n_holdout == summary["n_holdout"] > 0
        assert result.n_train == summary["n_train"] == 40 - result.n_holdout
        swept = dataclasses.replace(
            settings,
            training=dataclasses.replace(settings.training, sweep={"lr": [1e-3, 2e-2]}),
        )
        again = await run_training(db, swept, trigger="manual")
        assert again.state == "failed"
        assert again.error is not None
        assert "0 holdout" in again.error
    finally:
        await db.close()


async def test_a_second_trainer_is_refused_while_one_holds_the_lock(
    tmp_path: Path, tiny_dir: Path
) -> None:
    import fcntl

    settings = _settings(tmp_path, str(tiny_dir))
    db = await _seeded_db(settings)
    try:
        _runs_dir(settings).mkdir(parents=True)
        with (_runs_dir(settings) / ".train.lock").open("a") as held:
            fcntl.flock(held.fileno(), fcntl.LOCK_EX)
            with pytest.raises(TrainingBusyError):
                await run_training(db, settings, trigger="manual")
            assert (await retrain(db, settings, trigger="signal")).state == "busy"
        assert await store.list_runs(db) == []
    finally:
        await db.close()


async def test_retrain_is_due_after_enough_new_pairs(tmp_path: Path, tiny_dir: Path) -> None:
    settings = _settings(tmp_path, str(tiny_dir), min_new_pairs=10, min_interval_s=3600)
    db = await open_db(settings.paths.db_path)
    try:
        await insert_pairs(db, qa_pairs(5))
        assert not (await retrain_due(db, settings)).due
        await insert_pairs(db, qa_pairs(12)[5:])
        decision = await retrain_due(db, settings)
        assert decision.due
        assert decision.new_pairs == 12
    finally:
        await db.close()
