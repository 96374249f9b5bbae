"""Block bodies the AST item walk never enters: byte ranges a Rust parse can leave out.

`code_ast` needs the top-level items of a file, and the members of a container bigger than
`max_chars` (two levels at most). A function's statements, a small impl's methods, a struct's
fields: most of a Rust file is the inside of blocks whose lines the walk never looks at, and
tree-sitter parses them at about 8 MB/s. `skippable_ranges` finds those interiors with line
and brace arithmetic (no lexer), and `code_ast` parses only what is left (tree-sitter's
`included_ranges`: nodes keep their bytes and lines in the whole file).

A range is the interior of a `{` … `}` pair that rustfmt-shaped code writes as blocks:
- the `{` ends its line, and that line has no quote or comment (which could hide it);
- the `}` opens the first later line at the same indentation, every non-blank line in between
  is indented deeper, and the interior has as many `{` as `}`;
- the walk never enters it: it lies two blocks deep, or the item that owns it is at most
  `max_chars` long (measured from the end of the previous item's block, which bounds it).
A block that fails a test is not skipped; the scan goes on inside it. Where a guess is wrong
anyway (a `}` line inside a multi-line string), the rest no longer parses: `code_ast` then
parses the whole file (`has_error`), so the items are those of a full parse.
"""

from __future__ import annotations

import re
from functools import cache

__all__ = ["skippable_ranges"]

_OPEN = re.compile(rb"\{[ \t]*\r?\n")  # a `{` that ends its line
_HIDING = re.compile(rb'"|//|/\*|\*/')  # text on the `{` line that could hide the brace
# The walk splits items of depth 0 and 1 (code_ast._item_spans); bodies below are never entered.
_WALK_DEPTH = 2
# A block the walk enters is looked into for blocks to skip only when it is at least this big:
# with a small `max_chars` every method is entered, and finding its few small blocks cost more
# than not parsing them saved (bench/bench_ast_skip.py, max_chars 300).
_MIN_SCANNED = 1024


@cache
def _shallow_line(indent: bytes) -> re.Pattern[bytes]:
    """A line that is not blank and not indented deeper than `indent`."""
    return re.compile(rb"\n(?!" + re.escape(indent) + rb"[ \t]|[ \t]*\r?(?:\n|$))")


def skippable_ranges(source: bytes, max_chars: int | None) -> list[tuple[int, int]]:
    """Sorted, disjoint (start, end) byte ranges of block interiors the walk never enters."""
    out: list[tuple[int, int]] = []
    limit = max_chars if max_chars is not None else len(source)
    _scan(source, 0, len(source), 0, limit, out)
    return out


def _scan(src: bytes, lo: int, hi: int, depth: int, limit: int, out: list[tuple[int, int]]) -> None:
    """Blocks of src[lo:hi] at `depth`: skip each one the walk cannot enter, or look inside."""
    boundary = lo  # no item at this depth starts before it
    pos = lo
    while (opened := _OPEN.search(src, pos, hi)) is not None:
        brace, newline = opened.start(), opened.end() - 1
        pos = opened.end()
        close = _closing_brace(src, brace, newline, hi)
        if close is None:
            continue  # not a block we can bound: its inner blocks are scanned at this depth
        if depth >= _WALK_DEPTH or close + 1 - boundary <= limit:
            out.append((brace + 1, close))
        elif close - brace >= _MIN_SCANNED:
            _scan(src, brace + 1, close, depth + 1, limit, out)
        pos = close + 1
        if _ends_item(src, close, hi):
            boundary = close + 1


def _closing_brace(src: bytes, brace: int, newline: int, hi: int) -> int | None:
    """Where the block opened at `brace` closes, when line arithmetic can tell; else None."""
    line_start = src.rfind(b"\n", 0, brace) + 1
    if _HIDING.search(src, line_start, brace) is not None:
        return None
    line = src[line_start:brace]
    indent = line[: len(line) - len(line.lstrip(b" \t"))]
    close_newline = src.find(b"\n" + indent + b"}", newline, hi)
    if close_newline < 0:
        return None
    close = close_newline + 1 + len(indent)
    if src.count(b"{", brace + 1, close) != src.count(b"}", brace + 1, close):
        return None
    if _shallow_line(indent).search(src, newline, close_newline) is not None:
        return None
    return close


def _ends_item(src: bytes, close: int, hi: int) -> bool:
    """The `}` line ends what it closes (`}`, `};`, `},`), not `} else {` or `}>() {`: only then
    does the next block's owner start after it."""
    end = src.find(b"\n", close, hi)
    rest = src[close + 1 : end if end >= 0 else hi].strip()
    return rest in (b"", b";", b",")
