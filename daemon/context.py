"""What every CLI command and the daemon process share: settings in force, errors, output."""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import click

from pipeline.settings import Settings

if TYPE_CHECKING:
    from state.db import Database

__all__ = [
    "AppContext",
    "BadInput",
    "configure_cli_logging",
    "echo_json_lines",
    "require_sources",
    "run_async",
    "run_with_db",
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


def run_with_db(settings: Settings, fn: Callable[[Database], Awaitable[T]]) -> T:
    """`run_async` of `fn(db)` on the state database, opened for it and closed after."""
    from state.db import open_db

    async def with_db() -> T:
        db = await open_db(settings.paths.db_path)
        try:
            return await fn(db)
        finally:
            await db.close()

    return run_async(with_db)


def echo_json_lines(rows: Iterable[dict[str, Any]]) -> None:
    """`--json` output: one JSON object per line."""
    out = sys.stdout
    for row in rows:
        out.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    out.flush()


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
