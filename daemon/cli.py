"""The `doctune` command line: one click group; each feature registers its commands here."""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
import click

from daemon.config import ConfigError, load_config
from pipeline.settings import Settings

__all__ = [
    "AppContext",
    "BadInput",
    "configure_cli_logging",
    "echo_json_lines",
    "main",
    "require_sources",
    "run_async",
]

T = TypeVar("T")


@dataclass
class AppContext:
    """What every command gets: the validated settings and where they came from."""

    settings: Settings
    config_path: Path | None
    verbose: bool = False


class BadInput(click.ClickException):
    """Bad input (an argument, a configured path): one line naming it, exit code 2."""

    exit_code = 2


def require_sources(settings: Settings, config_path: Path | None) -> None:
    """A scan with nothing to read is a configuration mistake, not an empty success."""
    src = settings.sources
    if src.repo or (src.dir is not None and src.dir.is_dir()):
        return
    where = f" in {config_path}" if config_path else ""
    if src.dir is None:
        raise BadInput(f"no sources configured: set sources.dir or add [[sources.repo]]{where}")
    raise BadInput(
        f"sources.dir {src.dir} does not exist; create it with one subdirectory per repository,"
        f" or fix sources.dir{where}"
    )


def run_async(fn: Callable[[], Awaitable[T]]) -> T:
    """Run one coroutine function on the asyncio backend (the daemon's loop of record)."""
    return anyio.run(fn, backend="asyncio")


def echo_json_lines(rows: Iterable[dict[str, Any]]) -> None:
    """`--json` output: one JSON object per line."""
    out = sys.stdout
    for row in rows:
        out.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    out.flush()


class _Group(click.Group):
    """Errors any command can meet, turned into one line (exit 1) instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from state.db import DatabaseUnusable

        try:
            return super().invoke(ctx)
        except DatabaseUnusable as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Config file (default: $DOCTUNE_CONFIG, else ./doctune.toml, else built-in defaults).",
)
@click.option(
    "-v", "--verbose", is_flag=True, help="Log progress (info level) to stderr, not only warnings."
)
@click.pass_context
def main(ctx: click.Context, config_path: Path | None, verbose: bool) -> None:
    """doctune: keep a local LLM fluent in your codebase's documentation."""
    if ctx.resilient_parsing:
        return
    try:
        settings, used = load_config(config_path)
    except ConfigError as exc:
        click.echo(f"doctune: {exc}", err=True)
        ctx.exit(2)
    ctx.obj = AppContext(settings=settings, config_path=used, verbose=verbose)
    if ctx.invoked_subcommand != "run":  # `run` knows whether it is the daemon
        configure_cli_logging(ctx.obj, daemon=False)


def configure_cli_logging(app: AppContext, *, daemon: bool) -> None:
    """Configure logging once: the daemon logs at `daemon.log_level`; a plain command logs
    only warnings and errors unless --verbose. $DOCTUNE_LOG_LEVEL overrides both. On a
    terminal logs are pretty, elsewhere (systemd, pipes) JSON lines; always on stderr."""
    import os

    from daemon.logsetup import configure_logging

    settings = app.settings
    fmt = os.environ.get("DOCTUNE_LOG_FORMAT") or settings.daemon.log_format
    default = settings.daemon.log_level if daemon else ("info" if app.verbose else "warning")
    level = os.environ.get("DOCTUNE_LOG_LEVEL") or default
    try:
        configure_logging(json=None if fmt == "auto" else fmt == "json", level=level)
    except ValueError as exc:
        click.echo(f"doctune: $DOCTUNE_LOG_LEVEL: {exc}", err=True)
        sys.exit(2)


def _register_commands() -> None:
    from daemon import (
        commands_daemon,
        commands_eval,
        commands_generate,
        commands_ingest,
        commands_quickstart,
        commands_run,
        commands_serve,
        commands_ship,
        commands_train,
    )

    for module in (
        commands_ingest,
        commands_run,
        commands_generate,
        commands_train,
        commands_ship,
        commands_eval,
        commands_serve,
        commands_quickstart,
        commands_daemon,
    ):
        for command in module.COMMANDS:
            main.add_command(command)


_register_commands()
