"""CLI commands for training: `train` (foreground, with progress) and `runs`."""

from __future__ import annotations

import sys
from typing import Any

import click

from daemon.context import AppContext, echo_json_lines, run_async
from state import training as store
from state.db import open_db

__all__ = ["COMMANDS"]

_BAR_WIDTH = 30


class _ProgressPrinter:
    """Turns the child's progress events into a one-line bar on stderr."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "setup":
            click.echo(
                f"dataset: {event['n_train']} train / {event['n_holdout']} holdout examples on"
                f" {event['device']} (4-bit: {event['quantize_reason']})",
                err=True,
            )
        elif kind == "step":
            done, total = int(event["step"]), max(int(event["max_steps"]), 1)
            filled = _BAR_WIDTH * done // total
            bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
            trial = f"trial {event['trial']} " if event.get("trial") else ""
            line = f"{trial}[{bar}] {done}/{total} loss {float(event['loss']):.4f}"
            if self.tty:
                click.echo("\r" + line, nl=done >= total, err=True)
            else:
                click.echo(line, err=True)
        elif kind == "eval_set":
            gain = event.get("tuned_nll_gain_vs_base")
            if gain is not None:
                click.echo(
                    f"eval set {event['set']}: answer NLL {100 * gain:+.1f} % vs base", err=True
                )
        elif kind == "stage":
            click.echo(f"{event['stage']}…", err=True)
        elif kind == "trial":
            click.echo(
                f"trial {event['trial']} {event['overrides']}: validation NLL"
                f" {event['validation_nll']:.4f}",
                err=True,
            )


@click.command("train")
@click.pass_obj
def train_cmd(app: AppContext) -> None:
    """Train, evaluate and merge a new run now, in the foreground (ship it with `register`)."""
    from pipeline.train.runs import TrainingBusyError, run_training

    async def go() -> Any:
        db = await open_db(app.settings.paths.db_path)
        try:
            return await run_training(db, app.settings, trigger="cli", progress=_ProgressPrinter())
        finally:
            await db.close()

    try:
        result = run_async(go)
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

    async def go() -> list[store.TrainingRun]:
        db = await open_db(app.settings.paths.db_path)
        try:
            return await store.list_runs(db, limit=limit)
        finally:
            await db.close()

    runs = run_async(go)
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
