"""The section each answer passage sits in: one chunk can run across several sections.

A chunk row names the section it starts in (`heading`) and the sections that start inside it
(`sections`, heading paths in order). A heading's title is a line of its own in the chunk's
cleaned text, so the sections are found again by their title lines, in order; a passage sits
in the last section that starts before it. On the SQL reference pages a paragraph chunk often
ends one function's section and starts the next: the passage picked as the answer then
describes the next function, and the chunk's first heading names the wrong one.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.ingest.chunk import HEADING_SEPARATOR
from state.job_claims import ClaimedJob

__all__ = ["Passage", "passage_sections"]


@dataclass(frozen=True)
class Passage:
    """An answer: a verbatim span of the chunk, and the heading path of the section it is in."""

    text: str
    section: tuple[str, ...] = ()


def _section_starts(job: ClaimedJob) -> list[tuple[int, tuple[str, ...]]]:
    """(offset in job.text, heading path) of each section, the one the chunk starts in first.

    A recorded section whose title line is not found (text stored from another file with the
    same words) is left out: its passages keep the section before it.
    """
    first = tuple(job.heading.split(HEADING_SEPARATOR)) if job.heading else ()
    starts: list[tuple[int, tuple[str, ...]]] = [(0, first)]
    pending = list(job.sections)
    offset = 0
    for line in job.text.split("\n"):
        if pending and line.strip() == pending[0][-1]:
            starts.append((offset, pending.pop(0)))
        offset += len(line) + 1
    return starts


def passage_sections(job: ClaimedJob, passages: list[str]) -> list[tuple[str, ...]]:
    """The heading path of the section each passage (a verbatim span of job.text) sits in;
    () where the chunk has no heading."""
    starts = _section_starts(job)
    found = []
    for passage in passages:
        at = job.text.find(passage)
        section = starts[0][1]
        for offset, path in starts:
            if offset > at:
                break
            section = path
        found.append(section)
    return found
