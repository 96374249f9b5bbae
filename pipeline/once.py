"""One ingest + generation pass (`run --once`, the quickstart's first step): scan, plan, drain."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.generate.backend import resolve_backend
from pipeline.generate.plan import ensure_jobs
from pipeline.generate.prompt import prompt_version_for
from pipeline.generate.service import GenerationService, RunOnceSummary
from pipeline.ingest.reconcile import ReconcileSummary, reconcile
from pipeline.settings import Settings
from state.db import Database
from state.generation_status import job_counts

__all__ = ["GenerationPass", "ingest_and_generate"]

# Given how many jobs the pass will work through, the callback that receives its live stats.
ProgressFactory = Callable[[int], Callable[[dict[str, Any]], None]]


@dataclass(frozen=True)
class GenerationPass:
    """What one pass did: the scan, the jobs it planned, the drain."""

    scan: ReconcileSummary
    new_jobs: int
    generation: RunOnceSummary


async def ingest_and_generate(
    db: Database, settings: Settings, *, progress_for: ProgressFactory | None = None
) -> GenerationPass:
    """Reconcile every source, create the jobs the plan is missing, then drain the queue once
    (every pending job of the current prompt and model done or dead), and return what happened.
    """
    scan = await reconcile(db, settings)
    new_jobs = await ensure_jobs(db, settings.generator)
    counts = await job_counts(
        db,
        prompt_version=prompt_version_for(settings.generator),
        model=(await resolve_backend(settings.generator)).gen.model,
    )
    progress = progress_for(counts["pending"] + counts["leased"]) if progress_for else None
    summary = await GenerationService(db, settings, progress=progress).run_once()
    return GenerationPass(scan=scan, new_jobs=new_jobs, generation=summary)
