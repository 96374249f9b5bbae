"""Cleaning: parse Markdown / RST / code into plain-text blocks with a source line map.

Markup, link targets, directive and role syntax, HTML comments and the Apache
license header are dropped; headings, paragraphs, list items, table cells and
code are kept. Every cleaned line remembers its 1-based source line.
"""

from __future__ import annotations

from pipeline.ingest.blocks import Block, plain_blocks
from pipeline.ingest.clean_markdown import clean_markdown
from pipeline.ingest.clean_rst import clean_rst

__all__ = [
    "Block",
    "clean",
    "clean_code",
    "clean_markdown",
    "clean_rst",
    "license_header_end",
    "plain_blocks",
]

_LICENSE_MARKERS = (
    "licensed to the apache software foundation",
    "apache license",
    "spdx-license-identifier",
    "licensed under the",
)


def clean(text: str, language: str) -> list[Block]:
    """Dispatch on language: markdown, rst, or source code (everything else)."""
    if language == "markdown":
        return clean_markdown(text)
    if language == "rst":
        return clean_rst(text)
    return clean_code(text)


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
