"""Scores for held-out text, base vs tuned: answer NLL/perplexity, ROUGE-L, general-text drift."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any

import torch
from transformers import DataCollatorWithFlattening, PreTrainedModel, PreTrainedTokenizerBase

from pipeline.train.batching import as_features
from pipeline.train.render import IGNORE_INDEX, Example, Renderer

__all__ = [
    "ModelScores",
    "answer_nll",
    "compare",
    "general_text",
    "greedy_answers",
    "lcs_length",
    "rouge_l",
    "score_model",
    "text_nll",
]

_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class ModelScores:
    """One model's numbers on the holdout and on the general-English text."""

    answer_nll: float  # mean per answer token, teacher forced
    answer_ppl: float
    answer_tokens: int
    rouge_l: float | None  # mean F1 of greedy answers (None when none were generated)
    general_nll: float
    general_ppl: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (O(len(a)·len(b)) time, O(len(b)) memory)."""
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b, start=1):
            cur[j] = prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1])
        prev = cur
    return prev[-1]


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 over lower-cased word tokens (Lin 2004, β = 1)."""
    cand = _WORD.findall(candidate.lower())
    ref = _WORD.findall(reference.lower())
    lcs = lcs_length(cand, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(cand), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def general_text() -> str:
    """The small fixed general-English text used to measure forgetting."""
    return (resources.files("pipeline.train") / "general_english.txt").read_text(encoding="utf-8")


@torch.no_grad()
def answer_nll(
    model: PreTrainedModel, examples: Sequence[Example], *, batch_size: int
) -> tuple[float, int]:
    """(sum of NLL over labelled tokens, number of labelled tokens), teacher forced, packed."""
    collate = DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE_INDEX)
    device = _device_of(model)
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = collate(as_features(examples[start : start + batch_size]))
        # use_cache=False: transformers only derives the per-example (block-diagonal) mask
        # from restarted position_ids when there is no KV cache.
        logits = model(
            input_ids=batch["input_ids"].to(device),
            position_ids=batch["position_ids"].to(device),
            use_cache=False,
        ).logits
        labels = batch["labels"].to(device)
        nll, n = _shifted_nll(logits, labels)
        total += nll
        count += n
    return total, count


@torch.no_grad()
def text_nll(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, text: str, *, window: int
) -> tuple[float, int]:
    """(sum NLL, tokens) of plain text in non-overlapping windows of `window` tokens."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    device = _device_of(model)
    total, count = 0.0, 0
    for start in range(0, len(ids), window):
        chunk = torch.tensor([ids[start : start + window]], device=device)
        if chunk.shape[1] < 2:
            continue
        nll, n = _shifted_nll(model(input_ids=chunk, use_cache=False).logits, chunk)
        total += nll
        count += n
    return total, count


@torch.no_grad()
def greedy_answers(
    model: PreTrainedModel,
    renderer: Renderer,
    questions: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: int = 8,
) -> list[str]:
    """Greedy completions of each question's generation prompt, stopped at end-of-turn."""
    tokenizer = renderer.tokenizer
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # decoder-only generation continues from the right edge
    stops = list({renderer.end_of_turn_id, int(tokenizer.eos_token_id)})
    device = _device_of(model)
    answers: list[str] = []
    try:
        for start in range(0, len(questions), batch_size):
            prompts = [renderer.prompt_text(q) for q in questions[start : start + batch_size]]
            enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            out = model.generate(  # type: ignore[operator]
                input_ids=enc["input_ids"].to(device),
                attention_mask=enc["attention_mask"].to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=stops,
                pad_token_id=tokenizer.pad_token_id,
            )
            new = out[:, enc["input_ids"].shape[1] :]
            answers.extend(
                str(tokenizer.decode(row, skip_special_tokens=True)).strip() for row in new
            )
    finally:
        tokenizer.padding_side = side
    return answers


def score_model(
    model: PreTrainedModel,
    renderer: Renderer,
    holdout: Sequence[Example],
    references: Sequence[tuple[str, str]],
    *,
    batch_size: int,
    window: int,
    max_new_tokens: int,
) -> ModelScores:
    """All evaluation numbers for one model (the caller picks base or tuned)."""
    model.eval()
    nll, n = answer_nll(model, holdout, batch_size=batch_size)
    rouge: float | None = None
    if references:
        answers = greedy_answers(
            model, renderer, [q for q, _ in references], max_new_tokens=max_new_tokens
        )
        rouge = sum(rouge_l(a, ref) for a, (_, ref) in zip(answers, references, strict=True))
        rouge /= len(references)
    g_nll, g_n = text_nll(model, renderer.tokenizer, general_text(), window=window)
    mean, g_mean = nll / max(n, 1), g_nll / max(g_n, 1)
    return ModelScores(mean, math.exp(mean), n, rouge, g_mean, math.exp(g_mean))


def compare(base: ModelScores, tuned: ModelScores) -> dict[str, Any]:
    """Relative changes the registration gate reads (positive gain = better)."""
    return {
        "base": base.as_dict(),
        "tuned": tuned.as_dict(),
        "holdout_nll_gain": (base.answer_nll - tuned.answer_nll) / base.answer_nll,
        "holdout_ppl_reduction": 1 - tuned.answer_ppl / base.answer_ppl,
        "general_ppl_drift": tuned.general_ppl / base.general_ppl - 1,
        "rouge_l_delta": None
        if base.rouge_l is None or tuned.rouge_l is None
        else tuned.rouge_l - base.rouge_l,
    }


def _shifted_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
    logits = logits[:, :-1, :].float()
    target = labels[:, 1:]
    mask = target != IGNORE_INDEX
    if not mask.any():
        return 0.0, 0
    nll = torch.nn.functional.cross_entropy(logits[mask], target[mask], reduction="sum")
    return float(nll), int(mask.sum())


def _device_of(model: PreTrainedModel) -> torch.device:
    return next(model.parameters()).device
