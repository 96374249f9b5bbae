"""Pair validation: schema, lengths, grounding, injection guard, boilerplate, near-duplicates."""

from __future__ import annotations

import functools
import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass

from pipeline.settings import GeneratorSettings

__all__ = [
    "BOILERPLATE_RE",
    "REJECTION_FEEDBACK",
    "DuplicateIndex",
    "QAPair",
    "Rejection",
    "check_pair",
    "content_tokens",
    "grounding",
    "guard_text",
    "parse_pairs",
    "question_tokens",
    "validate_reply",
]

STOPWORDS = frozenset(
    """
    a an and are as at be been being but by can could do does did for from has have had how if
    in into is it its may more most must no not of on or our should so such than that the their
    them then there these they this those to was we were what when where which while who whom
    whose why will with would you your also any each other only some same very just all both
    about after before until via per i me my he she his her us
    """.split()  # noqa: SIM905
)
URL_RE = re.compile(r"(?:https?://|www\.)[^\s<>()\[\]\"'`]+", re.IGNORECASE)
_INJECTION_PATTERNS = (
    r"\b(ignore|disregard|forget)\b[^.\n]{0,30}\b(previous|prior|above|earlier|all)\b"
    r"[^.\n]{0,20}\b(instructions?|prompts?|messages?|rules)",
    r"\bsystem prompt\b",
    r"\byou are (now )?(an? |the )?(ai|assistant|language model|chatbot|llm)\b",
    r"\bas an ai\b",
    r"<\|[a-z_]+\|>",
    r"\b(jailbreak|do anything now)\b",
)
# one alternation: a single scan per field
INJECTION_RE = re.compile("|".join(f"(?:{p})" for p in _INJECTION_PATTERNS), re.IGNORECASE)
BOILERPLATE_RE = re.compile(
    r"\b(licen[cs]e[ds]?|licensing|copyright|warrant(y|ies)|spdx|all rights reserved|"
    r"notice file|contributor license agreement)\b",
    re.IGNORECASE,
)
REJECTION_FEEDBACK = {
    "invalid_json": "it was not valid JSON.",
    "truncated": "it was cut off at the length limit before it ended; write a shorter reply.",
    "schema": "it did not match the JSON schema.",
    "too_few_pairs": "it had fewer pairs than asked for.",
    "empty": "a question or an answer was empty.",
    "question_length": "a question was too short or too long.",
    "answer_length": "an answer was too short or too long.",
    "not_grounded": "an answer used facts that are not in the excerpt.",
    "foreign_url": "it contained a link that is not in the excerpt.",
    "injection": "it contained instruction-like text that is not in the excerpt.",
    "boilerplate": "it asked about licence or copyright boilerplate.",
    "not_specific": "the question did not name what it is about.",
    "not_a_question": "it was a statement, not a question.",
    "off_topic": "the question was not about its passage.",
    "copies_answer": "the question copied the passage; ask the question it answers.",
    "near_duplicate": "a question duplicated one already asked about this project; ask about "
    "a different fact.",
}


@dataclass(frozen=True)
class QAPair:
    """One question and its answer, as the model wrote them (whitespace-trimmed)."""

    question: str
    answer: str


class Rejection(Exception):
    """Invalid output; `reason` is a key of REJECTION_FEEDBACK."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@functools.lru_cache(maxsize=1 << 16)
def _stem(token: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if token.endswith(suffix) and len(token) - len(suffix) >= 3:
            return token[: -len(suffix)]
    return token


def content_tokens(text: str) -> set[str]:
    """Lower-cased, lightly stemmed words and numbers without stopwords."""
    words = re.findall(r"[a-z0-9_]+", text.lower())
    return {_stem(w) for w in words if w not in STOPWORDS and (len(w) > 1 or w.isdigit())}


# An operator written as a word of its own ("the `~*` operator", "a || b", "### `!~`"): on a
# page of operators it is the one word that tells two questions apart. Not inside a word
# ("AI-generated", "C++", "Vec<u8>"), and not a rule of punctuation ("+-----+" is 7 long).
_SYMBOL_RE = re.compile(r"(?<![^\s`'\"(\[,])[~!@#%^&*+\-=<>|/]{1,4}(?![^\s`'\")\],.?;:])")


# A stopword in capitals is a keyword: "the OR operator", "the WHERE clause", "IS NOT NULL".
_KEYWORD_RE = re.compile(r"\b[A-Z]{2,}\b")


def _symbol_tokens(text: str) -> set[str]:
    """The operators `text` writes as words of their own, and its keywords that are stopwords
    in lower case (lower-cased): "How to use OR in SQL?" is about the section "OR"."""
    keywords = {w.lower() for w in _KEYWORD_RE.findall(text)} & STOPWORDS
    return set(_SYMBOL_RE.findall(text)) | keywords


def question_tokens(text: str) -> set[str]:
    """What a question is compared by: its content words, operators and keywords."""
    return content_tokens(text) | _symbol_tokens(text)


def grounding(answer: str, chunk_text: str) -> float:
    """Fraction of the answer's content words that occur in the chunk."""
    answer_tokens = content_tokens(answer)
    if not answer_tokens:
        return 0.0
    return len(answer_tokens & _chunk_tokens(chunk_text)) / len(answer_tokens)


@functools.lru_cache(maxsize=1024)
def _chunk_tokens(chunk_text: str) -> frozenset[str]:
    # the same chunk is checked for every pair of a reply and again on a repair
    return frozenset(content_tokens(chunk_text))


def parse_pairs(content: str, expected: int) -> list[QAPair]:
    """The reply's pairs: `{question, answer}` for one, `{"pairs": [...]}` for more."""
    text = content.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, re.DOTALL)
    if fenced:  # servers without schema support sometimes fence their JSON
        text = fenced.group(1)
    try:
        # strict=False: llama.cpp's JSON grammar lets raw newlines into strings
        data = json.loads(text, strict=False)
    except json.JSONDecodeError as exc:
        raise Rejection("invalid_json", f"{exc.msg} at char {exc.pos}: {text[:120]!r}") from None
    if isinstance(data, dict) and "pairs" in data:
        items = data["pairs"]
    elif isinstance(data, dict):
        items = [data]
    else:
        items = data
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise Rejection("schema", f"expected an object or a list of objects: {text[:120]!r}")
    pairs = []
    for item in items:
        question, answer = item.get("question"), item.get("answer")
        if not isinstance(question, str) or not isinstance(answer, str):
            raise Rejection("schema", f"question and answer must be strings: {item!r}"[:200])
        pairs.append(QAPair(question.strip(), answer.strip()))
    if len(pairs) < expected:
        raise Rejection("too_few_pairs", f"got {len(pairs)}, asked for {expected}")
    return pairs[:expected]


def guard_text(field: str, chunk_text: str) -> None:
    """Reject links and instruction-like text that the chunk does not contain."""
    lowered_chunk = chunk_text.lower()
    for url in URL_RE.findall(field):
        if url.rstrip(".,;:!?").lower() not in lowered_chunk:
            raise Rejection("foreign_url", url[:200])
    for injected in INJECTION_RE.finditer(field):
        if injected.group(0).lower() not in lowered_chunk:
            raise Rejection("injection", injected.group(0)[:200])


def check_pair(pair: QAPair, chunk_text: str, gen: GeneratorSettings) -> None:
    """Raise Rejection when one pair breaks a rule; returns None when it is acceptable."""
    if not pair.question or not pair.answer:
        raise Rejection("empty", f"question={pair.question[:80]!r} answer={pair.answer[:80]!r}")
    if not gen.min_question_chars <= len(pair.question) <= gen.max_question_chars:
        raise Rejection("question_length", f"{len(pair.question)} chars")
    if not gen.min_answer_chars <= len(pair.answer) <= gen.max_answer_chars:
        raise Rejection("answer_length", f"{len(pair.answer)} chars")
    for field in (pair.question, pair.answer):
        guard_text(field, chunk_text)
    if BOILERPLATE_RE.search(pair.question):
        raise Rejection("boilerplate", pair.question[:200])
    score = grounding(pair.answer, chunk_text)
    if score < gen.min_overlap:
        raise Rejection("not_grounded", f"overlap {score:.2f} < {gen.min_overlap}")


class DuplicateIndex:
    """Questions per repo; a new one is a near-duplicate of an earlier one when their words
    (`question_tokens`) overlap at Jaccard ≥ threshold, both counted plainly and weighted by
    rarity.

    The weight is a word's smoothed inverse document frequency among the repo's questions, so
    a name few questions have outweighs the words most of them share. SmolLM2 asked "How to use
    the bool_and function in SQL, including example usage." after the same question with no
    function named: plain Jaccard 6/7 = 0.86, a duplicate by count, but weighted 0.72 over the
    corpus's questions (bool_and 7.1, use 1.7). Re-cased, re-punctuated or re-inflected copies
    stay duplicates (both 1.0). Candidates come from an inverted index over the rarest few words
    of the new question: a set with plain Jaccard ≥ t against it must share all but ⌊(1-t)·k⌋
    of its k words, so checking the ⌊(1-t)·k⌋+1 rarest finds every candidate without a scan.
    """

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self._questions: dict[str, list[set[str] | None]] = defaultdict(list)  # None: removed
        self._postings: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        self._live: dict[str, int] = defaultdict(int)

    def __len__(self) -> int:
        return sum(self._live.values())

    def find(self, repo: str, question: str, *, rarity: DuplicateIndex | None = None) -> str | None:
        """A short description of the duplicate found, or None. Words are weighted by their
        rarity in `rarity`'s questions (default: this index's), so a reply's own few
        questions can be checked against each other with the repo's weights."""
        tokens = question_tokens(question)
        if not tokens:
            return None
        postings, stored = self._postings[repo], self._questions[repo]
        rarest = sorted(tokens, key=lambda t: len(postings.get(t, ())))
        need = math.floor((1 - self.threshold) * len(tokens)) + 1
        candidates = {i for t in rarest[:need] for i in postings.get(t, ())}
        weight = (rarity or self).weight
        for i in sorted(candidates):  # from the postings: never a removed question
            other = stored[i] or set()
            shared, either = tokens & other, tokens | other
            if len(shared) / len(either) < self.threshold:
                continue
            weighted = sum(weight(repo, t) for t in shared) / sum(weight(repo, t) for t in either)
            if weighted >= self.threshold:
                return " ".join(sorted(other))[:200]
        return None

    def weight(self, repo: str, token: str) -> float:
        """Smoothed inverse document frequency: 1 + ln((1 + n) / (1 + df))."""
        df = len(self._postings[repo].get(token, ()))
        return 1.0 + math.log((1 + self._live[repo]) / (1 + df))

    def add(self, repo: str, question: str) -> int:
        """Remember a question; returns a handle for `remove`."""
        tokens = question_tokens(question)
        stored = self._questions[repo]
        stored.append(tokens)
        self._live[repo] += 1
        for t in tokens:
            self._postings[repo][t].append(len(stored) - 1)
        return len(stored) - 1

    def remove(self, repo: str, handle: int) -> None:
        """Forget a question whose pair was not stored after all (its lease was lost)."""
        tokens = self._questions[repo][handle]
        if tokens is None:
            return
        for t in tokens:
            self._postings[repo][t].remove(handle)
        self._questions[repo][handle] = None
        self._live[repo] -= 1


def validate_reply(
    content: str,
    chunk_text: str,
    repo: str,
    gen: GeneratorSettings,
    index: DuplicateIndex,
) -> list[QAPair]:
    """All checks for one reply; raises Rejection for the first problem found."""
    pairs = parse_pairs(content, gen.pairs_per_chunk)
    batch = DuplicateIndex(index.threshold)
    for pair in pairs:
        check_pair(pair, chunk_text, gen)
        duplicate = index.find(repo, pair.question) or batch.find(repo, pair.question, rarity=index)
        if duplicate is not None:
            raise Rejection("near_duplicate", f"{pair.question[:120]!r} ~ {duplicate!r}")
        batch.add(repo, pair.question)
    return pairs
