"""transformers' Trainer, projecting only the positions that carry loss onto the vocabulary.

A causal LM normally computes logits for every position and then ignores most of them
(system prompt, question, template tokens): on a 49k–128k vocabulary that projection and its
softmax are a large share of a small model's step. Here the hidden states of positions whose
next token is labelled are selected first (`logits_to_keep` with a boolean mask), so the
loss — the same token-mean cross-entropy — costs a fraction of it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F
from transformers import Trainer

from pipeline.train.render import IGNORE_INDEX

__all__ = ["AnswerOnlyTrainer", "answer_only_loss"]


def answer_only_loss(
    model: Any, inputs: dict[str, Any], num_items_in_batch: int | torch.Tensor | None = None
) -> tuple[torch.Tensor, Any]:
    """Sum of next-token cross-entropy over labelled positions / `num_items_in_batch`
    (default: the number of labelled positions in this batch); returns (loss, outputs)."""
    inputs = dict(inputs)
    labels = inputs.pop("labels")
    target = labels[:, 1:]
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = target != IGNORE_INDEX
    outputs = model(**inputs, logits_to_keep=keep, use_cache=False)
    logits = outputs.logits.reshape(-1, outputs.logits.shape[-1]).float()
    loss = F.cross_entropy(logits, target[keep[:, :-1]], reduction="sum")
    denom = num_items_in_batch if num_items_in_batch is not None else keep.sum()
    if isinstance(denom, torch.Tensor):
        denom = denom.to(loss.device)
    return loss / denom, outputs


class AnswerOnlyTrainer(Trainer):
    """`Trainer` whose loss projects only labelled positions (see module docstring)."""

    # The loss is normalised by num_items_in_batch (the whole accumulated batch).
    loss_is_scaled_for_ga = True

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> Any:
        if num_items_in_batch is None:
            labels = inputs["labels"]
            count = (labels[:, 1:] != IGNORE_INDEX).sum()
            num_items_in_batch = count * self.current_gradient_accumulation_steps
        loss, outputs = answer_only_loss(model, inputs, num_items_in_batch)
        if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
            # num_items_in_batch was summed over processes; DDP averages gradients.
            loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss
