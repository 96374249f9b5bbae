"""Cleaning: parse Markdown / RST / code into plain-text blocks with a source line map.

Markup, link targets, directive and role syntax, HTML comments and the Apache
license header are dropped; headings, paragraphs, list items, table cells and
code are kept. Every cleaned line remembers its 1-based source line.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.token import Token

__all__ = ["Block", "clean", "clean_code", "clean_markdown", "clean_rst", "license_header_end"]

_LICENSE_MARKERS = (
    "licensed to the apache software foundation",
    "apache license",
    "spdx-license-identifier",
    "licensed under the",
)
# MyST directives that only generate navigation, never prose.
_NAV_DIRECTIVES = {"contents", "toctree", "include", "literalinclude", "image", "figure"}


@dataclass
class Block:
    """One structural unit of cleaned text: each line carries its source line number."""

    kind: str  # heading | paragraph | list_item | table_row | code | quote
    lines: list[str]
    line_nos: list[int]
    level: int = 0  # heading level (1 = top)
    heading_path: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def n_chars(self) -> int:
        return sum(len(line) for line in self.lines) + max(0, len(self.lines) - 1)


def clean(text: str, language: str) -> list[Block]:
    """Dispatch on language: markdown, rst, or source code (everything else)."""
    if language == "markdown":
        return clean_markdown(text)
    if language == "rst":
        return clean_rst(text)
    return clean_code(text)


# ---------------------------------------------------------------- Markdown


_MD = MarkdownIt("commonmark", {"html": True}).enable("table")


class _HtmlText(HTMLParser):
    """Collects text of an HTML fragment line by line (tags and comments dropped)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def _html_text(html: str) -> list[str]:
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    return "".join(parser.parts).split("\n")


def _inline_lines(token: Token) -> list[str]:
    """Render an inline token's children to plain lines (softbreaks keep source lines)."""
    lines = [""]
    children = token.children or []
    for i, child in enumerate(children):
        t = child.type
        if t == "text":
            content = child.content
            nxt = children[i + 1] if i + 1 < len(children) else None
            # MyST role syntax {role}`target`: drop the `{role}` prefix, keep the target.
            if nxt is not None and nxt.type == "code_inline" and content.endswith("}"):
                brace = content.rfind("{")
                if (
                    brace != -1
                    and content[brace + 1 : -1].replace(":", "").replace("-", "").isalnum()
                ):
                    content = content[:brace]
            lines[-1] += content
        elif t == "code_inline":
            lines[-1] += child.content
        elif t in ("softbreak", "hardbreak"):
            lines.append("")
        elif t == "image":
            lines[-1] += child.content
        elif t == "html_inline" and child.content.startswith("<br"):
            nxt = children[i + 1] if i + 1 < len(children) else None
            # `<br/>` followed by a source line break is one break, not two.
            if nxt is None or nxt.type not in ("softbreak", "hardbreak"):
                lines.append("")
    return lines


def _is_label(lines: list[str]) -> bool:
    """A MyST target label line such as `(op_plus)=`."""
    return len(lines) == 1 and lines[0].startswith("(") and lines[0].endswith(")=")


def clean_markdown(text: str, line_offset: int = 0) -> list[Block]:
    """Markdown (CommonMark + tables + MyST fences) to blocks via markdown-it-py."""
    tokens = _MD.parse(text)
    blocks: list[Block] = []
    headings: list[tuple[int, str]] = []
    containers: list[str] = []
    table_header: list[str] = []
    row: list[str] = []
    in_thead = False
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        t = tok.type
        start = (tok.map[0] if tok.map else 0) + 1 + line_offset
        if t == "heading_open":
            inline = tokens[i + 1]
            title = " ".join(s.strip() for s in _inline_lines(inline) if s.strip())
            level = int(tok.tag[1])
            while headings and headings[-1][0] >= level:
                headings.pop()
            headings.append((level, title))
            if title:
                blocks.append(Block("heading", [title], [start], level, [h for _, h in headings]))
            i += 3
            continue
        if t in ("bullet_list_open", "ordered_list_open", "blockquote_open"):
            containers.append("quote" if t == "blockquote_open" else "list_item")
        elif t in ("bullet_list_close", "ordered_list_close", "blockquote_close"):
            containers.pop()
        elif t == "paragraph_open":
            lines = _inline_lines(tokens[i + 1])
            if not _is_label(lines):
                kind = containers[-1] if containers else "paragraph"
                _add_block(blocks, kind, lines, start, headings)
            i += 3
            continue
        elif t in ("fence", "code_block"):
            blocks.extend(_clean_fence(tok, start, headings))
        elif t == "html_block":
            if not tok.content.lstrip().startswith("<!--"):
                _add_block(blocks, "paragraph", _html_text(tok.content), start, headings)
        elif t == "thead_open":
            in_thead, table_header = True, []
        elif t == "thead_close":
            in_thead = False
        elif t == "tr_open":
            row = []
        elif t in ("th_open", "td_open"):
            row.append(" ".join(s.strip() for s in _inline_lines(tokens[i + 1])).strip())
        elif t == "tr_close":
            if in_thead:
                table_header = row
            else:
                line_no = _row_line(tokens, i, line_offset)
                _add_block(
                    blocks, "table_row", [_table_row_text(table_header, row)], line_no, headings
                )
        i += 1
    return [b for b in blocks if b.lines]


def _row_line(tokens: list[Token], close_index: int, line_offset: int) -> int:
    for j in range(close_index, -1, -1):
        row_map = tokens[j].map
        if tokens[j].type == "tr_open":
            return (row_map[0] if row_map else 0) + 1 + line_offset
    return 1 + line_offset


def _table_row_text(header: list[str], row: list[str]) -> str:
    if header and len(header) == len(row):
        return "; ".join(f"{h}: {c}" if h else c for h, c in zip(header, row, strict=True) if c)
    return "; ".join(c for c in row if c)


def _clean_fence(tok: Token, start: int, headings: list[tuple[int, str]]) -> list[Block]:
    info = tok.info.strip()
    body = tok.content.rstrip("\n").split("\n")
    first = start + 1 if tok.type == "fence" else start
    if info.startswith("{"):
        name = info[1:].split("}", 1)[0].strip().lower()
        if name in _NAV_DIRECTIVES:
            return []
        # An admonition-like directive: options first (`:key: value`), then Markdown.
        skip = 0
        while skip < len(body) and body[skip].startswith(":"):
            skip += 1
        inner = "\n".join(body[skip:])
        nested = clean_markdown(inner, line_offset=first - 1 + skip)
        for block in nested:
            block.heading_path = [h for _, h in headings] + block.heading_path
        return nested
    lines = [line.rstrip() for line in body]
    while lines and not lines[-1].strip():
        lines.pop()
    if not any(line.strip() for line in lines):
        return []
    return [
        Block(
            "code",
            lines,
            list(range(first, first + len(lines))),
            heading_path=[h for _, h in headings],
        )
    ]


def _add_block(
    blocks: list[Block], kind: str, lines: list[str], start: int, headings: list[tuple[int, str]]
) -> None:
    kept, nos = [], []
    for offset, line in enumerate(lines):
        stripped = " ".join(line.split())
        if stripped:
            kept.append(stripped)
            nos.append(start + offset)
    if kept:
        blocks.append(Block(kind, kept, nos, heading_path=[h for _, h in headings]))


# ---------------------------------------------------------------- reStructuredText


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
        return _plain_blocks(text)
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


def _plain_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    lines: list[str] = []
    nos: list[int] = []
    for no, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            lines.append(line.rstrip())
            nos.append(no)
        elif lines:
            blocks.append(Block("paragraph", lines, nos))
            lines, nos = [], []
    if lines:
        blocks.append(Block("paragraph", lines, nos))
    return blocks


# ---------------------------------------------------------------- source code


def license_header_end(lines: list[str]) -> int:
    """Number of leading lines that form a license comment block (0 when there is none).

    Scans the first comment block (`//`, `#`, `/* */`, after an optional shebang or
    encoding line); it is a license header only if it mentions a license marker.
    """
    i = 0
    n = len(lines)
    if i < n and lines[i].startswith("#!"):
        i += 1
    while i < n and not lines[i].strip():
        i += 1
    start = i
    if i < n and lines[i].lstrip().startswith("/*"):
        while i < n and "*/" not in lines[i]:
            i += 1
        i = min(i + 1, n)
    else:
        while (
            i < n
            and lines[i].lstrip().startswith(("//", "#"))
            and not lines[i]
            .lstrip()
            .startswith(("#include", "#define", "#if", "#pragma", "#[", "#!"))
        ):
            i += 1
    header = " ".join(lines[start:i]).lower()
    if i > start and any(marker in header for marker in _LICENSE_MARKERS):
        while i < n and not lines[i].strip():
            i += 1
        return i
    return 0


def clean_code(text: str) -> list[Block]:
    """Source code as one `code` block, license header removed, trailing spaces trimmed."""
    lines = text.split("\n")
    skip = license_header_end(lines)
    kept = [line.rstrip() for line in lines[skip:]]
    nos = list(range(skip + 1, skip + 1 + len(kept)))
    while kept and not kept[-1].strip():
        kept.pop()
        nos.pop()
    if not kept:
        return []
    return [Block("code", kept, nos)]
