"""`doctune quickstart`: the whole loop once — ingest → generate → train → gate → register → ask.

Each step is the ordinary code path (`run --once`, `run_training`, `register_run`, `ask`), so
the quickstart proves the product, not a demo of it. Every step skips what is already done:
unchanged chunks are not sent to the LLM again, a run trained on the same live pairs is not
trained again, a registered run is only re-checked. Ctrl-C cancels the step in progress (the
training child is killed and its run recorded as failed, a registration in progress is
marked interrupted and the alias is untouched) and the next run resumes from there.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click

from daemon.context import AppContext, run_async

if TYPE_CHECKING:
    from pipeline.settings import Settings
    from state.db import Database

__all__ = ["COMMANDS", "QUESTIONS"]

# Answerable from the quickstart's documented subset of the DataFusion docs.
QUESTIONS = (
    "What is Apache DataFusion?",
    "How do I create an external table from a CSV file in DataFusion SQL?",
    "How do I filter rows of a DataFrame in DataFusion?",
)


class QuickstartFailed(click.ClickException):
    """A step failed; the message says which and what to do."""


@dataclass
class _Timings:
    steps: list[tuple[str, float, str]] = field(default_factory=list)  # (step, seconds, note)
    _started: float = 0.0

    def start(self, step: str) -> None:
        self._started = time.monotonic()
        click.echo(click.style(f"▶ {step}", bold=True), err=True)

    def done(self, step: str, note: str = "") -> None:
        seconds = time.monotonic() - self._started
        self.steps.append((step, seconds, note))
        click.echo(f"  {step}: {note} ({seconds:.1f} s)", err=True)


class _TrainingProgress:
    """The `train` command's progress bar, plus when each stage of the child began."""

    def __init__(self) -> None:
        from daemon.commands_train import _ProgressPrinter

        self.printer = _ProgressPrinter()
        self.stage_at: dict[str, float] = {"start": time.monotonic()}

    def __call__(self, event: dict[str, Any]) -> None:
        self.printer(event)
        if event.get("event") == "train_begin":
            self.stage_at.setdefault("train", time.monotonic())
        elif event.get("event") == "stage":
            self.stage_at.setdefault(str(event["stage"]), time.monotonic())

    def split(self) -> str:
        marks = [*sorted(self.stage_at.items(), key=lambda kv: kv[1]), ("end", time.monotonic())]
        parts = [
            f"{name} {marks[i + 1][1] - at:.0f} s"
            for i, (name, at) in enumerate(marks[:-1])
            if name != "start"
        ]
        return ", ".join(parts)


async def _train_if_changed(db: Database, settings: Settings) -> tuple[str, str]:
    """(run id to register, note): a new run, or the latest one when the pairs are unchanged."""
    from pipeline.train.runs import TrainingBusyError, run_training
    from state import training as store

    latest = next(iter(await store.list_runs(db, limit=1)), None)
    if (
        latest is not None
        and latest.state in ("succeeded", "registered", "rejected")
        and not await store.pairs_changed_since(db, latest)
    ):
        return latest.id, f"skipped: run {latest.id} already trained on these pairs"
    if await store.count_live_pairs(db) < 2:
        raise QuickstartFailed(
            "too few question/answer pairs to train on; see `doctune status` for why "
            "generation produced none"
        )
    progress = _TrainingProgress()
    try:
        result = await run_training(db, settings, trigger="quickstart", progress=progress)
    except TrainingBusyError as exc:
        raise QuickstartFailed(str(exc)) from None
    if result.state != "succeeded":
        raise QuickstartFailed(
            f"training run {result.run_id} failed: {result.error}\n"
            f"(`doctune runs` shows it; the next `quickstart` tries again)"
        )
    return result.run_id, f"run {result.run_id} ({progress.split()})"


async def _register(db: Database, settings: Settings, run_id: str) -> tuple[Any, str]:
    from pipeline.ship.register import GateRejected, RegistrationError, register_run
    from state import registrations as regs

    try:
        reg = await register_run(db, settings, run_id)
    except GateRejected as exc:
        raise QuickstartFailed(
            f"the evaluation gate refused run {run_id}: {exc}\nthe base model stays in use; "
            f"more pairs (a larger subset) or [registry] min_gain tune this"
        ) from None
    except RegistrationError as exc:
        raise QuickstartFailed(f"registering run {run_id} failed: {exc}") from None
    served = await regs.served_model(db)
    return reg, f"{reg.model_tag} in the {reg.backend} registry" + (
        f" ({served['versions_kept']} kept)" if served else ""
    )


async def _compare(db: Database, settings: Settings) -> list[tuple[str, str, str]]:
    from pipeline.ship.ask import open_answerer

    rows: list[tuple[str, str, str]] = []
    async with (
        await open_answerer(db, settings, "base") as base,
        await open_answerer(db, settings, "current") as tuned,
    ):
        for i, question in enumerate(QUESTIONS, 1):
            click.echo(f"  question {i}/{len(QUESTIONS)}…", err=True)
            rows.append((question, await base.answer(question), await tuned.answer(question)))
    return rows


STEPS_ENV = "DOCTUNE_QUICKSTART_MAX_STEPS"


def _budgeted(settings: Settings) -> Settings:
    """$DOCTUNE_QUICKSTART_MAX_STEPS caps training steps (CI's cut-down run); same code path."""
    raw = os.environ.get(STEPS_ENV)
    if not raw:
        return settings
    try:
        steps = int(raw)
    except ValueError:
        raise click.UsageError(f"${STEPS_ENV}: expected a whole number, got {raw!r}") from None
    return dataclasses.replace(
        settings, training=dataclasses.replace(settings.training, max_steps=steps)
    )


async def _quickstart(app: AppContext) -> None:
    from daemon.commands_run import _run_once
    from daemon.commands_serve import side_by_side
    from state.db import open_db

    settings = app.settings = _budgeted(app.settings)
    timings = _Timings()
    timings.start("ingest + generate (run --once)")
    scan, summary, new_jobs = await _run_once(app)
    timings.done(
        "ingest + generate",
        f"{scan.files_seen} files, +{scan.chunks_added} chunks, {new_jobs} new jobs, "
        f"{summary.calls} LLM calls, {summary.pairs_stored} pairs stored, {summary.dead} dead",
    )
    db = await open_db(settings.paths.db_path)
    try:
        timings.start("train + evaluate + merge")
        run_id, note = await _train_if_changed(db, settings)
        timings.done("train + evaluate + merge", note)
        timings.start("gate + GGUF + register + smoke test")
        reg, note = await _register(db, settings, run_id)
        timings.done("gate + GGUF + register + smoke test", note)
        timings.start("ask: base vs tuned")
        rows = await _compare(db, settings)
        timings.done("ask: base vs tuned", f"{len(rows)} questions")
    finally:
        await db.close()
    for question, base, tuned in rows:
        click.echo(click.style(f"\nQ: {question}", bold=True))
        click.echo(side_by_side("base", base, f"tuned ({reg.model_tag})", tuned))
    _summary(app, timings, reg)


def _summary(app: AppContext, timings: _Timings, reg: Any) -> None:
    from pipeline.ship.embedded import EmbeddedRegistry

    settings = app.settings
    config = f"--config {app.config_path} " if app.config_path else ""
    click.echo(click.style("\nsummary", bold=True))
    total = sum(seconds for _, seconds, _ in timings.steps)
    for step, seconds, note in timings.steps:
        click.echo(f"  {step:<38} {seconds:7.1f} s  {note}")
    click.echo(f"  {'total':<38} {total:7.1f} s")
    if reg.backend == "llamacpp":
        registry = EmbeddedRegistry.for_settings(settings)
        where = registry.version_dir(reg.model_tag) / "model.gguf"
        click.echo(f"\nmodel: {where}")
        click.echo(f"       (Modelfile beside it: `uv run doctune {config}modelfile`)")
    else:
        click.echo(f"\nmodel: {reg.alias} in Ollama at {settings.registry.ollama_url}")
    click.echo(f'ask it:   uv run doctune {config}ask "How do I register a Parquet file?"')
    click.echo(f"serve it: uv run doctune {config}serve   (OpenAI-compatible, loopback)")


async def _until_signalled(app: AppContext) -> None:
    """The quickstart, cancelled cleanly by SIGTERM/SIGHUP as by Ctrl-C (the training child
    is killed and its run recorded, a registration in progress is marked interrupted)."""
    import signal

    import anyio

    signalled = False
    failure: click.ClickException | None = None
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            nonlocal signalled
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as signals:
                async for _ in signals:
                    signalled = True
                    tg.cancel_scope.cancel()
                    return

        tg.start_soon(watch)
        try:
            await _quickstart(app)
        except click.ClickException as exc:
            failure = exc  # raised below, unwrapped from the task group's exception group
        tg.cancel_scope.cancel()  # done: stop watching
    if signalled:
        raise KeyboardInterrupt
    if failure is not None:
        raise failure


@click.command("quickstart")
@click.pass_obj
def quickstart_command(app: AppContext) -> None:
    """Run the loop once: ingest, generate, train, gate, register, then ask base vs tuned."""
    try:
        run_async(lambda: _until_signalled(app))
    except KeyboardInterrupt:
        raise click.ClickException(
            "interrupted; nothing half-registered — run the same command again to resume"
        ) from None


COMMANDS: list[click.Command] = [quickstart_command]
