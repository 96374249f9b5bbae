"""Chunking strategies over cleaned units: heading, paragraph, fixed, code_fixed (+ code_ast).

Every strategy returns contiguous unit ranges; cut points inside long regions are
content-defined (see `units.is_boundary`) so a local edit only changes local chunks.
Hard bounds: no chunk longer than `max_chars`, none empty, every loop advances.
"""

from __future__ import annotations

import hashlib
import json
from bisect import bisect_left, bisect_right
from dataclasses import dataclass

from pipeline.ingest.blocks import Block
from pipeline.ingest.units import Units, blocks_to_units, boundary_candidates, is_boundary

__all__ = [
    "HEADING_SEPARATOR",
    "ChunkRow",
    "Sizes",
    "cdc_ranges",
    "chunk_id",
    "chunk_rows",
    "doc_units",
    "fixed_chunks",
    "grouped_chunks",
    "heading_chunks",
    "normalise",
    "paragraph_chunks",
]


@dataclass(frozen=True)
class Sizes:
    """Size bounds for one family of strategies (docs or code)."""

    min_chars: int
    max_chars: int
    overlap_chars: int

    @property
    def mean_gap_chars(self) -> int:
        """Average distance between content-defined cut candidates."""
        # Expected distance between content-defined cuts once past min_chars: a quarter
        # of the min..max window, so only ~2% of chunks hit max_chars before a natural
        # cut (forced cuts are the one thing that can ripple into the next chunk).
        return max(1, (self.max_chars - self.min_chars) // 4)


# (strategy, ordinal, chunk_id, text, start_line, end_line, heading, sections): heading is
# the section the chunk starts in; sections (JSON, or None) the heading paths of the sections
# that start inside it, in order, so a passage can be told its own section.
ChunkRow = tuple[str, int, str, str, int, int, str | None, str | None]
HEADING_SEPARATOR = " > "  # how a heading path is written as a row's `heading`


def normalise(text: str) -> str:
    """Whitespace-collapsed text: the form a chunk id is computed over."""
    return " ".join(text.split())


def chunk_id(text: str) -> str:
    """sha256 of the normalised text (content address shared across files/strategies)."""
    return hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()


def _offsets(units: Units, a: int, b: int) -> list[int]:
    """off[k - a] = length of the text of units[a:k] (k in a..b)."""
    cum = units.cumulative()
    first_sep = len(units.seps[a]) if b > a else 0
    base = cum[a] + first_sep
    return [0] + [cum[k] - base for k in range(a + 1, b + 1)]


def cdc_ranges(units: Units, a: int, b: int, sizes: Sizes) -> list[tuple[int, int]]:
    """Cut units[a:b] into ranges of at most max_chars at content-defined boundaries.

    A unit is a cut candidate when `is_boundary` says so (its own text only). A
    candidate is taken when the previous candidate (taken or not) and the start are
    at least min_chars behind it, so whether a cut is taken depends only on the text
    within min_chars before it, never on where the previous chunk happened to end;
    an edit moves at most the cuts next to it. Spans longer than the size limit are
    split greedily. With overlap, each chunk after the first starts with the text just
    before it (whole units, at most overlap_chars), still within max_chars.
    """
    if b <= a:
        return []
    cum = units.cumulative()
    base = cum[a] + len(units.seps[a])  # chars before unit a's text
    gap = sizes.mean_gap_chars
    limit = max(1, sizes.max_chars - sizes.overlap_chars)
    candidates = boundary_candidates(units, a, b - 1, gap)
    cuts: list[int] = []  # unit index after which a chunk ends
    last_candidate = 0
    for k in candidates:
        end = cum[k + 1] - base
        if end - last_candidate >= sizes.min_chars and end >= sizes.min_chars:
            cuts.append(k + 1)
        last_candidate = end
    spans: list[tuple[int, int]] = []
    start = a
    for cut in [*cuts, b]:
        spans.extend(_greedy(units, start, cut, limit))
        start = cut
    if sizes.overlap_chars <= 0:
        return spans
    # The overlap is the text just before a chunk's own range, wherever the previous
    # chunk started: it then depends only on this chunk's cut, not on its neighbour's.
    out = [spans[0]]
    for s_start, s_end in spans[1:]:
        begin = s_start
        budget = sizes.max_chars - units.size(s_start, s_end)
        overlap = 0
        while begin - 1 >= a:
            add = len(units.texts[begin - 1]) + len(units.seps[begin])
            if overlap + add > min(sizes.overlap_chars, budget):
                break
            overlap += add
            begin -= 1
        out.append((begin, s_end))
    return out


def _greedy(units: Units, a: int, b: int, limit: int) -> list[tuple[int, int]]:
    """Split units[a:b] left to right into ranges no longer than `limit` chars."""
    cum = units.cumulative()
    seps = units.seps
    out: list[tuple[int, int]] = []
    start = a
    while start < b:
        # size(start, k) = cum[k] - cum[start] - len(seps[start]) <= limit
        k = bisect_right(cum, cum[start] + len(seps[start]) + limit, start + 1, b + 1) - 1
        k = max(k, start + 1)  # a single unit is never longer than the limit
        out.append((start, k))
        start = k
    return out


def grouped_chunks(
    units: Units, groups: list[tuple[int, int]], sizes: Sizes
) -> list[tuple[int, int]]:
    """Chunks made of whole groups (sections, paragraphs, items): small ones merged.

    A group of at least min_chars ends its chunk (with any small groups before it).
    A run of small groups is cut after a content-defined group end that lies at least
    min_chars past the previous candidate; a group that would push the chunk over
    max_chars starts a new one. A group above max_chars is split on its own (in two
    near its middle when at most twice max_chars, else by `cdc_ranges`). Decisions
    depend on nearby content only, so an edit changes one or two chunks.
    """
    out: list[tuple[int, int]] = []
    cur: int | None = None
    since_candidate = 0
    for a, b in groups:
        if b <= a:
            continue
        group_size = units.size(a, b)
        if group_size > sizes.max_chars:
            if cur is not None:
                out.append((cur, a))
                cur = None
            out.extend(_split_group(units, a, b, sizes))
            since_candidate = 0
            continue
        start = a if cur is None else cur
        if units.size(start, b) > sizes.max_chars:
            out.append((start, a))
            start = a
        since_candidate += group_size + 2
        if group_size >= sizes.min_chars:
            out.append((start, b))
            cur, since_candidate = None, 0
        elif is_boundary(units, b - 1, sizes.mean_gap_chars, weight=group_size):
            if since_candidate >= sizes.min_chars:
                out.append((start, b))
                cur = None
            else:
                cur = start
            since_candidate = 0
        else:
            cur = start
    if cur is not None:
        out.append((cur, groups[-1][1]))
    return out


def _split_group(units: Units, a: int, b: int, sizes: Sizes) -> list[tuple[int, int]]:
    """Split one oversized group: in two near the middle when that fits, else CDC."""
    off = _offsets(units, a, b)
    total = off[-1]
    if total <= 2 * sizes.max_chars:
        best: tuple[int, int, int] | None = None  # (rank, distance from middle, cut)
        for k in range(a + 1, b):
            left = off[k - a]
            if left > sizes.max_chars:
                break
            right = total - left - len(units.seps[k])
            if right > sizes.max_chars:
                continue
            # Prefer block ends, then line ends, then sentence ends.
            if units.blocks[k] != units.blocks[k - 1]:
                rank = 0
            else:
                rank = 1 if "\n" in units.seps[k] else 2
            key = (rank, abs(left - total // 2), k)
            if best is None or key < best:
                best = key
        if best is not None:
            return [(a, best[2]), (best[2], b)]
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


def chunk_rows(
    strategy: str,
    units: Units,
    ranges: list[tuple[int, int]],
    blocks: list[Block] | None = None,
) -> list[ChunkRow]:
    """Materialise ranges as chunk rows: blank edges trimmed, empty ranges dropped.

    One tuple per chunk, its id included (no intermediate object: ~70,000 chunks a scan).
    """
    rows: list[ChunkRow] = []
    texts, lines, unit_blocks = units.texts, units.lines, units.blocks
    starts = _heading_starts(units, blocks) if blocks is not None else []
    for a, b in ranges:
        while a < b and not texts[a].strip():
            a += 1
        while b > a and not texts[b - 1].strip():
            b -= 1
        if a >= b:
            continue
        text = units.join(a, b)
        heading = sections = None
        if blocks is not None:
            path = blocks[unit_blocks[a]].heading_path
            heading = HEADING_SEPARATOR.join(path) if path else None
            inside = starts[bisect_right(starts, a) : bisect_left(starts, b)]
            if inside:
                sections = json.dumps(
                    [blocks[unit_blocks[k]].heading_path for k in inside], ensure_ascii=False
                )
        rows.append(
            (strategy, len(rows), chunk_id(text), text, lines[a], lines[b - 1], heading, sections)
        )
    return rows


def _heading_starts(units: Units, blocks: list[Block]) -> list[int]:
    """The index of each heading block's first unit, ascending (units go block by block)."""
    unit_blocks = units.blocks
    starts = []
    for i, block in enumerate(blocks):
        if block.kind == "heading" and block.heading_path:
            k = bisect_left(unit_blocks, i)
            if k < len(unit_blocks) and unit_blocks[k] == i:
                starts.append(k)
    return starts


def doc_units(blocks: list[Block], sizes: Sizes) -> Units:
    """Units for prose strategies (sentences; code blocks by line)."""
    return blocks_to_units(blocks, sizes.max_chars)
