"""Dataset snapshot: live pairs → deduplicated JSONL, split train/holdout by a hash of the question.

Torch-free: the daemon writes the snapshot into the run directory before starting the child,
so the child never touches the database.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from state.training import LivePair

__all__ = [
    "SnapshotSummary",
    "normalize_question",
    "read_jsonl",
    "split_of",
    "write_snapshot",
]

_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class SnapshotSummary:
    """What went into `dataset/train.jsonl` and `dataset/holdout.jsonl`."""

    n_train: int
    n_holdout: int
    n_duplicates: int


def normalize_question(question: str) -> str:
    """Case- and whitespace-insensitive form: re-spacing a question does not move it."""
    return _SPACE.sub(" ", question).strip().casefold()


def split_of(question: str, holdout_fraction: float) -> Literal["train", "holdout"]:
    """Which side a question belongs to: a pure function of the question text.

    Depends on nothing else (not the pair id, not the other pairs), so the holdout stays
    the same across runs and when pairs are added, and a question is never trained on in
    one run and evaluated on in the next.
    """
    digest = hashlib.sha256(normalize_question(question).encode("utf-8")).digest()
    bucket = int.from_bytes(digest[:8], "big") / 2**64
    return "holdout" if bucket < holdout_fraction else "train"


def write_snapshot(
    pairs: Iterable[LivePair], dataset_dir: Path, *, holdout_fraction: float
) -> SnapshotSummary:
    """Write both splits (each file atomically); exact duplicate Q/A pairs are kept once."""
    dataset_dir.mkdir(parents=True, exist_ok=True)
    seen: set[tuple[str, str]] = set()
    sides: dict[str, list[dict[str, Any]]] = {"train": [], "holdout": []}
    duplicates = 0
    for pair in pairs:
        key = (normalize_question(pair.question), _SPACE.sub(" ", pair.answer).strip())
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        sides[split_of(pair.question, holdout_fraction)].append(
            {
                "pair_id": pair.id,
                "question": pair.question,
                "answer": pair.answer,
                "repo": pair.repo,
                "path": pair.path,
            }
        )
    for side, rows in sides.items():
        _write_jsonl_atomic(dataset_dir / f"{side}.jsonl", rows)
    return SnapshotSummary(len(sides["train"]), len(sides["holdout"]), duplicates)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every record of a JSONL file."""
    return list(_iter_jsonl(path))


def _iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def _write_jsonl_atomic(path: Path, rows: list[dict[str, Any]]) -> None:
    part = path.with_suffix(path.suffix + ".part")
    with part.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    part.replace(path)
