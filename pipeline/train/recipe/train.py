"""Recipe stage 2, train: one LoRA adapter with transformers' Trainer → `adapter/`.

`train_adapter` is the unit (one trial): the peft model, the Trainer's arguments, the
answer-only Trainer, the summary. `step_train` runs it once, or the sweep (`recipe.sweep`),
and skips when `adapter/` and `train_summary.json` already exist.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from pipeline.child_process import emit
from pipeline.train.batching import as_features, make_collator
from pipeline.train.recipe.setup import Context, load_base, write_json
from pipeline.train.recipe.sweep import train_sweep
from pipeline.train.spec import RunSpec, sweep_trials

__all__ = [
    "ADAPTER_WEIGHTS",
    "lora_config",
    "peft_model",
    "step_train",
    "train_adapter",
    "training_arguments",
]

ADAPTER_WEIGHTS = "adapter_model.safetensors"


class ProgressCallback(TrainerCallback):
    """Loss per step → train_log.jsonl and a progress line for the parent."""

    def __init__(self, log_path: Path, trial: int, counter: Any) -> None:
        self.log_path = log_path
        self.trial = trial
        self.counter = counter
        self.t0 = time.monotonic()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.t0 = time.monotonic()
        emit("train_begin", trial=self.trial, max_steps=state.max_steps)

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if not logs or "loss" not in logs:
            return
        row = {
            "trial": self.trial,
            "step": state.global_step,
            "epoch": state.epoch,
            "loss": logs["loss"],
            "lr": logs.get("learning_rate"),
            "tokens": self.counter.tokens,
            "elapsed_s": round(time.monotonic() - self.t0, 3),
        }
        if state.is_world_process_zero:
            with self.log_path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
        emit(
            "step",
            trial=self.trial,
            step=state.global_step,
            max_steps=state.max_steps,
            loss=logs["loss"],
        )


def lora_config(spec: RunSpec) -> Any:
    """The LoRA adapter the spec asks for (rank, alpha, dropout, target modules)."""
    from peft import LoraConfig

    return LoraConfig(
        r=spec.lora_r,
        lora_alpha=spec.lora_alpha,
        lora_dropout=spec.lora_dropout,
        target_modules=list(spec.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def peft_model(ctx: Context, spec: RunSpec) -> Any:
    """The base (4-bit prepared when QLoRA) with fresh LoRA layers; seeds first."""
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import set_seed

    set_seed(spec.seed)
    base = load_base(ctx)
    if ctx.quantize:
        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=True)
    return get_peft_model(base, lora_config(spec))


def training_arguments(ctx: Context, spec: RunSpec) -> Any:
    """Trainer arguments: cosine schedule, no checkpoints, precision from setup, stdout free."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(ctx.run_dir / "trainer"),
        per_device_train_batch_size=spec.batch_size,
        gradient_accumulation_steps=spec.grad_accum,
        num_train_epochs=spec.epochs,
        max_steps=spec.max_steps,
        learning_rate=spec.lr,
        lr_scheduler_type="cosine",
        warmup_steps=spec.warmup_ratio,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=spec.seed,
        use_cpu=ctx.device == "cpu",
        bf16=(ctx.device == "cuda" and ctx.dtype == torch.bfloat16) or ctx.autocast_bf16,
        fp16=ctx.device == "cuda" and ctx.dtype == torch.float16,
        activation_checkpointing=ctx.quantize,
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        # Without packing, batch similar lengths together so pad-to-longest wastes little.
        train_sampling_strategy="random" if spec.packing else "group_by_length",
        ddp_find_unused_parameters=False if ctx.world_size > 1 else None,
    )


def train_adapter(ctx: Context, spec: RunSpec, adapter_dir: Path, trial: int) -> dict[str, Any]:
    """Train one LoRA adapter with transformers' Trainer; returns the training summary."""
    import datasets
    from transformers import PrinterCallback

    from pipeline.train.answer_loss import AnswerOnlyTrainer

    model = peft_model(ctx, spec)
    flash = getattr(model.config, "_attn_implementation", "") == "flash_attention_2"
    collator = make_collator(
        packing=spec.packing, pad_id=int(ctx.tokenizer.pad_token_id), with_flash_kwargs=flash
    )
    trainer = AnswerOnlyTrainer(
        model=model,
        args=training_arguments(ctx, spec),
        data_collator=collator,
        train_dataset=datasets.Dataset.from_list(as_features(ctx.train)),
        callbacks=[ProgressCallback(ctx.run_dir / "train_log.jsonl", trial, collator)],
    )
    trainer.remove_callback(PrinterCallback)  # stdout carries our JSON protocol only
    result = trainer.train()
    trainer.save_model(str(adapter_dir))  # handles DDP/FSDP: gathers, writes on rank 0 only
    ctx.tuned = model if ctx.world_size == 1 else None
    return _summary(spec, trial, trainer, result, collator, model)


def _summary(
    spec: RunSpec, trial: int, trainer: Any, result: Any, collator: Any, model: Any
) -> dict[str, Any]:
    runtime = float(result.metrics.get("train_runtime", 0.0)) or 1e-9
    return {
        "trial": trial,
        "lr": spec.lr,
        "lora_r": spec.lora_r,
        "epochs": spec.epochs,
        "steps": trainer.state.global_step,
        "train_runtime_s": runtime,
        "final_loss": _last_loss(trainer.state.log_history),
        "mean_loss": float(result.training_loss),
        "tokens": collator.tokens,
        "padded_tokens": collator.padded_tokens,
        "tokens_per_s": collator.tokens / runtime,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }


def _last_loss(history: list[dict[str, Any]]) -> float | None:
    losses = [h["loss"] for h in history if "loss" in h]
    return float(losses[-1]) if losses else None


def step_train(ctx: Context) -> dict[str, Any]:
    """Train the adapter (or the sweep, keeping the trial with the lowest validation NLL)."""
    adapter_dir = ctx.run_dir / "adapter"
    summary_path = ctx.run_dir / "train_summary.json"
    if (adapter_dir / ADAPTER_WEIGHTS).is_file() and summary_path.is_file():
        emit("skip", step="train")
        return dict(json.loads(summary_path.read_text()))
    t0 = time.monotonic()
    trials = sweep_trials(ctx.spec)
    if trials == [{}]:
        summary = train_adapter(ctx, ctx.spec, adapter_dir, trial=0)
    else:
        summary = train_sweep(ctx, trials, adapter_dir, train_adapter)
    if ctx.is_main:
        ctx.tokenizer.save_pretrained(str(adapter_dir))
        write_json(summary_path, summary)
    ctx.timings_s["train"] = time.monotonic() - t0
    return summary
