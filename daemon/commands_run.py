"""`doctune run`: the daemon, or with `--once` one reconcile + generation pass."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from typing import Any

import click

from daemon.context import (
    AppContext,
    configure_cli_logging,
    echo_json_lines,
    require_sources,
    run_async,
)

__all__ = ["COMMANDS"]


class _Progress:
    """One self-rewriting line on a TTY (stderr); silent otherwise (logs carry the facts)."""

    def __init__(self, total_jobs: int) -> None:
        self.total = total_jobs
        self.enabled = sys.stderr.isatty()
        self._last_s = 0.0

    def __call__(self, stats: dict[str, Any]) -> None:
        if not self.enabled or time.monotonic() - self._last_s < 0.2:
            return
        self._last_s = time.monotonic()
        finished = stats["jobs_done"] + stats["dead"]
        width = 30
        filled = width * min(finished, self.total) // self.total if self.total else width
        bar = "#" * filled + "." * (width - filled)
        sys.stderr.write(
            f"\r[{bar}] {finished}/{self.total} jobs · {stats['pairs_per_s']:.1f} pairs/s"
            f" · in flight {stats['in_flight']} · retries {stats['retries']}"
            f" · dead {stats['dead']}  "
        )
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self._last_s:
            sys.stderr.write("\n")


async def _run_once(app: AppContext) -> tuple[Any, Any, int]:
    from pipeline.generate.backend import resolve_backend
    from pipeline.generate.plan import ensure_jobs
    from pipeline.generate.prompt import prompt_version_for
    from pipeline.generate.service import GenerationService
    from pipeline.ingest.reconcile import reconcile
    from state.db import open_db
    from state.jobs import job_counts

    settings = app.settings
    db = await open_db(settings.paths.db_path)
    try:
        scan = await reconcile(db, settings)
        new_jobs = await ensure_jobs(db, settings.generator)
        counts = await job_counts(
            db,
            prompt_version=prompt_version_for(settings.generator),
            model=(await resolve_backend(settings.generator)).gen.model,
        )
        progress = _Progress(counts["pending"] + counts["leased"])
        service = GenerationService(db, settings, progress=progress)
        try:
            summary = await service.run_once()
        finally:
            progress.close()
        return scan, summary, new_jobs
    finally:
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
    from pipeline.clients.errors import GeneratorError

    require_sources(app.settings, app.config_path)
    try:
        scan, summary, new_jobs = run_async(lambda: _run_once(app))
    except GeneratorError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"run --once failed: {exc}") from None
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
