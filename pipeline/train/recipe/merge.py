"""Recipe stage 4, merge: the adapter folded into full-precision base weights → `merged/`.

Never into 4-bit weights: a QLoRA run reloads the base in its 16-bit compute dtype first.
`merged/` is written as `merged.part` and renamed, with the prompt format it was trained on
(`doctune_prompt.json`) and the end-of-turn tokens as generation stops.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from pipeline.child_process import emit
from pipeline.train import base_model as bm
from pipeline.train.recipe.setup import Context, write_json

__all__ = ["merge_dtype", "step_merge"]


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
    model = _merged_model(ctx, merge_dtype(ctx))
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
    write_json(part / "doctune_prompt.json", {**fmt.as_dict(), "stop_token_ids": stop_ids})
    part.rename(merged_dir)
    ctx.timings_s["merge"] = time.monotonic() - t0
    return merged_dir


def _merged_model(ctx: Context, dtype: torch.dtype) -> Any:
    """The tuned model in memory when it already has the right weights, else base + adapter
    reloaded in `dtype` on the CPU; either way merged and unloaded, the context's models freed."""
    if ctx.tuned is not None and not ctx.quantize and ctx.dtype == dtype:
        model = ctx.tuned.merge_and_unload()
    else:
        from peft import PeftModel

        ctx.tuned = ctx.base = None
        fresh = bm.load_base_model(ctx.ref, dtype=dtype)  # full precision, on the CPU
        model = PeftModel.from_pretrained(fresh, str(ctx.run_dir / "adapter")).merge_and_unload()
    ctx.tuned = ctx.base = None
    return model.to(dtype)


def _token_id(tokenizer: PreTrainedTokenizerBase, token: str) -> int:
    token_id = tokenizer.convert_tokens_to_ids(token)
    assert isinstance(token_id, int)
    return token_id
