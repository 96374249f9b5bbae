"""Markdown cleaning via markdown-it-py (CommonMark + tables + MyST directive fences)."""

from __future__ import annotations

from html.parser import HTMLParser

from markdown_it import MarkdownIt
from markdown_it.token import Token

from pipeline.ingest.blocks import Block

__all__ = ["clean_markdown"]

# MyST directives that only generate navigation, never prose.
_NAV_DIRECTIVES = {"contents", "toctree", "include", "literalinclude", "image", "figure"}

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
