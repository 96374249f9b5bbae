"""`doctune run`: the daemon, or with `--once` one reconcile + generation pass."""

from __future__ import annotations

import sys
from dataclasses import asdict
from typing import TYPE_CHECKING

import click

from daemon.cli.progress import GenerationProgress
from daemon.context import (
    AppContext,
    configure_cli_logging,
    echo_json_lines,
    require_sources,
    run_async,
)

if TYPE_CHECKING:
    from pipeline.once import GenerationPass

__all__ = ["COMMANDS"]


async def _generation_pass(app: AppContext) -> GenerationPass:
    from pipeline.once import ingest_and_generate
    from state.db import open_db

    db = await open_db(app.settings.paths.db_path)
    progress = GenerationProgress()
    try:
        return await ingest_and_generate(db, app.settings, progress_for=progress.start)
    finally:
        progress.close()
        await db.close()


@click.command("run")
@click.option("--once", is_flag=True, help="Reconcile, drain the generation queue, then exit.")
@click.option(
    "--json", "as_json", is_flag=True, help="With --once: the summary as one JSON object."
)
@click.pass_obj
def run_cmd(app: AppContext, once: bool, as_json: bool) -> None:
    """Run the daemon; --once: one reconcile + generation pass (exit 1 if the LLM is down)."""
    configure_cli_logging(app, daemon=not once)
    if not once:
        try:
            from daemon.process import run_daemon
        except ImportError as exc:  # the daemon lands in its own branch
            raise click.ClickException(f"the daemon is not available: {exc}") from None
        sys.exit(run_daemon(app))
    _run_once(app, as_json)


def _run_once(app: AppContext, as_json: bool) -> None:
    """One reconcile + generation pass, then its summary (human or JSON)."""
    from pipeline.clients.errors import GeneratorError

    require_sources(app.settings, app.config_path)
    try:
        done = run_async(lambda: _generation_pass(app))
    except GeneratorError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"run --once failed: {exc}") from None
    scan, summary, new_jobs = done.scan, done.generation, done.new_jobs
    for error in scan.errors:
        click.echo(f"doctune: {error}", err=True)
    if as_json:
        echo_json_lines([{"scan": asdict(scan), "new_jobs": new_jobs, **summary.as_dict()}])
        return
    click.echo(
        f"scan: {scan.files_seen} files ({scan.new} new, {scan.changed} changed,"
        f" {scan.deleted} deleted), chunks +{scan.chunks_added}; {new_jobs} new jobs"
    )
    click.echo(
        f"generate: {summary.pairs_stored} pairs from {summary.jobs_done} jobs in"
        f" {summary.duration_s:.1f}s ({summary.pairs_per_s:.1f} pairs/s), {summary.calls} calls;"
        f" retries {summary.retries}, repairs {summary.repairs}, dead {summary.dead}"
    )
    if summary.exported_repos:
        click.echo(f"exported: {', '.join(summary.exported_repos)}")
    if summary.dead:
        click.echo("some jobs are dead; `doctune status` lists the reasons", err=True)


COMMANDS: list[click.Command] = [run_cmd]
