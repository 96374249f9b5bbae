"""The `doctune` command line: one click group; each noun's module brings its commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from daemon.config import ConfigError, load_config
from daemon.context import AppContext, configure_cli_logging

__all__ = ["main"]


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


def _register_commands() -> None:
    from daemon.cli import (
        eval,
        generate,
        ingest,
        quickstart,
        retrain,
        run,
        serve,
        ship,
        status,
        train,
    )

    for module in (ingest, status, run, generate, train, ship, eval, serve, quickstart, retrain):
        for command in module.COMMANDS:
            main.add_command(command)


_register_commands()
