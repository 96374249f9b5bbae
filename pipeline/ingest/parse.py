"""Per-file work that runs in the process pool: read → clean → chunk → hash.

Everything here is top-level and picklable so a spawn-based pool can run it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipeline.ingest.chunk import (
    ChunkRow,
    Sizes,
    chunk_rows,
    doc_units,
    fixed_chunks,
    grouped_chunks,
    heading_chunks,
    paragraph_chunks,
)
from pipeline.ingest.clean import clean, license_header_end, plain_blocks
from pipeline.ingest.code_ast import AST_LANGUAGES, item_groups, top_level_items
from pipeline.ingest.reader import decode_bytes, read_worktree_file
from pipeline.ingest.units import lines_to_units

__all__ = [
    "ChunkConfig",
    "ChunkRow",
    "FileJob",
    "FileOutcome",
    "chunk_text",
    "process_file",
    "process_files",
]

DOC_STRATEGIES = ("heading", "paragraph", "fixed")
CODE_STRATEGIES = ("code_fixed", "code_ast")


@dataclass(frozen=True)
class ChunkConfig:
    """What the chunkers need from settings (picklable, small)."""

    strategies: tuple[str, ...]
    doc: Sizes
    code: Sizes


@dataclass
class FileJob:
    """One file to (re)process: read from the worktree, or given bytes (commits mode)."""

    root: str
    rel_path: str
    kind: str
    language: str
    max_bytes: int
    known_hash: str | None = None
    data: bytes | None = None  # content from git; None = read the worktree file
    size: int | None = None
    mtime_ns: int | None = None


@dataclass
class FileOutcome:
    """What happened to one file: skipped with a reason, unchanged content, or chunks."""

    rel_path: str
    ok: bool
    reason: str | None = None
    size: int | None = None
    mtime_ns: int | None = None
    content_hash: str | None = None
    flags: list[str] = field(default_factory=list)
    same_content: bool = False
    chunks: list[ChunkRow] = field(default_factory=list)


def process_file(job: FileJob, config: ChunkConfig) -> FileOutcome:
    """Read (or take) one file's content; chunk it unless its hash is unchanged."""
    if job.data is None:
        read = read_worktree_file(
            Path(job.root), job.rel_path, job.max_bytes, known_hash=job.known_hash
        )
    else:
        read = decode_bytes(job.data, job.size, None)
    outcome = FileOutcome(
        job.rel_path,
        read.ok,
        read.reason,
        read.size,
        read.mtime_ns,
        read.content_hash,
        list(read.flags),
    )
    if not read.ok:
        return outcome
    if job.known_hash is not None and read.content_hash == job.known_hash:
        outcome.same_content = True
        return outcome
    outcome.chunks, parse_note = chunk_text(read.text, job.language, job.kind, config)
    if parse_note:
        outcome.flags.append(parse_note)
    return outcome


def process_files(jobs: list[FileJob], config: ChunkConfig) -> list[FileOutcome]:
    """`process_file` for each job in turn (one pool task per chunk of files)."""
    return [process_file(job, config) for job in jobs]


def chunk_text(
    text: str, language: str, kind: str, config: ChunkConfig
) -> tuple[list[ChunkRow], str | None]:
    """All configured strategies for one file's text; returns rows and a parse note."""
    rows: list[ChunkRow] = []
    note = None
    if kind == "doc":
        try:
            blocks = clean(text, language)
        except Exception:  # a parser bug must not lose the file: fall back to plain text
            blocks, note = plain_blocks(text), "parse_fallback"
        units = doc_units(blocks, config.doc)
        for strategy in config.strategies:
            if strategy not in DOC_STRATEGIES:
                continue
            if strategy == "heading":
                ranges = heading_chunks(units, blocks, config.doc)
            elif strategy == "paragraph":
                ranges = paragraph_chunks(units, config.doc)
            else:
                ranges = fixed_chunks(units, config.doc)
            rows.extend(chunk_rows(strategy, units, ranges, blocks))
        return rows, note
    lines = text.split("\n")
    skip = license_header_end(lines)
    body = list(map(str.rstrip, lines[skip:]))
    units = lines_to_units(body, list(range(skip + 1, skip + 1 + len(body))), config.code.max_chars)
    if "code_fixed" in config.strategies:
        ranges = fixed_chunks(units, config.code)
        rows.extend(chunk_rows("code_fixed", units, ranges))
    if "code_ast" in config.strategies and language in AST_LANGUAGES:
        try:
            spans = top_level_items(
                text.encode("utf-8", "surrogatepass"), language, skip + 1, config.code.max_chars
            )
        except Exception:  # tree-sitter failing is recorded, code_fixed still stands
            note = "ast_failed"
        else:
            groups = item_groups(units, spans)
            ranges = grouped_chunks(units, groups, config.code)
            rows.extend(chunk_rows("code_ast", units, ranges))
    return rows, note
