"""Dataset snapshot: live pairs → deduplicated JSONL, split by source chunk into three parts.

The split rule (README, "Training: the split"): a pair's side is a pure function of the hash
of its source chunk, so every pair written about one chunk sits on the same side and no
chunk's text is both trained on and tested on. Three parts:

- `train.jsonl` — what the adapter learns from;
- `validation.jsonl` — picks the sweep's winner (never reported, never gated);
- `holdout.jsonl` — the test part: reported in metrics.json and read by the gate.

Torch-free: the daemon writes the snapshot into the run directory before starting the child,
so the child never touches the database.
"""

from __future__ import annotations

import dataclasses
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
    "SIDES",
    "Side",
    "SnapshotSummary",
    "normalize_question",
    "read_jsonl",
    "split_of",
    "validation_as_holdout",
    "write_snapshot",
]

_SPACE = re.compile(r"\s+")
Side = Literal["train", "validation", "holdout"]
SIDES: tuple[Side, ...] = ("train", "validation", "holdout")


@dataclass(frozen=True)
class SnapshotSummary:
    """What went into `dataset/{train,validation,holdout}.jsonl`."""

    n_train: int
    n_holdout: int
    n_duplicates: int
    n_validation: int = 0
    n_chunks: dict[str, int] | None = None  # distinct source chunks per side
    holdout_from: Side = "holdout"  # "validation": the holdout part was empty (see below)


def normalize_question(question: str) -> str:
    """Case- and whitespace-insensitive form: re-spacing a question does not move it."""
    return _SPACE.sub(" ", question).strip().casefold()


def split_of(chunk_id: str, holdout_fraction: float, validation_fraction: float = 0.0) -> Side:
    """Which part a source chunk (and so every pair written about it) belongs to.

    A pure function of the chunk id (the sha256 of its text): the same chunk lands on the same
    side in every run and whatever other pairs exist, so a chunk tested on once is never
    trained on later, and adding pairs never moves old ones.
    """
    digest = hashlib.sha256(chunk_id.encode("utf-8")).digest()
    bucket = int.from_bytes(digest[:8], "big") / 2**64
    if bucket < holdout_fraction:
        return "holdout"
    if bucket < holdout_fraction + validation_fraction:
        return "validation"
    return "train"


def write_snapshot(
    pairs: Iterable[LivePair],
    dataset_dir: Path,
    *,
    holdout_fraction: float,
    validation_fraction: float = 0.0,
) -> SnapshotSummary:
    """Write the three parts (each file atomically); exact duplicate Q/A pairs are kept once."""
    dataset_dir.mkdir(parents=True, exist_ok=True)
    seen: set[tuple[str, str]] = set()
    sides: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    chunks: dict[str, set[str]] = {side: set() for side in SIDES}
    duplicates = 0
    for pair in pairs:
        key = (normalize_question(pair.question), _SPACE.sub(" ", pair.answer).strip())
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        side = split_of(pair.chunk_id, holdout_fraction, validation_fraction)
        chunks[side].add(pair.chunk_id)
        sides[side].append(
            {
                "pair_id": pair.id,
                "question": pair.question,
                "answer": pair.answer,
                "repo": pair.repo,
                "path": pair.path,
                "chunk_id": pair.chunk_id,
            }
        )
    for part, rows in sides.items():
        _write_jsonl_atomic(dataset_dir / f"{part}.jsonl", rows)
    return SnapshotSummary(
        n_train=len(sides["train"]),
        n_holdout=len(sides["holdout"]),
        n_duplicates=duplicates,
        n_validation=len(sides["validation"]),
        n_chunks={side: len(ids) for side, ids in chunks.items()},
    )


def validation_as_holdout(dataset_dir: Path, snap: SnapshotSummary) -> SnapshotSummary:
    """The validation part as the test part, for a run that sweeps nothing and whose holdout
    part is empty (a few pages, and the model wrote no usable question about the one chunk
    that hashed to the holdout: the quickstart's two-page cut-down, bt-v4). Validation chunks
    are never trained on either, in any run, so no chunk is both trained and tested on; only
    a sweep chooses by them, and a sweep keeps its own validation part."""
    holdout, validation = dataset_dir / "holdout.jsonl", dataset_dir / "validation.jsonl"
    validation.replace(holdout)
    _write_jsonl_atomic(validation, [])
    chunks = dict(snap.n_chunks or {})
    chunks["holdout"], chunks["validation"] = chunks.get("validation", 0), 0
    return dataclasses.replace(
        snap,
        n_holdout=snap.n_validation,
        n_validation=0,
        n_chunks=chunks,
        holdout_from="validation",
    )


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
