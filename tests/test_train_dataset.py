"""The training snapshot: live pairs only, deduplicated, split stably by source chunk."""

from __future__ import annotations

from pathlib import Path

import pytest
from train_support import insert_pairs, qa_pairs

from pipeline.train.dataset import read_jsonl, split_of, validation_as_holdout, write_snapshot
from state import training as store
from state.db import open_db
from state.training import LivePair

pytestmark = pytest.mark.anyio


def _live(pairs: list[tuple[str, str]], start: int = 0) -> list[LivePair]:
    return [
        LivePair(start + i, q, a, "demo", "a.md", f"chunk-{q}") for i, (q, a) in enumerate(pairs)
    ]


def _holdout_questions(dataset_dir: Path) -> set[str]:
    return {row["question"] for row in read_jsonl(dataset_dir / "holdout.jsonl")}


def test_split_is_stable_across_runs_and_pair_additions(tmp_path: Path) -> None:
    first = _live(qa_pairs(60))
    write_snapshot(first, tmp_path / "run1", holdout_fraction=0.2)
    # A later run sees more pairs, in a different order, with other ids.
    more = _live(qa_pairs(120), start=1000)[::-1]
    write_snapshot(more, tmp_path / "run2", holdout_fraction=0.2)

    held1, held2 = _holdout_questions(tmp_path / "run1"), _holdout_questions(tmp_path / "run2")
    assert held1, "the holdout must not be empty"
    assert held1 <= held2  # every question held out before is still held out
    trained2 = {r["question"] for r in read_jsonl(tmp_path / "run2" / "train.jsonl")}
    assert not held1 & trained2  # ...and never trained on later


def test_split_depends_on_the_chunk_only() -> None:
    sides = [split_of(f"chunk {i}", 0.25, 0.1) for i in range(4000)]
    assert 0.2 < sides.count("holdout") / len(sides) < 0.3
    assert 0.07 < sides.count("validation") / len(sides) < 0.13
    assert all(split_of(f"chunk {i}", 0.25, 0.1) == sides[i] for i in range(100))


def test_duplicate_pairs_are_kept_once(tmp_path: Path) -> None:
    pairs = qa_pairs(10)
    summary = write_snapshot(_live(pairs + pairs[:3]), tmp_path, holdout_fraction=0.2)
    assert summary.n_duplicates == 3
    assert summary.n_train + summary.n_holdout == 10


async def test_snapshot_reads_only_live_pairs(tmp_path: Path) -> None:
    db = await open_db(tmp_path / "db.sqlite3")
    try:
        await insert_pairs(db, qa_pairs(5))
        await insert_pairs(db, [("Is this retired?", "Yes, its chunk is gone.")], retired=True)
        live = await store.live_pairs(db)
        assert len(live) == 5
        assert await store.count_live_pairs(db) == 5
        assert all(p.question != "Is this retired?" for p in live)
    finally:
        await db.close()


async def test_status_snapshot_reports_training(tmp_path: Path) -> None:
    from state.status import snapshot

    db = await open_db(tmp_path / "db.sqlite3")
    try:
        await insert_pairs(db, qa_pairs(3))
        await store.create_run(db, "r1", trigger="cli", base_model="m", live=3, run_dir="/r1")
        await store.mark_failed(db, "r1", error="boom")
        training = (await snapshot(db))["training"]
        assert training["runs"] == {"failed": 1}
        assert training["latest"]["error"] == "boom"
        assert training["live_pairs"] == 3
        assert training["new_pairs_since_last_run"] == 3
    finally:
        await db.close()


def test_an_empty_holdout_takes_the_validation_part_which_is_never_trained_on(
    tmp_path: Path,
) -> None:
    """Few pages, and no live pair about a chunk that hashes to the holdout (the quickstart's
    two-page cut-down: its one holdout chunk's job died): the validation part is the test part,
    and still no chunk is on two sides."""
    pairs = _live(qa_pairs(30))
    snap = write_snapshot(pairs, tmp_path, holdout_fraction=0.0, validation_fraction=0.3)
    assert snap.n_holdout == 0
    assert snap.n_validation > 0
    trained = {r["chunk_id"] for r in read_jsonl(tmp_path / "train.jsonl")}
    moved = validation_as_holdout(tmp_path, snap)
    tested = {r["chunk_id"] for r in read_jsonl(tmp_path / "holdout.jsonl")}
    assert (moved.n_holdout, moved.n_validation) == (snap.n_validation, 0)
    assert moved.holdout_from == "validation"
    assert snap.n_chunks is not None
    assert moved.n_chunks == {
        "train": snap.n_chunks["train"],
        "validation": 0,
        "holdout": snap.n_chunks["validation"],
    }
    assert len(tested) == snap.n_chunks["validation"]
    assert not tested & trained
    assert read_jsonl(tmp_path / "validation.jsonl") == []
    # the same chunks are validation in every later run: never trained on
    assert all(split_of(c, 0.0, 0.3) == "validation" for c in tested)
