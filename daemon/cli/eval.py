"""Evaluation commands: `eval` (base / tuned / served on eval sets) and `faq` (harvest a set)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from daemon.cli.output import one_line
from daemon.context import AppContext, run_with_db

if TYPE_CHECKING:
    from pipeline.evaluation.sets import EvalSet
    from state.db import Database

__all__ = ["COMMANDS"]


def _progress(event: dict[str, Any]) -> None:
    if event.get("event") == "scoring":
        click.echo(
            f"scoring {event['model']} on {event['set']} ({event['n']} questions)…", err=True
        )


@click.command("eval")
@click.argument("run_id", required=False)
@click.option(
    "--set",
    "set_paths",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSONL eval set (rows: question, answer[, source]); repeatable."
    " Default: [evaluation] sets.",
)
@click.option(
    "--retrieval/--no-retrieval",
    default=None,
    help="Also score the base model given the top-k BM25 chunks"
    " (default: [evaluation] retrieval_baseline).",
)
@click.option("--json", "as_json", is_flag=True, help="The whole result as one JSON object.")
@click.pass_obj
def eval_cmd(
    app: AppContext,
    run_id: str | None,
    set_paths: tuple[Path, ...],
    retrieval: bool | None,
    as_json: bool,
) -> None:
    """Compare base, tuned (RUN, default: the newest trained run) and served on eval sets."""
    from pipeline.evaluation.compare import EvalError, plan_eval, run_eval_child

    settings = app.settings
    sets = _load_sets(list(set_paths) or list(settings.evaluation.sets))
    use_retrieval = settings.evaluation.retrieval_baseline if retrieval is None else retrieval

    async def evaluate(db: Database) -> tuple[Any, dict[str, Any]]:
        plan = await plan_eval(db, settings, run_id)
        click.echo(f"evaluating: {plan.describe()}", err=True)
        result = await run_eval_child(
            db, settings, plan, sets, retrieval=use_retrieval, progress=_progress
        )
        return plan, result

    try:
        plan, result = run_with_db(settings, evaluate)
    except EvalError as exc:
        raise click.ClickException(str(exc)) from None
    result = {"run_id": plan.run_id, "base_model": plan.base_model, **result}
    if as_json:
        sys.stdout.write(json.dumps(result, ensure_ascii=False, default=str) + "\n")
        return
    click.echo(format_report(result))


def _load_sets(paths: list[Path]) -> list[EvalSet]:
    """The eval sets to score, read and checked up front (a bad row or a name twice: exit)."""
    from pipeline.evaluation.sets import EvalSetError, load_set

    if not paths:
        raise click.UsageError("no eval set: pass --set FILE.jsonl or set [evaluation] sets")
    try:
        sets = [load_set(p) for p in paths]
    except EvalSetError as exc:
        raise click.ClickException(str(exc)) from None
    names = [s.name for s in sets]
    if len(set(names)) != len(names):
        raise click.UsageError(f"two sets share a name: {names}")
    return sets


def format_report(result: dict[str, Any]) -> str:
    """The human table: one row per model per set, then a few answers side by side."""
    out = [f"run {result.get('run_id') or '(none: base only)'}; base {result['base_model']}"]
    for name, s in result["sets"].items():
        out.append("")
        out.append(f"set {name} ({s['n']} questions)")
        out.append(f"  {'model':<16} {'answer NLL':>10} {'ppl':>8} {'ROUGE-L':>8}")
        for label, m in s["models"].items():
            rouge = "-" if m["rouge_l"] is None else f"{m['rouge_l']:.3f}"
            out.append(f"  {label:<16} {m['answer_nll']:>10.4f} {m['answer_ppl']:>8.2f} {rouge:>8}")
        for key, value in s.get("gains", {}).items():
            if value is not None:
                out.append(f"  {key.replace('_', ' ')}: {100 * value:+.1f} %")
        for ex in s.get("examples", []):
            out.append(f"  Q: {ex['question']}")
            out.append(f"     reference: {one_line(ex['reference'])}")
            for label, answer in ex["answers"].items():
                out.append(f"     {label}: {one_line(answer)}")
    return "\n".join(out)


@click.command("faq")
@click.option("--repo", default=None, help="Only this repository (default: all).")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write the pairs (JSONL: question, answer, source, repo, lines, kind).",
)
@click.pass_obj
def faq_cmd(app: AppContext, repo: str | None, out: Path) -> None:
    """Harvest the Q/A pairs the docs write themselves (question headings, bold questions,
    definition lists) into an eval set."""
    from pipeline.evaluation.faq import harvest_repos
    from pipeline.evaluation.sets import write_set

    try:
        pairs = harvest_repos(app.settings, repo)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    write_set(out, [p.as_row() for p in pairs])
    by_kind: dict[str, int] = {}
    for p in pairs:
        by_kind[p.kind] = by_kind.get(p.kind, 0) + 1
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(by_kind.items())) or "none found"
    files = len({(p.repo, p.source) for p in pairs})
    click.echo(f"{len(pairs)} pairs from {files} files ({kinds}) → {out}")


COMMANDS: list[click.Command] = [eval_cmd, faq_cmd]
