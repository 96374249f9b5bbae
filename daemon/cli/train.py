"""Training commands: `train` (a run in the foreground, with progress) and `runs` (list them)."""

from __future__ import annotations

from typing import Any

import click

from daemon.cli.progress import TrainingProgress
from daemon.context import AppContext, echo_json_lines, run_with_db
from state import training as store

__all__ = ["COMMANDS"]


@click.command("train")
@click.pass_obj
def train_cmd(app: AppContext) -> None:
    """Train, evaluate and merge a new run now, in the foreground (ship it with `register`)."""
    from pipeline.train.runs import TrainingBusyError, run_training

    progress = TrainingProgress()
    try:
        result = run_with_db(
            app.settings,
            lambda db: run_training(db, app.settings, trigger="cli", progress=progress),
        )
    except TrainingBusyError as exc:
        raise click.ClickException(f"training is already running: {exc}") from None
    if result.state != "succeeded":
        raise click.ClickException(f"run {result.run_id} failed: {result.error}")
    ev = (result.metrics or {}).get("eval", {})
    click.echo(f"run {result.run_id} succeeded: {result.run_dir}")
    if ev:
        click.echo(
            f"holdout answer perplexity {ev['base']['answer_ppl']:.3f} → "
            f"{ev['tuned']['answer_ppl']:.3f} ({100 * ev['holdout_ppl_reduction']:+.1f} % lower);"
            f" general-text drift {100 * ev['general_ppl_drift']:+.1f} %"
        )
    for line in _eval_set_lines((result.metrics or {}).get("eval_sets") or {}):
        click.echo(line)
    click.echo(f"serve it with: doctune register {result.run_id}")


def _eval_set_lines(sets: dict[str, Any]) -> list[str]:
    """One line per eval set: answer perplexity of each model, ROUGE-L of tuned."""
    lines = []
    for name, result in sorted(sets.items()):
        models = result.get("models", {})
        ppl = ", ".join(f"{label} {m['answer_ppl']:.2f}" for label, m in models.items())
        lines.append(f"eval set {name} ({result.get('n', 0)} questions): answer perplexity {ppl}")
    return lines


@click.command("runs")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Newest N runs only.")
@click.pass_obj
def runs_cmd(app: AppContext, as_json: bool, limit: int | None) -> None:
    """List training runs, newest first: state, trigger, pair counts, metrics."""
    runs = run_with_db(app.settings, lambda db: store.list_runs(db, limit=limit))
    if as_json:
        echo_json_lines(r.as_dict() for r in runs)
        return
    if not runs:
        click.echo("no training runs yet")
        return
    click.echo(
        f"{'run':<22} {'state':<10} {'trigger':<9} {'pairs':>5} {'train':>5} {'hold':>4}"
        "  holdout ppl base→tuned   drift"
    )
    for r in runs:
        click.echo(_row(r))
        for name, result in sorted(((r.metrics or {}).get("eval_sets") or {}).items()):
            models = result.get("models", {})
            ppl = " ".join(f"{label} {m['answer_ppl']:.2f}" for label, m in models.items())
            click.echo(f"{'':<22}   eval set {name}: ppl {ppl}")


def _row(r: store.TrainingRun) -> str:
    ev = (r.metrics or {}).get("eval")
    if ev:
        quality = (
            f"{ev['base']['answer_ppl']:8.3f}→{ev['tuned']['answer_ppl']:<8.3f}"
            f"  {100 * ev['general_ppl_drift']:+5.1f}%"
        )
    else:
        quality = (r.error or "").strip().splitlines()[0][:60] if r.error else ""
    return (
        f"{r.id:<22} {r.state:<10} {r.trigger:<9} {_n(r.live_pairs):>5} {_n(r.n_train):>5}"
        f" {_n(r.n_holdout):>4}  {quality}"
    )


def _n(value: int | None) -> str:
    return "-" if value is None else str(value)


COMMANDS: list[click.Command] = [train_cmd, runs_cmd]
