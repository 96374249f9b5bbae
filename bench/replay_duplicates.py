"""Replay a `bench_plan.py` run's questions through the near-duplicate check, offline.

    uv run python bench/replay_duplicates.py bench/out/plan-llamacpp-on.replies.jsonl

The replies file lists every stored question and every rejected reply. Reported, with the
current `DuplicateIndex`:

- each `near_duplicate` rejection of the run, checked again against all the run's stored
  questions (more than the run had when it rejected it, so "still a duplicate" is an upper
  bound; the rejection detail keeps a question's first 120 characters): the ones printed
  `free` would now be stored;
- duplicates among the stored questions themselves, in stored order, as the model wrote them,
  read as their first question (`first_question`, what the validator now stores), and cut at
  their first sentence end (an idea measured, not used: RESULTS, "Session 8").

No model is run; the figures are about the check, on what a real model wrote.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.generate.questions import QUESTION_OPENERS, first_question  # noqa: E402
from pipeline.generate.validate import DuplicateIndex  # noqa: E402
from pipeline.settings import GeneratorSettings  # noqa: E402

REPO = "replay"
_REJECTED_RE = re.compile(r"""^(['"])(.*?)\1 ~ """)
_SENTENCE_END_RE = re.compile(r"(?<=\w)[.!](?=\s+\S)")
_ABBREVIATIONS = {"vs", "etc", "eg", "ie", "cf", "approx", "incl", "e.g", "i.e"}


def first_sentence(question: str, min_chars: int) -> str:
    """The question up to its first "?", or its first "." / "!" when it opens like a question
    ("How to use the topk function in datafusion. You can read more about it here.")."""
    asked = first_question(question, min_chars)
    if asked != question:
        return asked
    words = question.split()
    if not words or words[0].lower() not in QUESTION_OPENERS:
        return question
    for end in _SENTENCE_END_RE.finditer(question):
        word = re.findall(r"[\w.]+$", question[: end.start()])
        if word and word[0].lower().rstrip(".") in _ABBREVIATIONS:
            continue
        if end.start() + 1 >= min_chars:
            return question[: end.start() + 1]
    return question


def duplicates_among(questions: list[str], read: Callable[[str], str], threshold: float) -> int:
    index = DuplicateIndex(threshold)
    found = 0
    for question in map(read, questions):
        if index.find(REPO, question) is not None:
            found += 1
        else:
            index.add(REPO, question)
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("replies", type=Path, help="bench/out/plan-*.replies.jsonl")
    parser.add_argument("--quiet", action="store_true", help="figures only")
    args = parser.parse_args()
    gen = GeneratorSettings()
    rows = [json.loads(line) for line in args.replies.read_text(encoding="utf-8").splitlines()]
    stored = [r["stored"] for r in rows if "stored" in r]
    index = DuplicateIndex(gen.near_duplicate_jaccard)
    for question in stored:
        index.add(REPO, question)
    still = freed = 0
    for row in rows:
        if row.get("rejected") != "near_duplicate":
            continue
        match = _REJECTED_RE.match(row["detail"])
        if match is None:
            continue
        question = match.group(2)
        duplicate = index.find(REPO, question)
        if duplicate:
            still += 1
        else:
            freed += 1
        if not args.quiet:
            print(f"{'dup ' if duplicate else 'free'} {question[:100]!r}")
    print(f"near_duplicate rejections: {still + freed}; still duplicates {still}, free {freed}")
    t, n = gen.near_duplicate_jaccard, gen.min_question_chars
    print(
        f"duplicates among {len(stored)} stored questions: as written "
        f"{duplicates_among(stored, lambda q: q, t)}, first question "
        f"{duplicates_among(stored, lambda q: first_question(q, n), t)}, first sentence "
        f"{duplicates_among(stored, lambda q: first_sentence(q, n), t)}"
    )
    changed = sum(first_sentence(q, n) != first_question(q, n) for q in stored)
    print(f"stored questions the first-sentence cut would shorten further: {changed}")


if __name__ == "__main__":
    main()
