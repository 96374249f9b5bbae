"""Cleaned blocks flattened into units (sentences or lines) that chunkers cut between."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from itertools import accumulate
from operator import add

from pipeline.ingest.blocks import Block

__all__ = ["Units", "blocks_to_units", "boundary_candidates", "is_boundary", "lines_to_units"]


@dataclass
class Units:
    """Parallel lists: text of each unit, its source line, the separator put before it,
    and the index of the block it came from. A chunk is a contiguous range of units."""

    texts: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    seps: list[str] = field(default_factory=list)
    blocks: list[int] = field(default_factory=list)
    uniform_sep: str | None = None  # set when every separator is the same (code lines)
    _cum: list[int] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.texts)

    def add(self, text: str, line: int, sep: str, block: int) -> None:
        """Append one unit."""
        self.texts.append(text)
        self.lines.append(line)
        self.seps.append(sep)
        self.blocks.append(block)

    def cumulative(self) -> list[int]:
        """cum[i] = chars of units[:i] each with its separator (computed once, cached)."""
        cum = self._cum
        if cum is None or len(cum) != len(self.texts) + 1:
            if len(self.seps) != len(self.texts):
                raise ValueError("units have a separator count unlike their text count")
            widths = map(add, map(len, self.seps), map(len, self.texts))
            cum = self._cum = list(accumulate(widths, initial=0))
        return cum

    def join(self, a: int, b: int) -> str:
        """The text of units[a:b] (the first unit's separator is dropped)."""
        if b <= a:
            return ""
        seps = self.seps
        if self.uniform_sep is not None:
            return self.uniform_sep.join(self.texts[a:b])
        parts = [self.texts[a]]
        for i in range(a + 1, b):
            parts.append(seps[i])
            parts.append(self.texts[i])
        return "".join(parts)

    def size(self, a: int, b: int) -> int:
        """len(self.join(a, b)) without building the string (O(1))."""
        if b <= a:
            return 0
        cum = self._cum
        if cum is None or len(cum) != len(self.texts) + 1:
            cum = self.cumulative()
        return cum[b] - cum[a] - len(self.seps[a])


def _split_long(text: str, limit: int) -> list[str]:
    """Split text into pieces of at most `limit` chars, at spaces where possible."""
    pieces: list[str] = []
    while len(text) > limit:
        cut = text.rfind(" ", 0, limit + 1)
        if cut <= 0:
            cut = limit
        pieces.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    if text:
        pieces.append(text)
    return [p for p in pieces if p]


def _sentences(line: str) -> list[str]:
    """Split a prose line after sentence punctuation followed by a space."""
    out: list[str] = []
    start = 0
    i = 0
    n = len(line)
    while i < n - 1:
        if line[i] in ".!?;" and line[i + 1] == " " and i + 1 - start >= 20:
            out.append(line[start : i + 1])
            start = i + 2
            i += 2
            continue
        i += 1
    if start < n:
        out.append(line[start:])
    return [s for s in out if s]


def blocks_to_units(blocks: list[Block], max_unit_chars: int) -> Units:
    """Prose blocks to sentence units, code blocks to line units; none over the cap."""
    units = Units()
    for b_index, block in enumerate(blocks):
        first_in_block = True
        for line, no in zip(block.lines, block.line_nos, strict=True):
            pieces = [line] if block.kind == "code" else _sentences(line)
            if block.kind == "code" and not line.strip():
                pieces = [""]
            first_in_line = True
            for sentence in pieces:
                for piece in _split_long(sentence, max_unit_chars) if sentence else [""]:
                    if first_in_block:
                        sep = "\n\n"
                    elif first_in_line:
                        sep = "\n"
                    else:
                        sep = " "
                    units.add(piece, no, sep, b_index)
                    first_in_block = first_in_line = False
    return units


def lines_to_units(lines: list[str], line_nos: list[int], max_unit_chars: int) -> Units:
    """Code lines to units (blank lines kept so spans stay exact)."""
    units = Units(uniform_sep="\n")
    if len(lines) != len(line_nos):
        raise ValueError("lines and line_nos differ in length")
    if not lines or max(map(len, lines)) <= max_unit_chars:
        # The common case, no line to split: the lists are the units as they are.
        units.texts, units.lines = list(lines), list(line_nos)
        units.seps = ["\n"] * len(lines)
        units.blocks = [0] * len(lines)
        return units
    texts, nos = units.texts, units.lines
    for line, no in zip(lines, line_nos, strict=True):
        if len(line) > max_unit_chars:
            for piece in _split_long(line, max_unit_chars):
                texts.append(piece)
                nos.append(no)
        else:
            texts.append(line)
            nos.append(no)
    units.seps = ["\n"] * len(texts)
    units.blocks = [0] * len(texts)
    return units


_M = 0xFFFFFFFF  # digest range


def _digest(text: str) -> int:
    # blake2b, not crc32: crc32 is linear, so similar lines get correlated verdicts.
    # Not memoised: hashing a short line costs less than a cache lookup keyed by it.
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "big")


def is_boundary(units: Units, i: int, mean_gap_chars: int, weight: int | None = None) -> bool:
    """Content-defined cut point after unit i.

    Depends only on the text of unit i, so an edit elsewhere never moves it;
    the probability grows with the unit's length (or `weight`, e.g. a whole block's),
    giving about one cut per `mean_gap_chars` characters whatever the unit sizes are.
    """
    cur = units.texts[i]
    if weight is None:
        weight = len(cur) + 1
    return (_digest(cur) + 1) * max(1, mean_gap_chars) <= weight * _M


def boundary_candidates(units: Units, a: int, b: int, mean_gap_chars: int) -> list[int]:
    """Every k in a..b-1 where `is_boundary(units, k, mean_gap_chars)` holds, in one pass
    (the chunkers' hot loop: one hash per distinct unit text, nothing else)."""
    texts = units.texts
    gap = max(1, mean_gap_chars)
    always = gap * (_M + 1)
    blake2b, from_bytes = hashlib.blake2b, int.from_bytes
    # The verdict depends on the text alone, and a file repeats many lines (blank lines,
    # closing braces, `Ok(())`): 45 % of the lines of arrow-rs's Rust files. A plain dict
    # lookup costs a fraction of the hash, so each distinct text is hashed once per call.
    verdicts: dict[str, bool] = {}
    out: list[int] = []
    for k in range(a, b):
        text = texts[k]
        verdict = verdicts.get(text)
        if verdict is None:
            weight = len(text) + 1
            # A unit at least `gap` long is always a candidate: its hash need not be computed.
            verdict = verdicts[text] = (
                weight * _M >= always
                or (from_bytes(blake2b(text.encode(), digest_size=4).digest(), "big") + 1) * gap
                <= weight * _M
            )
        if verdict:
            out.append(k)
    return out
