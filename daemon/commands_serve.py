"""CLI commands for using the tuned model: serve, ask, modelfile."""

from __future__ import annotations

import shutil
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from daemon.context import AppContext, run_async

if TYPE_CHECKING:
    from pipeline.settings import Settings
    from state.db import Database

__all__ = ["COMMANDS", "side_by_side"]


async def publish_serve_state(db: Database, info: dict[str, Any]) -> None:
    """`doctune status` reads what the endpoint serves from `meta`."""
    from state.meta import write_meta_json

    await write_meta_json(db, "serve", info)


async def _serve(settings: Settings, port: int | None) -> None:
    import anyio

    from pipeline.ship.serve import ModelServer
    from state.db import open_db

    db = await open_db(settings.paths.db_path)
    try:
        server = ModelServer(settings, port=port, publish=lambda i: publish_serve_state(db, i))
        async with anyio.create_task_group() as tg:
            url = await tg.start(server.serve)
            model = server.describe()["model"] or "nothing yet (waiting for a registration)"
            click.echo(f"serving {model} at {url} (OpenAI-compatible; Ctrl-C stops)")
    finally:
        await db.close()


@click.command("serve")
@click.option("--port", type=int, default=None, help="Loopback port (default: [serve] port).")
@click.pass_obj
def serve_command(app: AppContext, port: int | None) -> None:
    """Serve the current embedded-registry version on an OpenAI-compatible loopback endpoint."""
    from pipeline.ship.serve import ServeError

    try:
        run_async(lambda: _serve(app.settings, port))
    except ServeError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        click.echo("stopped", err=True)


def _label(which: str) -> str:
    return {"base": "base", "current": "tuned (current)"}.get(which, f"run {which}")


async def _ask(settings: Settings, which: list[str], question: str, stream: bool) -> list[str]:
    from pipeline.ship.ask import open_answerer
    from state.db import open_db

    db = await open_db(settings.paths.db_path)
    answers = []
    try:
        for model in which:
            async with await open_answerer(db, settings, model) as answerer:
                if stream:
                    click.echo(click.style(f"── {answerer.label} ──", bold=True), err=True)
                pieces = []
                async for piece in answerer.stream(question):
                    pieces.append(piece)
                    if stream:
                        sys.stdout.write(piece)
                        sys.stdout.flush()
                if stream:
                    sys.stdout.write("\n")
                answers.append("".join(pieces).strip())
    finally:
        await db.close()
    return answers


def side_by_side(left_title: str, left: str, right_title: str, right: str) -> str:
    """Two answers in two columns (terminal width), wrapped."""
    width = max(60, min(shutil.get_terminal_size((120, 24)).columns, 160))
    col = (width - 3) // 2

    def lines(title: str, text: str) -> list[str]:
        body: list[str] = []
        for para in (text or "(empty answer)").splitlines() or [""]:
            body.extend(textwrap.wrap(para, col) or [""])
        return [title[:col], "─" * min(col, max(len(title), 8)), *body]

    a, b = lines(left_title, left), lines(right_title, right)
    rows = max(len(a), len(b))
    a += [""] * (rows - len(a))
    b += [""] * (rows - len(b))
    return "\n".join(f"{x:<{col}} │ {y}".rstrip() for x, y in zip(a, b, strict=True))


@click.command("ask")
@click.argument("question")
@click.option(
    "--model",
    "which",
    default="current",
    show_default=True,
    help="base, current, or a run id (see `doctune registrations`).",
)
@click.option(
    "--compare", is_flag=True, help="Answer with the base and the tuned model, side by side."
)
@click.pass_obj
def ask_command(app: AppContext, question: str, which: str, compare: bool) -> None:
    """Ask the tuned model (or its base) one question; streams the answer on a terminal."""
    from pipeline.ship.ask import AskError

    models = ["base", "current" if which == "base" else which] if compare else [which]
    try:
        answers = run_async(lambda: _ask(app.settings, models, question, stream=not compare))
    except AskError as exc:
        raise click.ClickException(str(exc)) from None
    if compare:
        click.echo(side_by_side(_label(models[0]), answers[0], _label(models[1]), answers[1]))


async def _modelfile_path(settings: Settings, run_id: str | None) -> Path:
    from pipeline.ship.embedded import EmbeddedRegistry
    from pipeline.ship.modelfile import MODELFILE_NAME
    from pipeline.ship.register import alias_name, model_tag
    from state import registrations as store
    from state.db import open_db

    db = await open_db(settings.paths.db_path)
    try:
        if run_id is None:
            reg = await store.active_registration(db, alias_name(settings))
            if reg is None:
                from pipeline.ship.serve import NOTHING_REGISTERED

                raise click.ClickException(NOTHING_REGISTERED)
        else:
            reg = await store.registration_for_run(db, run_id, model_tag(settings, run_id))
            if reg is None:
                raise click.ClickException(f"run {run_id} was never registered")
        if reg.backend == "llamacpp":
            return EmbeddedRegistry.for_settings(settings).modelfile_path(reg.model_tag)
        run = await store.run_for_registration(db, str(reg.run_id))
        run_dir = Path(run["run_dir"]) if run and run.get("run_dir") else None
        if run_dir is None:
            raise click.ClickException(f"run {reg.run_id}: its directory is unknown")
        in_gguf = run_dir / "gguf" / MODELFILE_NAME
        return in_gguf if reg.mode == "gguf" else run_dir / MODELFILE_NAME
    finally:
        await db.close()


@click.command("modelfile")
@click.argument("run_id", required=False)
@click.option("--path", "path_only", is_flag=True, help="Print the Modelfile's path instead.")
@click.pass_obj
def modelfile_command(app: AppContext, run_id: str | None, path_only: bool) -> None:
    """Print the Modelfile of RUN's version (default: the current one): `ollama create` input."""
    path = run_async(lambda: _modelfile_path(app.settings, run_id))
    if not path.is_file():
        raise click.ClickException(f"{path} is missing (was the version deleted or pruned?)")
    if path_only:
        click.echo(str(path))
        return
    click.echo(f"# {path}", err=True)
    click.echo(path.read_text(encoding="utf-8"), nl=False)


COMMANDS: list[click.Command] = [serve_command, ask_command, modelfile_command]
