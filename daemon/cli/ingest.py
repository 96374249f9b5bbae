"""Ingestion commands: `scan` (reconcile the sources once) and `chunks` (list live chunks)."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import click

from daemon.cli.output import printable
from daemon.cli.progress import parse_progress
from daemon.context import AppContext, BadInput, echo_json_lines, require_sources, run_with_db

if TYPE_CHECKING:
    from pipeline.ingest.batch import ReconcileSummary
    from state.db import Database

__all__ = ["COMMANDS"]

# the chunking strategies (pipeline/ingest/parse.py DOC_STRATEGIES + CODE_STRATEGIES)
STRATEGIES = ("heading", "paragraph", "fixed", "code_fixed", "code_ast")


@click.command("scan")
@click.option("--repo", "repos", multiple=True, help="Only this repository (repeatable).")
@click.option(
    "--mode",
    type=click.Choice(["worktree", "commits"]),
    default=None,
    help="Read the working tree or the last commit (default: watch.mode).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.pass_obj
def scan_cmd(app: AppContext, repos: tuple[str, ...], mode: str | None, as_json: bool) -> None:
    """Reconcile the sources once: read, clean and chunk what changed."""
    from pipeline.ingest.reconcile import reconcile

    require_sources(app.settings, app.config_path)
    progress = None if as_json else parse_progress()
    try:
        summary = run_with_db(
            app.settings,
            lambda db: reconcile(
                db,
                app.settings,
                repos=list(repos) or None,
                mode=mode,  # type: ignore[arg-type]
                progress=progress,
            ),
        )
    except ValueError as exc:  # an unknown --repo
        raise BadInput(f"{exc} (see `doctune status` for the repositories)") from None
    except OSError as exc:
        raise click.ClickException(f"scan failed: {exc}") from None
    if as_json:
        echo_json_lines([asdict(summary)])
    else:
        _print_scan(summary)
    for error in summary.errors:
        click.echo(f"doctune: {error}", err=True)
    if summary.errors and not summary.files_seen:
        raise click.ClickException("no repository could be scanned")


def _print_scan(s: ReconcileSummary) -> None:
    click.echo(
        f"scanned {s.files_seen} files in {s.duration_s:.2f}s:"
        f" {s.new} new, {s.changed} changed,"
        f" {s.unchanged} unchanged, {s.deleted} deleted, {s.skipped} skipped;"
        f" parsed {s.parsed_files}; chunks +{s.chunks_added} / retired {s.chunks_retired}"
    )
    for name, commit in s.commits.items():
        click.echo(f"  {name}: {commit or '(not a git checkout)'}")


@click.command("chunks")
@click.option("--repo", default=None, help="Only chunks of this repository.")
@click.option("--path", default=None, help="Only chunks of this repo-relative path.")
@click.option(
    "--strategy", default=None, help="heading | paragraph | fixed | code_fixed | code_ast"
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_obj
def chunks_cmd(
    app: AppContext, repo: str | None, path: str | None, strategy: str | None, as_json: bool
) -> None:
    """List live chunks with their source spans."""
    from state.files import file_chunks, known_repos

    if strategy is not None and strategy not in STRATEGIES:
        raise BadInput(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")

    async def listing(db: Database) -> list[dict[str, Any]] | None:
        if repo is not None and repo not in await known_repos(db):
            return None
        return await file_chunks(db, repo=repo, path=path, strategy=strategy)

    rows = run_with_db(app.settings, listing)
    if rows is None:
        raise BadInput(f"unknown repository: {repo} (see `doctune status` for the repositories)")
    if as_json:
        echo_json_lines(
            {
                k: r[k]
                for k in ("repo", "path", "strategy", "hash", "start_line", "end_line", "text")
            }
            for r in rows
        )
        return
    for r in rows:
        where = printable(f"{r['repo']}/{r['path']}") + f":{r['start_line']}-{r['end_line']}"
        heading = f"  ({printable(r['heading'])})" if r["heading"] else ""
        click.echo(
            click.style(f"── {where} [{r['strategy']}] {r['hash'][:12]}{heading}", bold=True)
        )
        click.echo(r["text"])
        click.echo()


COMMANDS: list[click.Command] = [scan_cmd, chunks_cmd]
