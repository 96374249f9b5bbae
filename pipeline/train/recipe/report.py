"""Recipe stage 5, report: `loss.png` and `metrics.json`, what a user or the gate reads."""

from __future__ import annotations

import json
from typing import Any

import torch

from pipeline.train.plot import plot_run
from pipeline.train.recipe.merge import merge_dtype
from pipeline.train.recipe.setup import Context, write_json

__all__ = ["step_metrics", "step_plot"]


def step_plot(ctx: Context, evaluation: dict[str, Any]) -> None:
    """loss.png from train_log.jsonl and the evaluation."""
    path = ctx.run_dir / "loss.png"
    if path.is_file():
        return
    log_path = ctx.run_dir / "train_log.jsonl"
    rows = (
        [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
        if log_path.is_file()
        else []
    )
    plot_run(path, rows, evaluation, f"doctune run {ctx.spec.run_id}")


def step_metrics(
    ctx: Context,
    train: dict[str, Any],
    evaluation: dict[str, Any],
    eval_sets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """metrics.json: everything a user or the registration gate needs about this run."""
    fmt = ctx.renderer.format
    metrics: dict[str, Any] = {
        "run_id": ctx.spec.run_id,
        "trigger": ctx.spec.trigger,
        "base_model": ctx.spec.base_model,
        "device": ctx.device,
        "dtype": str(ctx.dtype).removeprefix("torch."),
        "merge_dtype": str(merge_dtype(ctx)).removeprefix("torch."),
        "quantize_4bit": ctx.quantize,
        "quantize_reason": ctx.quantize_reason,
        "cpu_bf16_autocast": ctx.autocast_bf16,
        "packing": ctx.spec.packing,
        "world_size": ctx.world_size,
        "dataset": _dataset(ctx),
        "train": train,
        "eval": evaluation,
        "eval_sets": eval_sets or {},
        "prompt": {k: v for k, v in fmt.as_dict().items() if k != "chat_template"},
        "timings_s": ctx.timings_s,
        "versions": _versions(),
    }
    write_json(ctx.run_dir / "metrics.json", metrics)
    return metrics


def _dataset(ctx: Context) -> dict[str, Any]:
    return {
        "n_train": len(ctx.train),
        "n_holdout": len(ctx.holdout),
        "n_validation": len(ctx.validation),
        "split": "by source chunk: train / validation (sweep) / holdout (reported, gated)",
        **ctx.dropped,
    }


def _versions() -> dict[str, str]:
    import peft
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }
