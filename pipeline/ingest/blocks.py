"""The cleaned-text unit every cleaner produces: a block of lines mapped to source lines."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Block", "plain_blocks"]


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
        """The block's lines joined by newlines."""
        return "\n".join(self.lines)

    @property
    def n_chars(self) -> int:
        """len(self.text) without building it."""
        return sum(len(line) for line in self.lines) + max(0, len(self.lines) - 1)


def plain_blocks(text: str) -> list[Block]:
    """Paragraphs separated by blank lines (the fallback when a parser fails)."""
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
