"""Generation planning: each piece of text is asked about once (DESIGN invariant 7).

heading, paragraph and fixed cut the same text three ways. The plan asks, per live file, only
the chunks of its first strategy in `ASK_ORDER` (paragraph chunks partition a doc; code_ast
items hold a code file's code); these chunks are the *passages*. A chunk of another strategy
gets no job: the pairs of every passage inside it serve it (`chunk_passages`), and keep it in
exports and in the training set while it is live. Passages that share a sentence overlap: the
questions already asked about one are shown to the model in the first request for the other
(`passage_pieces`, read when a job is claimed; doc passages only).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re

import anyio

from pipeline.generate.backend import resolve_backend
from pipeline.generate.prompt import prompt_version_for
from pipeline.ingest.chunk import normalise
from pipeline.settings import GeneratorSettings
from state import plan as state_plan
from state.db import Database, now
from state.plan import PlanCounts

__all__ = [
    "ASK_ORDER",
    "PlanCounts",
    "contains",
    "ensure_jobs",
    "plan_generation",
    "sentence_pieces",
]

# A file is asked in the first of these strategies it has chunks in.
ASK_ORDER = ("paragraph", "heading", "fixed", "code_ast", "code_fixed")
# Files updated this close before the last plan are looked at again: an ingest transaction
# stamps its rows before it waits for the write lock.
PLAN_MARGIN_S = 15.0
MIN_PIECE_WORDS = 3  # shorter sentences ("See below.") say nothing about overlap
_BLOCK_RE = re.compile(r"\n\s*\n")
_SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s+")
_WORD_RE = re.compile(r"[a-z_][a-z0-9_]+")
_DIGITS_RE = re.compile(r"[0-9]+")


def sentence_pieces(text: str) -> list[int]:
    """Signed 64-bit hashes of the text's sentences and lines of ≥ MIN_PIECE_WORDS words.

    Lower-cased, whitespace-collapsed, numbers made alike ("Elapsed 0.060 seconds." and
    "Elapsed 0.720 seconds." are the same question); a block's sentences catch rewrapped
    prose, its lines catch repeated lines of code blocks and examples.
    """
    hashes: set[int] = set()
    for block in _BLOCK_RE.split(_DIGITS_RE.sub("0", text.lower())):
        units = _SENTENCE_END_RE.split(normalise(block)) + block.splitlines()
        for unit in units:
            unit = normalise(unit)
            if len(_WORD_RE.findall(unit)) >= MIN_PIECE_WORDS:
                digest = hashlib.blake2b(unit.encode("utf-8"), digest_size=8).digest()
                hashes.add(int.from_bytes(digest, "big", signed=True))
    return sorted(hashes)


def contains(outer: str, inner: str) -> bool:
    """Whether `outer`'s text holds all of `inner`'s (whitespace-normalised, as chunk ids are)."""
    return normalise(inner) in normalise(outer)


async def plan_generation(db: Database, gen: GeneratorSettings) -> PlanCounts:
    """Bring jobs, containment links and overlap hashes in line with the live chunks.

    Cheap when little changed: links are looked for only in files updated since the last
    plan, hashes only for passages that have none yet.
    """
    started = now()
    counts = await state_plan.plan_jobs(
        db, ask_order=ASK_ORDER, prompt_version=prompt_version_for(gen), model=gen.model
    )
    while batch := await state_plan.passages_without_pieces(db):
        pieces = await anyio.to_thread.run_sync(_pieces_of, batch)
        await state_plan.store_pieces(db, pieces)
    since = await state_plan.get_plan_watermark(db)
    candidates = await state_plan.containment_candidates(db, since=since or 0.0)
    links = [(chunk, passage) for chunk, outer, passage, inner in candidates
             if contains(outer, inner)]  # fmt: skip
    counts.links_added, counts.pairs_revived = await state_plan.store_containment(db, links)
    await state_plan.set_plan_watermark(db, started - PLAN_MARGIN_S)
    return counts


async def ensure_jobs(db: Database, gen: GeneratorSettings) -> int:
    """Create the missing jobs (planned chunk × current prompt version × model); returns how many.

    An unchanged chunk keeps its job whatever file or strategy it moves to, so it is never
    sent to the LLM twice (DESIGN invariant 1), and text that several strategies share is
    asked about once, in the chunk the plan picks (invariant 7). The model is the resolved
    backend's (`auto` asks once per process; the embedded engine is named by its GGUF).
    """
    model = (await resolve_backend(gen)).gen.model
    counts = await plan_generation(db, dataclasses.replace(gen, model=model))
    return counts.jobs_created


def _pieces_of(batch: list[tuple[str, str, bool]]) -> list[tuple[str, list[int]]]:
    # Code passages get none: their repeated lines (imports, braces, attributes) would tie
    # every file to every other, and the AST items they come from do not overlap.
    return [(chunk_id, sentence_pieces(text) if doc else []) for chunk_id, text, doc in batch]
