"""Eval sets: JSONL files of questions people wrote (`question`, `answer`, optional `source`).

Torch-free. A set is read and checked in full before anything runs (one clear error naming
the file and line); `attach_contexts` adds the top-k BM25 chunks from the SQLite state for
the retrieval baseline; `snapshot_sets` copies the configured sets into a run directory so
the training child never reads outside it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from state import chunk_search as store
from state.db import Database

__all__ = [
    "EvalSet",
    "EvalSetError",
    "attach_contexts",
    "load_set",
    "set_name",
    "snapshot_sets",
    "write_set",
]


class EvalSetError(ValueError):
    """An eval set file that cannot be used (names the file and the line)."""


@dataclass(frozen=True)
class EvalSet:
    """A named list of rows: {"question", "answer", ["source"], ["contexts"]}."""

    name: str
    path: Path
    rows: list[dict[str, Any]]


def set_name(path: Path) -> str:
    """A set is named after its file: `datafusion-questions.jsonl` → `datafusion-questions`."""
    return Path(path).name.removesuffix(".jsonl")


def load_set(path: Path) -> EvalSet:
    """Read and check a set; every row needs a non-empty `question` and `answer` string."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EvalSetError(f"{path}: eval set not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalSetError(f"{path}: cannot read: {exc}") from None
    rows: list[dict[str, Any]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise EvalSetError(f"{path}:{lineno}: not a JSON object: {exc}") from None
        if not isinstance(row, dict):
            raise EvalSetError(f"{path}:{lineno}: expected a JSON object")
        for key in ("question", "answer"):
            value = row.get(key)
            if not isinstance(value, str) or not value.strip():
                raise EvalSetError(f"{path}:{lineno}: '{key}' must be a non-empty string")
        if "source" in row and not isinstance(row["source"], str | None):
            raise EvalSetError(f"{path}:{lineno}: 'source' must be a string")
        rows.append(
            {
                "question": row["question"],
                "answer": row["answer"],
                **({"source": row["source"]} if row.get("source") else {}),
                **({"contexts": row["contexts"]} if isinstance(row.get("contexts"), list) else {}),
            }
        )
    if not rows:
        raise EvalSetError(f"{path}: no questions in the set")
    return EvalSet(set_name(path), path, rows)


async def attach_contexts(db: Database, rows: list[dict[str, Any]], *, k: int) -> int:
    """Give every row the top-k BM25 chunks for its question (in place); returns how many
    rows found at least one chunk."""
    found = 0
    for row in rows:
        hits = await store.search_chunks(db, row["question"], k=k)
        row["contexts"] = [{"text": h.text, "repo": h.repo, "path": h.path} for h in hits]
        found += bool(hits)
    return found


def write_set(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write rows as JSONL, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    with part.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    part.replace(path)


async def snapshot_sets(
    db: Database | None, paths: list[Path], out_dir: Path, *, retrieval_k: int | None
) -> list[str]:
    """Copy each configured set to `out_dir/<name>.jsonl` (with retrieval contexts when
    `retrieval_k` is set and a database is given); returns the set names."""
    names = []
    for path in paths:
        evset = load_set(path)
        rows = [dict(r) for r in evset.rows]
        if retrieval_k is not None and db is not None:
            await attach_contexts(db, rows, k=retrieval_k)
        write_set(out_dir / f"{evset.name}.jsonl", rows)
        names.append(evset.name)
    return names
