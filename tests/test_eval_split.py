"""The split cannot leak: every pair of one source chunk lands on the same side."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.train.dataset import SIDES, read_jsonl, write_snapshot
from state.training import LivePair

_pairs = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=40),  # chunk number: several pairs per chunk
        st.text(min_size=1, max_size=30),
        st.text(min_size=1, max_size=30),
    ),
    min_size=1,
    max_size=120,
)


@settings(max_examples=60, deadline=None)
@given(pairs=_pairs, holdout=st.floats(0.05, 0.5), validation=st.floats(0.0, 0.4))
def test_no_chunk_hash_sits_on_two_sides(
    pairs: list[tuple[int, str, str]], holdout: float, validation: float
) -> None:
    live = [
        LivePair(i, q, a, "demo", "a.md", f"sha-{chunk:04d}")
        for i, (chunk, q, a) in enumerate(pairs)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        summary = write_snapshot(
            live, Path(tmp), holdout_fraction=holdout, validation_fraction=validation
        )
        chunks = {
            side: {row["chunk_id"] for row in read_jsonl(Path(tmp) / f"{side}.jsonl")}
            for side in SIDES
        }
    assert not chunks["train"] & chunks["holdout"]
    assert not chunks["train"] & chunks["validation"]
    assert not chunks["validation"] & chunks["holdout"]
    assert summary.n_train + summary.n_validation + summary.n_holdout + summary.n_duplicates == len(
        live
    )
    assert summary.n_chunks == {side: len(ids) for side, ids in chunks.items()}


def test_new_pairs_about_a_held_out_chunk_stay_held_out(tmp_path: Path) -> None:
    first = [LivePair(i, f"q{i}", f"a{i}", "demo", "a.md", f"c{i}") for i in range(200)]
    write_snapshot(first, tmp_path / "r1", holdout_fraction=0.2, validation_fraction=0.1)
    held = {r["chunk_id"] for r in read_jsonl(tmp_path / "r1" / "holdout.jsonl")}
    assert held
    # A later generation writes other questions about the same chunks.
    later = first + [
        LivePair(1000 + i, f"another question {i}?", f"a{i}", "demo", "a.md", f"c{i}")
        for i in range(200)
    ]
    write_snapshot(later, tmp_path / "r2", holdout_fraction=0.2, validation_fraction=0.1)
    trained = {r["chunk_id"] for r in read_jsonl(tmp_path / "r2" / "train.jsonl")}
    assert not held & trained
    assert held <= {r["chunk_id"] for r in read_jsonl(tmp_path / "r2" / "holdout.jsonl")}
