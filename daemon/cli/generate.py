"""Generated-pair commands: `pairs` (list), `export` (jsonl | parquet | hf), `requeue`."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import click

from daemon.cli.output import one_line, printable, shown_path
from daemon.context import AppContext, BadInput, echo_json_lines, run_with_db

__all__ = ["COMMANDS"]

DEFAULT_OUT = {"jsonl": "pairs.jsonl", "parquet": "pairs.parquet", "hf": "pairs_hf"}


@click.command("pairs")
@click.option("--repo", default=None, help="Only pairs of this repository.")
@click.option("--all", "include_retired", is_flag=True, help="Include retired pairs.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_obj
def pairs_cmd(
    app: AppContext, repo: str | None, include_retired: bool, limit: int | None, as_json: bool
) -> None:
    """List generated question/answer pairs with their provenance (live ones by default)."""
    from state.pairs import list_pairs

    rows = run_with_db(
        app.settings,
        lambda db: list_pairs(db, repo=repo, include_retired=include_retired, limit=limit),
    )
    if as_json:
        echo_json_lines(rows)
        return
    for row in rows:
        span = f":{row['start_line']}-{row['end_line']}" if row["start_line"] else ""
        retired = " (retired)" if row["retired_at"] else ""
        where = printable(f"{row['repo']}/{row['path']}")
        click.echo(f"#{row['id']} {where}{span} [{row['strategy']}]{retired}")
        click.echo(f"  Q: {printable(one_line(row['question'], 300))}")
        click.echo(f"  A: {printable(one_line(row['answer'], 300))}")
    if not rows:
        click.echo("no pairs yet; `doctune run --once` generates them", err=True)


@click.command("export")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "parquet", "hf"]),
    default="jsonl",
    show_default=True,
    help="JSON lines, a Parquet file, or a `datasets` dataset saved to disk.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Output path (default: <state_dir>/export/pairs.jsonl | pairs.parquet | pairs_hf/).",
)
@click.option("--repo", default=None, help="Only pairs of this repository.")
@click.option("--include-retired", is_flag=True, help="Also export retired pairs.")
@click.pass_obj
def export_cmd(
    app: AppContext, fmt: str, out: Path | None, repo: str | None, include_retired: bool
) -> None:
    """Export pairs (live ones by default) for training elsewhere."""
    from pipeline.generate.export import ExportFormat, ExportTargetError, export_dataset

    target = out or app.settings.paths.state_dir / "export" / DEFAULT_OUT[fmt]
    export_format = cast(ExportFormat, fmt)
    try:
        count = run_with_db(
            app.settings,
            lambda db: export_dataset(
                db, export_format, target, repo=repo, include_retired=include_retired
            ),
        )
    except ExportTargetError as exc:
        raise BadInput(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"export failed: {exc}") from None
    click.echo(f"exported {count} pairs to {shown_path(target)}")


@click.command("requeue")
@click.option("--reason", default=None, help="Only jobs dead of this reason (or a part of it).")
@click.option("--repo", default=None, help="Only jobs of this repository's chunks.")
@click.pass_obj
def requeue_cmd(app: AppContext, reason: str | None, repo: str | None) -> None:
    """Bring dead jobs back to the queue with fresh attempts (the next run generates them)."""
    from state.jobs import requeue_dead

    count = run_with_db(app.settings, lambda db: requeue_dead(db, reason=reason, repo=repo))
    click.echo(f"requeued {count} dead jobs" + ("" if count else " (none matched)"))


COMMANDS: list[click.Command] = [pairs_cmd, export_cmd, requeue_cmd]
