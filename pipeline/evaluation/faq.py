"""Harvest question/answer pairs that the docs themselves write (Markdown and reStructuredText).

Patterns (each pair keeps its provenance: repo, file, first and last line):

- a heading that is a question ("What is a DataFrame?", any heading ending in '?') or a
  how-to heading ("How to format .md documents" → "How do I format .md documents?");
  the answer is the section's first prose paragraphs (code blocks, tables and directives
  skipped), up to about `max_answer_chars`;
- a bold question ("**What is X?**", a paragraph of its own or leading one) followed by its
  answer (the rest of that paragraph, else the next one);
- a definition-list question: a line ending in '?' followed by its definition
  (MyST `: answer` lines, or an indented block in RST).

Torch-free and read-only: it reads the files doctune would ingest as docs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.ingest.sources import discover_repos, walk_repo
from pipeline.settings import Settings

__all__ = ["FaqPair", "harvest_file", "harvest_repos", "harvest_text"]

MAX_ANSWER_CHARS = 600
MIN_ANSWER_CHARS = 20

_MD_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_RST_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+:.])\1{2,}\s*$")
_BOLD_Q = re.compile(r"^\*\*(.+?\?)\*\*\s*(.*)$")
_HOWTO = re.compile(r"^how\s+to\s+(.+)$", re.I)
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_REF_LINK = re.compile(r"\[([^\]]+)\](?:\[[^\]]*\])?")
_LINK_DEF = re.compile(r"^\s*\[[^\]]+\]:\s+\S")
_RST_LINK = re.compile(r"`([^`<]+?)\s*<[^>]*>`_{1,2}")
_RST_ROLE = re.compile(r":[\w:-]+:`([^`]*)`")
_HTML = re.compile(r"<[^>]+>")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class FaqPair:
    """One harvested pair with provenance (lines are 1-based, inclusive)."""

    question: str
    answer: str
    source: str  # repo-relative path
    repo: str
    start_line: int
    end_line: int
    kind: str  # question_heading | howto_heading | bold_question | definition

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


def _clean(text: str) -> str:
    text = _LINK.sub(r"\1", text)
    text = _REF_LINK.sub(r"\1", text)
    text = _RST_LINK.sub(r"\1", text)
    text = _RST_ROLE.sub(r"\1", text)
    text = _HTML.sub("", text)
    text = text.replace("**", "").replace("``", "").replace("`", "")
    return re.sub(r"\s+", " ", text).strip()


def _as_question(heading: str) -> tuple[str, str] | None:
    text = _clean(heading)
    if text.endswith("?"):
        return text, "question_heading"
    howto = _HOWTO.match(text)
    if howto:
        rest = howto.group(1).rstrip(".:")
        return (
            f"How do I {rest[0].lower() + rest[1:] if rest[:2] != rest[:2].upper() else rest}?",
            "howto_heading",
        )
    return None


@dataclass
class _Block:
    start: int  # 0-based line index
    end: int  # exclusive
    text: str
    prose: bool


def _blocks(lines: list[str], start: int, stop: int, rst: bool) -> Iterator[_Block]:
    """Paragraph blocks between two line indexes; fences / directives / tables are not prose."""
    i = start
    while i < stop:
        if not lines[i].strip():
            i += 1
            continue
        first = lines[i].strip()
        if first.startswith(("```", "~~~")):
            fence = first[:3]
            j = i + 1
            while j < stop and not lines[j].strip().startswith(fence):
                j += 1
            yield _Block(i, min(j + 1, stop), "", False)
            i = j + 1
            continue
        j = i
        while j < stop and lines[j].strip():
            j += 1
        text = "\n".join(line for line in lines[i:j] if not _LINK_DEF.match(line))
        prose = not (
            first.startswith(("|", "<!--", "..", ":::", "{", "<", "    ", "\t", "+-", "=="))
            or (rst and text.rstrip().endswith("::") and j - i == 1)
            or lines[i].startswith(("    ", "\t"))
        )
        yield _Block(i, j, text, prose)
        i = j


def _answer(lines: list[str], start: int, stop: int, rst: bool, limit: int) -> tuple[str, int]:
    """The first prose paragraphs after `start` (until `limit` chars); (text, last line idx)."""
    parts: list[str] = []
    last = start
    for block in _blocks(lines, start, stop, rst):
        if not block.prose:
            if parts:
                break
            continue
        text = _clean(block.text)
        if not text:
            continue
        parts.append(text)
        last = block.end - 1
        if sum(len(p) for p in parts) >= limit // 2 or (len(parts) >= 2 and not text.endswith(":")):
            break
    answer = " ".join(parts)
    if len(answer) > limit:
        cut = [m.start() for m in _SENTENCE_END.finditer(answer) if m.start() <= limit]
        answer = answer[: cut[-1]] if cut else answer[:limit]
    return answer.strip(), last


def _sections_md(lines: list[str]) -> list[tuple[int, str]]:
    """(line index, heading text) of every Markdown heading outside code fences."""
    out, fenced = [], False
    for i, line in enumerate(lines):
        if line.strip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        m = None if fenced else _MD_HEADING.match(line)
        if m:
            out.append((i, m.group(2)))
    return out


def _sections_rst(lines: list[str]) -> list[tuple[int, str]]:
    """(line index of the title, title) for RST titles (underlined, optionally overlined)."""
    out = []
    for i in range(1, len(lines)):
        title = lines[i - 1].strip()
        if (
            title
            and _RST_UNDERLINE.match(lines[i])
            and len(lines[i].strip()) >= len(title)
            and not _RST_UNDERLINE.match(lines[i - 1])
        ):
            out.append((i - 1, title))
    return out


def harvest_text(
    text: str, *, rst: bool, max_answer_chars: int = MAX_ANSWER_CHARS
) -> list[dict[str, Any]]:
    """Pairs in one document: [{question, answer, start_line, end_line, kind}]."""
    lines = text.splitlines()
    heads = _sections_rst(lines) if rst else _sections_md(lines)
    starts = [i for i, _ in heads] + [len(lines)]
    found = _heading_pairs(lines, heads, starts, rst, max_answer_chars)
    for i, line in enumerate(lines):
        bold = _BOLD_Q.match(line.strip())
        if bold:
            found.append(_bold_pair(lines, i, bold, starts, rst, max_answer_chars))
        else:
            found.append(_definition_pair(lines, i, rst, max_answer_chars))
    kept = [p for p in found if p is not None]
    kept.sort(key=lambda p: p["start_line"])
    return kept


def _pair(question: str, answer: str, first: int, last: int, kind: str) -> dict[str, Any] | None:
    """A pair over lines first..last (0-based), or None when question or answer is too short."""
    if len(answer) < MIN_ANSWER_CHARS or len(question) < 8:
        return None
    return {"question": question, "answer": answer, "start_line": first + 1,
            "end_line": last + 1, "kind": kind}  # fmt: skip


def _heading_pairs(
    lines: list[str], heads: list[tuple[int, str]], starts: list[int], rst: bool, max_chars: int
) -> list[dict[str, Any] | None]:
    """A heading phrased as a question, answered by its section's first paragraphs."""
    found = []
    for n, (idx, heading) in enumerate(heads):
        q = _as_question(heading)
        if q is None:
            continue
        body = idx + (2 if rst else 1)
        answer, last = _answer(lines, body, starts[n + 1], rst, max_chars)
        found.append(_pair(q[0], answer, idx, last, q[1]))
    return found


def _bold_pair(
    lines: list[str], i: int, bold: re.Match[str], starts: list[int], rst: bool, max_chars: int
) -> dict[str, Any] | None:
    """`**Question?** answer...` (the answer runs on), or a bold question over a paragraph."""
    question = _clean(bold.group(1))
    tail = [bold.group(2)] if bold.group(2).strip() else []
    j = i + 1
    while tail and j < len(lines) and lines[j].strip():
        tail.append(lines[j])
        j += 1
    if tail:
        return _pair(question, _clean(" ".join(tail))[:max_chars], i, j - 1, "bold_question")
    stop = next((s for s in starts if s > i), len(lines))
    answer, last = _answer(lines, i + 1, stop, rst, max_chars)
    return _pair(question, answer, i, last, "bold_question")


def _definition_pair(lines: list[str], i: int, rst: bool, max_chars: int) -> dict[str, Any] | None:
    """A question line defined by the lines under it (MyST `: ` or RST indented definitions)."""
    line, stripped = lines[i], lines[i].strip()
    if (
        not stripped.endswith("?")
        or line.startswith((" ", "\t", "#", "*", "-", ">"))
        or i + 1 >= len(lines)
    ):
        return None
    nxt = lines[i + 1]
    j = i + 1
    body: list[str] = []
    if nxt.startswith(": "):  # MyST definition list
        while (
            j < len(lines)
            and lines[j].strip()
            and (lines[j].startswith((": ", "  ")) or j == i + 1)
        ):
            body.append(lines[j].lstrip(": ").strip())
            j += 1
    elif rst and nxt.startswith(("   ", "\t")) and nxt.strip():  # RST definition list
        while j < len(lines) and (lines[j].startswith(("   ", "\t")) or not lines[j].strip()):
            if lines[j].strip():
                body.append(lines[j].strip())
            elif j + 1 < len(lines) and not lines[j + 1].startswith(("   ", "\t")):
                break
            j += 1
    else:
        return None
    return _pair(_clean(stripped), _clean(" ".join(body))[:max_chars], i, j - 1, "definition")


def harvest_file(path: Path, *, repo: str, rel_path: str) -> list[FaqPair]:
    """Pairs in one Markdown / RST file (other files: none)."""
    suffix = path.suffix.lower()
    if suffix not in (".md", ".markdown", ".rst"):
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    return [
        FaqPair(source=rel_path, repo=repo, **p) for p in harvest_text(text, rst=suffix == ".rst")
    ]


def harvest_repos(settings: Settings, repo: str | None = None) -> list[FaqPair]:
    """Pairs from every documentation file of the configured repositories (or one of them)."""
    repos = discover_repos(settings)
    if repo is not None:
        repos = [r for r in repos if r.name == repo]
        if not repos:
            raise ValueError(f"unknown repository: {repo}")
    pairs: list[FaqPair] = []
    for r in repos:
        for cand in walk_repo(r):
            if cand.kind == "doc":
                pairs.extend(
                    harvest_file(r.root / cand.rel_path, repo=r.name, rel_path=cand.rel_path)
                )
    return pairs
