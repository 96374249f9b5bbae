"""Recipe stage 2b, sweep: several trials (lr / lora_r / epochs), the winner by validation NLL.

Each trial trains into `trials/NN/adapter` and records `trials/NN/result.json`, so a resumed
run skips the trials already done. The holdout (test part) plays no role in the choice, so
the figure reported on it is not the winner of a search over it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.child_process import emit
from pipeline.train.recipe.setup import Context, write_json
from pipeline.train.scores import answer_nll
from pipeline.train.spec import RunSpec, SpecError

__all__ = ["TrainFn", "train_sweep"]

# train_adapter(ctx, spec, adapter_dir, trial) -> summary (recipe.train)
TrainFn = Callable[[Context, RunSpec, Path, int], dict[str, Any]]


def train_sweep(
    ctx: Context, trials: list[dict[str, float]], adapter_dir: Path, train: TrainFn
) -> dict[str, Any]:
    """Train every trial, score each on the validation part (NLL), copy the best to `adapter/`."""
    if not ctx.validation:
        raise SpecError(["sweep: the validation part is empty; raise validation_fraction"])
    results = [_trial(ctx, i, overrides, train) for i, overrides in enumerate(trials, start=1)]
    best = min(results, key=lambda r: r["validation_nll"])
    if adapter_dir.exists():
        shutil.rmtree(adapter_dir)
    shutil.copytree(ctx.run_dir / "trials" / f"{best['trial']:02d}" / "adapter", adapter_dir)
    return {**best, "trials": results, "selected_by": "validation_nll"}


def _trial(ctx: Context, i: int, overrides: dict[str, float], train: TrainFn) -> dict[str, Any]:
    """One trial's result: read back when done before, else trained and scored now."""
    trial_dir = ctx.run_dir / "trials" / f"{i:02d}"
    result_path = trial_dir / "result.json"
    if result_path.is_file():
        return dict(json.loads(result_path.read_text()))
    summary = train(ctx, ctx.spec.with_overrides(overrides), trial_dir / "adapter", i)
    if ctx.world_size > 1:
        raise SpecError(["sweep: not supported with more than one process; run it on one GPU"])
    nll, n = answer_nll(ctx.tuned, ctx.validation, batch_size=ctx.spec.batch_size)
    result = {**summary, "overrides": overrides, "validation_nll": nll / max(n, 1)}
    write_json(result_path, result)
    ctx.base = ctx.tuned.unload()  # back to the plain base for the next trial
    ctx.tuned = None
    emit("trial", trial=i, overrides=overrides, validation_nll=result["validation_nll"])
    return result
