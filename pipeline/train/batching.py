"""Batches: padding-free packing (the default) or pad-to-longest, both counting real tokens.

Packing concatenates a mini-batch into one row and restarts `position_ids` at every example;
transformers turns restarted positions into a block-diagonal causal mask (SDPA/eager) or
varlen kernels (flash-attention), so examples never attend to each other and no FLOP is spent
on padding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import DataCollatorWithFlattening

from pipeline.train.render import IGNORE_INDEX, Example

__all__ = ["CountingCollator", "make_collator", "pad_to_longest"]

Features = Sequence[dict[str, Any]]


class CountingCollator:
    """Wraps a collator and counts the real (non-padding) tokens it has emitted."""

    def __init__(self, inner: Callable[[Features], dict[str, torch.Tensor]]) -> None:
        self.inner = inner
        self.tokens = 0
        self.padded_tokens = 0  # positions computed, padding included

    def __call__(self, features: Features) -> dict[str, torch.Tensor]:
        self.tokens += sum(len(f["input_ids"]) for f in features)
        batch = self.inner(features)
        self.padded_tokens += int(batch["input_ids"].numel())
        return batch


def make_collator(
    *, packing: bool, pad_id: int, with_flash_kwargs: bool = False
) -> CountingCollator:
    """The training collator; `with_flash_kwargs` adds cu_seqlens for flash-attention kernels."""
    if packing:
        return CountingCollator(
            DataCollatorWithFlattening(
                return_position_ids=True,
                separator_id=IGNORE_INDEX,
                return_flash_attn_kwargs=with_flash_kwargs,
            )
        )
    return CountingCollator(lambda features: pad_to_longest(features, pad_id))


def pad_to_longest(features: Features, pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch to its longest example (labels padded with IGNORE_INDEX)."""
    width = max(len(f["input_ids"]) for f in features)
    ids = torch.full((len(features), width), pad_id, dtype=torch.long)
    labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(features), width), dtype=torch.long)
    for row, f in enumerate(features):
        n = len(f["input_ids"])
        ids[row, :n] = torch.tensor(f["input_ids"])
        labels[row, :n] = torch.tensor(f["labels"])
        mask[row, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def as_features(examples: Sequence[Example]) -> list[dict[str, Any]]:
    """Examples as the dict rows collators and `datasets` expect."""
    return [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]
