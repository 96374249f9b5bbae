"""Backtranslate replies: the questions parsed and checked against their answer passages.

A question must ask (not state), be specific (two content words), not copy its passage, pass
the guards `qa` questions pass, and be about its passage: share a content word with it or with
the titles of the section it sits in. Near-duplicates of questions already asked are refused.
"""

from __future__ import annotations

import itertools
import json
import re

from pipeline.generate.sections import Passage
from pipeline.generate.validate import (
    BOILERPLATE_RE,
    STOPWORDS,
    DuplicateIndex,
    QAPair,
    Rejection,
    content_tokens,
    guard_text,
    question_tokens,
)
from pipeline.settings import GeneratorSettings

__all__ = [
    "check_question",
    "first_question",
    "parse_questions",
    "section_words",
    "validate_questions",
]

MIN_QUESTION_WORDS = 2  # "What is it?" names nothing
# A question opens like one (SmolLM2 writes "How to fix …" without the "?"), or ends in "?"
# with a question word; SmolLM2 sometimes writes a statement ("DataFusion is a library, …").
QUESTION_OPENERS = frozenset(
    """
    how what why when where which who whom whose can could does do did is are was were should
    will would may might must has have explain describe list show give name
    """.split()  # noqa: SIM905
)
WH_WORDS = frozenset("how what why when where which who whom whose".split())  # noqa: SIM905
COPY_FRACTION = 0.8  # a question with this share of its passage's words, verbatim, copies it
_ASKED_THEN_MORE_RE = re.compile(r"\?(?=\s+\S)")  # a "?" that more text follows


def parse_questions(content: str, expected: int) -> list[str]:
    """The reply's questions: `{"question": ...}` for one, `{"questions": [...]}` for more."""
    text = content.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, re.DOTALL)
    if fenced:
        text = fenced.group(1)
    try:
        data = json.loads(text, strict=False)  # llama.cpp lets raw newlines into strings
    except json.JSONDecodeError as exc:
        raise Rejection("invalid_json", f"{exc.msg} at char {exc.pos}: {text[:120]!r}") from None
    if not isinstance(data, dict):
        raise Rejection("schema", f"expected an object: {text[:120]!r}")
    items = data.get("questions", [data.get("question")] if "question" in data else None)
    if not isinstance(items, list) or not all(isinstance(q, str) for q in items):
        raise Rejection("schema", f"expected question strings: {text[:120]!r}")
    if len(items) < expected:
        raise Rejection("too_few_pairs", f"got {len(items)}, asked for {expected}")
    return [q.strip() for q in items[:expected]]


def first_question(question: str, min_chars: int) -> str:
    """The reply up to its first "?" that more text follows, when that is a question of at
    least `min_chars`: a reply that asks two questions ("What is the purpose of nullif? How
    does it work?") or goes on after its question ("…? Here is a sample:") is read as its
    first. SmolLM2 writes both (bench/RESULTS.md, "Session 7: each passage's own section"); the
    question then goes through every check on its own."""
    end = _ASKED_THEN_MORE_RE.search(question)
    if end is None or end.start() + 1 < min_chars:
        return question
    return question[: end.start() + 1]


def check_question(
    question: str, span: str, gen: GeneratorSettings, section: tuple[str, ...] = ()
) -> None:
    """Raise Rejection unless `question` is a usable, specific question about `span`, which
    sits in `section` (a heading path): a question that names the section is about it."""
    if not question:
        raise Rejection("empty", "empty question")
    if not gen.min_question_chars <= len(question) <= gen.max_question_chars:
        raise Rejection("question_length", f"{len(question)} chars")
    guard_text(question, span)
    if BOILERPLATE_RE.search(question):
        raise Rejection("boilerplate", question[:200])
    if not _asks(question):
        raise Rejection("not_a_question", f"{question[:120]!r} asks nothing")
    if _copies(question, span):
        raise Rejection("copies_answer", f"{question[:120]!r} repeats its answer")
    tokens = content_tokens(question)
    if len(tokens) < MIN_QUESTION_WORDS:
        raise Rejection("not_specific", f"{question[:120]!r} names nothing")
    if not _topic_tokens(question) & (question_tokens(span) | section_words(section)):
        raise Rejection(
            "off_topic", f"{question[:120]!r} shares no word with its answer or its section"
        )


def section_words(section: tuple[str, ...]) -> set[str]:
    """The content words of a passage's own section title and of the one above it, less those
    of the page's title, which every passage on the page shares ("Functions" on a page of
    functions). On the SQL reference a passage sits in "abs > Arguments": "What are the
    arguments of abs?" is about it, though the passage names neither. An operator that is a
    title ("Operators and Literals > Comparison Operators > `~*`") is one of its words."""
    if len(section) <= 1:
        return question_tokens(" ".join(section))
    own = question_tokens(" ".join(section[-2:] if len(section) > 2 else section[-1:]))
    return own - question_tokens(section[0])


def _asks(question: str) -> bool:
    """Opens like a question (or a "How to …" title), or ends in "?" with a question word in it
    or opening a clause ("In DataFusion, how …?", "… reads which formats?"). "DataFusion is a
    library?" is a statement with a question mark."""
    words = _normalized(question).split()
    if words and words[0] in QUESTION_OPENERS:
        return True
    if not question.rstrip().endswith("?"):
        return False
    clauses = [_normalized(c).split() for c in re.split(r"[,;:(]", question)[1:]]
    return bool(WH_WORDS.intersection(words)) or any(
        c and c[0] in QUESTION_OPENERS for c in clauses
    )


def _topic_tokens(question: str) -> set[str]:
    """Its words (`question_tokens`), and each two adjacent ones written as one: SmolLM2 splits
    the project's CamelCase names ("How does data fusion …" about a passage naming DataFusion)."""
    pairs = itertools.pairwise(_normalized(question).split())
    joined = " ".join(a + b for a, b in pairs if not {a, b} & STOPWORDS and min(len(a), len(b)) > 2)
    return question_tokens(question) | content_tokens(joined)


def _normalized(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9_]+", text.lower()))


def _copies(question: str, span: str) -> bool:
    """The question is (nearly) the whole passage again. "How to create and manage catalogs …"
    taken from "This section describes how to create and manage catalogs …, For …" is a fine
    question (a real SmolLM2 reply), so a copied clause alone is not enough."""
    asked, answer = _normalized(question), _normalized(span)
    return asked in answer and len(asked.split()) >= COPY_FRACTION * len(answer.split())


def validate_questions(
    content: str,
    passages: list[Passage],
    repo: str,
    gen: GeneratorSettings,
    index: DuplicateIndex,
) -> list[QAPair]:
    """All checks for one backtranslate reply; the pairs' answers are the passages, verbatim."""
    questions = parse_questions(content, len(passages))
    batch = DuplicateIndex(index.threshold)
    pairs = []
    for reply, passage in zip(questions, passages, strict=True):
        question = first_question(reply, gen.min_question_chars)
        check_question(question, passage.text, gen, passage.section)
        duplicate = index.find(repo, question) or batch.find(repo, question, rarity=index)
        if duplicate is not None:
            raise Rejection("near_duplicate", f"{question[:120]!r} ~ {duplicate!r}")
        batch.add(repo, question)
        pairs.append(QAPair(question, passage.text))
    return pairs
