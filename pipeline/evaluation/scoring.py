"""Score one model on an eval set: answer NLL/perplexity, ROUGE-L of greedy answers, examples.

Imports torch: only the training child and `pipeline.evaluation.child` use it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from transformers import PreTrainedModel

from pipeline.train.render import Renderer
from pipeline.train.scores import answer_nll, greedy_answers, rouge_l

__all__ = ["EXAMPLES_KEPT", "gains", "retrieval_prompt", "score_set", "side_by_side", "summarize"]

EXAMPLES_KEPT = 3  # answers kept side by side per set
CONTEXT_MAX_CHARS = 1500  # per retrieved chunk


def retrieval_prompt(question: str, contexts: Sequence[dict[str, Any]]) -> str:
    """The base+retrieval prompt: the top-k chunks, then the question."""
    docs = "\n\n".join(
        f"[{i}] {str(c.get('text', ''))[:CONTEXT_MAX_CHARS].strip()}"
        for i, c in enumerate(contexts, start=1)
    )
    return (
        "Answer the question using the documentation excerpts below.\n\n"
        f"{docs}\n\nQuestion: {question.strip()}"
    )


def score_set(
    model: PreTrainedModel,
    renderer: Renderer,
    rows: Sequence[dict[str, Any]],
    *,
    with_context: bool = False,
    generate_examples: int,
    max_new_tokens: int,
    batch_size: int = 8,
    max_len: int = 4096,
) -> dict[str, Any]:
    """All numbers for one model on one set; `answers` holds its greedy answers in row order."""
    model.eval()
    prompts = [
        retrieval_prompt(r["question"], r.get("contexts") or []) if with_context else r["question"]
        for r in rows
    ]
    examples = [renderer.render(p, r["answer"]) for p, r in zip(prompts, rows, strict=True)]
    kept = [e for e in examples if len(e.input_ids) <= max_len and e.n_answer_tokens > 0]
    total, n = answer_nll(model, kept, batch_size=batch_size)
    mean = total / max(n, 1)
    picked = list(range(min(generate_examples, len(rows))))
    answers = (
        greedy_answers(
            model,
            renderer,
            [prompts[i] for i in picked],
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
        )
        if picked
        else []
    )
    rouge = (
        sum(rouge_l(a, rows[i]["answer"]) for a, i in zip(answers, picked, strict=True))
        / len(picked)
        if picked
        else None
    )
    return {
        "answer_nll": mean,
        "answer_ppl": math.exp(mean),
        "answer_tokens": n,
        "n_scored": len(kept),
        "n_too_long": len(examples) - len(kept),
        "rouge_l": rouge,
        "n_generated": len(picked),
        "answers": answers,
    }


def gains(models: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Relative answer-NLL gains of `tuned` (and `served`) over the base and base+retrieval."""
    out: dict[str, float | None] = {}
    for who in ("tuned", "served"):
        if who not in models:
            continue
        mine = models[who]["answer_nll"]
        for ref in ("base", "base+retrieval"):
            if ref in models and models[ref]["answer_nll"] > 0:
                theirs = models[ref]["answer_nll"]
                out[f"{who}_nll_gain_vs_{ref}"] = (theirs - mine) / theirs
    return out


def side_by_side(
    rows: Sequence[dict[str, Any]], models: dict[str, dict[str, Any]], k: int = EXAMPLES_KEPT
) -> list[dict[str, Any]]:
    """The first k questions with the reference and every model's greedy answer."""
    out = []
    for i, row in enumerate(rows[:k]):
        answers = {
            label: m["answers"][i] for label, m in models.items() if i < len(m.get("answers", []))
        }
        if answers:
            out.append(
                {"question": row["question"], "reference": row["answer"], "answers": answers}
            )
    return out


def summarize(rows: Sequence[dict[str, Any]], models: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The stored form of one set's evaluation (greedy answers trimmed to a few examples)."""
    return {
        "n": len(rows),
        "models": {
            label: {k: v for k, v in m.items() if k != "answers"} for label, m in models.items()
        },
        "gains": gains(models),
        "examples": side_by_side(rows, models),
    }
