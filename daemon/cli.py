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

__all__ = ["AppContext", "echo_json_lines", "main", "run_async"]

T = TypeVar("T")


@dataclass
class AppContext:
    """What every command gets: the validated settings and where they came from."""

    settings: Settings
    config_path: Path | None


class UsageError(click.UsageError):
    """Exit code 2 with a message naming the bad key or argument."""


def run_async(fn: Callable[[], Awaitable[T]]) -> T:
    """Run one coroutine function on the asyncio backend (the daemon's loop of record)."""
    return anyio.run(fn, backend="asyncio")


def echo_json_lines(rows: Iterable[dict[str, Any]]) -> None:
    """`--json` output: one JSON object per line."""
    out = sys.stdout
    for row in rows:
        out.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    out.flush()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Config file (default: $DOCTUNE_CONFIG, else ./doctune.toml, else built-in defaults).",
)
@click.pass_context
def main(ctx: click.Context, config_path: Path | None) -> None:
    """doctune: keep a local LLM fluent in your codebase's documentation."""
    if ctx.resilient_parsing:
        return
    try:
        settings, used = load_config(config_path)
    except ConfigError as exc:
        click.echo(f"doctune: {exc}", err=True)
        ctx.exit(2)
    try:
        _configure_logging(settings)
    except ValueError as exc:
        click.echo(f"doctune: $DOCTUNE_LOG_LEVEL: {exc}", err=True)
        ctx.exit(2)
    ctx.obj = AppContext(settings=settings, config_path=used)


def _configure_logging(settings: Settings) -> None:
    """Logging is configured once, here: $DOCTUNE_LOG_LEVEL overrides daemon.log_level."""
    import os

    from daemon.logsetup import configure_logging

    fmt = os.environ.get("DOCTUNE_LOG_FORMAT") or settings.daemon.log_format
    level = os.environ.get("DOCTUNE_LOG_LEVEL") or settings.daemon.log_level
    configure_logging(json=None if fmt == "auto" else fmt == "json", level=level)


def _register_commands() -> None:
    from daemon import (
        commands_daemon,
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
        commands_serve,
        commands_quickstart,
        commands_daemon,
    ):
        for command in module.COMMANDS:
            main.add_command(command)


_register_commands()
