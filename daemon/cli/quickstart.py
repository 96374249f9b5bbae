"""`doctune quickstart`: the whole loop once — ingest → generate → train → gate → register → ask.

Each step is the ordinary code path (`pipeline.once` as in `run --once`, `run_training`,
`register_run`, the `ask` answerers; `pipeline.quickstart` composes the training and asking
steps), so the quickstart proves the product, not a demo of it; this module times the steps,
prints them and turns their failures into one message. Every step skips what is already done:
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

from daemon.cli.output import side_by_side
from daemon.cli.progress import GenerationProgress, TrainingProgress
from daemon.context import AppContext, run_async

if TYPE_CHECKING:
    from pipeline.settings import Settings
    from state.db import Database

__all__ = ["COMMANDS"]

STEPS_ENV = "DOCTUNE_QUICKSTART_MAX_STEPS"
PAGES_ENV = "DOCTUNE_QUICKSTART_MAX_PAGES"


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
    """The `train` command's progress lines, plus when each stage of the child began."""

    def __init__(self) -> None:
        self.printer = TrainingProgress()
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


def _env_count(name: str) -> int | None:
    raw = os.environ.get(name)
    if not raw:
        return None
    try:
        count = int(raw)
    except ValueError:
        raise click.UsageError(f"${name}: expected a whole number, got {raw!r}") from None
    if count < 1:
        raise click.UsageError(f"${name}: expected 1 or more, got {count}")
    return count


def _budgeted(settings: Settings) -> Settings:
    """CI's cut-down run, same code path: $DOCTUNE_QUICKSTART_MAX_STEPS caps training steps,
    $DOCTUNE_QUICKSTART_MAX_PAGES keeps the first N `docs` entries of each configured repo."""
    steps = _env_count(STEPS_ENV)
    if steps is not None:
        training = dataclasses.replace(settings.training, max_steps=steps)
        settings = dataclasses.replace(settings, training=training)
    pages = _env_count(PAGES_ENV)
    if pages is not None:
        repos = [dataclasses.replace(r, docs=r.docs[:pages]) for r in settings.sources.repo]
        sources = dataclasses.replace(
            settings.sources, repo=repos, docs=settings.sources.docs[:pages]
        )
        settings = dataclasses.replace(settings, sources=sources)
    return settings


async def _generate_step(db: Database, settings: Settings, timings: _Timings) -> None:
    """Ingest + generate: exactly `run --once`."""
    from pipeline.once import ingest_and_generate

    timings.start("ingest + generate (run --once)")
    progress = GenerationProgress()
    try:
        done = await ingest_and_generate(db, settings, progress_for=progress.start)
    finally:
        progress.close()
    scan, summary = done.scan, done.generation
    timings.done(
        "ingest + generate",
        f"{scan.files_seen} files, +{scan.chunks_added} chunks, {done.new_jobs} new jobs, "
        f"{summary.calls} LLM calls, {summary.pairs_stored} pairs stored, {summary.dead} dead",
    )


async def _train_step(db: Database, settings: Settings, timings: _Timings) -> str:
    """Train, evaluate and merge, unless the latest run trained on these very pairs."""
    from pipeline.quickstart import QuickstartError, train_if_changed
    from pipeline.train.runs import TrainingBusyError

    timings.start("train + evaluate + merge")
    progress = _TrainingProgress()
    try:
        step = await train_if_changed(db, settings, progress=progress)
    except (QuickstartError, TrainingBusyError) as exc:
        raise QuickstartFailed(str(exc)) from None
    if step.trained:
        note = f"run {step.run_id} ({progress.split()})"
    else:
        note = f"skipped: run {step.run_id} already trained on these pairs"
    timings.done("train + evaluate + merge", note)
    return step.run_id


async def _register_step(db: Database, settings: Settings, timings: _Timings, run_id: str) -> Any:
    """Gate, GGUF, register and smoke-test the run (a registered run is only re-checked)."""
    from pipeline.ship.register import GateRejected, RegistrationError, register_run
    from state import registrations as regs

    timings.start("gate + GGUF + register + smoke test")
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
    kept = f" ({served['versions_kept']} kept)" if served else ""
    timings.done(
        "gate + GGUF + register + smoke test",
        f"{reg.model_tag} in the {reg.backend} registry{kept}",
    )
    return reg


async def _ask_step(
    db: Database, settings: Settings, timings: _Timings
) -> list[tuple[str, str, str]]:
    """The quickstart's questions, to the base and the tuned model."""
    from pipeline.quickstart import compare_answers

    def asking(i: int, n: int) -> None:
        click.echo(f"  question {i}/{n}…", err=True)

    timings.start("ask: base vs tuned")
    rows = await compare_answers(db, settings, on_question=asking)
    timings.done("ask: base vs tuned", f"{len(rows)} questions")
    return rows


async def _quickstart(app: AppContext) -> None:
    from state.db import open_db

    settings = app.settings = _budgeted(app.settings)
    timings = _Timings()
    db = await open_db(settings.paths.db_path)
    try:
        await _generate_step(db, settings, timings)
        run_id = await _train_step(db, settings, timings)
        reg = await _register_step(db, settings, timings, run_id)
        rows = await _ask_step(db, settings, timings)
    finally:
        await db.close()
    for question, base, tuned in rows:
        click.echo(click.style(f"\nQ: {question}", bold=True))
        click.echo(side_by_side("base", base, f"tuned ({reg.model_tag})", tuned))
    _summary(app, timings, reg)


def _summary(app: AppContext, timings: _Timings, reg: Any) -> None:
    from pipeline.ship.embedded_registry import EmbeddedRegistry

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
