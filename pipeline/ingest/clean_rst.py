"""reStructuredText cleaning via docutils (unknown Sphinx directives and roles tolerated)."""

from __future__ import annotations

import io
from typing import Any

from pipeline.ingest.blocks import Block, plain_blocks

__all__ = ["clean_rst"]


_OVERRIDES: dict[str, Any] = {
    "report_level": 5,
    "halt_level": 5,
    "file_insertion_enabled": False,
    "raw_enabled": False,
    "input_encoding": "unicode",
    # Keep a lone top-level title as a section heading, not document metadata.
    "doctitle_xform": False,
    "sectsubtitle_xform": False,
    # Code blocks keep their text either way; without this, docutils runs Pygments over
    # every `code-block` (and imports its lexers) only to add classes that are dropped here.
    "syntax_highlight": "none",
}


def clean_rst(text: str) -> list[Block]:
    """reStructuredText to blocks via docutils (unknown Sphinx directives are dropped)."""
    from docutils.core import publish_doctree

    overrides = {**_OVERRIDES, "warning_stream": io.StringIO()}
    try:
        tree = publish_doctree(text, settings_overrides=overrides)
    except Exception:  # docutils raises many types on pathological input; fall back to text
        return plain_blocks(text)
    walker = _Walker(_Locator(text.split("\n")))
    walker.walk(tree, [], "paragraph")
    return walker.blocks


class _Walker:
    """Turns a docutils tree into blocks, in document order, with source lines."""

    def __init__(self, locator: _Locator) -> None:
        from docutils import nodes

        self.nodes = nodes
        self.locator = locator
        self.blocks: list[Block] = []
        self.skip = (
            nodes.comment,
            nodes.system_message,
            nodes.target,
            nodes.substitution_definition,
            nodes.raw,
            nodes.image,
            nodes.pending,
            nodes.title,  # a section's title became its heading block
        )

    def walk(self, node: Any, path: list[str], container: str) -> None:
        """Every child of `node` under heading path `path`, prose kind `container`."""
        nodes = self.nodes
        for child in node.children:
            if isinstance(child, self.skip):
                continue
            if isinstance(child, nodes.section):
                self.walk(child, self._heading(child, path), container)
            elif isinstance(child, nodes.literal_block):
                self._code(child, path)
            elif isinstance(child, nodes.paragraph | nodes.line):
                self._prose(child, path, container)
            elif isinstance(child, nodes.row):
                self._row(child, path)
            elif isinstance(child, nodes.list_item):
                self.walk(child, path, "list_item")
            elif isinstance(child, nodes.Element):
                self.walk(child, path, container)

    def _heading(self, section: Any, path: list[str]) -> list[str]:
        """Record a section's title as a heading block; returns the section's path."""
        title = section.next_node(self.nodes.title)
        name = " ".join(title.astext().split()) if title is not None else ""
        if not name:
            return path
        new_path = [*path, name]
        no = self.locator.find(name, title.line if title is not None else None)
        self.blocks.append(Block("heading", [name], [no], len(new_path), new_path))
        return new_path

    def _code(self, node: Any, path: list[str]) -> None:
        lines = node.astext().rstrip("\n").split("\n")
        locator = self.locator
        first = locator.find(lines[0], node.line) if lines[0].strip() else locator.cursor
        self.blocks.append(
            Block("code", lines, list(range(first, first + len(lines))), heading_path=path)
        )

    def _prose(self, node: Any, path: list[str], container: str) -> None:
        raw = [" ".join(s.split()) for s in _rst_inline(node).split("\n")]
        if not any(raw):
            return
        first_text = next(s for s in raw if s)
        start = self.locator.find(first_text, node.line) - raw.index(first_text)
        kept = [(s, start + i) for i, s in enumerate(raw) if s]
        self.blocks.append(
            Block(container, [s for s, _ in kept], [n for _, n in kept], heading_path=path)
        )

    def _row(self, node: Any, path: list[str]) -> None:
        cells = [" ".join(e.astext().split()) for e in node.children]
        line = "; ".join(c for c in cells if c)
        if line:
            no = self.locator.find(cells[0] or line, node.line)
            self.blocks.append(Block("table_row", [line], [no], heading_path=path))


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
