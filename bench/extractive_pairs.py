"""A small extractive Q/A generator over the DataFusion docs (the bench's fallback data source).

Used when the generation pipeline is not available: each Markdown section becomes one pair
whose question names the section and whose answer is the section's first sentences.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

__all__ = ["extractive_pairs", "paragraph_pairs"]

_FENCE = re.compile(r"```.*?```", re.S)
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z`])")
_TEMPLATES = [
    'What does the "{h}" section of the DataFusion {t} documentation explain?',
    "In Apache DataFusion ({t}), what is {h}?",
    'Can you summarise "{h}" from the DataFusion {t} guide?',
    "What should a DataFusion user know about {h} ({t})?",
]


def _clean(text: str) -> str:
    text = _COMMENT.sub("", _FENCE.sub("", text))
    text = _LINK.sub(r"\1", text)
    return text.replace("`", "").replace("**", "").replace("*", "")


def _first_prose(body: str) -> str | None:
    for para in re.split(r"\n\s*\n", body):
        para = " ".join(line.strip() for line in para.splitlines()).strip()
        if len(para) < 80 or para[0] in "|-:>#=+" or para.startswith(("..", "1.")):
            continue
        sentences = _SENTENCE.split(para)
        answer = ""
        for s in sentences:
            if len(answer) + len(s) > 420 and answer:
                break
            answer = f"{answer} {s}".strip()
        return answer if len(answer) >= 60 else None
    return None


def extractive_pairs(corpus: Path) -> list[tuple[str, str, str]]:
    """(question, answer, relative path) for every Markdown section with a prose paragraph."""
    pairs: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for path in sorted(corpus.rglob("*.md")):
        text = _clean(path.read_text(encoding="utf-8", errors="replace"))
        title = path.stem.replace("-", " ").replace("_", " ")
        sections = re.split(r"^(#{1,6}\s+.*)$", text, flags=re.M)
        for heading, body in zip(sections[1::2], sections[2::2], strict=False):
            h = heading.lstrip("#").strip()
            answer = _first_prose(body)
            if not h or answer is None or answer in seen:
                continue
            seen.add(answer)
            pick = int(hashlib.sha256(f"{path.name}|{h}".encode()).hexdigest(), 16)
            question = _TEMPLATES[pick % len(_TEMPLATES)].format(h=h, t=title)
            pairs.append((question, answer, str(path.relative_to(corpus))))
    return pairs


_PARA_TEMPLATES = [
    "What does the DataFusion {t} documentation say about {h}{part}?",
    "In Apache DataFusion, what should I know about {h}{part}?",
    "Explain {h}{part} as described in the DataFusion {t} guide.",
    "How does DataFusion handle {h}{part}?",
]


def paragraph_pairs(
    corpus: Path, pages: list[str], *, variants: int = 2
) -> list[tuple[str, str, str, str]]:
    """(question, answer, relative path, group) for every prose paragraph of `pages`: the
    answer is the paragraph's sentences (≤ ~420 characters per answer), the questions name
    the section (`variants` templates per answer); `group` identifies the answer's passage
    (all its question variants share it, like pairs generated from one chunk)."""
    out: list[tuple[str, str, str, str]] = []
    for rel in pages:
        path = corpus / rel
        text = _clean(path.read_text(encoding="utf-8", errors="replace"))
        title = path.stem.replace("-", " ").replace("_", " ")
        sections = re.split(r"^(#{1,6}\s+.*)$", text, flags=re.M)
        heads = [f"# {title}", *sections[1::2]]
        bodies = [sections[0], *sections[2::2]]
        for heading, body in zip(heads, bodies, strict=False):
            h = heading.lstrip("#").strip()
            answers: list[str] = []
            for para in re.split(r"\n\s*\n", body):
                para = " ".join(line.strip() for line in para.splitlines()).strip()
                if len(para) < 60 or para[0] in "|:>#=+{<" or para.startswith(".."):
                    continue
                answer = ""
                for s in _SENTENCE.split(para):
                    if len(answer) + len(s) > 420 and answer:
                        answers.append(answer)
                        answer = ""
                    answer = f"{answer} {s}".strip()
                if len(answer) >= 40:
                    answers.append(answer)
            for k, answer in enumerate(answers):
                part = "" if k == 0 else f" (part {k + 1})"
                group = hashlib.sha256(f"{rel}|{h}|{k}".encode()).hexdigest()
                for v in range(variants):
                    template = _PARA_TEMPLATES[v % len(_PARA_TEMPLATES)]
                    out.append((template.format(h=h, t=title, part=part), answer, rel, group))
    return out
