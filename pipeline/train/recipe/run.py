"""The recipe from end to end: the stages in order, then the run directory made visible.

`main` is the child's entry point (`python -m pipeline.train.recipe <run-dir>/spec.json`):
the spec is validated before anything loads; exit code 0 = a complete run directory.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import structlog

from pipeline.child_process import emit, log_to_stderr
from pipeline.train.recipe.evaluate import step_eval_sets, step_evaluate
from pipeline.train.recipe.merge import step_merge
from pipeline.train.recipe.report import step_metrics, step_plot
from pipeline.train.recipe.setup import setup
from pipeline.train.recipe.train import step_train
from pipeline.train.spec import RunSpec, load_spec

__all__ = ["main", "run_recipe"]

log = structlog.get_logger(__name__)


def run_recipe(spec: RunSpec, run_dir: Path) -> Path | None:
    """All steps; returns the final run directory (None on non-main ranks)."""
    final_dir = run_dir.parent / spec.run_id
    if final_dir.exists():
        raise FileExistsError(f"{final_dir} already exists")
    ctx = setup(spec, run_dir)
    train = step_train(ctx)
    if not ctx.is_main:
        return None  # rank 0 evaluates, merges and publishes
    if ctx.world_size > 1:
        ctx.tuned = None  # the trained copy is DDP/FSDP-wrapped; reload from the saved adapter
    evaluation = step_evaluate(ctx)
    eval_sets = step_eval_sets(ctx)
    step_merge(ctx)
    step_plot(ctx, evaluation)
    metrics = step_metrics(ctx, train, evaluation, eval_sets)
    trainer_dir = run_dir / "trainer"
    if trainer_dir.exists():
        shutil.rmtree(trainer_dir)  # Trainer scratch (no checkpoints are saved)
    run_dir.rename(final_dir)  # the run becomes visible only now, complete
    emit(
        "done",
        run_dir=str(final_dir),
        metrics_path=str(final_dir / "metrics.json"),
        holdout_ppl_reduction=metrics["eval"]["holdout_ppl_reduction"],
    )
    return final_dir


def main(argv: list[str] | None = None) -> int:
    """Entry point of the child process; exit code 0 = complete run directory."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m pipeline.train.recipe <run-dir>/spec.json", file=sys.stderr)
        return 2
    log_to_stderr()
    spec_path = Path(args[0]).resolve()
    try:
        spec = load_spec(spec_path)
    except (OSError, ValueError) as exc:
        print(f"doctune-train: {exc}", file=sys.stderr)
        return 2
    log.info("training.start", run_id=spec.run_id, base_model=spec.base_model)
    final = run_recipe(spec, spec_path.parent)
    log.info("training.done", run_id=spec.run_id, run_dir=str(final))
    return 0
