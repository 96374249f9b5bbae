"""Recipe stage 3, evaluate: base vs tuned on the holdout, the general text and the eval sets.

`eval.json` (holdout answer perplexity, ROUGE-L, general-text drift) and `eval_sets.json`
(every set `pipeline.train.runs` copied into `evalsets/`, with base+retrieval when the set
carries contexts); each is skipped when it already exists.
"""

from __future__ import annotations

import json
import time
from typing import Any

from pipeline.child_process import emit
from pipeline.train.dataset import read_jsonl
from pipeline.train.recipe.setup import Context, load_base, write_json
from pipeline.train.scores import ModelScores, compare, score_model

__all__ = ["step_eval_sets", "step_evaluate", "tuned_model"]


def tuned_model(ctx: Context) -> Any:
    """The PeftModel with the final adapter (reused from training when still in memory)."""
    if ctx.tuned is None:
        from peft import PeftModel

        ctx.tuned = PeftModel.from_pretrained(load_base(ctx), str(ctx.run_dir / "adapter"))
    return ctx.tuned


def step_evaluate(ctx: Context) -> dict[str, Any]:
    """Base vs tuned on the holdout and on the general text → eval.json."""
    path = ctx.run_dir / "eval.json"
    if path.is_file():
        emit("skip", step="evaluate")
        return dict(json.loads(path.read_text()))
    t0 = time.monotonic()
    emit("stage", stage="evaluate")
    tuned = tuned_model(ctx)
    spec = ctx.spec
    refs = ctx.holdout_pairs[: spec.eval_generate_examples]
    kwargs: dict[str, Any] = {
        "batch_size": spec.batch_size,
        "window": min(spec.max_seq_len, 256),
        "max_new_tokens": spec.eval_max_new_tokens,
    }
    with tuned.disable_adapter():
        base_scores: ModelScores = score_model(tuned, ctx.renderer, ctx.holdout, refs, **kwargs)
    tuned_scores = score_model(tuned, ctx.renderer, ctx.holdout, refs, **kwargs)
    result = compare(base_scores, tuned_scores)
    result["n_holdout_scored"] = len(ctx.holdout)
    result["n_generated"] = len(refs)
    write_json(path, result)
    ctx.timings_s["evaluate"] = time.monotonic() - t0
    emit("evaluated", **{k: v for k, v in result.items() if not isinstance(v, dict)})
    return result


def step_eval_sets(ctx: Context) -> dict[str, Any]:
    """Base, base+retrieval (when the set carries contexts) and tuned on every eval set the
    run folder holds in `evalsets/` (copied by `pipeline.train.runs`) → eval_sets.json."""
    path = ctx.run_dir / "eval_sets.json"
    if path.is_file():
        emit("skip", step="eval_sets")
        return dict(json.loads(path.read_text()))
    files = sorted((ctx.run_dir / "evalsets").glob("*.jsonl"))
    if not files:
        return {}
    t0 = time.monotonic()
    emit("stage", stage="eval_sets")
    result: dict[str, Any] = {}
    for file in files:
        result[file.stem] = _score_set_file(ctx, read_jsonl(file))
        emit("eval_set", set=file.stem, **result[file.stem]["gains"])
    write_json(path, result)
    ctx.timings_s["eval_sets"] = time.monotonic() - t0
    return result


def _score_set_file(ctx: Context, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One set: base (and base+retrieval) with the adapter off, then tuned; summarized."""
    from pipeline.evaluation.scoring import score_set, summarize

    tuned = tuned_model(ctx)
    kwargs: dict[str, Any] = {
        "generate_examples": ctx.spec.eval_generate_examples,
        "max_new_tokens": ctx.spec.eval_max_new_tokens,
        "batch_size": ctx.spec.batch_size,
    }
    models: dict[str, dict[str, Any]] = {}
    with tuned.disable_adapter():
        models["base"] = score_set(tuned, ctx.renderer, rows, **kwargs)
        if any(r.get("contexts") for r in rows):
            models["base+retrieval"] = score_set(
                tuned, ctx.renderer, rows, with_context=True, **kwargs
            )
    models["tuned"] = score_set(tuned, ctx.renderer, rows, **kwargs)
    return dict(summarize(rows, models))
