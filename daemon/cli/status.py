"""`doctune status`: files, chunks, skips, jobs, pairs, generator, training and the served model."""

from __future__ import annotations

import json
from typing import Any

import click

from daemon.cli.output import ago, one_line, printable
from daemon.context import AppContext, run_with_db

__all__ = ["COMMANDS"]

# Snapshot sections printed by name below; any other section is printed as `key: k v, …`.
_SHOWN = {"files", "chunks", "skips", "jobs", "pairs", "dead_letters", "throughput", "tokens"}
_SHOWN |= {"generator", "training", "served_model"}


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="The whole status as one JSON object.")
@click.pass_obj
def status_cmd(app: AppContext, as_json: bool) -> None:
    """Files by status, chunks by strategy, skipped files with reasons."""
    from state.status import snapshot

    snap = run_with_db(app.settings, snapshot)
    if as_json:
        click.echo(json.dumps(snap, ensure_ascii=False, default=str))
        return
    _print_ingestion(snap)
    _print_generation(snap)
    _print_training(snap.get("training"), snap.get("served_model"))
    for key, value in snap.items():
        if key in _SHOWN:
            continue
        # A section this command does not know yet: key = value pairs, never raw JSON.
        click.echo(f"{key}: {_flat(value)}")


def _flat(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_flat(v)}" for k, v in value.items()) or "none"
    if isinstance(value, list):
        return ", ".join(_flat(v) for v in value) or "none"
    return "-" if value is None else printable(value)


def _print_ingestion(snap: dict[str, Any]) -> None:
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


def _print_generation(snap: dict[str, Any]) -> None:
    jobs = snap.get("jobs")
    if jobs is None:
        return
    click.echo("jobs: " + ", ".join(f"{state} {n}" for state, n in jobs.items()))
    pairs = snap["pairs"]
    click.echo(f"pairs: {pairs['live']} live, {pairs['retired']} retired")
    for repo, n in pairs["by_repo"].items():
        click.echo(f"  {printable(repo)}: {n['live']} live, {n['retired']} retired")
    for dead in snap["dead_letters"]:
        click.echo(f"  dead {dead['count']}: {printable(dead['reason'])}")
    rate = snap["throughput"]
    click.echo(
        f"throughput: {rate['pairs_per_s_1m']} pairs/s (1 min), {rate['pairs_per_s_10m']} (10 min)"
    )
    tokens = snap["tokens"]
    click.echo(f"tokens: {tokens['prompt']} prompt, {tokens['completion']} completion")
    generator = snap.get("generator")
    if generator:
        message = f": {printable(generator['message'])}" if generator.get("message") else ""
        via = f" via {generator['backend']}" if generator.get("backend") else ""
        choice = f" [{generator['backend_choice']}]" if generator.get("backend_choice") else ""
        click.echo(f"generator: {generator['state']} ({generator['model']}{via}){choice}{message}")


def _print_training(training: dict[str, Any] | None, served: dict[str, Any] | None) -> None:
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
        error = f": {printable(one_line(latest['error']))}" if latest.get("error") else ""
        click.echo(
            f"  latest run {printable(latest['id'])}: {latest['state']}"
            f" ({latest['trigger']}, requested {ago(latest['requested_at'])}){error}"
        )


COMMANDS: list[click.Command] = [status_cmd]
