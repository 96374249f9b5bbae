"""The training child: `python -m pipeline.train.recipe <run-dir>/spec.json`.

setup → train (LoRA, or 4-bit QLoRA on CUDA) → save adapter + loss log → evaluate base vs
tuned → merge into a float base → plot → metrics.json → rename `<id>.tmp` to `<id>`.
Every step skips when its output already exists, so re-running a crashed run resumes it.
Progress goes to stdout as JSON lines (`{"event": ...}`); logs go to stderr.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback

from pipeline.train import base_model as bm
from pipeline.train.batching import as_features, make_collator
from pipeline.train.dataset import read_jsonl
from pipeline.train.evaluate import ModelScores, answer_nll, compare, score_model
from pipeline.train.plot import plot_run
from pipeline.train.render import Example, Renderer
from pipeline.train.spec import RunSpec, SpecError, load_spec, sweep_trials

__all__ = ["bnb_config", "main", "resolve_quantization", "run_recipe"]

log = structlog.get_logger(__name__)

ADAPTER_WEIGHTS = "adapter_model.safetensors"


def emit(event: str, **fields: Any) -> None:
    """One progress line on stdout for the parent (runner) to read."""
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


@dataclass
class Context:
    """What the steps share: the spec, where things go, the tokenizer, data, loaded models."""

    spec: RunSpec
    run_dir: Path
    ref: bm.BaseModelRef
    device: str
    dtype: torch.dtype
    quantize: bool
    quantize_reason: str
    tokenizer: PreTrainedTokenizerBase
    renderer: Renderer
    train: list[Example]
    holdout: list[Example]
    holdout_pairs: list[tuple[str, str]]
    dropped: dict[str, int]
    validation: list[Example] = field(default_factory=list)  # picks the sweep's winner
    autocast_bf16: bool = False  # CPU: fp32 weights, bf16 matmuls (autocast)
    world_size: int = 1
    rank: int = 0
    base: PreTrainedModel | None = None  # base weights in memory (LoRA layers unloaded)
    tuned: Any = None  # PeftModel holding the final adapter, when still in memory
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_quantization(
    mode: str, *, cuda: bool, ref: bm.BaseModelRef, bnb_available: bool
) -> tuple[bool, str]:
    """Whether to load the base in 4-bit (QLoRA), and why; `true` fails loudly when impossible."""
    if mode == "false":
        return False, "quantize_4bit = false"
    blocker = None
    if not cuda:
        blocker = "no CUDA device (bitsandbytes 4-bit needs one)"
    elif ref.kind == "gguf":
        blocker = "a GGUF base is dequantized by transformers, not re-quantized by bitsandbytes"
    elif not bnb_available:
        blocker = "bitsandbytes is not installed"
    if blocker is None:
        return True, "CUDA + bitsandbytes: 4-bit NF4 QLoRA"
    if mode == "true":
        raise SpecError([f"quantize_4bit: true, but {blocker}"])
    return False, f"auto: {blocker}"


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bf16 dot products (AVX512-BF16 or AMX), where bf16
    autocast runs matmuls ~2-3x faster than fp32; elsewhere it would be slower."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def _bitsandbytes_importable() -> bool:
    try:
        import bitsandbytes  # noqa: F401
    except Exception:  # bitsandbytes raises more than ImportError without its native lib
        return False
    return True


def bnb_config(compute_dtype: torch.dtype) -> Any:
    """The QLoRA quantization: NF4 weights, double quantization, compute in `compute_dtype`."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def setup(spec: RunSpec, run_dir: Path) -> Context:
    """Validate the environment, load the tokenizer, render both splits."""
    t0 = time.monotonic()
    ref = bm.describe_base_model(spec.base_model)
    cuda = torch.cuda.is_available()
    bnb = cuda and _bitsandbytes_importable()
    quantize, reason = resolve_quantization(
        spec.quantize_4bit, cuda=cuda, ref=ref, bnb_available=bnb
    )
    if cuda:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = torch.float32  # master weights; matmuls may still autocast to bf16
    autocast = not cuda and (
        spec.cpu_bf16 == "true" or (spec.cpu_bf16 == "auto" and cpu_supports_bf16())
    )
    tokenizer = bm.load_tokenizer(ref)
    renderer = Renderer(tokenizer, spec.template_vars)
    train_rows = read_jsonl(run_dir / "dataset" / "train.jsonl")
    holdout_rows = read_jsonl(run_dir / "dataset" / "holdout.jsonl")
    train, dropped_train = _render_all(renderer, train_rows, spec.max_seq_len)
    holdout_kept = [
        (r["question"], r["answer"])
        for r in holdout_rows
        if len(renderer.render(r["question"], r["answer"]).input_ids) <= spec.max_seq_len
    ][: spec.eval_max_examples]
    holdout = [renderer.render(q, a) for q, a in holdout_kept]
    if not train:
        raise SpecError(["dataset: no training example fits max_seq_len"])
    if not holdout:
        raise SpecError(["dataset: no holdout example fits max_seq_len"])
    validation_path = run_dir / "dataset" / "validation.jsonl"
    validation_rows = read_jsonl(validation_path) if validation_path.is_file() else []
    validation = _render_all(renderer, validation_rows, spec.max_seq_len)[0][
        : spec.eval_max_examples
    ]
    ctx = Context(
        spec=spec,
        run_dir=run_dir,
        ref=ref,
        device="cuda" if cuda else "cpu",
        dtype=dtype,
        quantize=quantize,
        quantize_reason=reason,
        autocast_bf16=autocast,
        tokenizer=tokenizer,
        renderer=renderer,
        train=train,
        holdout=holdout,
        holdout_pairs=holdout_kept,
        validation=validation,
        dropped={"train_too_long": dropped_train},
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
        rank=int(os.environ.get("RANK", "0")),
    )
    ctx.timings_s["setup"] = time.monotonic() - t0
    emit(
        "setup",
        n_train=len(train),
        n_holdout=len(holdout),
        n_validation=len(validation),
        device=ctx.device,
        quantize_4bit=quantize,
        quantize_reason=reason,
        cpu_bf16_autocast=autocast,
    )
    return ctx


def _render_all(
    renderer: Renderer, rows: list[dict[str, Any]], max_len: int
) -> tuple[list[Example], int]:
    kept, dropped = [], 0
    for row in rows:
        example = renderer.render(row["question"], row["answer"])
        if len(example.input_ids) > max_len or example.n_answer_tokens == 0:
            dropped += 1  # truncating would cut the end-of-turn token the model must learn
            continue
        kept.append(example)
    return kept, dropped


def load_base(ctx: Context) -> PreTrainedModel:
    """The base model for training/evaluation (4-bit when QLoRA), cached on the context."""
    if ctx.base is None:
        t0 = time.monotonic()
        quant = bnb_config(ctx.dtype) if ctx.quantize else None
        device_map = {"": int(os.environ.get("LOCAL_RANK", "0"))} if ctx.device == "cuda" else None
        ctx.base = bm.load_base_model(
            ctx.ref, dtype=ctx.dtype, quantization_config=quant, device_map=device_map
        )
        # No KV cache in training/scoring: with a cache, transformers ignores restarted
        # position_ids and packed examples would attend to each other.
        ctx.base.config.use_cache = False
        ctx.timings_s["load_base"] = ctx.timings_s.get("load_base", 0.0) + time.monotonic() - t0
    return ctx.base


class _ProgressCallback(TrainerCallback):
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


def train_adapter(ctx: Context, spec: RunSpec, adapter_dir: Path, trial: int) -> dict[str, Any]:
    """Train one LoRA adapter with transformers' Trainer; returns the training summary."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import PrinterCallback, TrainingArguments, set_seed

    from pipeline.train.trainer import AnswerOnlyTrainer

    set_seed(spec.seed)
    base = load_base(ctx)
    if ctx.quantize:
        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=True)
    lora = LoraConfig(
        r=spec.lora_r,
        lora_alpha=spec.lora_alpha,
        lora_dropout=spec.lora_dropout,
        target_modules=list(spec.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, lora)
    flash = getattr(model.config, "_attn_implementation", "") == "flash_attention_2"
    collator = make_collator(
        packing=spec.packing, pad_id=int(ctx.tokenizer.pad_token_id), with_flash_kwargs=flash
    )
    args = TrainingArguments(
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
    import datasets

    train_ds = datasets.Dataset.from_list(as_features(ctx.train))
    log_path = ctx.run_dir / "train_log.jsonl"
    trainer = AnswerOnlyTrainer(
        model=model,
        args=args,
        data_collator=collator,
        train_dataset=train_ds,
        callbacks=[_ProgressCallback(log_path, trial, collator)],
    )
    trainer.remove_callback(PrinterCallback)  # stdout carries our JSON protocol only
    result = trainer.train()
    runtime = float(result.metrics.get("train_runtime", 0.0)) or 1e-9
    trainer.save_model(str(adapter_dir))  # handles DDP/FSDP: gathers, writes on rank 0 only
    summary = {
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
    ctx.tuned = model if ctx.world_size == 1 else None
    return summary


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
        summary = _sweep(ctx, trials, adapter_dir)
    if ctx.is_main:
        ctx.tokenizer.save_pretrained(str(adapter_dir))
        _write_json(summary_path, summary)
    ctx.timings_s["train"] = time.monotonic() - t0
    return summary


def _sweep(ctx: Context, trials: list[dict[str, float]], adapter_dir: Path) -> dict[str, Any]:
    """Train every trial, score each on the validation part (NLL), copy the best to `adapter/`.

    The holdout (test part) plays no role in the choice, so the figure reported on it is not
    the winner of a search over it."""
    if not ctx.validation:
        raise SpecError(["sweep: the validation part is empty; raise validation_fraction"])
    results = []
    for i, overrides in enumerate(trials, start=1):
        trial_dir = ctx.run_dir / "trials" / f"{i:02d}"
        result_path = trial_dir / "result.json"
        if result_path.is_file():
            results.append(json.loads(result_path.read_text()))
            continue
        summary = train_adapter(ctx, ctx.spec.with_overrides(overrides), trial_dir / "adapter", i)
        if ctx.world_size > 1:
            raise SpecError(["sweep: not supported with more than one process; run it on one GPU"])
        nll, n = answer_nll(ctx.tuned, ctx.validation, batch_size=ctx.spec.batch_size)
        result = {**summary, "overrides": overrides, "validation_nll": nll / max(n, 1)}
        _write_json(result_path, result)
        results.append(result)
        ctx.base = ctx.tuned.unload()  # back to the plain base for the next trial
        ctx.tuned = None
        emit("trial", trial=i, overrides=overrides, validation_nll=result["validation_nll"])
    best = min(results, key=lambda r: r["validation_nll"])
    if adapter_dir.exists():
        shutil.rmtree(adapter_dir)
    shutil.copytree(ctx.run_dir / "trials" / f"{best['trial']:02d}" / "adapter", adapter_dir)
    return {**best, "trials": results, "selected_by": "validation_nll"}


def _tuned_model(ctx: Context) -> Any:
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
    tuned = _tuned_model(ctx)
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
    _write_json(path, result)
    ctx.timings_s["evaluate"] = time.monotonic() - t0
    emit("evaluated", **{k: v for k, v in result.items() if not isinstance(v, dict)})
    return result


def step_eval_sets(ctx: Context) -> dict[str, Any]:
    """Base, base+retrieval (when the set carries contexts) and tuned on every eval set the
    runner copied into `evalsets/` → eval_sets.json."""
    from pipeline.evaluation.scoring import score_set, summarize

    path = ctx.run_dir / "eval_sets.json"
    if path.is_file():
        emit("skip", step="eval_sets")
        return dict(json.loads(path.read_text()))
    files = sorted((ctx.run_dir / "evalsets").glob("*.jsonl"))
    if not files:
        return {}
    t0 = time.monotonic()
    emit("stage", stage="eval_sets")
    tuned = _tuned_model(ctx)
    spec = ctx.spec
    kwargs: dict[str, Any] = {
        "generate_examples": spec.eval_generate_examples,
        "max_new_tokens": spec.eval_max_new_tokens,
        "batch_size": spec.batch_size,
    }
    result: dict[str, Any] = {}
    for file in files:
        rows = read_jsonl(file)
        models: dict[str, dict[str, Any]] = {}
        with tuned.disable_adapter():
            models["base"] = score_set(tuned, ctx.renderer, rows, **kwargs)
            if any(r.get("contexts") for r in rows):
                models["base+retrieval"] = score_set(
                    tuned, ctx.renderer, rows, with_context=True, **kwargs
                )
        models["tuned"] = score_set(tuned, ctx.renderer, rows, **kwargs)
        result[file.stem] = summarize(rows, models)
        emit("eval_set", set=file.stem, **result[file.stem]["gains"])
    _write_json(path, result)
    ctx.timings_s["eval_sets"] = time.monotonic() - t0
    return result


def merge_dtype(ctx: Context) -> torch.dtype:
    """`auto`: the training dtype, except QLoRA merges into the 16-bit compute dtype."""
    named = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
    return named.get(ctx.spec.merge_dtype, ctx.dtype)


def step_merge(ctx: Context) -> Path:
    """Merge the adapter into full-precision base weights → `merged/` (never into 4-bit)."""
    merged_dir = ctx.run_dir / "merged"
    if (merged_dir / "config.json").is_file():
        emit("skip", step="merge")
        return merged_dir
    t0 = time.monotonic()
    emit("stage", stage="merge")
    dtype = merge_dtype(ctx)
    if ctx.tuned is not None and not ctx.quantize and ctx.dtype == dtype:
        model = ctx.tuned.merge_and_unload()
    else:
        from peft import PeftModel

        ctx.tuned = ctx.base = None
        fresh = bm.load_base_model(ctx.ref, dtype=dtype)  # full precision, on the CPU
        model = PeftModel.from_pretrained(fresh, str(ctx.run_dir / "adapter")).merge_and_unload()
    ctx.tuned = ctx.base = None
    model = model.to(dtype)
    fmt = ctx.renderer.format
    stop_ids = sorted({_token_id(ctx.tokenizer, t) for t in fmt.stop_tokens})
    model.config.use_cache = True
    model.generation_config.eos_token_id = stop_ids
    model.generation_config.pad_token_id = ctx.tokenizer.pad_token_id
    part = ctx.run_dir / "merged.part"
    if part.exists():
        shutil.rmtree(part)
    model.save_pretrained(str(part))
    ctx.tokenizer.save_pretrained(str(part))
    _write_json(part / "doctune_prompt.json", {**fmt.as_dict(), "stop_token_ids": stop_ids})
    part.rename(merged_dir)
    ctx.timings_s["merge"] = time.monotonic() - t0
    return merged_dir


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
    import peft
    import transformers

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
        "dataset": {
            "n_train": len(ctx.train),
            "n_holdout": len(ctx.holdout),
            "n_validation": len(ctx.validation),
            "split": "by source chunk: train / validation (sweep) / holdout (reported, gated)",
            **ctx.dropped,
        },
        "train": train,
        "eval": evaluation,
        "eval_sets": eval_sets or {},
        "prompt": {k: v for k, v in fmt.as_dict().items() if k != "chat_template"},
        "timings_s": ctx.timings_s,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
        },
    }
    _write_json(ctx.run_dir / "metrics.json", metrics)
    return metrics


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


def _token_id(tokenizer: PreTrainedTokenizerBase, token: str) -> int:
    token_id = tokenizer.convert_tokens_to_ids(token)
    assert isinstance(token_id, int)
    return token_id


def _write_json(path: Path, value: Any) -> None:
    part = path.with_name(path.name + ".part")
    part.write_text(
        json.dumps(value, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8"
    )
    part.replace(path)


def _configure_logging() -> None:
    # stdout carries the progress protocol; every log line goes to stderr.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the child process; exit code 0 = complete run directory."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m pipeline.train.recipe <run-dir>/spec.json", file=sys.stderr)
        return 2
    _configure_logging()
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


if __name__ == "__main__":
    raise SystemExit(main())
