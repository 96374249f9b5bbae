"""The deterministic pair writer: grounded (question, answer) pairs from a prompt's source text.

The source (between `<<<BEGIN SOURCE>>>` and `<<<END SOURCE>>>`, else the whole prompt) is split
into `sentences`; each pair takes a different sentence run as the answer and builds the
question from that sentence's `key_terms`; asking again about the same text (`variant`) picks
other sentences. `fill` shapes the pairs into any JSON schema.
"""

from __future__ import annotations

import functools
import random
import re
from typing import Any

from ollama_fake.wire import sha

__all__ = [
    "ASKED_PATTERN",
    "CHUNK_PATTERN",
    "QUESTION_FORMS",
    "STOPWORDS",
    "fill",
    "fresh_first",
    "grounded_pairs",
    "key_terms",
    "question_terms",
    "sentences",
    "source_text",
]

CHUNK_PATTERN = r"<<<BEGIN SOURCE>>>\s*\n(.*?)\n\s*<<<END SOURCE>>>"
ASKED_PATTERN = r"^Already asked[^\n]*:\n((?:- [^\n]*(?:\n|$))+)"
STOPWORDS = frozenset(
    """
    a an and are as at be been but by can could do does for from has have how if in into is it
    its may more most must no not of on or our should so such than that the their them then there
    these they this those to use used uses using was we were what when where which while will with
    would you your also any each other only some same very just all both until about after before
    """.split()  # noqa: SIM905
)
QUESTION_FORMS = (
    "What does the documentation say about {terms}?",
    "How are {terms} described in this part of the source?",
    "What should a reader know about {terms}?",
    "Explain {terms} as described here.",
)


@functools.lru_cache(maxsize=4096)
def sentences(text: str) -> list[str]:
    """Sentence-ish units with at least four words (lines for code)."""
    units: list[str] = []
    for block in re.split(r"\n\s*\n", text):
        lines = [ln.strip() for ln in block.splitlines() if ln.strip()]
        prose = sum(ln[-1:] in ".:;!?" or len(ln.split()) > 6 for ln in lines) >= len(lines) / 2
        if prose:
            joined = " ".join(lines)
            units += [s.strip() for s in re.split(r"(?<=[.!?])\s+(?=[A-Z`(\[])", joined)]
        else:
            units += lines
    return [u for u in units if len(re.findall(r"[A-Za-z_][A-Za-z0-9_]+", u)) >= 4]


FORM_WORDS = frozenset(re.findall(r"[a-z]{4,}", " ".join(QUESTION_FORMS).lower()))


def question_terms(question: str) -> frozenset[str]:
    """What a question is about: its words minus stopwords and the question forms' words."""
    words = {w.lower() for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]{3,}", question)}
    return frozenset(words - STOPWORDS - FORM_WORDS)


def key_terms(sentence: str, k: int = 4) -> list[str]:
    """The `k` longest non-stopwords of a sentence, in their order (what a question asks about)."""
    words = re.findall(r"[A-Za-z_][A-Za-z0-9_]{3,}", sentence)
    seen: dict[str, str] = {}
    for w in words:
        if w.lower() not in STOPWORDS and w.lower() not in seen:
            seen[w.lower()] = w
    ranked = sorted(seen.values(), key=lambda w: (-len(w), words.index(w)))[:k]
    return sorted(ranked, key=words.index)


@functools.lru_cache(maxsize=4096)
def grounded_pairs(source: str, variant: int, n: int = 8) -> list[tuple[str, str]]:
    """Up to `n` distinct (question, answer) pairs, each built from a different sentence run."""
    units = sentences(source) or [source.strip()[:400] or "empty"]
    order = list(range(len(units)))
    random.Random(sha(source)).shuffle(order)
    shift = variant % len(units)
    order = order[shift:] + order[:shift]
    pairs = []
    for start in order[:n]:
        answer, i = units[start], start + 1
        while len(answer) < 80 and i < len(units):
            answer += " " + units[i]
            i += 1
        terms = key_terms(units[start]) or ["this text"]
        joined = ", ".join(terms[:-1]) + (" and " if len(terms) > 1 else "") + terms[-1]
        form = QUESTION_FORMS[(start + variant) % len(QUESTION_FORMS)]
        pairs.append((form.format(terms=joined), answer[:600]))
    while len(pairs) < n:
        q, a = pairs[len(pairs) % len(order)]
        pairs.append((f"{q[:-1]} (part {len(pairs) + 1})?", a))
    return pairs


def source_text(chunk_pattern: str, prompt: str) -> str:
    """The text a prompt asks about: its source block, else the whole prompt."""
    found = re.search(chunk_pattern, prompt, re.DOTALL)
    return (found.group(1) if found else prompt).strip()


def fresh_first(
    asked_pattern: str, prompt: str, pairs: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """Pairs whose question is not on the prompt's already-asked list first."""
    found = re.search(asked_pattern, prompt, re.MULTILINE)
    if not found:
        return pairs
    asked = {question_terms(line[2:]) for line in found.group(1).splitlines()}
    fresh = [pair for pair in pairs if question_terms(pair[0]) not in asked]
    return fresh + [pair for pair in pairs if pair not in fresh]


def fill(schema: Any, key: str, index: int, pairs: list[tuple[str, str]]) -> Any:
    """A value fitting `schema`; strings named like question/answer come from `pairs[index]`."""
    if not isinstance(schema, dict):
        return None
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if "enum" in schema:
        return schema["enum"][0]
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {k: fill(v, k, index, pairs) for k, v in props.items()}
    if kind == "array":
        count = max(1, int(schema.get("minItems", 1)))
        count = min(count, int(schema.get("maxItems", count)), len(pairs))
        return [fill(schema.get("items") or {}, key, i, pairs) for i in range(count)]
    if kind == "string":
        question, answer = pairs[index % len(pairs)]
        lowered = key.lower()
        if "question" in lowered:
            return question
        if "answer" in lowered:
            return answer
        return answer.split(".")[0]
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 1.0))
    if kind == "boolean":
        return True
    return None
