"""CLI commands for ingestion: scan, chunks, status."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Any

import click

from daemon.context import AppContext, BadInput, echo_json_lines, require_sources, run_async
from daemon.textout import ago, printable

__all__ = ["COMMANDS"]

# the chunking strategies (pipeline/ingest/parse.py DOC_STRATEGIES + CODE_STRATEGIES)
STRATEGIES = ("heading", "paragraph", "fixed", "code_fixed", "code_ast")


def _progress_printer() -> Any:
    """A one-line progress bar on a TTY (stderr); nothing otherwise."""
    if not sys.stderr.isatty():
        return None

    width = 30

    def show(done: int, total: int) -> None:
        if total:
            filled = width * done // total
            bar = "#" * filled + "." * (width - filled)
            end = "\n" if done >= total else ""
            sys.stderr.write(f"\rparsing [{bar}] {done}/{total} files{end}")
            sys.stderr.flush()

    return show


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
    from state.db import open_db

    require_sources(app.settings, app.config_path)

    async def go() -> Any:
        db = await open_db(app.settings.paths.db_path)
        try:
            return await reconcile(
                db,
                app.settings,
                repos=list(repos) or None,
                mode=mode,  # type: ignore[arg-type]
                progress=None if as_json else _progress_printer(),
            )
        finally:
            await db.close()

    try:
        summary = run_async(go)
    except ValueError as exc:  # an unknown --repo
        raise BadInput(f"{exc} (see `doctune status` for the repositories)") from None
    except OSError as exc:
        raise click.ClickException(f"scan failed: {exc}") from None
    if as_json:
        echo_json_lines([asdict(summary)])
    else:
        s = summary
        click.echo(
            f"scanned {s.files_seen} files in {s.duration_s:.2f}s:"
            f" {s.new} new, {s.changed} changed,"
            f" {s.unchanged} unchanged, {s.deleted} deleted, {s.skipped} skipped;"
            f" parsed {s.parsed_files}; chunks +{s.chunks_added} / retired {s.chunks_retired}"
        )
        for name, commit in s.commits.items():
            click.echo(f"  {name}: {commit or '(not a git checkout)'}")
    for error in summary.errors:
        click.echo(f"doctune: {error}", err=True)
    if summary.errors and not summary.files_seen:
        raise click.ClickException("no repository could be scanned")


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
    from state.db import open_db
    from state.files import file_chunks, known_repos

    if strategy is not None and strategy not in STRATEGIES:
        raise BadInput(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")

    async def go() -> list[dict[str, Any]] | None:
        db = await open_db(app.settings.paths.db_path)
        try:
            if repo is not None and repo not in await known_repos(db):
                return None
            return await file_chunks(db, repo=repo, path=path, strategy=strategy)
        finally:
            await db.close()

    rows = run_async(go)
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


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="The whole status as one JSON object.")
@click.pass_obj
def status_cmd(app: AppContext, as_json: bool) -> None:
    """Files by status, chunks by strategy, skipped files with reasons."""
    from state.db import open_db
    from state.status import snapshot

    async def go() -> dict[str, Any]:
        db = await open_db(app.settings.paths.db_path)
        try:
            return await snapshot(db)
        finally:
            await db.close()

    snap = run_async(go)
    if as_json:
        click.echo(json.dumps(snap, ensure_ascii=False, default=str))
        return
    _print_ingest_status(snap)
    from daemon.commands_generate import print_generation_status

    print_generation_status(snap)
    _print_training_status(snap.get("training"), snap.get("served_model"))
    shown = {"files", "chunks", "skips", "jobs", "pairs", "dead_letters", "throughput", "tokens"}
    shown |= {"generator", "training", "served_model"}
    for key, value in snap.items():
        if key in shown:
            continue
        # A section this command does not know yet: key = value pairs, never raw JSON.
        click.echo(f"{key}: {_flat(value)}")


def _flat(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_flat(v)}" for k, v in value.items()) or "none"
    if isinstance(value, list):
        return ", ".join(_flat(v) for v in value) or "none"
    return "-" if value is None else printable(value)


def _print_training_status(training: dict[str, Any] | None, served: dict[str, Any] | None) -> None:
    if served is None:
        click.echo("served model: none registered yet (`doctune register RUN`)")
    else:
        click.echo(
            f"served model: {printable(served['alias'])} -> {printable(served['model_tag'])}"
            f" (run {printable(served['run_id'] or '-')}, {served['n_train'] or 0} training"
            f" pairs, trained {ago(served['trained_at'])}, served since"
            f" {ago(served['served_since'])}, {served['versions_kept']} versions kept)"
        )
    if training is None:
        return
    runs = ", ".join(f"{state} {n}" for state, n in sorted(training["runs"].items())) or "none"
    click.echo(
        f"training: runs {runs}; {training['live_pairs']} live pairs,"
        f" {training['new_pairs_since_last_run']} new since the last run"
    )
    latest = training.get("latest")
    if latest:
        error = f": {printable(_one_line(latest['error']))}" if latest.get("error") else ""
        click.echo(
            f"  latest run {printable(latest['id'])}: {latest['state']}"
            f" ({latest['trigger']}, requested {ago(latest['requested_at'])}){error}"
        )


def _one_line(text: str, limit: int = 200) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _print_ingest_status(snap: dict[str, Any]) -> None:
    files, chunks, skips = snap["files"], snap["chunks"], snap["skips"]
    by_status = ", ".join(f"{k} {v}" for k, v in sorted(files["by_status"].items())) or "none"
    by_kind = ", ".join(f"{k} {v}" for k, v in sorted(files["by_kind"].items()))
    click.echo(f"files: {files['total']} ({by_status}){f'; live: {by_kind}' if by_kind else ''}")
    for flag, n in files["flagged"].items():
        click.echo(f"  flagged {flag}: {n}")
    for repo in files["repos"]:
        commit = (repo["ingested_commit"] or "-")[:12]
        ms = repo["last_scan_ms"]
        took = f"{ms:.0f} ms" if ms is not None else "never scanned"
        click.echo(f"  repo {printable(repo['name'])}: commit {commit}, last scan {took}")
    click.echo(f"chunks: {chunks['live']} live of {chunks['stored']} stored")
    for strategy, n in chunks["by_strategy"].items():
        click.echo(f"  {strategy}: {n['distinct']} distinct, {n['memberships']} memberships")
    if skips["by_reason"]:
        click.echo("skipped:")
        for reason, n in skips["by_reason"].items():
            click.echo(f"  {reason}: {n}")
    for row in skips["files"]:
        where = printable(f"{row['repo']}/{row['path']}")
        click.echo(f"  {row['status']} {where}: {printable(row['reason'])}")


COMMANDS: list[click.Command] = [scan_cmd, chunks_cmd, status_cmd]
