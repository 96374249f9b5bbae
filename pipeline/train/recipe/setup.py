"""Recipe stage 1, setup: the device and precision, the tokenizer, both splits rendered.

`Context` is what the later stages share; `load_base` loads the base weights once for them.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from pipeline.child_process import emit
from pipeline.train import base_model as bm
from pipeline.train.dataset import read_jsonl
from pipeline.train.render import Example, Renderer
from pipeline.train.spec import RunSpec, SpecError

__all__ = [
    "Context",
    "bnb_config",
    "cpu_supports_bf16",
    "load_base",
    "resolve_quantization",
    "setup",
    "write_json",
]


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


@dataclass(frozen=True)
class _Precision:
    device: str
    dtype: torch.dtype
    quantize: bool
    quantize_reason: str
    autocast_bf16: bool


@dataclass(frozen=True)
class _Splits:
    train: list[Example]
    dropped_train: int
    holdout: list[Example]
    holdout_pairs: list[tuple[str, str]]
    validation: list[Example]


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


def _precision(spec: RunSpec, ref: bm.BaseModelRef) -> _Precision:
    """Device, weight dtype, QLoRA or not, CPU bf16 autocast or not."""
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
    return _Precision("cuda" if cuda else "cpu", dtype, quantize, reason, autocast)


def _render_splits(renderer: Renderer, run_dir: Path, spec: RunSpec) -> _Splits:
    """train / holdout / validation of the snapshot, rendered; what does not fit is dropped."""
    dataset = run_dir / "dataset"
    train, dropped_train = _render_all(
        renderer, read_jsonl(dataset / "train.jsonl"), spec.max_seq_len
    )
    holdout_kept = [
        (r["question"], r["answer"])
        for r in read_jsonl(dataset / "holdout.jsonl")
        if len(renderer.render(r["question"], r["answer"]).input_ids) <= spec.max_seq_len
    ][: spec.eval_max_examples]
    holdout = [renderer.render(q, a) for q, a in holdout_kept]
    if not train:
        raise SpecError(["dataset: no training example fits max_seq_len"])
    if not holdout:
        raise SpecError(["dataset: no holdout example fits max_seq_len"])
    validation_path = dataset / "validation.jsonl"
    validation_rows = read_jsonl(validation_path) if validation_path.is_file() else []
    validation = _render_all(renderer, validation_rows, spec.max_seq_len)[0][
        : spec.eval_max_examples
    ]
    return _Splits(train, dropped_train, holdout, holdout_kept, validation)


def setup(spec: RunSpec, run_dir: Path) -> Context:
    """Validate the environment, load the tokenizer, render both splits."""
    t0 = time.monotonic()
    ref = bm.describe_base_model(spec.base_model)
    p = _precision(spec, ref)
    tokenizer = bm.load_tokenizer(ref)
    renderer = Renderer(tokenizer, spec.template_vars)
    splits = _render_splits(renderer, run_dir, spec)
    ctx = Context(
        spec=spec,
        run_dir=run_dir,
        ref=ref,
        device=p.device,
        dtype=p.dtype,
        quantize=p.quantize,
        quantize_reason=p.quantize_reason,
        autocast_bf16=p.autocast_bf16,
        tokenizer=tokenizer,
        renderer=renderer,
        train=splits.train,
        holdout=splits.holdout,
        holdout_pairs=splits.holdout_pairs,
        validation=splits.validation,
        dropped={"train_too_long": splits.dropped_train},
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
        rank=int(os.environ.get("RANK", "0")),
    )
    ctx.timings_s["setup"] = time.monotonic() - t0
    emit(
        "setup",
        n_train=len(ctx.train),
        n_holdout=len(ctx.holdout),
        n_validation=len(ctx.validation),
        device=ctx.device,
        quantize_4bit=ctx.quantize,
        quantize_reason=ctx.quantize_reason,
        cpu_bf16_autocast=ctx.autocast_bf16,
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


def write_json(path: Path, value: Any) -> None:
    """Write `path` atomically (`.part`, then rename): a stage's output exists only when whole."""
    part = path.with_name(path.name + ".part")
    part.write_text(
        json.dumps(value, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8"
    )
    part.replace(path)
