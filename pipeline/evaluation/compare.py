"""`doctune eval`: which models to compare, and the child process that scores them.

Torch-free: picks the run (its merged model and base), the served version (the active
registration's run), attaches BM25 contexts when the retrieval baseline is on, and runs
`pipeline.evaluation.child` (`pipeline.child_process`: its own process group).
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.child_process import ChildProcess
from pipeline.evaluation.sets import EvalSet, attach_contexts
from pipeline.settings import Settings
from pipeline.train.base_model import resolve_base_model
from pipeline.train.spec import PINNED_DATE
from state import registrations as reg_store
from state import training as train_store
from state.db import Database

__all__ = ["EvalError", "EvalPlan", "plan_eval", "run_eval_child"]


class EvalError(RuntimeError):
    """Nothing to evaluate, or the evaluation child failed (the message says which)."""


@dataclass(frozen=True)
class EvalPlan:
    """What one `doctune eval` compares."""

    base_model: str
    run_id: str | None
    models: list[dict[str, str]]  # [{"label": "tuned"|"served", "dir": merged dir}]
    template_vars: dict[str, str]

    def describe(self) -> str:
        parts = [f"base {self.base_model}"]
        parts += [f"{m['label']} {m['dir']}" for m in self.models]
        return "; ".join(parts)


def _merged(run: train_store.TrainingRun | None) -> Path | None:
    if run is None or not run.run_dir:
        return None
    merged = Path(run.run_dir) / "merged"
    return merged if (merged / "config.json").is_file() else None


async def plan_eval(db: Database, settings: Settings, run_id: str | None) -> EvalPlan:
    """The run (given, else the newest with a merged model), its base, and the served model."""
    run: train_store.TrainingRun | None
    if run_id is not None:
        run = await train_store.get_run(db, run_id)
        if run is None:
            raise EvalError(f"no training run {run_id!r} (see `doctune runs`)")
        if _merged(run) is None:
            raise EvalError(f"run {run_id} has no merged model (state {run.state})")
    else:
        run = next((r for r in await train_store.list_runs(db) if _merged(r)), None)
    models: list[dict[str, str]] = []
    metrics = (run.metrics or {}) if run else {}
    merged = _merged(run)
    if run is not None and merged is not None:
        models.append({"label": "tuned", "dir": str(merged)})
    served = await reg_store.served_model(db)
    if served and served.get("run_id") and (run is None or served["run_id"] != run.id):
        served_run = await train_store.get_run(db, str(served["run_id"]))
        served_dir = _merged(served_run)
        if served_dir is not None:
            models.append({"label": "served", "dir": str(served_dir)})
    base = str(metrics.get("base_model") or resolve_base_model(settings.training.base_model))
    template_vars = dict(
        (metrics.get("prompt") or {}).get("template_vars") or {"date_string": PINNED_DATE}
    )
    return EvalPlan(base, run.id if run else None, models, template_vars)


async def run_eval_child(
    db: Database,
    settings: Settings,
    plan: EvalPlan,
    sets: list[EvalSet],
    *,
    retrieval: bool,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Score every model of `plan` on `sets` in a child process; its result object."""
    e = settings.evaluation
    payload_sets = []
    for s in sets:
        rows = [dict(r) for r in s.rows]
        if retrieval:
            await attach_contexts(db, rows, k=e.retrieval_k)
        payload_sets.append({"name": s.name, "rows": rows})
    request = {
        "base_model": plan.base_model,
        "template_vars": plan.template_vars,
        "models": plan.models,
        "sets": payload_sets,
        "retrieval": retrieval,
        "generate_examples": e.generate_examples,
        "max_new_tokens": e.max_new_tokens,
        "batch_size": settings.training.batch_size,
    }
    with tempfile.TemporaryDirectory(prefix="doctune-eval-") as tmp:
        req_path = Path(tmp) / "request.json"
        req_path.write_text(json.dumps(request), encoding="utf-8")
        cmd = [sys.executable, "-m", "pipeline.evaluation.child", str(req_path)]
        child = ChildProcess(cmd, name="the evaluation child", on_event=progress)
        ended = await child.run()
    if not ended.ok or ended.result is None:
        tail = "\n".join(ended.tail)
        raise EvalError(f"the evaluation child exited with status {ended.returncode}:\n{tail}")
    return ended.result
