"""reStructuredText cleaning via docutils (unknown Sphinx directives and roles tolerated)."""

from __future__ import annotations

import io
from typing import Any

from pipeline.ingest.blocks import Block, plain_blocks

__all__ = ["clean_rst"]


def clean_rst(text: str) -> list[Block]:
    """reStructuredText to blocks via docutils (unknown Sphinx directives are dropped)."""
    from docutils import nodes
    from docutils.core import publish_doctree

    overrides = {
        "report_level": 5,
        "halt_level": 5,
        "warning_stream": io.StringIO(),
        "file_insertion_enabled": False,
        "raw_enabled": False,
        "input_encoding": "unicode",
        # Keep a lone top-level title as a section heading, not document metadata.
        "doctitle_xform": False,
        "sectsubtitle_xform": False,
    }
    try:
        tree = publish_doctree(text, settings_overrides=overrides)
    except Exception:  # docutils raises many types on pathological input; fall back to text
        return plain_blocks(text)
    source_lines = text.split("\n")
    locator = _Locator(source_lines)
    blocks: list[Block] = []
    skip = (
        nodes.comment,
        nodes.system_message,
        nodes.target,
        nodes.substitution_definition,
        nodes.raw,
        nodes.image,
        nodes.pending,
    )

    def walk(node: Any, path: list[str], container: str) -> None:
        for child in node.children:
            if isinstance(child, skip):
                continue
            if isinstance(child, nodes.section):
                title = child.next_node(nodes.title)
                name = " ".join(title.astext().split()) if title is not None else ""
                new_path = [*path, name] if name else path
                if name:
                    no = locator.find(name, title.line if title is not None else None)
                    blocks.append(Block("heading", [name], [no], len(new_path), new_path))
                walk(child, new_path, container)
            elif isinstance(child, nodes.title):
                continue
            elif isinstance(child, nodes.literal_block):
                lines = child.astext().rstrip("\n").split("\n")
                first = locator.find(lines[0], child.line) if lines[0].strip() else locator.cursor
                blocks.append(
                    Block("code", lines, list(range(first, first + len(lines))), heading_path=path)
                )
            elif isinstance(child, nodes.paragraph | nodes.line):
                raw = [" ".join(s.split()) for s in _rst_inline(child).split("\n")]
                if any(raw):
                    first_text = next(s for s in raw if s)
                    start = locator.find(first_text, child.line) - raw.index(first_text)
                    kept = [(s, start + i) for i, s in enumerate(raw) if s]
                    blocks.append(
                        Block(
                            container,
                            [s for s, _ in kept],
                            [n for _, n in kept],
                            heading_path=path,
                        )
                    )
            elif isinstance(child, nodes.row):
                cells = [" ".join(e.astext().split()) for e in child.children]
                line = "; ".join(c for c in cells if c)
                if line:
                    blocks.append(
                        Block(
                            "table_row",
                            [line],
                            [locator.find(cells[0] or line, child.line)],
                            heading_path=path,
                        )
                    )
            elif isinstance(child, nodes.list_item):
                walk(child, path, "list_item")
            elif isinstance(child, nodes.Element):
                walk(child, path, container)

    walk(tree, [], "paragraph")
    return blocks


def _rst_inline(node: Any) -> str:
    """Text of an inline RST subtree; unknown (Sphinx) roles keep only their title."""
    from docutils import nodes

    if isinstance(node, nodes.problematic):
        return _role_title(node.astext())
    if isinstance(node, nodes.Text):
        return str(node)
    if isinstance(node, nodes.system_message):
        return ""
    return "".join(_rst_inline(child) for child in node.children)


def _role_title(raw: str) -> str:
    """`:role:`title <target>`` -> title; `:role:`~a.b.c`` -> c; anything else unchanged."""
    first, last = raw.find("`"), raw.rfind("`")
    if not raw.startswith(":") or first == -1 or last <= first:
        return raw
    inner = raw[first + 1 : last]
    if inner.endswith(">") and "<" in inner:
        title = inner[: inner.rfind("<")].strip()
        return title or inner[inner.rfind("<") + 1 : -1]
    if inner.startswith("~"):
        return inner[1:].split(".")[-1]
    return inner


class _Locator:
    """Maps cleaned text back to source lines by searching forward from a cursor."""

    def __init__(self, source_lines: list[str]) -> None:
        self.source = source_lines
        self.cursor = 1

    def find(self, text: str, hint: int | None = None) -> int:
        """The first source line at/after the cursor (or near `hint`) holding `text`'s words."""
        words = text.split()[:3]
        if not words:
            return hint or self.cursor
        if hint is not None and 0 < hint <= len(self.source) and words[0] in self.source[hint - 1]:
            self.cursor = hint
            return hint
        lo = self.cursor if hint is None else max(1, hint - 2)
        hi = len(self.source) if hint is None else min(len(self.source), hint + 6)
        for no in range(lo, hi + 1):
            line = self.source[no - 1]
            if words[0] in line and all(w in " ".join(self.source[no - 1 : no + 2]) for w in words):
                self.cursor = no
                return no
        if hint is not None:
            self.cursor = hint
            return hint
        return self.cursor
