"""Chunking strategies over cleaned units: heading, paragraph, fixed, code_fixed (+ code_ast).

Every strategy returns contiguous unit ranges; cut points inside long regions are
content-defined (see `units.is_boundary`) so a local edit only changes local chunks.
Hard bounds: no chunk longer than `max_chars`, none empty, every loop advances.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from pipeline.ingest.clean import Block
from pipeline.ingest.units import Units, blocks_to_units, is_boundary

__all__ = [
    "ChunkPiece",
    "Sizes",
    "cdc_ranges",
    "chunk_id",
    "fixed_chunks",
    "grouped_chunks",
    "heading_chunks",
    "normalise",
    "paragraph_chunks",
    "pieces_from_ranges",
]


@dataclass(frozen=True)
class Sizes:
    """Size bounds for one family of strategies (docs or code)."""

    min_chars: int
    max_chars: int
    overlap_chars: int

    @property
    def mean_gap_chars(self) -> int:
        # Expected distance between content-defined cuts once past min_chars: a third of
        # the min..max window, so ~5% of chunks hit max_chars before a natural cut.
        return max(1, (self.max_chars - self.min_chars) // 3)


@dataclass(frozen=True)
class ChunkPiece:
    """One chunk cut from a file: text and where it came from."""

    strategy: str
    ordinal: int
    text: str
    start_line: int
    end_line: int
    heading: str | None


def normalise(text: str) -> str:
    """Whitespace-collapsed text: the form a chunk id is computed over."""
    return " ".join(text.split())


def chunk_id(text: str) -> str:
    """sha256 of the normalised text (content address shared across files/strategies)."""
    return hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()


def cdc_ranges(units: Units, a: int, b: int, sizes: Sizes) -> list[tuple[int, int]]:
    """Cut units[a:b] into ranges of at most max_chars, at content-defined boundaries.

    A chunk ends after the first boundary unit once it holds min_chars, or just before
    it would exceed max_chars. With overlap, the next chunk starts with the previous
    chunk's tail (at most overlap_chars); cuts are never taken inside that tail.
    """
    out: list[tuple[int, int]] = []
    start = a
    floor = a  # first unit index a cut may follow (past any overlap)
    texts, seps = units.texts, units.seps
    while start < b:
        size = 0
        j = start
        while j < b:
            add = len(texts[j]) + (len(seps[j]) if j > start else 0)
            if j > start and size + add > sizes.max_chars:
                break
            size += add
            j += 1
            if (
                j > floor
                and size >= sizes.min_chars
                and is_boundary(units, j - 1, sizes.mean_gap_chars)
            ):
                break
        out.append((start, j))
        if j >= b:
            break
        nxt = j
        overlap = 0
        while nxt - 1 > start:
            add = len(texts[nxt - 1]) + len(seps[nxt])
            if overlap + add > sizes.overlap_chars:
                break
            overlap += add
            nxt -= 1
        floor = j
        start = nxt
    return out


def grouped_chunks(
    units: Units, groups: list[tuple[int, int]], sizes: Sizes
) -> list[tuple[int, int]]:
    """Merge each run of small groups into the following one; split oversized results.

    The merge decision depends only on each group's own size, so an edit changes at
    most the merged group it falls in (and its neighbour when it crosses min_chars).
    """
    out: list[tuple[int, int]] = []
    run_start: int | None = None
    for a, b in groups:
        start = a if run_start is None else run_start
        if units.size(a, b) < sizes.min_chars:
            run_start = start
            continue
        run_start = None
        out.extend(_bounded(units, start, b, sizes))
    if run_start is not None:
        out.extend(_bounded(units, run_start, groups[-1][1], sizes))
    return out


def _bounded(units: Units, a: int, b: int, sizes: Sizes) -> list[tuple[int, int]]:
    if units.size(a, b) <= sizes.max_chars:
        return [(a, b)]
    return cdc_ranges(units, a, b, Sizes(sizes.min_chars, sizes.max_chars, 0))


def heading_chunks(units: Units, blocks: list[Block], sizes: Sizes) -> list[tuple[int, int]]:
    """Sections (a heading and everything up to the next heading), small ones merged."""
    groups: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(units)):
        if units.blocks[i] != units.blocks[i - 1] and blocks[units.blocks[i]].kind == "heading":
            groups.append((start, i))
            start = i
    if len(units):
        groups.append((start, len(units)))
    return grouped_chunks(units, groups, sizes)


def paragraph_chunks(units: Units, sizes: Sizes) -> list[tuple[int, int]]:
    """Blocks (paragraphs, list items, code blocks, rows), small ones merged forward."""
    groups: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(units)):
        if units.blocks[i] != units.blocks[i - 1]:
            groups.append((start, i))
            start = i
    if len(units):
        groups.append((start, len(units)))
    return grouped_chunks(units, groups, sizes)


def fixed_chunks(units: Units, sizes: Sizes) -> list[tuple[int, int]]:
    """Fixed-size windows with overlap, cut at content-defined sentence/line ends."""
    return cdc_ranges(units, 0, len(units), sizes)


def pieces_from_ranges(
    strategy: str,
    units: Units,
    ranges: list[tuple[int, int]],
    blocks: list[Block] | None = None,
) -> list[ChunkPiece]:
    """Materialise ranges as chunks: blank edges trimmed, empty ranges dropped."""
    pieces: list[ChunkPiece] = []
    texts = units.texts
    for a, b in ranges:
        while a < b and not texts[a].strip():
            a += 1
        while b > a and not texts[b - 1].strip():
            b -= 1
        if a >= b:
            continue
        text = units.join(a, b)
        heading = None
        if blocks is not None:
            path = blocks[units.blocks[a]].heading_path
            heading = " > ".join(path) if path else None
        pieces.append(
            ChunkPiece(strategy, len(pieces), text, units.lines[a], units.lines[b - 1], heading)
        )
    return pieces


def doc_units(blocks: list[Block], sizes: Sizes) -> Units:
    """Units for prose strategies (sentences; code blocks by line)."""
    return blocks_to_units(blocks, sizes.max_chars)
