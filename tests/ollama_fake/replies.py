"""What a generation reply says: grounded pairs fitting the requested schema, or one sentence.

The pairs come from `pairs` (sentences of the prompt's source text, fresh questions first);
`faults` spoils some of them on purpose (`rate_bad_content`, `rate_truncated`,
`rate_malformed`), each drawn from the request's seeded `rng`.
"""

from __future__ import annotations

import json
import random
import re
from typing import TYPE_CHECKING, Any

from ollama_fake.faults import bad_pair, break_reply
from ollama_fake.pairs import fill, fresh_first, grounded_pairs, sentences
from ollama_fake.wire import sha

if TYPE_CHECKING:
    from ollama_fake.server import FakeOllama

__all__ = ["content"]


def content(
    fake: FakeOllama, prompt: str, fmt: Any, rng: random.Random, model: str
) -> tuple[str, str, str]:
    """(content, outcome, done_reason) for a prompt and an Ollama ``format``."""
    source = fake.source_text(prompt)
    in_prompt = re.search(r"JSON schema:\n(\{.*\})\s*$", prompt, re.DOTALL)
    if fmt is None and in_prompt:  # no structured output, but the prompt spells it out
        fmt = json.loads(in_prompt.group(1))
    if fmt is None:
        if fake.responder is not None:
            return fake.responder(prompt, model), "ok", "stop"
        sentence = (sentences(source) or [source[:200]])[0]
        return f"Based on the provided text: {sentence}", "ok", "stop"
    # Asking again about the same text (a retry, a repair) gets other sentences.
    variant = fake.seen_sources[sha(source)] - 1
    pairs = grounded_pairs(source, variant)
    if fake.avoid_asked:
        pairs = fresh_first(fake.asked_pattern, prompt, pairs)
    outcome = "ok"
    if rng.random() < fake.rate_bad_content:
        pairs = [bad_pair(pair, rng) for pair in pairs]
        outcome = "bad_content"
    schema = (
        fmt
        if isinstance(fmt, dict)
        else {
            "type": "object",
            "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
        }
    )
    text = json.dumps(fill(schema, "", 0, pairs), ensure_ascii=False)
    broken = break_reply(text, rng, fake.rate_truncated, fake.rate_malformed)
    return broken or (text, outcome, "stop")
