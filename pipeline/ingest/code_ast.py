"""AST-aware code chunks: top-level items (fn, impl, struct, class, …) via tree-sitter."""

from __future__ import annotations

from bisect import bisect_right
from functools import cache
from typing import Any

from pipeline.ingest.code_skip import skippable_ranges
from pipeline.ingest.units import Units

__all__ = ["AST_LANGUAGES", "top_level_items"]

AST_LANGUAGES = ("rust", "python", "c", "cpp")

# Nodes that describe the item after them; they travel with it.
_LEADING = {
    "line_comment",
    "block_comment",
    "comment",
    "attribute_item",
    "inner_attribute_item",
    "decorator",
}


# Container bodies whose members become items of their own when the container is big.
_BODIES = {"declaration_list", "field_declaration_list", "block"}
# Per file, over 1,779 real Rust files: a parse that skips under a tenth of a file takes ~9 %
# longer than a full one, from a fifth on it takes less (0.86 of it at 20-30 %, 0.5 at 50 %).
_MIN_SKIPPED = 0.2


@cache
def _parser(language: str, *, partial: bool = False) -> Any:
    """The language's parser; `partial`: a second one whose `included_ranges` are set per file."""
    from tree_sitter import Language, Parser

    if language == "rust":
        import tree_sitter_rust as grammar
    elif language == "python":
        import tree_sitter_python as grammar  # type: ignore[no-redef]
    elif language == "c":
        import tree_sitter_c as grammar  # type: ignore[no-redef]
    elif language == "cpp":
        import tree_sitter_cpp as grammar  # type: ignore[no-redef]
    else:
        raise ValueError(f"no tree-sitter grammar for {language!r}")
    return Parser(Language(grammar.language()))


def top_level_items(
    source: bytes, language: str, first_line: int, max_chars: int | None = None
) -> list[tuple[int, int]]:
    """1-based inclusive line spans of top-level items, leading comments/attributes attached.

    Items that end before `first_line` (the license header) are ignored; spans are
    clipped so they start no earlier than `first_line`. With `max_chars`, a container
    item bigger than that (an impl, trait, mod, class, namespace) is replaced by its
    members' spans (the header joins the first member, the closing line the last), so a
    big impl yields method-sized chunks.

    Rust is parsed without the block bodies the walk never enters (`code_skip`); when what is
    left does not parse cleanly, the whole file is parsed: the spans are a full parse's.
    """
    if language == "rust":
        tree = _parse_without_bodies(source, max_chars)
        if tree is not None:
            return _item_spans(tree.root_node.named_children, first_line, max_chars, depth=0)
    tree = _parser(language).parse(source)
    return _item_spans(tree.root_node.named_children, first_line, max_chars, depth=0)


def _parse_without_bodies(source: bytes, max_chars: int | None) -> Any | None:
    """A parse of `source` less its skippable block bodies; None if it has errors, or if under
    `_MIN_SKIPPED` of the file is skipped (the ranges then cost about what they save)."""
    from tree_sitter import Point, Range

    skipped = skippable_ranges(source, max_chars)
    if sum(end - start for start, end in skipped) < _MIN_SKIPPED * len(source):
        return None
    row, at = 0, 0

    def point(pos: int) -> Any:  # positions come in increasing order
        nonlocal row, at
        row += source.count(b"\n", at, pos)
        at = pos
        return Point(row, pos - source.rfind(b"\n", 0, pos) - 1)

    ranges, start = [], 0
    for skip_start, skip_end in [*skipped, (len(source), len(source))]:
        ranges.append(Range(point(start), point(skip_start), start, skip_start))
        start = skip_end
    parser = _parser("rust", partial=True)
    parser.included_ranges = ranges
    tree = parser.parse(source)
    return None if tree.root_node.has_error else tree


def _item_spans(
    nodes: list[Any], first_line: int, max_chars: int | None, depth: int
) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    pending: int | None = None
    for node in nodes:
        start = node.start_point[0] + 1
        end = node.end_point[0] + 1
        if node.end_point[1] == 0 and end > start:
            end -= 1  # a node ending at column 0 really ends on the previous line
        if end < first_line:
            continue
        start = max(start, first_line)
        if node.type in _LEADING:
            pending = start if pending is None else pending
            continue
        if pending is not None:
            start = min(start, pending)
            pending = None
        # Only a container bigger than max_chars is split: check the size before its body.
        big = max_chars is not None and depth < 2 and node.end_byte - node.start_byte > max_chars
        members = _members(node) if big else []
        if members:
            inner = _item_spans(members, first_line, max_chars, depth + 1)
            if inner:
                inner[0] = (min(start, inner[0][0]), inner[0][1])
                inner[-1] = (inner[-1][0], max(end, inner[-1][1]))
                for span in inner:
                    spans = _append(spans, span)
                continue
        spans = _append(spans, (start, end))
    if pending is not None and nodes:
        last_end = nodes[-1].end_point[0] + 1
        spans = _append(spans, (pending, max(pending, last_end)))
    return spans


def _append(spans: list[tuple[int, int]], span: tuple[int, int]) -> list[tuple[int, int]]:
    """Add a span, merging it into the previous one when they share lines."""
    if spans and span[0] <= spans[-1][1]:
        spans[-1] = (spans[-1][0], max(span[1], spans[-1][1]))
    else:
        spans.append(span)
    return spans


def _members(node: Any) -> list[Any]:
    """Named children of a container item's body (impl/trait/mod/class/namespace)."""
    target = node
    if node.type == "decorated_definition":
        target = node.child_by_field_name("definition") or node
    body = target.child_by_field_name("body")
    if body is None or body.type not in _BODIES:
        return []
    return list(body.named_children)


def item_groups(units: Units, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Turn line spans into unit ranges (units are code lines; gaps join the next item)."""
    groups: list[tuple[int, int]] = []
    if not len(units):
        return groups
    lines = units.lines  # non-decreasing source line numbers
    n = len(units)
    idx = 0
    group_start = 0
    for _, end in spans:
        idx = bisect_right(lines, end, idx)  # past every unit on a line <= end
        if idx > group_start:
            groups.append((group_start, idx))
            group_start = idx
    if group_start < n:
        groups.append((group_start, n))
    return groups
