"""The quickstart's later steps: train only when the pairs changed, then ask base and tuned.

Ingest + generate is `pipeline.once`, registration is `pipeline.ship.register`; `doctune
quickstart` (daemon/cli/quickstart.py) runs the steps in order, times them and prints them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pipeline.settings import Settings
from pipeline.ship.ask import open_answerer
from pipeline.train.runs import ProgressFn, run_training
from state import training as store
from state.db import Database

__all__ = ["QUESTIONS", "QuickstartError", "TrainingStep", "compare_answers", "train_if_changed"]

# Answerable from the quickstart's documented subset of the DataFusion docs.
QUESTIONS = (
    "What is Apache DataFusion?",
    "How do I create an external table from a CSV file in DataFusion SQL?",
    "How do I filter rows of a DataFrame in DataFusion?",
)


class QuickstartError(RuntimeError):
    """A step cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class TrainingStep:
    """The run to register, and whether this step trained it (False: the pairs were unchanged)."""

    run_id: str
    trained: bool


async def train_if_changed(
    db: Database, settings: Settings, *, progress: ProgressFn | None = None
) -> TrainingStep:
    """A new run, or the latest one when the live pairs are those it trained on. Raises
    QuickstartError (too few pairs, or the run failed) and `TrainingBusyError`."""
    latest = next(iter(await store.list_runs(db, limit=1)), None)
    if (
        latest is not None
        and latest.state in ("succeeded", "registered", "rejected")
        and not await store.pairs_changed_since(db, latest)
    ):
        return TrainingStep(run_id=latest.id, trained=False)
    if await store.count_live_pairs(db) < 2:
        raise QuickstartError(
            "too few question/answer pairs to train on; see `doctune status` for why "
            "generation produced none"
        )
    result = await run_training(db, settings, trigger="quickstart", progress=progress)
    if result.state != "succeeded":
        raise QuickstartError(
            f"training run {result.run_id} failed: {result.error}\n"
            f"(`doctune runs` shows it; the next `quickstart` tries again)"
        )
    return TrainingStep(run_id=result.run_id, trained=True)


async def compare_answers(
    db: Database,
    settings: Settings,
    questions: tuple[str, ...] = QUESTIONS,
    *,
    on_question: Callable[[int, int], None] | None = None,
) -> list[tuple[str, str, str]]:
    """(question, base answer, tuned answer) for each question; `on_question(i, n)` before the
    i-th of n."""
    rows: list[tuple[str, str, str]] = []
    async with (
        await open_answerer(db, settings, "base") as base,
        await open_answerer(db, settings, "current") as tuned,
    ):
        for i, question in enumerate(questions, 1):
            if on_question is not None:
                on_question(i, len(questions))
            rows.append((question, await base.answer(question), await tuned.answer(question)))
    return rows
